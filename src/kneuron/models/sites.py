"""Where a model keeps its knowledge neurons.

A knowledge neuron is ``(layer, index)``: unit ``index`` of the *input of the MLP's output
projection* in layer ``layer``, i.e. the post-activation value (after GELU, or after
act(gate) * up for gated MLPs) that the projection turns into the residual update.
Column ``index`` of that projection's weight is the neuron's *value vector*.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from kneuron.errors import KneuronError


class Arch(NamedTuple):
    """One family of the architecture table: where its neurons are, and what the attribution engine's
    batching may do with its blocks (verified on a tiny model of each family by
    tests/unit/attribution/test_checks.py; None: not known, checked once per model at run time)."""
    layers: str                   # path of the layer list under model.base_model
    proj: str                     # path of the MLP output projection inside one layer
    staircase: bool | None = True  # a block may run on the first rows of a batch only (its per-row
    #                               tensors have the batch's rows first, so they can be cut to those rows)
    share: bool | None = True     # rows of several prompts may share a batch (padded, with an attention mask)
    prefix: bool | None = True    # causal: single-token rows attend to one shared key/value prefix without
    #                               a copy per row (its attention goes through transformers' attention interface)
    inputs: tuple[str, ...] = ()  # the MLP's input projections inside one layer, the key first (planting
    #                               new neurons grows them; empty: planting not supported)
    width: str | None = None      # the config field holding the MLP width


# model_type -> Arch. One line per family; anything else goes through the structural fallback
# below, or the user names the module by hand (site=..., layers=...); the engine then checks its
# capabilities at run time. The last two columns name the MLP's input projections and width, where
# planting is supported.
GATED, BERT_IN, WIDTH = ("mlp.gate_proj", "mlp.up_proj"), ("intermediate.dense",), "intermediate_size"
ARCHITECTURES: dict[str, Arch] = {
    "bert":        Arch("encoder.layer",     "output.dense",      inputs=BERT_IN, width=WIDTH),  # after GELU
    "roberta":     Arch("encoder.layer",     "output.dense",      inputs=BERT_IN, width=WIDTH),
    "xlm-roberta": Arch("encoder.layer",     "output.dense",      inputs=BERT_IN, width=WIDTH),
    "camembert":   Arch("encoder.layer",     "output.dense",      inputs=BERT_IN, width=WIDTH),
    "electra":     Arch("encoder.layer",     "output.dense",      inputs=BERT_IN, width=WIDTH),
    "distilbert":  Arch("transformer.layer", "ffn.lin2"),
    "gpt2":        Arch("h",                 "mlp.c_proj",        inputs=("mlp.c_fc",), width="n_inner"),  # + mGPT
    "gpt_neo":     Arch("h",                 "mlp.c_proj", prefix=False),
    "gptj":        Arch("h",                 "mlp.fc_out"),
    "gpt_neox":    Arch("layers",            "mlp.dense_4h_to_h", inputs=("mlp.dense_h_to_4h",), width=WIDTH),
    # ALiBi biases reach every block as one [batch x heads, ...] tensor: not cut to a block's rows
    "bloom":       Arch("h",                 "mlp.dense_4h_to_h", staircase=False, prefix=False),
    # Falcon's attention goes through transformers' attention interface from transformers 5.25 on (before,
    # its own code): the shared prefix is checked once per model (its ALiBi variant folds ALiBi into the mask)
    "falcon":      Arch("h",                 "mlp.dense_4h_to_h", prefix=None),
    "opt":         Arch("decoder.layers",    "fc2"),
    "phi":         Arch("layers",            "mlp.fc2"),
    "llama":       Arch("layers",            "mlp.down_proj",     inputs=GATED, width=WIDTH),  # act(gate) * up
    "mistral":     Arch("layers",            "mlp.down_proj",     inputs=GATED, width=WIDTH),
    "qwen2":       Arch("layers",            "mlp.down_proj",     inputs=GATED, width=WIDTH),
    "qwen3":       Arch("layers",            "mlp.down_proj",     inputs=GATED, width=WIDTH),
    "gemma":       Arch("layers",            "mlp.down_proj",     inputs=GATED, width=WIDTH),
    "gemma2":      Arch("layers",            "mlp.down_proj",     inputs=GATED, width=WIDTH),
    # Gemma 3 (gemma3-270m): per-layer-type masks and rope tables are cut like any per-row tensor; its
    # sliding-window layers' caches keep the window's last tokens only, so they are neither cut from the
    # clean pass nor stacked nor shared: prompts then go one per batch, against their own cache (the copy
    # path). share and prefix hold where they run (no prefix cache; every layer full attention)
    "gemma3_text": Arch("layers",            "mlp.down_proj",     inputs=GATED, width=WIDTH),
    "phi3":        Arch("layers",            "mlp.down_proj"),       # after the fused gate_up_proj
    "olmo":        Arch("layers",            "mlp.down_proj",     inputs=GATED, width=WIDTH),
    "olmo2":       Arch("layers",            "mlp.down_proj",     inputs=GATED, width=WIDTH),
}
CAPABILITIES = ("staircase", "share", "prefix")


def model_type(model: nn.Module) -> str | None:
    return getattr(getattr(model, "config", None), "model_type", None)


def declared_capability(model: nn.Module, capability: str) -> bool | None:
    """What the architecture table says of ``capability`` ("staircase", "share", "prefix") for ``model``'s
    family; None where the family is not in the table or the table does not know."""
    if capability not in CAPABILITIES:
        raise KeyError(capability)
    arch = ARCHITECTURES.get(model_type(model))
    return None if arch is None else getattr(arch, capability)


class SiteError(KneuronError, ValueError):
    """The neuron site cannot be found; the message says how to name it by hand."""


@dataclass(frozen=True)
class Site:
    layers_path: str          # e.g. "model.layers" (relative to the full model)
    proj_path: str            # e.g. "mlp.down_proj" (relative to one layer)
    how: str                  # "table" | "structural" | "user"


def is_conv1d(proj: nn.Module) -> bool:
    """GPT-2's Conv1D: a linear map whose weight is stored as [in, out]."""
    return type(proj).__name__ == "Conv1D"


