"""Names and paths -> a ModelHandle: the model (eval, frozen), its tokenizer and its neuron site."""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from kneuron.errors import ConfigError
import kneuron.models.hub as hub
from kneuron.models.capabilities import Capabilities
from kneuron.models.registry import CARDS, ORGANISMS_DIR, ModelLoadError  # noqa: F401 (re-exported)
from kneuron.models.sites import Site, find_site, proj_dims, resolve
from kneuron.models.verbosity import quiet_dependencies

MASKED_TYPES = {"bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert"}
DEFAULT_MODEL = "smollm2-135m"

@dataclass
class ModelHandle:
    model: nn.Module
    tokenizer: object
    kind: str                      # "masked" | "causal"
    name: str
    site: Site
    layers: list[nn.Module] = field(repr=False)
    sites: list[nn.Module] = field(repr=False)   # the output projection of each layer
    # what the fast paths may do with this model: declared by the architecture table or checked once
    capabilities: Capabilities = field(default_factory=Capabilities, init=False, repr=False, compare=False)

    @property
    def n_layers(self) -> int:
        return len(self.sites)

    @property
    def n_neurons(self) -> int:
        return proj_dims(self.sites[0])[0]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def max_positions(self) -> int | None:
        """The model's context: the most tokens one input may hold (special tokens included), from its
        config; None where the config does not say (e.g. ALiBi models such as BLOOM)."""
        return context_length(getattr(self.model, "config", None))

    def check_neurons(self, neurons: Iterable[tuple[int, int]], what: str = "",
                      error: type[Exception] = ConfigError) -> list[tuple[int, int]]:
        """The neurons as (layer, index) ints, in order: the one check that a neuron lies inside this
        model. ``error`` (ConfigError unless given, e.g. EditError) for the first that does not, one line
        naming it, the model's shape and the axis out of range, after ``what: `` when given."""
        out = []
        for layer, idx in neurons:
            layer, idx = int(layer), int(idx)
            if not (0 <= layer < self.n_layers and 0 <= idx < self.n_neurons):
                axis = (f"layer {layer} is out of range (0-{self.n_layers - 1})" if not 0 <= layer < self.n_layers
                        else f"neuron {idx} is out of range (0-{self.n_neurons - 1})")
                head = f"{what}: " if what else ""
                raise error(f"{head}neuron ({layer}, {idx}) is outside {self.name} ({self.n_layers} layers x "
                            f"{self.n_neurons} neurons): {axis}")
            out.append((layer, idx))
        return out

    def __repr__(self) -> str:
        return (f"ModelHandle({self.name!r}, kind={self.kind}, layers={self.n_layers}, "
                f"neurons/layer={self.n_neurons}, site={self.site.layers_path}[i].{self.site.proj_path})")


# config fields that hold the context length, by family (GPT-2 n_positions, MPT max_seq_len, ...)
_CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_seq_len", "max_sequence_length", "seq_length",
                   "n_ctx")
# families whose position ids start after the padding id (fairseq's offset): pad_token_id + 1 fewer usable
_PADDING_OFFSET = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm", "data2vec-text",
                   "ibert"}


def _positive_int(v) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def context_length(config) -> int | None:
    """The most tokens one input may hold for a model with this config, or None where unknown.

    The first of max_position_embeddings / n_positions / max_seq_len / max_sequence_length /
    seq_length / n_ctx that is set (a multimodal config: its text part's); RoBERTa-style embeddings
    lose pad_token_id + 1 positions; RoPE scaling with a factor (yarn, dynamic, linear) extends it to
    factor x the original length where that is more (an extension is never refused)."""
    if config is None:
        return None
    text = getattr(config, "get_text_config", None)
    if callable(text):
        try:
            config = text() or config
        except (TypeError, ValueError, AttributeError):
            pass
    n = next((v for v in (_positive_int(getattr(config, k, None)) for k in _CONTEXT_FIELDS) if v), None)
    if n is None:
        return None
    if getattr(config, "model_type", None) in _PADDING_OFFSET:
        n -= (_positive_int(getattr(config, "pad_token_id", None)) or 0) + 1
    rope = getattr(config, "rope_scaling", None) or getattr(config, "rope_parameters", None)
    if isinstance(rope, dict):
        factor = rope.get("factor")
        if isinstance(factor, (int, float)) and not isinstance(factor, bool) and factor > 1:
            base = _positive_int(rope.get("original_max_position_embeddings")) or n
            n = max(n, int(factor * base))
    return n if n > 0 else None


