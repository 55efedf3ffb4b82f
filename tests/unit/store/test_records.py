"""kneuron.store.records: keyed records, per-key atomic commit, damaged records moved aside and not done."""
import json
import pickle

import pytest

from kneuron.errors import ConfigError
from kneuron.store.atomic import DAMAGED
from kneuron.store.records import CONFIG, Blob, JsonLines, Records, key_name, key_of, open_records

PICKLE = Blob(lambda v, f: pickle.dump(v, f), pickle.load, ".pkl")


@pytest.mark.parametrize("key", ["P1", ("P1", "en"), ("a/b", "zh,x"), ".hidden", ("α β", "%")])
def test_key_names_are_safe_and_reversible(key):
    stem = key_name(key)
    assert "/" not in stem and not stem.startswith(".") and key_of(stem) == key


@pytest.mark.parametrize("codec", ["json", PICKLE])
def test_put_get_keys_and_done_from_committed_records_only(tmp_path, codec):
    rec = open_records(tmp_path / "r", codec=codec)
    assert rec.keys() == [] and ("P1", "en") not in rec
    rec.put(("P1", "en"), {"a": 1})
    rec.put(("P2", "en"), {"a": 2})
    (tmp_path / "r" / f"{key_name(('P3', 'en'))}{rec.suffix}.ab12.tmp").write_bytes(b"half")   # a killed put
    assert rec.keys() == [("P1", "en"), ("P2", "en")] and ("P3", "en") not in rec
    assert rec.get(("P2", "en")) == {"a": 2} and dict(rec.items())[("P1", "en")] == {"a": 1} and len(rec) == 2
    rec.clean()
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [f"P1%2Cen{rec.suffix}".replace("%2C", ","),
                                                                 f"P2,en{rec.suffix}"]


@pytest.mark.parametrize("codec", ["json", PICKLE])
@pytest.mark.parametrize("how", ["truncated", "empty", "wrong content"])
def test_a_damaged_record_is_moved_aside_once_and_not_done(tmp_path, codec, how):
    said = []
    rec = Records(tmp_path / "r", codec=codec, need=("a",), root=tmp_path, warn=said.append,
                  check=None if codec == "json" else (lambda v: None if isinstance(v, dict) and "a" in v else "no a"))
    rec.put("k", {"a": 1})
    good = rec.path("k").read_bytes()
    bad = {"truncated": good[: len(good) // 2], "empty": b"",
           "wrong content": json.dumps({"b": 1}).encode() if codec == "json" else pickle.dumps({"b": 1})}[how]
    rec.path("k").write_bytes(bad)
    assert "k" not in rec and rec.keys() == []
    assert len(said) == 1 and "damaged" in said[0] and "\n" not in said[0]
    assert (tmp_path / DAMAGED / rec.path("k").name).read_bytes() == bad
    rec.put("k", {"a": 1})                                   # redone
    assert rec.path("k").read_bytes() == good and rec.get("k") == {"a": 1} and len(said) == 1


def test_a_records_folder_keeps_its_settings_and_refuses_others(tmp_path):
    Records(tmp_path / "r", config={"t": 1}).put("k", {"a": 1})
    assert json.loads((tmp_path / "r" / CONFIG).read_text()) == {"config": {"t": 1}}
    assert Records(tmp_path / "r", config={"t": 1}).keys() == ["k"]
    with pytest.raises(ConfigError, match=r"t differs \(run has 1, now 2\)"):
        Records(tmp_path / "r", config={"t": 2})
    (tmp_path / "r" / CONFIG).write_text("{")               # settings unknown: every record is redone
    said = []
    rec = Records(tmp_path / "r", config={"t": 2}, root=tmp_path, warn=said.append)
    assert rec.keys() == [] and len(said) == 1 and "every record is redone" in said[0]
    assert sorted(p.name for p in (tmp_path / DAMAGED).iterdir()) == [CONFIG, "k.json"]


ROW = lambda i: {"fact_id": f"P{i}", "lang": "en", "groups": [[i]]}  # noqa: E731


def lines(tmp_path, n=3, **kw):
    rec = JsonLines(tmp_path / "x.jsonl", key=("fact_id", "lang"), need=("groups",), config={"t": 1}, **kw)
    for i in range(n):
        if (f"P{i}", "en") not in rec:
            rec.put(ROW(i))
    return rec


def test_json_lines_append_and_read_back(tmp_path):
    rec = lines(tmp_path)
    text = (tmp_path / "x.jsonl").read_text()
    assert text == "".join(json.dumps(r) + "\n" for r in [{"config": {"t": 1}}] + [ROW(i) for i in range(3)])
    again = lines(tmp_path, n=0)
    assert again.keys() == rec.keys() == [(f"P{i}", "en") for i in range(3)] and again.get(("P1", "en")) == ROW(1)
    with pytest.raises(ConfigError, match="t differs"):
        JsonLines(tmp_path / "x.jsonl", key=("fact_id", "lang"), config={"t": 2})
    assert len(JsonLines(tmp_path / "x.jsonl", key=("fact_id", "lang"), config={"t": 2}, fresh=True)) == 0


@pytest.mark.parametrize("how", ["truncated", "torn", "wrong content"])
def test_json_lines_with_damaged_lines_redo_those_records(tmp_path, how):
    lines(tmp_path)
    path = tmp_path / "x.jsonl"
    whole = path.read_bytes()
    bad = {"truncated": whole[:-5], "torn": whole.replace(json.dumps(ROW(1)).encode(), b'{"fact_id": "P1", "la'),
           "wrong content": whole.replace(json.dumps(ROW(1)).encode(), b'{"fact_id": "P1", "lang": "en"}')}[how]
    path.write_bytes(bad)
    said = []
    rec = lines(tmp_path, root=tmp_path, warn=said.append, noun="fact")
    assert len(said) == 1 and "1 damaged line" in said[0] and "redone" in said[0]
    assert ("torn" in said[0]) == (how == "truncated")
    assert (tmp_path / DAMAGED / "x.jsonl").read_bytes() == bad
    assert sorted(rec.keys()) == [(f"P{i}", "en") for i in range(3)]
    rec.compact()
    assert path.read_bytes() == whole if how == "truncated" else sorted(path.read_text().splitlines()) == sorted(
        whole.decode().splitlines())


def test_json_lines_with_a_bad_settings_line_start_over(tmp_path):
    lines(tmp_path)
    (tmp_path / "x.jsonl").write_bytes(b"")
    said = []
    rec = lines(tmp_path, n=0, warn=said.append, noun="fact")
    assert len(rec) == 0 and len(said) == 1 and "empty" in said[0] and "every fact is redone" in said[0]
