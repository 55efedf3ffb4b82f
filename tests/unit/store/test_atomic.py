"""kneuron.store.atomic: writes that a kill cannot tear, damaged files moved aside (never deleted)."""
import json
import os
import stat

import pytest

from kneuron.store import atomic
from kneuron.store.atomic import DAMAGED, StoreError, move_aside, read_json, write_json, write_text, write_with


def test_writes_replace_whole_and_leave_no_temporary_file(tmp_path):
    p = tmp_path / "sub" / "a.json"
    write_json(p, {"b": 1, "a": [1, 2]}, indent=2, sort_keys=True, newline=True)
    assert p.read_text() == json.dumps({"a": [1, 2], "b": 1}, indent=2, sort_keys=True) + "\n"
    write_text(p, "new")
    assert p.read_text() == "new" and sorted(x.name for x in p.parent.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "a.txt"
    write_text(p, "old")

    def dies(f):
        f.write(b"half")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        write_with(p, dies)
    assert p.read_text() == "old" and [x.name for x in tmp_path.iterdir()] == ["a.txt"]


def test_every_write_is_fsynced_file_then_folder(tmp_path, monkeypatch):
    synced, real = [], os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)) or real(fd))
    write_text(tmp_path / "a", "x")
    assert synced == [False, True]


def test_files_get_the_usual_permissions_not_mkstemps(tmp_path):
    p = write_text(tmp_path / "a", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask


def test_move_aside_keeps_each_copy_and_says_one_line(tmp_path):
    said = []
    for text in ("one", "two"):
        p = tmp_path / "x" / "t.json"
        write_text(p, text)
        where = move_aside(p, "torn", root=tmp_path, warn=said.append)
        assert where.parent == tmp_path / DAMAGED and not p.exists()
    assert [p.read_text() for p in sorted((tmp_path / DAMAGED).iterdir())] == ["one", "two"]
    assert [p.name for p in sorted((tmp_path / DAMAGED).iterdir())] == ["t.json", "t.json.1"]
    assert len(said) == 2 and said[1] == f"{tmp_path / 'x' / 't.json'}: damaged (torn); kept as " \
                                         f"{tmp_path / DAMAGED / 't.json.1'} and it is redone"
    write_text(tmp_path / "q", "x")
    assert move_aside(tmp_path / "q").parent == tmp_path / DAMAGED          # default: beside it


@pytest.mark.parametrize("data,why", [(b"", "0 bytes"), (b'{"a": 1', "Expecting"), (b"[1]", "not a JSON object"),
                                      (b'{"b": 1}', "lacks the key a"), (b"\xff\xfe", "decode")])
def test_read_json_moves_a_damaged_file_aside_once(tmp_path, data, why):
    p = tmp_path / "r.json"
    p.write_bytes(data)
    said = []
    assert read_json(p, need=("a",), warn=said.append, then="recomputed") is None
    assert len(said) == 1 and why in said[0] and said[0].endswith("and recomputed") and "\n" not in said[0]
    assert (tmp_path / DAMAGED / "r.json").read_bytes() == data and not p.exists()
    assert read_json(p, need=("a",), warn=said.append) is None and len(said) == 1     # missing: silent


def test_read_json_reads_good_and_a_reader_refuses_without_moving(tmp_path):
    p = tmp_path / "r.json"
    p.write_text('{"a": 2}')
    assert read_json(p, need=("a",)) == {"a": 2}
    p.write_text("{")
    with pytest.raises(StoreError, match="r.json: damaged"):
        read_json(p, readonly=True)
    assert p.exists() and not (tmp_path / DAMAGED).exists()
