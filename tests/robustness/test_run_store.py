"""A run directory (RunStore = store's manifest + parquet records) that survives a damaged file (issue
11): a part truncated, emptied or holding another fact, a torn compacted file. A writer moves the
damaged file into <run>/damaged/ (never deletes it), says so in one warning line, and the facts it held
are redone; the finished run equals one never damaged, byte for byte. A reader refuses in one line. A writer
killed with SIGKILL mid-run (twice) resumes to the tables of a run never killed.
(The codec-level cases, once per codec, are in test_store.py; a real run resuming, in test_damaged.py.)"""
import logging

import pyarrow.parquet as pq
import pytest

from kneuron.runs.store import DAMAGED, RunStore, RunStoreError, _stem, open_run

META = {"model": "m", "method": "ig", "steps": 20, "facts_hash": "abc"}


def fact(i, lang="en"):
    row = {"order": i, "fact_id": f"P{i}", "lang": lang, "prompt": f"q{i} {lang}", "p_before": 0.1 * i}
    neurons = [{"layer": i % 3, "neuron": 100 * i + k, "score": 1.0 / (k + 1), "rank": k} for k in range(3)]
    return row, ([] if i == 4 else neurons)


ALL = [fact(i) for i in range(8)]
KEYS = [(r["fact_id"], r["lang"]) for r, _ in ALL]


def part(run, i, kind="facts"):
    return run / "parts" / f"{_stem(i, f'P{i}', 'en')}.{kind}.parquet"


def warnings_of(caplog, logger="kneuron.runs"):
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == logging.WARNING]


def finish(run, items=ALL):
    """Resume ``run``, add what it lacks, finalize; the store."""
    s = RunStore(run, META, resume=True)
    for row, neurons in items:
        if (row["fact_id"], row["lang"]) not in s.done():
            s.add(row, neurons)
    s.finalize()
    return s


@pytest.fixture
def ref(tmp_path):
    s = RunStore(tmp_path / "ref", META)
    for row, neurons in ALL:
        s.add(row, neurons)
    s.finalize()
    return tmp_path / "ref"


