"""kneuron.cli (the app's global options, _common's declared choices and one-line usage errors): options reach
load_model, expected errors are one line (exit code 2) while bugs keep their traceback, bad option values are
refused before any model is loaded or file written.

Offline: tiny random-weight models are saved to temp directories."""
from __future__ import annotations

import os

import pytest

import kneuron.models
from kneuron.errors import ConfigError, KneuronError
from kneuron.models.load import ModelLoadError
from support.cli import cli, one_line_error, tiny_dir  # noqa: F401 (tiny_dir: a fixture)


def test_global_options_reach_load_model(monkeypatch):
    """What `_load` passes for each combination of the app's global options."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")             # --offline sets it; restored after the test
    calls = []

    def fake(name, **kw):
        calls.append(kw)
        raise ModelLoadError(f"fake: {name}")
    monkeypatch.setattr(kneuron.models, "load_model", fake)
    one_line_error(cli("--offline", "--dtype", "float16", "--device-map", "auto", "probe", "x", "-m", "m1"), "fake: m1")
    one_line_error(cli("probe", "x", "-m", "m2"), "fake: m2")
    assert calls[0] == {"site": None, "device": None, "dtype": "float16", "offline": True, "device_map": "auto"}
    assert calls[1]["dtype"] is None and calls[1]["offline"] is None and calls[1]["device_map"] is None
    one_line_error(cli("--dtype", "float64", "probe", "x"), "--dtype", "float64")
    one_line_error(cli("--device-map", "balanced", "probe", "x"), "--device-map")
    assert len(calls) == 2                                # bad global options fail before any loading


@pytest.mark.parametrize("error", [ConfigError("a bad setting: --x"), KneuronError("something expected")])
def test_expected_error_is_one_line(monkeypatch, tiny_dir, error):
    import kneuron.probe

    def predict(*a, **k):
        raise error
    monkeypatch.setattr(kneuron.probe, "predict", predict)
    one_line_error(cli("probe", "the capital of", "-m", tiny_dir), str(error))


@pytest.mark.parametrize("bug", [ValueError("a bug"), RuntimeError("another bug"), FileNotFoundError("a path bug")])
def test_bugs_keep_their_traceback(monkeypatch, tiny_dir, bug):
    """An exception that is not a KneuronError is not turned into a one-line error."""
    import kneuron.probe

    def predict(*a, **k):
        raise bug
    monkeypatch.setattr(kneuron.probe, "predict", predict)
    r = cli("probe", "the capital of", "-m", tiny_dir)
    assert r.exception is bug and r.exit_code == 1
    assert "kneuron: error" not in r.stderr


def test_bugs_in_locate_keep_their_traceback(monkeypatch, tiny_dir, tmp_path):
    import kneuron.runs.locate

    def locate(*a, **k):
        raise ValueError("bug in locate")
    monkeypatch.setattr(kneuron.runs.locate, "locate", locate)
    r = cli("locate", "-f", "demo-en", "-o", tmp_path / "run", "-m", tiny_dir, "--limit", 1)
    assert isinstance(r.exception, ValueError) and str(r.exception) == "bug in locate"
    assert "kneuron: error" not in r.stderr



@pytest.mark.parametrize("raised,code,line", [
    (KeyboardInterrupt(), 130, "kneuron: error: interrupted; kept in X: continue with --resume"),
    (ConfigError("a bad setting"), 2, "kneuron: error: a bad setting"),
])
def test_one_line_errors_turns_ctrl_c_and_expected_errors_into_one_line(capsys, raised, code, line):
    """The body of a command: Ctrl-C is 'interrupted; <what was kept>' (exit code 130), an expected error its
    message (exit code 2); a bug passes through."""
    import typer

    from kneuron.cli._common import _one_line_errors
    with pytest.raises(typer.Exit) as e:
        with _one_line_errors(interrupted="kept in X: continue with --resume"):
            raise raised
    assert e.value.exit_code == code
    assert capsys.readouterr().err.strip() == line
    with pytest.raises(ValueError, match="a bug"):
        with _one_line_errors(interrupted="unused"):
            raise ValueError("a bug")
    with _one_line_errors(interrupted="unused"):          # nothing raised: nothing said
        pass
    assert capsys.readouterr().err == ""

# ----------------------------------------------------------------------------- declared choices and ranges

def test_declared_choices_match_the_library():
    from kneuron.attribution import METHODS
    from kneuron.cli._common import DeviceMap, DType, Engine, Method, OrganismKind
    from kneuron.models.load import DTYPES
    assert {m.value for m in Method} == set(METHODS)
    assert {d.value for d in DType} == set(DTYPES)
    assert {d.value for d in DeviceMap} == {"auto"}
    assert {e.value for e in Engine} == {"local", "ray"}
    assert {k.value for k in OrganismKind} == {"clm", "mlm"}


BAD_OPTIONS = [
    (["probe", "x", "--top", "0"], "--top"),
    (["probe", "x", "-k", "-3"], "--top"),
    (["bench", "localization", "--steps", "0"], "--steps"),
    (["bench", "localization", "--k", "0"], "--k"),
    (["bench", "speed", "--repeats", "0"], "--repeats"),
    (["plant", "--k", "0"], "--k"),
    (["plant", "--layer", "-1"], "--layer"),
    (["organism", "train", "--kind", "gpt", "--out", "ORG"], "--kind"),
    (["organism", "train", "--epochs", "0", "--out", "ORG"], "--epochs"),
    (["organism", "train", "--target-acc", "1.5", "--out", "ORG"], "--target-acc"),
    (["likn", "-f", "en-zh", "-o", "OUT", "--method", "sgd"], "--method"),
    (["likn", "-f", "en-zh", "-o", "OUT", "--limit", "0"], "--limit"),
    (["likn", "-f", "en-zh", "-o", "OUT", "--steps", "0"], "--steps"),
    (["reproduce", "-m", "x", "-o", "OUT", "--engine", "spark"], "--engine"),
    (["reproduce", "-m", "x", "-o", "OUT", "--workers", "0"], "--workers"),
    (["reproduce", "-m", "x", "-o", "OUT", "--prompts-per-batch", "0"], "--prompts-per-batch"),
    (["reproduce", "-m", "x", "-o", "OUT", "--dkn-max-size", "1"], "--dkn-max-size"),
    (["factcheck", "--run", "OUT", "--n-boot", "0"], "--n-boot"),
    (["factcheck", "--run", "OUT", "--steps", "0"], "--steps"),
    (["facts", "stats"], "name_or_path"),
]


@pytest.mark.parametrize("args,option", BAD_OPTIONS, ids=[" ".join(a[:2]) + " " + o for a, o in BAD_OPTIONS])
def test_bad_option_values_are_one_line_usage_errors(monkeypatch, tmp_path, args, option):
    """Refused by the option's declared choices or range, before any model is loaded or file written."""
    monkeypatch.setattr(kneuron.models, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    args = [str(tmp_path / a) if a in ("ORG", "OUT") else a for a in args]
    err = one_line_error(cli(*args), option)
    assert "--help" in err
    assert list(tmp_path.iterdir()) == []


def test_group_without_command_still_shows_help():
    r = cli("organism")
    assert r.exit_code == 2 and "train" in r.stdout and "kneuron: error" not in r.stderr


def test_model_help_mentions_downloads():
    r = cli("probe", "--help")
    assert r.exit_code == 0
    text = " ".join(r.stdout.split())
    assert "hub id" in text and "already in the local cache" not in text


@pytest.mark.parametrize("verbose", [False, True])
def test_verbose_shows_the_dependencies_logs_and_bars(monkeypatch, tiny_dir, verbose):
    """Without --verbose transformers and huggingface_hub log errors only and draw no bars; with it, their
    defaults (warnings, bars), here and, through KNEURON_VERBOSE, in the processes a command starts."""
    import logging

    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as hf_logging

    from kneuron.models.verbosity import ENV, quiet_dependencies
    # recorded as absent (setenv records the prior state; delenv of an absent name records nothing, and its
    # later call in `finally` would record "1" and restore it at teardown: every later test verbose)
    monkeypatch.setenv(ENV, "0")
    try:
        r = cli(*(["--verbose"] if verbose else []), "probe", "the capital of", "-m", tiny_dir, "--json")
        assert r.exit_code == 0, r.stderr
        level = logging.WARNING if verbose else logging.ERROR
        assert hf_logging.get_verbosity() == level and hub_logging.get_verbosity() == level
        assert hf_logging.is_progress_bar_enabled() is verbose
        assert (os.environ.get(ENV) == "1") is verbose
    finally:
        os.environ.pop(ENV, None)                            # --verbose wrote it directly
        quiet_dependencies()                                 # the suite's quiet state back


def test_every_command_is_built_on_first_use_as_before():
    """The app's commands (cli.COMMANDS, imported when one runs) are all listed by `kneuron --help`, each builds,
    and none grows the shell-completion options of a stand-alone typer app."""
    from kneuron.cli import COMMANDS
    top = cli("--help")
    assert top.exit_code == 0
    for name in COMMANDS:
        assert f" {name} " in top.stdout, name
        r = cli(name, "--help")
        assert r.exit_code == 0 and "Usage:" in r.stdout, (name, r.stderr)
        assert "completion" not in r.stdout, name
    assert cli("no-such-command").exit_code == 2
