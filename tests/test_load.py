"""Model loading as users expect (hub ids download unless offline; --dtype; --device-map), one base class
for expected errors (one line, exit code 2) while bugs keep their traceback, and CLI options that
declare their choices and ranges.

Offline: the hub is never contacted; transformers' from_pretrained is replaced where a download would
happen, and tiny random-weight models are saved to temp directories."""
from __future__ import annotations

import json

import pytest
import torch
import transformers
from typer.testing import CliRunner

import kneuron.models
from kneuron.cli import app
from kneuron.errors import ConfigError, KneuronError, MissingDependencyError
from kneuron.models.load import ModelLoadError, load_model
from support.tiny import tiny_model, word_tokenizer

HUB_ID = "someone/tiny-gpt2"          # never fetched: the fakes below serve a local copy under this name


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    """A tiny gpt2 saved in float16 (so that dtype "auto" differs from the float32 default)."""
    d = tmp_path_factory.mktemp("tiny-gpt2-fp16")
    model, kind = tiny_model("gpt2", dtype=torch.float16)
    model.save_pretrained(d)
    word_tokenizer(kind).save_pretrained(d)
    return str(d)


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, *needles) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert result.stdout == ""
    err = result.stderr
    assert err.startswith("kneuron: error: ") and err.count("\n") == 1, f"not one line: {err!r}"
    for n in needles:
        assert n in err, (n, err)
    return err


class FakeHub:
    """Stands in for the hub: records the keywords of every from_pretrained and serves ``local``
    (or raises ``error``) for the hub id."""

    def __init__(self, monkeypatch, local: str | None = None, error: BaseException | None = None):
        self.calls: list[tuple[str, dict]] = []
        self.local, self.error, self.depth = local, error, 0
        for cls in (transformers.AutoConfig, transformers.AutoTokenizer, transformers.AutoModelForCausalLM,
                    transformers.AutoModelForMaskedLM):
            monkeypatch.setattr(cls, "from_pretrained", self._wrap(cls, cls.from_pretrained))

    def _wrap(self, cls, original):
        def from_pretrained(where, *args, **kwargs):
            if self.depth == 0:                 # kneuron's own calls, not transformers' nested ones
                self.calls.append((cls.__name__, dict(kwargs)))
            if where == HUB_ID:
                if self.error is not None:
                    raise self.error
                where = self.local
            self.depth += 1
            try:
                return original(where, *args, **kwargs)
            finally:
                self.depth -= 1
        return from_pretrained

    def kw(self, key) -> list:
        return [kw.get(key, "absent") for _, kw in self.calls]


# ----------------------------------------------------------------------------- hub ids: download unless offline

def test_hub_id_downloads_unless_offline(monkeypatch, tiny_dir):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    hub = FakeHub(monkeypatch, local=tiny_dir)
    h = load_model(HUB_ID)
    assert h.name == HUB_ID and h.kind == "causal"
    assert len(hub.calls) == 3 and hub.kw("local_files_only") == [False] * 3     # config, tokenizer, model

    hub.calls.clear()
    load_model(HUB_ID, offline=True)
    assert len(hub.calls) == 3 and hub.kw("local_files_only") == [True] * 3

    hub.calls.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")            # the environment's offline mode is honoured
    load_model(HUB_ID)
    assert hub.kw("local_files_only") == [True] * 3

    hub.calls.clear()
    load_model(tiny_dir)                                  # a local directory never goes to the hub
    assert hub.kw("local_files_only") == [True] * 3


@pytest.mark.parametrize("offline", [False, True])
def test_cli_offline_flag_and_environment(monkeypatch, tiny_dir, offline):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    hub = FakeHub(monkeypatch, local=tiny_dir)
    args = (["--offline"] if offline else []) + ["probe", "the capital of", "-m", HUB_ID, "-k", 3, "--json"]
    r = cli(*args)
    assert r.exit_code == 0, (r.stderr, r.exception)
    assert len(json.loads(r.stdout)["top"]) == 3
    assert hub.kw("local_files_only") == [offline] * 3


