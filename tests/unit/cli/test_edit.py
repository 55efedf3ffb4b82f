"""kneuron.cli.edit: ``--option METHOD.NAME=VALUE`` read with the registry's types, the method lists and help
from the registry."""
from __future__ import annotations

import pytest

from kneuron.cli.edit import FILTERED, METHOD_HELP, method_options
from kneuron.editing import METHODS
from kneuron.errors import ConfigError


def test_options_are_typed_and_nested():
    got = method_options(["rome.clamp_norm=8", "rome.insert=mean", "kn.localize.steps=20", "kn.localize.rule=left",
                          "kn.lambda2=3", "ft.layer=null", "rome.corpus=[\"a\", \"b\"]"], ["kn", "rome", "ft"])
    assert got == {"rome": {"clamp_norm": 8.0, "insert": "mean", "corpus": ["a", "b"]},
                   "kn": {"localize": {"steps": 20, "rule": "left"}, "lambda2": 3.0}, "ft": {"layer": None}}
    assert type(got["rome"]["clamp_norm"]) is float and type(got["kn"]["localize"]["steps"]) is int
    merged = method_options(['kn.localize={"steps": 3}', "kn.localize.rule=left"], ["kn"])
    assert merged == {"kn": {"localize": {"steps": 3, "rule": "left"}}}


@pytest.mark.parametrize("item, words", [
    ("rome.clamp_norm=big", ["rome.clamp_norm", "float", "'big'"]),
    ("rome.nope=1", ["rome has no option 'nope'"]),
    ("kn.localize.stepz=1", ["kn.localize has no option 'stepz'"]),
    ("ft.norm_bound=0", ["norm_bound must be > 0"]),                  # the value checked by the method itself
    ("kn.localize.steps=0", ["steps"]),
    ("scale:1", ["METHOD.NAME=VALUE"]),
    ("ft.layer=2", ["ft is not among the methods"]),
    ("mend.layer=2", ["unknown editing method 'mend'"]),
])
def test_bad_options_are_one_line(item, words):
    with pytest.raises(ConfigError) as err:
        method_options([item], ["kn", "rome"] + (["ft"] if item.startswith("ft.norm") else []))
    msg = str(err.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_help_and_lists_come_from_the_registry():
    assert all(f"{name}: {cls.help}" in METHOD_HELP for name, cls in METHODS.items())
    assert FILTERED.split(", ") == [n for n, c in METHODS.items() if c.common_filter]


def test_an_old_method_name_is_said_once_on_stderr(capsys):
    """``ft`` (ft-m's old name) is accepted, with a one-line note on stderr; --option items say nothing."""
    from kneuron.cli.edit import _check_method
    _check_method("ft")
    _check_method("ft-m")
    _check_method("ft", say=False)
    err = capsys.readouterr().err
    assert err == "note: editing method 'ft' is now 'ft-m' (its old name still works)\n"