def proj_dims(proj: nn.Module) -> tuple[int, int]:
    """(number of neurons = input width, output width) of a Linear or a GPT-2 Conv1D."""
    if isinstance(proj, nn.Linear):
        return proj.in_features, proj.out_features
    w = getattr(proj, "weight", None)
    if w is not None and w.dim() == 2 and is_conv1d(proj):
        return w.shape[0], w.shape[1]          # Conv1D stores weight as [in, out]
    raise SiteError(f"{type(proj).__name__} is not a linear projection")


def value_vectors(proj: nn.Module) -> torch.Tensor:
    """View [n_neurons, hidden] of the projection's weight: row j is neuron j's value vector."""
    proj_dims(proj)
    return proj.weight if is_conv1d(proj) else proj.weight.T


def as_bsn(x: torch.Tensor, batch: int, seq: int) -> torch.Tensor:
    """A site's input as [batch, seq, neurons] (some families, e.g. OPT, flatten it to [batch*seq, n])."""
    return x if x.dim() == 3 else x.view(batch, seq, x.shape[-1])


def _prefix(model: nn.Module) -> str:
    base = getattr(model, "base_model", model)
    for name, mod in model.named_modules():
        if mod is base:
            return name
    return ""


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _structural(model: nn.Module, n_layers: int | None) -> Site:
    """Longest ModuleList of identical blocks; in a block, the linear map from the widest
    input back to the hidden width (the MLP's output projection)."""
    best = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and (n_layers is None or len(mod) == n_layers):
            if best is None or len(mod) > len(best[1]):
                best = (name, mod)
    if best is None:
        raise SiteError("no list of transformer layers found; pass layers='path.to.layers' and site='mlp.out_proj'")
    layers_path, layers = best
    candidates = []
    for name, mod in layers[0].named_modules():
        try:
            n_in, n_out = proj_dims(mod)
        except SiteError:
            continue
        if n_in > n_out:
            candidates.append((n_in, any(k in name for k in ("mlp", "ffn", "fc", "down", "output", "out")), name))
    if not candidates:
        raise SiteError(f"no MLP output projection found in {layers_path}[0]; pass site='mlp.out_proj'")
    candidates.sort(key=lambda c: (c[1], c[0]), reverse=True)
    return Site(layers_path, candidates[0][2], "structural")


def find_site(model: nn.Module, site: str | None = None, layers: str | None = None) -> Site:
    """Locate the layer list and the output projection for ``model``."""
    arch = ARCHITECTURES.get(model_type(model))
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if arch is not None and layers is None:
        layers_path = _join(_prefix(model), arch.layers)
        found = Site(layers_path, site or arch.proj, "user" if site else "table")
    elif layers is not None:
        found = Site(layers, site or _structural(model, None).proj_path, "user")
    else:
        found = _structural(model, n_layers)
        if site:
            found = Site(found.layers_path, site, "user")
    try:
        proj_dims(model.get_submodule(found.layers_path)[0].get_submodule(found.proj_path))
    except (AttributeError, IndexError, TypeError) as e:
        raise SiteError(f"neuron site {found.layers_path}[i].{found.proj_path} not found in "
                        f"{type(model).__name__}: {e}") from None
    return found


def resolve(model: nn.Module, found: Site) -> tuple[list[nn.Module], list[nn.Module]]:
    """(layer modules, output-projection modules), one per layer."""
    blocks = list(model.get_submodule(found.layers_path))
    return blocks, [b.get_submodule(found.proj_path) for b in blocks]
