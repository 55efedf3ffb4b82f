"""store/ under damage and kill -9, once per codec (json, a blob, jsonl, parquet): a record truncated,
torn or holding the wrong content is moved into damaged/ (never deleted), said in one warning line, and
counts as not done; redoing it gives files equal, byte for byte, to those of a run never damaged. A
writer killed with SIGKILL mid-run, resumed, ends with the files of a run never killed."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pytest

from kneuron.store.atomic import DAMAGED
from kneuron.store.parquet import ParquetRecords, Table, stem_of
from kneuron.store.records import Blob, JsonLines, Records

N = 8
BAD = 3                                                     # the record that is damaged
PICKLE = Blob(lambda v, f: pickle.dump(v, f, protocol=4), pickle.load, ".pkl")
TYPES = {"pos": pa.int64(), "id": pa.string(), "x": pa.int64(), "score": pa.float64()}
TABLES = [Table("items", ("pos", "id", "x"), ("pos", "id", "x")), Table("heads", ("pos", "id"), ("pos", "id"))]


def value(i):
    return {"id": f"k{i}", "score": i / 7, "items": [i, i * i]}


class Json:
    """A codec under test: open (a writer), do the missing records, the record's files, finish."""
    def open(self, d, warn):
        return Records(d / "rec", codec="json", need=("id", "score"), root=d, warn=warn)

    def do(self, rec):
        for i in range(N):
            if f"k{i}" not in rec:
                rec.put(f"k{i}", value(i))

    def file(self, d):
        return d / "rec" / f"k{BAD}.json"

    def wrong(self, d):
        return json.dumps({"id": f"k{BAD}"}).encode()        # JSON, but not a record (lacks score)

    def finish(self, rec):
        pass


class Pickled(Json):
    def open(self, d, warn):
        return Records(d / "rec", codec=PICKLE, root=d, warn=warn,
                       check=lambda v: None if isinstance(v, dict) and "score" in v else "not a record")

    def file(self, d):
        return d / "rec" / f"k{BAD}.pkl"

    def wrong(self, d):
        return pickle.dumps(["not", "a", "record"])


class Lines(Json):
    def open(self, d, warn):
        return JsonLines(d / "rec.jsonl", key=("id",), need=("score",), config={"t": 1}, root=d, warn=warn)

    def do(self, rec):
        for i in range(N):
            if (f"k{i}",) not in rec:
                rec.put(value(i))

    def file(self, d):
        return d / "rec.jsonl"

    def finish(self, rec):
        rec.compact(order=[(f"k{i}",) for i in range(N)])

    def damage(self, d, how):
        lines = self.file(d).read_bytes().split(b"\n")      # settings, N rows, ""
        row = lines[1 + BAD]
        lines[1 + BAD] = {"truncated": row[: len(row) // 2], "torn": row[: len(row) // 2] + b"\0" * 8,
                          "wrong content": json.dumps({"id": f"k{BAD}"}).encode()}[how]
        self.file(d).write_bytes(b"\n".join(lines))


class Parquet(Json):
    def open(self, d, warn):
        class Log:
            warning = staticmethod(lambda fmt, *a: warn(fmt % a))
        rec = ParquetRecords(d, tables=TABLES, types=TYPES, noun="record", logger=Log)
        rec.repair()
        rec.done = rec.keys_of(rec.gather()["heads"])
        rec.report(pa.table({"x": []}), "open")
        return rec

    def do(self, rec):
        for i in range(N):
            if (f"k{i}",) not in rec.done:
                rec.put({"pos": i, "id": f"k{i}", "score": i / 7}, {"items": [{"x": x} for x in value(i)["items"]]})

    def file(self, d):
        return d / "parts" / f"{stem_of(BAD, f'k{BAD}')}.heads.parquet"

    def wrong(self, d):
        return (d / "parts" / f"{stem_of(BAD + 1, f'k{BAD + 1}')}.heads.parquet").read_bytes()   # another record's

    def finish(self, rec):
        rec.compact()


CODECS = {"json": Json(), "blob": Pickled(), "jsonl": Lines(), "parquet": Parquet()}


def damage(codec, d, how):
    if hasattr(codec, "damage"):
        return codec.damage(d, how)
    p = codec.file(d)
    good = p.read_bytes()
    p.write_bytes({"truncated": good[: len(good) // 2], "torn": good[: len(good) // 2] + b"\0" * (len(good) // 2),
                   "wrong content": codec.wrong(d)}[how])


def files(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and DAMAGED not in p.relative_to(d).parts}


def run(codec, d, warn=None):
    rec = codec.open(d, warn or (lambda s: pytest.fail(f"warned: {s}")))
    codec.do(rec)
    codec.finish(rec)
    return rec


@pytest.mark.parametrize("how", ["truncated", "torn", "wrong content"])
@pytest.mark.parametrize("name", list(CODECS))
def test_a_damaged_record_is_moved_aside_said_once_and_redone(tmp_path, name, how):
    codec = CODECS[name]
    run(codec, tmp_path / "ref")
    d = tmp_path / "r"
    rec = codec.open(d, lambda s: pytest.fail(s))
    codec.do(rec)                                           # all committed; killed before finishing
    before = codec.file(d).read_bytes()
    damage(codec, d, how)
    bad = codec.file(d).read_bytes()
    said = []
    rec = codec.open(d, said.append)
    if name in ("json", "blob"):
        assert f"k{BAD}" not in rec and f"k{BAD + 1}" in rec
    assert len(said) == 1 and "damaged" in said[0] and "\n" not in said[0], said
    kept = [p.read_bytes() for p in (d / DAMAGED).iterdir()]
    assert bad in kept and before != bad, "moved aside as it was, never deleted"
    codec.do(rec)                                           # only the damaged one is redone
    codec.finish(rec)
    assert len(said) == 1, said
    assert files(d) == files(tmp_path / "ref")


WORKER = r"""
import sys, time
sys.path.insert(0, sys.argv[3])
from test_store import CODECS
from pathlib import Path
codec, d, pause = CODECS[sys.argv[1]], Path(sys.argv[2]), float(sys.argv[4])
import test_store as t
t.N = 150
rec = codec.open(d, lambda s: None)
real = type(rec).put
def slow(self, *a, **k):
    real(self, *a, **k)
    time.sleep(pause)
type(rec).put = slow
codec.do(rec)
codec.finish(rec)
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CODECS))
def test_kill_9_mid_run_then_resume_gives_the_files_of_a_run_never_killed(tmp_path, name):
    here = os.path.dirname(__file__)

    def start(d, pause):
        return subprocess.Popen([sys.executable, "-c", WORKER, name, str(d), here, str(pause)])

    def written(d):
        return sum(1 for p in d.rglob("*") if p.is_file()) + (os.path.getsize(d / "rec.jsonl")
                                                              if (d / "rec.jsonl").is_file() else 0)
    assert start(tmp_path / "ref", 0).wait() == 0
    d = tmp_path / "r"
    proc = start(d, 0.005)
    deadline = time.monotonic() + 120
    while (not d.exists() or written(d) < 40) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, "the writer ended before it could be killed mid-run"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert start(d, 0).wait() == 0
    assert files(d) == files(tmp_path / "ref")
