"""FT-L (Zhu et al. 2020, as the ROME paper and EasyEdit run it): fine-tune ONE layer's MLP output
projection on the new object's NLL after the rewrite prompt, every weight entry kept within
``norm_bound`` of its original value (an L∞ bound, applied after each Adam step).

Defaults: the layer ROME edits (``rome.default_layer``), Adam lr 1e-3 for at most 25 steps, stopping
once the NLL < 0.05, and an L∞ bound of 1e-2. EasyEdit bounds 7B models by 5e-5 (lr 5e-4); on
smollm2-135m a bound that small moves nothing, so the default is the smallest bound that edits there
(the sweep is in BENCHMARKS.md, "Editing methods"). ``use_prefixes=True`` trains on the prompt behind the model's
own prefixes too, and ``kl_factor`` > 0 adds ROME's KL term (both off in FT-L). Works for masked models
too (the new object's tokens masked in the rewrite prompt).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from kneuron.errors import ConfigError
from kneuron.models import hooks
from kneuron.models.load import ModelHandle
from kneuron.models.sites import is_conv1d, value_vectors

from ..base import Change, Edit, EditContext, EditMethod, Rewrite, param_name
from ..objective import Objective, adam, batch, prefixes, work_dtype
from .rome import check_layer

LR, STEPS, NORM_BOUND, STOP = 1e-3, 25, 1e-2, 0.05


@dataclass(frozen=True)
class FT(EditMethod):
    """FT-L at ``layer`` (None: ``rome.default_layer``); ``info`` holds the layer, the losses and the
    largest change of one weight entry (≤ ``norm_bound``)."""
    layer: int | None = None
    norm_bound: float = NORM_BOUND
    lr: float = LR
    steps: int = STEPS
    use_prefixes: bool = False
    kl_factor: float = 0.0
    stop: float = STOP
    seed: int = 0
    name = "ft"
    help = "FT-L: norm-bounded fine-tuning of one layer's MLP output projection"

    def __post_init__(self):
        if not self.norm_bound > 0:
            raise ConfigError(f"ft: norm_bound must be > 0, not {self.norm_bound!r}")

    def edit(self, handle: ModelHandle, rewrite: Rewrite, ctx: EditContext = EditContext()) -> Edit:
        t0 = time.perf_counter()
        self.check(handle, rewrite)
        layer = check_layer(handle, rewrite, self.layer, "ft")
        proj = handle.sites[layer]
        b = batch(handle, rewrite, prefixes(handle, self.seed) if self.use_prefixes else [], kl_at="last")
        obj = Objective(handle, b)
        nll0 = float(obj.reference())
        values = value_vectors(proj).detach()
        d = torch.zeros(values.shape, dtype=work_dtype(handle), device=values.device, requires_grad=True)
        kl_factor, norm_bound = self.kl_factor, self.norm_bound

        def add(x, out):
            return out + (x.to(d.dtype) @ d).to(out.dtype)

        def loss():
            with hooks.patch(handle, proj, add, on="output", with_input=True):
                nll, kl = obj()
            total = nll + kl_factor * kl
            return total, {"loss": total.item(), "nll": nll.item(), "kl": kl.item()}

        log = adam([d], loss, self.steps, self.lr, lambda: d.clamp_(-norm_bound, norm_bound), self.stop)
        d = d.detach()
        new = (values.to(d.dtype) + d).to(values.dtype)
        weight = (new if is_conv1d(proj) else new.T).contiguous()
        info = {"layer": layer, "steps": len(log), "nll_before": nll0, "nll": log[-1]["nll"],
                "losses": [s["loss"] for s in log], "norm_bound": norm_bound, "max_change": float(d.abs().max()),
                "prompts": b.n_prompts}
        return Edit(handle, self.name, rewrite, [Change(param_name(handle, proj.weight), weight)], info,
                    time.perf_counter() - t0)