def same_files(a, b):
    for name in ("facts.parquet", "neurons.parquet"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def interrupted(path, k=5):
    """A run killed after its first k facts: k committed parts, no compaction."""
    s = RunStore(path, META)
    for row, neurons in ALL[:k]:
        s.add(row, neurons)
    return path


def truncate(p):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


DAMAGE = {
    "truncated": lambda run: truncate(part(run, 2)),
    "empty": lambda run: part(run, 2).write_bytes(b""),
    "another fact": lambda run: part(run, 2).write_bytes(part(run, 3).read_bytes()),
    "neurons truncated": lambda run: truncate(part(run, 2, "neurons")),
    "neurons of another fact": lambda run: part(run, 2, "neurons").write_bytes(part(run, 3, "neurons").read_bytes()),
    "neurons missing": lambda run: part(run, 2, "neurons").unlink(),
}
REASON = {"truncated": "magic bytes", "empty": "0 bytes", "another fact": "holds fact 'P3'",
          "neurons truncated": "magic bytes", "neurons of another fact": "neurons of another fact ('P3'",
          "neurons missing": "missing"}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_a_damaged_part_is_moved_aside_and_its_fact_redone(how, ref, tmp_path, caplog):
    run = interrupted(tmp_path / "r")
    DAMAGE[how](run)
    before = {p.name: p.read_bytes() for p in (run / "parts").iterdir() if p.name.startswith(_stem(2, "P2", "en"))}
    with caplog.at_level(logging.WARNING):
        s = RunStore(run, META, resume=True)
    said = warnings_of(caplog)
    assert len(said) == 1 and "\n" not in said[0], said
    assert "1 damaged part" in said[0] and "fact 'P2' (en)" in said[0] and REASON[how] in said[0], said[0]
    assert str(run / DAMAGED) in said[0] and "redoes" in said[0]
    # moved aside whole (the pair), never deleted; the fact is not done, the others are
    kept = {p.name: p.read_bytes() for p in (run / DAMAGED).iterdir()}
    assert kept == before and not part(run, 2).exists() and not part(run, 2, "neurons").exists()
    assert s.done() == set(KEYS[:5]) - {("P2", "en")} and s.damaged
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        finish(run)
    assert not warnings_of(caplog), "found and reported once"
    same_files(run, ref)
    assert (run / DAMAGED).is_dir() and not (run / "parts").exists()


def test_a_reader_refuses_a_damaged_run_in_one_line_and_moves_nothing(tmp_path):
    run = interrupted(tmp_path / "r")
    truncate(part(run, 3))
    listing = sorted(p.name for p in (run / "parts").iterdir())
    with pytest.raises(RunStoreError) as e:
        open_run(run)
    msg = str(e.value)
    assert "\n" not in msg and str(part(run, 3)) in msg and "--resume" in msg and "magic bytes" in msg
    assert sorted(p.name for p in (run / "parts").iterdir()) == listing and not (run / DAMAGED).exists()


def test_a_part_damaged_before_finalize_is_reported_missing_and_the_rest_compacted(ref, tmp_path, caplog):
    run = tmp_path / "r"
    s = RunStore(run, META)
    for row, neurons in ALL:
        s.add(row, neurons)
    truncate(part(run, 6))                                # after the last add, before finalize
    with caplog.at_level(logging.WARNING):
        missing = s.finalize()
    assert missing == [("P6", "en")]
    said = warnings_of(caplog)
    assert len(said) == 1 and "missing from facts.parquet: 'P6' (en)" in said[0] and "resume" in said[0], said
    facts = pq.read_table(run / "facts.parquet")
    assert set(zip(facts["fact_id"].to_pylist(), facts["lang"].to_pylist())) == set(KEYS) - {("P6", "en")}
    assert "P6" not in pq.read_table(run / "neurons.parquet")["fact_id"].to_pylist()
    assert not (run / "parts").exists() and sorted(p.name for p in (run / DAMAGED).iterdir()) == sorted(
        [part(run, 6).name, part(run, 6, "neurons").name])
    s = RunStore(run, META, resume=True)
    assert s.done() == set(KEYS) - {("P6", "en")}
    finish(run)
    same_files(run, ref)


@pytest.mark.parametrize("which", ["facts.parquet", "neurons.parquet"])
def test_a_damaged_compacted_file_is_moved_aside_and_the_parts_recovered(which, ref, tmp_path, caplog):
    run = tmp_path / "r"
    s = RunStore(run, META)
    for row, neurons in ALL[:4]:
        s.add(row, neurons)
    s.finalize()                                          # 4 facts compacted
    s = RunStore(run, META, resume=True)
    for row, neurons in ALL[4:6]:
        s.add(row, neurons)                               # 2 more as parts
    truncate(run / which)
    with pytest.raises(RunStoreError, match=f"{which}: damaged .*--resume"):
        open_run(run)
    with caplog.at_level(logging.WARNING):
        s = RunStore(run, META, resume=True)
    said = warnings_of(caplog)
    assert len(said) == 1 and f"{which} damaged" in said[0] and "2 facts recovered from parts/" in said[0], said
    assert sorted(p.name for p in (run / DAMAGED).iterdir()) == ["facts.parquet", "neurons.parquet"]
    assert s.done() == set(KEYS[4:6])
    finish(run)
    same_files(run, ref)


def test_a_zero_length_compacted_file_after_a_finished_run(ref, tmp_path, caplog):
    run = tmp_path / "r"
    s = RunStore(run, META)
    for row, neurons in ALL:
        s.add(row, neurons)
    s.finalize()
    (run / "facts.parquet").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        s = RunStore(run, META, resume=True)
    said = warnings_of(caplog)
    assert len(said) == 1 and "0 bytes" in said[0] and "0 facts recovered" in said[0]
    assert s.done() == set()
    finish(run)
    same_files(run, ref)


def test_out_naming_a_file_is_refused_in_one_line(tmp_path):
    f = tmp_path / "x"
    f.write_text("not a run")
    for resume in (False, True):
        with pytest.raises(RunStoreError) as e:
            RunStore(f, META, resume=resume)
        assert str(e.value) == f"{f}: --out names a file, not a run directory"
    with pytest.raises(RunStoreError, match="a file, not a run directory"):
        open_run(f)
    assert f.read_text() == "not a run"


WORKER = """
import sys, time
from kneuron.runs.store import RunStore
s = RunStore(sys.argv[1], {"model": "m"}, resume=sys.argv[2] == "1")
pause = float(sys.argv[3])
done = s.done()
for i in range(200):
    if (f"P{i}", "en") not in done:
        s.add({"order": i, "fact_id": f"P{i}", "lang": "en", "p": i / 7},
              [{"layer": i % 5, "neuron": i, "score": k / 3, "rank": k} for k in range(i % 4)])
        time.sleep(pause)
s.finalize()
"""


@pytest.mark.slow
def test_kill_9_then_resume(tmp_path):
    """SIGKILL a writer while it is committing facts (twice), resume it: same tables as a run never killed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    def start(path, resume, pause):
        return subprocess.Popen([sys.executable, "-c", WORKER, str(path), "1" if resume else "0", str(pause)])

    def committed(path):
        return len(list((path / "parts").glob("*.facts.parquet"))) if (path / "parts").is_dir() else 0

    assert start(tmp_path / "ref", False, 0).wait() == 0
    path = tmp_path / "r"
    before = 0
    for resume in (False, True):
        proc = start(path, resume, 0.01)
        deadline = time.monotonic() + 120
        while committed(path) <= before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        assert proc.poll() is None, "the writer ended before it could be killed mid-run"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        assert not (path / "facts.parquet").exists(), "killed before finalize"
        n = open_run(path).facts().num_rows          # what the kill left committed (read-only: no repair)
        assert before < n < 200, (before, n)
        before = n
    assert start(path, True, 0).wait() == 0
    ref, r = open_run(tmp_path / "ref"), open_run(path)
    assert r.facts().num_rows == 200
    assert r.facts().equals(ref.facts()) and r.neurons().equals(ref.neurons())
    assert not (path / "parts").exists()
