"""Real runs that survive a damaged file (issue 11), end to end: locate resuming a run with a truncated
part (library and installed command), a torn dkn.jsonl line, a torn reproduce cache. The damaged file
is moved into <run>/damaged/, said in one warning line, its facts redone; the finished run equals one
never damaged. The store-level cases: tests/robustness/test_run_store.py (RunStore) and
tests/robustness/test_store.py (once per codec)."""
import json
import logging
import os
import subprocess
import sys

import pytest

import kneuron.runs.locate as loc
from kneuron import LocateConfig, load_facts, locate
from kneuron.facts import fact_file_hash
from kneuron.runs.store import DAMAGED, _stem, open_run
from support.tiny import tiny_handle

pytestmark = pytest.mark.usefixtures("one_thread")


def warnings_of(caplog, logger="kneuron.runs"):
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == logging.WARNING]


def same_files(a, b):
    for name in ("facts.parquet", "neurons.parquet"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def truncate(p):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


# ----------------------------------------------------------------------------- the locate driver

def _run(h, fact_file, out, **kw):
    return locate(h, load_facts(fact_file), LocateConfig(steps=2), out, facts_path=str(fact_file),
                  facts_hash=fact_file_hash(fact_file), show_progress=False, **kw)


def _cut_after(monkeypatch, n):
    """locate_facts raises KeyboardInterrupt on its (n+1)-th call: n facts are committed."""
    real, calls = loc.locate_facts, []

    def dies(*a, **k):
        calls.append(1)
        if len(calls) > n:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(loc, "locate_facts", dies)
    return real


def test_locate_resumes_a_run_with_a_truncated_part(fact_file, tmp_path, monkeypatch, caplog):
    h = tiny_handle("gpt2")
    full = _run(h, fact_file, tmp_path / "full")
    real = _cut_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        _run(h, fact_file, tmp_path / "cut")
    monkeypatch.setattr(loc, "locate_facts", real)
    cut = tmp_path / "cut"
    truncate(cut / "parts" / f"{_stem(1, 'c2', 'en')}.facts.parquet")
    with caplog.at_level(logging.WARNING):
        resumed = _run(h, fact_file, cut, resume=True)
    said = warnings_of(caplog)
    assert len(said) == 1 and "fact 'c2' (en)" in said[0], said
    assert resumed.n_new == 5 - 3 + 1                        # the two never done and the damaged one
    assert (cut / DAMAGED / f"{_stem(1, 'c2', 'en')}.facts.parquet").is_file()
    assert resumed.facts().equals(full.facts()) and resumed.neurons().equals(full.neurons())
    same_files(cut, tmp_path / "full")


def _saved_tiny(tmp_path):
    import torch
    from support.tiny import tiny_model, word_tokenizer
    model, kind = tiny_model("gpt2", dtype=torch.float32)
    model.save_pretrained(tmp_path / "m")
    word_tokenizer(kind).save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def test_cli_locate_resume_says_what_was_damaged_in_one_stderr_line(fact_file, tmp_path, monkeypatch):
    """The installed command: the warning is one line on stderr, the run then ends whole."""
    from kneuron import load_model
    m = _saved_tiny(tmp_path)
    h = load_model(str(m))
    real = _cut_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        _run(h, fact_file, tmp_path / "cut")
    monkeypatch.setattr(loc, "locate_facts", real)
    (tmp_path / "cut" / "parts" / f"{_stem(0, 'c1', 'en')}.facts.parquet").write_bytes(b"")
    exe = os.path.join(os.path.dirname(sys.executable), "kneuron")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([exe, "locate", "-f", str(fact_file), "-o", str(tmp_path / "cut"), "-m", str(m), "--steps", "2",
                        "--device", "cpu", "--resume", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "damaged part" in lines[0] and "fact 'c1' (en)" in lines[0], p.stderr
    out = json.loads(p.stdout)
    assert out["n_facts"] == 5 and out["new_facts"] == 4
    ref = _run(h, fact_file, tmp_path / "ref")
    assert open_run(tmp_path / "cut").facts().equals(ref.facts())
    same_files(tmp_path / "cut", tmp_path / "ref")


def test_cli_locate_out_naming_a_file(fact_file, tmp_path, monkeypatch):
    """Refused in one line before the model is loaded (a load would raise here)."""
    from typer.testing import CliRunner
    import kneuron.cli.runs as cli_runs
    from kneuron.cli import app
    m = _saved_tiny(tmp_path)
    monkeypatch.setattr(cli_runs, "_load", lambda *a, **k: pytest.fail("the model was loaded"))
    f = tmp_path / "x.parquet"
    f.write_bytes(b"PAR1")
    for extra in ([], ["--resume"]):
        r = CliRunner().invoke(app, ["locate", "-f", str(fact_file), "-o", str(f), "-m", str(m), "--steps", "2",
                                     "--device", "cpu", "--json"] + extra)
        assert r.exit_code == 2, (r.stdout, r.stderr, r.exception)
        assert r.stderr == f"kneuron: error: {f}: --out names a file, not a run directory\n" and not r.stdout
    assert f.read_bytes() == b"PAR1"


# ----------------------------------------------------------------------------- dkn.jsonl

def _dkn(h, run, monkeypatch):
    """dkn_from_run with a count of the facts searched."""
    import kneuron.paper.dkn as dkn
    real, searched = dkn.find_dkn, []

    def spy(handle, prompt, target, neurons, cfg=None):
        searched.append(prompt)
        return real(handle, prompt, target, neurons, cfg)
    monkeypatch.setattr(dkn, "find_dkn", spy)
    res = dkn.dkn_from_run(h, run, dkn.DKNConfig(top_n=4))
    monkeypatch.setattr(dkn, "find_dkn", real)
    return res, searched


def test_dkn_cache_with_a_torn_or_bad_line_redoes_those_facts(fact_file, tmp_path, monkeypatch, caplog):
    h = tiny_handle("gpt2")
    run = tmp_path / "r"
    _run(h, fact_file, run)
    first, searched = _dkn(h, run, monkeypatch)
    assert len(searched) == 5
    path = run / "dkn.jsonl"
    whole = path.read_bytes()
    lines = whole.decode().split("\n")                     # header, 5 rows, ""
    # killed while writing the last row: a torn last line without its newline
    path.write_bytes(whole[: len(whole) - len(lines[5]) // 2 - 1])
    with caplog.at_level(logging.WARNING):
        again, searched = _dkn(h, run, monkeypatch)
    said = warnings_of(caplog, "kneuron.paper")
    assert len(said) == 1 and "line 6 (torn)" in said[0] and "redone" in said[0], said
    assert len(searched) == 1 and again.rows == first.rows
    assert (run / DAMAGED / "dkn.jsonl").read_bytes() == whole[: len(whole) - len(lines[5]) // 2 - 1]
    assert path.read_bytes() == whole, "the rewritten file ends each row with its newline"
    # an unreadable line in the middle, and a row that is JSON but not a row
    bad = lines[:2] + ["{\"fact_id\": \"c2\"}", "\x00\x00 garbage"] + lines[4:]
    path.write_text("\n".join(bad), encoding="utf-8")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        third, searched = _dkn(h, run, monkeypatch)
    said = warnings_of(caplog, "kneuron.paper")
    assert len(said) == 1 and "2 damaged lines (line 3, line 4)" in said[0], said
    assert len(searched) == 2 and third.rows == first.rows
    assert (run / DAMAGED / "dkn.jsonl.1").is_file()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fourth, searched = _dkn(h, run, monkeypatch)
    assert not searched and not warnings_of(caplog, "kneuron.paper") and fourth.rows == first.rows


def test_dkn_cache_with_a_torn_header_starts_over(fact_file, tmp_path, monkeypatch, caplog):
    h = tiny_handle("gpt2")
    run = tmp_path / "r"
    _run(h, fact_file, run, limit=2)
    first, _ = _dkn(h, run, monkeypatch)
    (run / "dkn.jsonl").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        again, searched = _dkn(h, run, monkeypatch)
    said = warnings_of(caplog, "kneuron.paper")
    assert len(said) == 1 and "empty" in said[0] and "every fact is redone" in said[0], said
    assert len(searched) == 2 and again.rows == first.rows


# ----------------------------------------------------------------------------- reproduce's step caches

def test_reproduce_recomputes_a_torn_step_cache(fact_file, tmp_path, caplog):
    from kneuron.paper.reproduce import ReproduceConfig, Reproduction
    h = tiny_handle("gpt2")
    cfg = ReproduceConfig(model="tiny", facts=str(fact_file), langs=("en",), steps=2, n_boot=10)
    out = tmp_path / "rep"
    rep = Reproduction(h, cfg, out, show_progress=False, log=lambda s: None)
    made = []

    def make():
        made.append(1)
        return {"en": {"n_facts": 5, "p": 0.25}}
    assert rep._cached("table1", make) == make() and len(made) == 2
    good = (out / "table1.json").read_text()
    (out / "table1.json").write_text(good[: len(good) // 2])       # torn by a full disk
    (out / "timings.json").write_text('{"Module 1 (ig)": 1.')
    made.clear()
    with caplog.at_level(logging.WARNING):
        again = rep._cached("table1", make)
        rep._timed("Table 1", lambda: None)
    said = warnings_of(caplog, "kneuron.paper")
    assert len(said) == 2 and "table1.json: damaged" in said[0] and "recomputed" in said[0], said
    assert "timings.json: damaged" in said[1]
    assert again == make() and len(made) == 2
    assert json.loads((out / "table1.json").read_text()) == again
    assert (out / DAMAGED / "table1.json").read_text() == good[: len(good) // 2]
    assert list(json.loads((out / "timings.json").read_text())) == ["Table 1"]
    made.clear()
    assert rep._cached("table1", make) == again and not made    # now cached again
    # a resumed Reproduction reads the same caches
    rep2 = Reproduction(h, cfg, out, resume=True, show_progress=False, log=lambda s: None)
    assert rep2._cached("table1", make) == again and not made
