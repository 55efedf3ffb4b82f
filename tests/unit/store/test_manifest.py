"""kneuron.store.manifest: run.json written, read, upgraded; the one resume check; timings."""
import json

import pytest

from kneuron.errors import ConfigError
from kneuron.store.atomic import DAMAGED
from kneuron.store.manifest import Manifest, Timings, add_time, check_out, check_resume, differing, upgrade, versions


def test_a_new_manifest_is_written_sorted_and_reads_back(tmp_path):
    m = Manifest.open(tmp_path / "r", {"steps": 20, "model": "m", "langs": ("en", "zh")})
    text = (tmp_path / "r" / "run.json").read_text()
    assert text == json.dumps({"langs": ["en", "zh"], "model": "m", "steps": 20}, indent=2, sort_keys=True) + "\n"
    again = Manifest.open(tmp_path / "r", {"steps": 20, "langs": ["en", "zh"], "model": "m"},
                          resume=True)
    assert again.meta == {"langs": ["en", "zh"], "model": "m", "steps": 20} and m.path == again.path


def test_resume_with_other_settings_names_every_differing_key_in_one_line(tmp_path):
    Manifest.open(tmp_path / "r", {"steps": 20, "model": "m", "seed": 1})
    with pytest.raises(ConfigError) as e:
        Manifest.open(tmp_path / "r", {"steps": 50, "model": "n", "seed": 1}, resume=True)
    assert str(e.value) == (f"cannot resume {tmp_path / 'r'}: model differs (run has 'm', now 'n'), "
                            "steps differs (run has 20, now 50)")
    with pytest.raises(ConfigError, match=r"steps differs \(run has 20, now 50\)$"):
        Manifest.open(tmp_path / "r", {"steps": 50, "other": 1}, resume=True, keys=("steps", "other"))
    # keys present on one side only are not compared when keys are named
    Manifest.open(tmp_path / "r", {"new_key": 1}, resume=True, keys=("new_key",))


def test_differing_compares_as_json_and_whole_dicts_count_missing_keys():
    assert differing({"a": (1, 2)}, {"a": [1, 2]}) == []
    assert differing({"a": 1}, {"a": 1, "b": 2}) == ["b"]
    assert differing({"a": 1, "c": 0}, {"a": 1}, keys=("a", "c")) == []
    # defaults: a key left out on a side (an older manifest, a default config) has its default there
    assert differing({"a": 1}, {"a": 1, "c": 5}, keys=("a", "c"), defaults={"c": 0}) == ["c"]
    assert differing({"a": 1}, {"a": 1, "c": 0}, keys=("a", "c"), defaults={"c": 0}) == []
    assert differing({"a": 1}, {"a": 1}, keys=("a", "c"), defaults={"c": 0}) == []
    with pytest.raises(RuntimeError, match=r"c differs \(run has 0, now 5\)"):
        check_resume("w", {"a": 1}, {"a": 1, "c": 5}, keys=("a", "c"), defaults={"c": 0}, error=RuntimeError)
    with pytest.raises(RuntimeError, match=r"^cannot resume w: b differs \(run has nothing, now 2\); hint$"):
        check_resume("w", {"a": 1}, {"a": 1, "b": 2}, error=RuntimeError, hint="hint")


def test_old_option_names_are_upgraded_on_reading(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text(json.dumps({"method_options": {"prefactor_kind": "x", "k": 1}}))
    m = Manifest.open(tmp_path / "r", resume=True)
    assert m.meta["method_options"] == {"prefactor": "x", "k": 1}
    assert "prefactor_kind" in (tmp_path / "r" / "run.json").read_text()          # the file is left as it is
    assert upgrade({"a": 1}) == {"a": 1}


def test_check_out_and_a_damaged_manifest_are_refused_in_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="--out names a file"):
        check_out(tmp_path / "f")
    with pytest.raises(ConfigError, match="holds no run"):
        check_out(tmp_path / "none", resume=True)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    with pytest.raises(ConfigError, match="already holds a run"):
        check_out(tmp_path / "d")
    (tmp_path / "d" / "run.json").write_text("[1]")
    with pytest.raises(ConfigError, match=r"run.json: damaged \(not a JSON object\)$"):
        Manifest.open(tmp_path / "d", resume=True)


def test_timings_sum_over_sessions_and_a_torn_file_starts_again(tmp_path):
    assert add_time(tmp_path, "a", 1.004) == {"a": 1.0}
    assert Timings(tmp_path).add("a", 2.5) == {"a": 3.5}
    (tmp_path / "timings.json").write_text('{"a": 1.')
    said = []
    assert add_time(tmp_path, "b", 1, warn=said.append) == {"b": 1}
    assert len(said) == 1 and "timings.json: damaged" in said[0] and "start again" in said[0]
    assert (tmp_path / DAMAGED / "timings.json").read_text() == '{"a": 1.'


def test_versions_are_read_without_importing():
    v = versions("pyarrow", "no-such-package-kneuron")
    assert v["kneuron"] and v["pyarrow"] and v["no-such-package-kneuron"] is None and v["python"].count(".") == 2
