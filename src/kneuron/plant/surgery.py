"""Weight surgery: grow every layer's MLP by k inert neurons (zero weights: activation exactly 0, no effect).

Only the families whose architecture-table line names the MLP's input projections and width
(``LAYOUTS``) can be grown; GPT-2's Conv1D stores its weights transposed (``key_rows``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from kneuron.models.load import ModelHandle
from kneuron.models.sites import ARCHITECTURES, Arch, is_conv1d
from kneuron.plant.types import PlantError

LAYOUTS = {t: a for t, a in ARCHITECTURES.items() if a.inputs}     # the families planting can grow


def layout_for(handle: ModelHandle) -> Arch:
    """The architecture table's entry of the model's family, where it names the MLP's inputs."""
    mt = getattr(handle.model.config, "model_type", None)
    if mt not in LAYOUTS:
        raise PlantError(f"planting supports the MLPs of {', '.join(sorted(LAYOUTS))}; "
                         f"{handle.name} is {mt!r}")
    lay = LAYOUTS[mt]
    if handle.site.proj_path != lay.proj:
        raise PlantError(f"planting needs the neuron site {lay.proj}, not {handle.site.proj_path}")
    return lay


def key_rows(proj: nn.Module) -> torch.Tensor:
    """View [units, hidden] of an input projection's weight."""
    return proj.weight.T if is_conv1d(proj) else proj.weight


def _append_zeros(w: torch.Tensor, dim: int, k: int) -> nn.Parameter:
    """``w`` with k zero slices appended along ``dim``, as a frozen parameter."""
    shape = list(w.shape)
    shape[dim] = k
    return nn.Parameter(torch.cat([w.detach(), w.new_zeros(shape)], dim), requires_grad=False)


def _grow_units(proj: nn.Module, k: int) -> None:
    """Input projection: k more output units (zero weights and bias)."""
    proj.weight = _append_zeros(proj.weight, 1 if is_conv1d(proj) else 0, k)
    if proj.bias is not None:
        proj.bias = _append_zeros(proj.bias, 0, k)
    if is_conv1d(proj):
        proj.nf += k
    else:
        proj.out_features += k


def _grow_inputs(proj: nn.Module, k: int) -> None:
    """Output projection: k more input units (zero value vectors)."""
    n_in = proj.weight.shape[0] if is_conv1d(proj) else proj.weight.shape[1]
    proj.weight = _append_zeros(proj.weight, 0 if is_conv1d(proj) else 1, k)
    if is_conv1d(proj):
        proj.nx = getattr(proj, "nx", n_in) + k
    else:
        proj.in_features += k


def grow(model: nn.Module, blocks: Sequence[nn.Module], lay: Arch, k: int) -> None:
    """Add k inert neurons (zero weights) to the MLP of every block; update the config's width."""
    with torch.no_grad():
        for b in blocks:
            for p in lay.inputs:
                _grow_units(b.get_submodule(p), k)
            _grow_inputs(b.get_submodule(lay.proj), k)
    cfg = model.config
    old = getattr(cfg, lay.width, None)
    if old is None:                          # gpt2: n_inner None means 4 x hidden
        old = key_rows(blocks[0].get_submodule(lay.inputs[0])).shape[0] - k
    setattr(cfg, lay.width, old + k)