def _detect_kind(config) -> str:
    archs = " ".join(getattr(config, "architectures", None) or [])
    if "MaskedLM" in archs:
        return "masked"
    if "CausalLM" in archs or "LMHead" in archs:
        return "causal"
    return "masked" if config.model_type in MASKED_TYPES else "causal"


def from_model(model: nn.Module, tokenizer, kind: str | None = None, name: str = "custom",
               site: str | None = None, layers: str | None = None) -> ModelHandle:
    """Wrap an already-built model (eval mode, weights frozen)."""
    kind = kind or _detect_kind(model.config)
    if kind not in ("masked", "causal"):
        raise ModelLoadError(f"kind must be 'masked' or 'causal', not {kind!r}")
    model.eval().requires_grad_(False)
    found = find_site(model, site=site, layers=layers)
    blocks, projs = resolve(model, found)
    if kind == "masked" and getattr(tokenizer, "mask_token_id", None) is None:
        raise ModelLoadError(f"{name}: a masked model needs a tokenizer with a mask token")
    return ModelHandle(model, tokenizer, kind, name, found, blocks, projs)


DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
def _dtype_arg(dtype) -> torch.dtype | str:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype) in DTYPES:
        return DTYPES[str(dtype)]
    raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _unavailable(name: str, e: BaseException, offline: bool, unreachable: str | None = None) -> ModelLoadError:
    """One line for a hub id that could not be fetched: what was tried and what to do (``unreachable``:
    why the hub could not be reached, when only the cache was read because of it)."""
    if unreachable is not None:
        return hub.unreachable(name, unreachable)
    if offline:
        return ModelLoadError(
            f"model {name!r} is not a bundled name ({', '.join(CARDS)}), a local directory, a .gguf file, or a "
            f"hub id in the local Hugging Face cache, and downloads are off (--offline or HF_HUB_OFFLINE=1): "
            f"download it once with network (drop --offline / unset HF_HUB_OFFLINE, or `hf download {name}`) "
            f"or pass a local directory")
    return ModelLoadError(
        f"cannot get model {name!r} from the Hugging Face hub ({_first_line(e)}): it is not a bundled name "
        f"({', '.join(CARDS)}), a local directory or a .gguf file; check the hub id and the network, run "
        f"`hf auth login` for a gated or private model, or use --offline for a copy already in the cache")


def _converted(gguf_path: Path, kind: str) -> str:
    """The cached model directory converted from a GGUF file (``kneuron.models.gguf``), converted now
    (one line on stderr: it takes a minute) when there is none or it is damaged."""
    import sys

    import kneuron.models.gguf as gguf

    def say(msg: str) -> None:
        print(f"kneuron: {msg}", file=sys.stderr, flush=True)
    try:
        d = gguf.converted(gguf_path, kind=kind, progress=say)
        if not _loads(d):
            d = gguf.converted(gguf_path, kind=kind, progress=say, rebuild=True)
    except gguf.GGUFError as e:
        raise ModelLoadError(str(e)) from None
    return str(d)


def _loads(d) -> bool:
    """Whether a converted directory's weights file opens (its header and size agree)."""
    from safetensors import safe_open
    try:
        with safe_open(str(Path(d) / "model.safetensors"), "pt") as f:
            f.keys()
        return True
    except Exception:          # noqa: BLE001 -- any unreadable weights file is converted again
        return False


