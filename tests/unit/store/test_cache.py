"""kneuron.store.cache: one cache directory ($KNEURON_CACHE, else the user cache directory), entries
written atomically, a damaged one rebuilt with one warning."""
import pickle
import sys
import warnings

import pytest

from kneuron.store.cache import Cache, cache_dir, safe_name


def test_the_cache_directory_honours_kneuron_cache_then_the_platform(monkeypatch, tmp_path):
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "c"))
    assert cache_dir("stats") == tmp_path / "c" / "stats"
    monkeypatch.delenv("KNEURON_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):                  # platformdirs on Linux: $XDG_CACHE_HOME/kneuron
        assert cache_dir() == tmp_path / "xdg" / "kneuron"
    assert str(cache_dir()).endswith("kneuron")


def cache(tmp_path):
    return Cache("kind", load=pickle.load, dump=lambda v, f: pickle.dump(v, f), directory=tmp_path, what="thing")


def test_an_entry_is_built_once_then_read(tmp_path):
    built = []
    c = cache(tmp_path)
    for _ in range(2):
        assert c.get_or_build("a.pkl", lambda: built.append(1) or {"x": 1}) == {"x": 1}
    assert built == [1] and [p.name for p in (tmp_path / "kind").iterdir()] == ["a.pkl"]


@pytest.mark.parametrize("how", ["truncated", "empty", "wrong content"])
def test_a_damaged_entry_is_rebuilt_with_one_warning(tmp_path, how):
    c = cache(tmp_path)
    c.put("a.pkl", {"x": 1})
    good = c.path("a.pkl").read_bytes()
    c.path("a.pkl").write_bytes({"truncated": good[:-3], "empty": b"", "wrong content": pickle.dumps([1])}[how])
    built = []
    with pytest.warns(UserWarning, match="a.pkl: damaged or stale thing") as said:
        v = c.get_or_build("a.pkl", lambda: built.append(1) or {"x": 1}, check=lambda v: isinstance(v, dict))
    assert len(said) == 1 and v == {"x": 1} and built == [1] and c.path("a.pkl").read_bytes() == good
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert c.get("a.pkl") == {"x": 1}


def test_a_cache_that_cannot_be_written_is_said_and_skipped(tmp_path):
    (tmp_path / "kind").write_text("a file where the folder should be")
    c = cache(tmp_path)
    with pytest.warns(UserWarning, match="cannot cache thing"):
        assert c.put("a.pkl", 1) is None
    assert safe_name("/models/Org/Model v2/") == "models_Org_Model_v2"
