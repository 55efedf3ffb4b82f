"""kneuron.models.load: model loading as users expect (hub ids download unless offline; dtype; device map, also
as the CLI passes them), a handle's context length read from its config, the one neuron range check.

Offline: the hub is never contacted; transformers' from_pretrained is replaced where a download would
happen, and tiny random-weight models are saved to temp directories."""
from __future__ import annotations

import json

import pytest
import torch
import transformers

import kneuron.models
import kneuron.models.hub
from kneuron.errors import ConfigError, KneuronError
from kneuron.models.load import ModelLoadError, load_model
from support.cli import cli, one_line_error, tiny_dir  # noqa: F401 (tiny_dir: a fixture)

HUB_ID = "someone/tiny-gpt2"          # never fetched: the fakes below serve a local copy under this name


class FakeHub:
    """Stands in for the hub: answers load_model's probe (reachable, or ``down``: why not), records the
    keywords of every from_pretrained and serves ``local`` (or raises ``error``) for the hub id."""

    def __init__(self, monkeypatch, local: str | None = None, error: BaseException | None = None,
                 down: str | None = None):
        self.calls: list[tuple[str, dict]] = []
        self.local, self.error, self.depth, self.probes = local, error, 0, 0
        monkeypatch.setattr(kneuron.models.hub, "reach", self._reach)
        self.down = down
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

    def _reach(self, *a, **k) -> str | None:
        self.probes += 1
        return self.down

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
    assert hub.probes == 1                                  # the hub asked once, before the download

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
    assert hub.probes == 1                                # nor is the hub asked offline or for a directory


def test_hub_down_reads_a_cached_model_from_the_cache_alone(monkeypatch, tiny_dir):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    hub = FakeHub(monkeypatch, local=tiny_dir, down="[Errno 111] Connection refused")
    monkeypatch.setattr(kneuron.models.hub, "cached", lambda name: name == HUB_ID)
    assert load_model(HUB_ID).name == HUB_ID
    assert hub.kw("local_files_only") == [True] * 3 and hub.probes == 1


def test_hub_down_and_not_cached_is_one_line_before_any_download(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    hub = FakeHub(monkeypatch, down="[Errno -2] Name or service not known")
    monkeypatch.setattr(kneuron.models.hub, "cached", lambda name: False)
    with pytest.raises(ModelLoadError) as e:
        load_model(HUB_ID)
    msg = str(e.value)
    assert "\n" not in msg and HUB_ID in msg and "Name or service not known" in msg
    assert kneuron.models.hub.endpoint() in msg and hub.calls == []              # transformers never asked
    one_line_error(cli("probe", "the capital of", "-m", HUB_ID), HUB_ID, "cannot be reached")


def test_hub_down_and_partly_cached_says_the_hub_is_down(monkeypatch):
    """The config cached, the weights not: the cache alone cannot serve it, and the error says why it was
    the cache alone (the hub down), not that downloads are off."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    FakeHub(monkeypatch, error=OSError("not in the cached files"), down="timed out")
    monkeypatch.setattr(kneuron.models.hub, "cached", lambda name: True)
    with pytest.raises(ModelLoadError, match="cannot be reached \\(timed out\\)"):
        load_model(HUB_ID)


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


@pytest.mark.parametrize("make,expected", [
    (lambda T: T.GPT2Config(n_positions=77), 77),                               # GPT-2's own field name
    (lambda T: T.BertConfig(max_position_embeddings=300), 300),
    (lambda T: T.RobertaConfig(max_position_embeddings=514, pad_token_id=1), 512),   # positions start after pad
    (lambda T: T.BloomConfig(), None),                                          # ALiBi: no limit in the config
    (lambda T: T.LlamaConfig(max_position_embeddings=32768, rope_parameters={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768, "rope_theta": 1e4}), 131072),
    (lambda T: T.LlamaConfig(max_position_embeddings=131072, rope_parameters={        # Llama 3.1: already extended
        "rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "rope_theta": 5e5}), 131072),
])
def test_context_length_from_config(make, expected):
    import transformers as T

    from kneuron.models.load import context_length
    assert context_length(make(T)) == expected


def test_handle_max_positions():
    from support.tiny import tiny_handle
    assert tiny_handle("gpt2").max_positions == 1024
    assert tiny_handle("opt").max_positions == 64         # OPT's learned positions: the config's number
    assert tiny_handle("bloom").max_positions is None