def load_model(name_or_path: str = DEFAULT_MODEL, kind: str | None = None, site: str | None = None,
               layers: str | None = None, device: str | None = None,
               dtype: torch.dtype | str | None = None, *, offline: bool | None = None,
               device_map: str | dict | None = None) -> ModelHandle:
    """Load a bundled name (``smollm2-135m``, ``gemma3-270m``, ``organism-clm``, ``organism-mlm``:
    ``registry.CARDS``), a ``.gguf`` file, a local directory or a Hugging Face hub id.

    A GGUF (a bundled one or a file) is converted once into a cached model directory
    (``kneuron.models.gguf``) and read from there afterwards.

    Hub ids are downloaded (and cached) as transformers does, unless ``offline`` (default: the
    environment's HF_HUB_OFFLINE=1), where only the local cache is used. Before a download the hub is asked
    once (``kneuron.models.hub``): unreachable, a cached model is read from the cache alone and an uncached
    one is a ModelLoadError within seconds, not the hub client's half minute of retries. ``dtype``: a torch dtype or
    "auto" / "float32" / "bfloat16" / "float16" (default float32). ``device_map`` (e.g. "auto", needs
    accelerate) spreads a model too large for one device over the devices; it excludes ``device``.
    Failures raise a one-line ModelLoadError that names the model and says what to do.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    quiet_dependencies()           # their "Loading weights" bars and log lines: shown only when verbose
    offline = hub.offline() if offline is None else bool(offline)
    torch_dtype = _dtype_arg(dtype)
    if device_map is not None:
        if device:
            raise ConfigError(f"pass a device ({device}) or a device map ({device_map}), not both")
        if importlib.util.find_spec("accelerate") is None:
            raise ModelLoadError("a device map needs accelerate: pip install accelerate")
    extra: dict = {}
    if name_or_path in CARDS:
        where, extra = CARDS[name_or_path].locate()
    elif name_or_path.endswith(".gguf"):
        p = Path(name_or_path)
        if not p.is_file():
            raise ModelLoadError(f"GGUF file not found: {name_or_path}")
        where, extra = str(p.parent.resolve()), {"gguf_file": p.name}
        name_or_path = str(p.resolve())
    else:
        where = name_or_path
        if os.path.isdir(where):          # record local models by absolute path, so runs can be re-opened
            name_or_path = where = str(Path(where).resolve())
        elif hub.looks_like_path(where):
            raise ModelLoadError(f"model directory not found: {where}")
    if "gguf_file" in extra:             # converted once into the cache; later loads read that copy
        gguf_path = Path(where) / extra.pop("gguf_file")
        where = _converted(gguf_path, kind or (CARDS[name_or_path].kind if name_or_path in CARDS else "causal"))
    local = os.path.isdir(where)
    down = None if local else hub.check(name_or_path, offline)
    fetch = {"local_files_only": offline or local or down is not None}
    hub_errors = (OSError, ValueError, *hub.network_errors())
    try:
        config = AutoConfig.from_pretrained(where, **fetch, **extra)
    except hub_errors as e:
        if local:
            raise ModelLoadError(f"{where}: not a Hugging Face model directory ({_first_line(e)})") from None
        raise _unavailable(name_or_path, e, offline, down) from None
    kind = kind or _detect_kind(config)
    auto = AutoModelForMaskedLM if kind == "masked" else AutoModelForCausalLM
    placement = {} if device_map is None else {"device_map": device_map}
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **fetch, **extra)
        model = auto.from_pretrained(where, **fetch, dtype=torch_dtype, **placement, **extra)
    except hub_errors as e:
        if not local and not isinstance(e, ValueError):      # weights or tokenizer not fetched
            raise _unavailable(name_or_path, e, offline, down) from None
        raise ModelLoadError(f"{name_or_path}: cannot load as a {kind} LM ({_first_line(e)})") from None
    if device and device_map is None:
        model.to(device)
    return from_model(model, tokenizer, kind=kind, name=name_or_path, site=site, layers=layers)