def test_unreachable_hub_is_one_line(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    FakeHub(monkeypatch, error=OSError("We couldn't connect to 'https://huggingface.co' to load the files.\n"
                                       "Check your internet connection"))
    with pytest.raises(ModelLoadError) as e:
        load_model(HUB_ID)
    msg = str(e.value)
    assert "\n" not in msg and HUB_ID in msg and "couldn't connect" in msg and "--offline" in msg
    assert isinstance(e.value, KneuronError)
    err = one_line_error(cli("probe", "the capital of", "-m", HUB_ID), HUB_ID, "network")
    assert "Traceback" not in err


def test_http_client_errors_are_one_line(monkeypatch):
    """A transport error of the HTTP client (not an OSError) is an expected error too."""
    name = next((m for m in ("httpx", "httpx2") if _has(m)), None)
    if name is None:
        pytest.skip("no httpx")
    import importlib
    httpx = importlib.import_module(name)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    FakeHub(monkeypatch, error=httpx.ConnectError("[Errno -3] Temporary failure in name resolution"))
    with pytest.raises(ModelLoadError, match="name resolution"):
        load_model(HUB_ID)


def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def test_offline_and_not_cached_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")            # the real transformers: the id is not in any cache
    with pytest.raises(ModelLoadError) as e:
        load_model("no-such-owner/no-such-model-xyz")
    msg = str(e.value)
    assert "\n" not in msg and "no-such-owner/no-such-model-xyz" in msg
    assert "HF_HUB_OFFLINE" in msg and "hf download" in msg


def test_missing_directory_is_not_sent_to_the_hub(monkeypatch, tmp_path):
    hub = FakeHub(monkeypatch)
    with pytest.raises(ModelLoadError, match="model directory not found"):
        load_model(str(tmp_path / "no" / "such" / "model"))
    assert hub.calls == []


# ----------------------------------------------------------------------------- dtype and device map

def test_dtype(tiny_dir):
    assert load_model(tiny_dir).dtype == torch.float32                 # the default, whatever the checkpoint
    assert load_model(tiny_dir, dtype="bfloat16").dtype == torch.bfloat16
    assert load_model(tiny_dir, dtype=torch.float16).dtype == torch.float16
    assert load_model(tiny_dir, dtype="auto").dtype == torch.float16   # the checkpoint's own
    with pytest.raises(ConfigError, match="dtype"):
        load_model(tiny_dir, dtype="float8")


@pytest.fixture
def loaded(monkeypatch):
    """The handles the CLI loads, and the keywords it loaded them with."""
    seen: list = []
    original = kneuron.models.load_model

    def spy(name, **kw):
        h = original(name, **kw)
        seen.append((kw, h))
        return h
    monkeypatch.setattr(kneuron.models, "load_model", spy)
    return seen


def test_cli_dtype_reaches_the_model(tiny_dir, loaded):
    r = cli("--dtype", "bfloat16", "probe", "the capital of", "-m", tiny_dir, "--target", "paris", "--json")
    assert r.exit_code == 0, (r.stderr, r.exception)
    (kw, h), = loaded
    assert kw["dtype"] == "bfloat16" and h.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in h.model.parameters())
    assert 0 < json.loads(r.stdout)["target"]["p"] <= 1
    loaded.clear()
    assert cli("probe", "the capital of", "-m", tiny_dir, "--json").exit_code == 0    # options do not leak
    (kw, h), = loaded
    assert kw["dtype"] is None and kw["offline"] is None and kw["device_map"] is None
    assert h.dtype == torch.float32


def test_cli_device_map_is_passed_through(monkeypatch, tiny_dir, loaded):
    hub = FakeHub(monkeypatch, local=tiny_dir)
    r = cli("--device-map", "auto", "probe", "the capital of", "-m", tiny_dir, "--json")
    assert r.exit_code == 0, (r.stderr, r.exception)
    (kw, h), = loaded
    assert kw["device_map"] == "auto" and kw["device"] is None        # no .to(device) with a device map
    model_calls = [k for cls, k in hub.calls if cls == "AutoModelForCausalLM"]
    assert [k.get("device_map") for k in model_calls] == ["auto"]
    assert all(k.get("device_map", "absent") == "absent" for cls, k in hub.calls if cls != "AutoModelForCausalLM")


def test_device_map_checks(monkeypatch, tiny_dir):
    with pytest.raises(ConfigError, match="not both"):
        load_model(tiny_dir, device="cpu", device_map="auto")
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "accelerate" else find_spec(name, *a))
    with pytest.raises(ModelLoadError, match="pip install accelerate"):
        load_model(tiny_dir, device_map="auto")


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


# ----------------------------------------------------------------------------- expected errors vs bugs

def test_expected_errors_share_one_base():
    from kneuron.facts import FactError
    from kneuron.facts.templates import QueryError
    from kneuron.models.sites import SiteError
    from kneuron.organisms.plant import PlantError
    from kneuron.runs.ray import RayError
    from kneuron.runs.store import RunStoreError
    for cls, old_base in ((FactError, ValueError), (QueryError, ValueError), (SiteError, ValueError),
                          (ModelLoadError, ValueError), (PlantError, ValueError), (RunStoreError, RuntimeError),
                          (RayError, RuntimeError), (ConfigError, ValueError), (MissingDependencyError, ImportError)):
        assert issubclass(cls, KneuronError) and issubclass(cls, old_base), cls


def _bad_settings():
    from kneuron.attribution import make_method
    from kneuron.attribution.quadrature import nodes
    from kneuron.benchmarks.planted import plant_counterfactuals
    from kneuron.neurons import select
    from kneuron.organisms.train import OrganismConfig, train_organism
    from kneuron.paper.dkn import DKNConfig
    from kneuron.paper.likn import language_independent
    from kneuron.paper.reproduce import ReproduceConfig
    from kneuron.runs.locate import LocateConfig
    yield lambda: make_method("nope")
    yield lambda: make_method("ig", paths="mean")
    yield lambda: nodes("left", 0)
    yield lambda: nodes("nope", 4)
    yield lambda: nodes("trapezoid", 1)
    yield lambda: select(torch.ones(2, 3), 1.5)
    yield lambda: LocateConfig(steps=0).validate()
    yield lambda: LocateConfig(objective="nope").validate()
    yield lambda: LocateConfig(threshold=2.0).validate()
    yield lambda: DKNConfig(top_n=1).validate()
    yield lambda: DKNConfig(t_low=0.5, t_high=0.2).validate()
    yield lambda: ReproduceConfig(model="m", facts="f", langs=()).validate()
    yield lambda: ReproduceConfig(model="m", facts="f", steps=0).validate()
    yield lambda: train_organism([], OrganismConfig(kind="nope"))
    yield lambda: language_independent({}, set(), langs=("en",))
    yield lambda: plant_counterfactuals(None, k=0)


@pytest.mark.parametrize("case", range(16))
def test_bad_settings_are_config_errors(case):
    """Expected problems are ConfigError (caught by the CLI, still a ValueError for library callers)."""
    fn = list(_bad_settings())[case]
    with pytest.raises(ConfigError) as e:
        fn()
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)


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


# ----------------------------------------------------------------------------- a neuron inside the model

def test_check_neurons_is_the_one_range_check():
    from support.tiny import tiny_handle
    h = tiny_handle("gpt2")                                  # 3 layers x 48 neurons
    assert h.check_neurons([(0, 1), (torch.tensor(2), 47.0)]) == [(0, 1), (2, 47)]
    assert h.check_neurons([]) == []
    with pytest.raises(ConfigError) as e:
        h.check_neurons([(0, 0), (3, 0), (9, 9)])
    assert str(e.value) == "neuron (3, 0) is outside tiny-gpt2 (3 layers x 48 neurons): layer 3 is out of range (0-2)"
    with pytest.raises(ConfigError, match=r"^neuron \(1, 48\) is outside .*: neuron 48 is out of range \(0-47\)$"):
        h.check_neurons([(1, 48)])
    with pytest.raises(ConfigError, match=r"^neuron \(-1, 0\) is outside .*: layer -1 is out of range"):
        h.check_neurons([(-1, 0)])

    class Refused(KneuronError, ValueError):
        pass
    with pytest.raises(Refused, match=r"^relation erasure: neuron \(0, -2\) is outside tiny-gpt2 "):
        h.check_neurons([(0, -2)], "relation erasure", error=Refused)
