"""Fine-tuning ONE layer's MLP output projection, every entry kept within an L∞ bound of its original value
(clamped after each Adam step, as ROME's ``baselines/ft/ft_main.py`` does). Two losses, EasyEdit's two
``objective_optimization`` settings (``hparams/FT/llama3.2-3b.yaml``):

    ft-l  ``FtL``  FT-L, ROME's: -log p of every token of the new object, all read at the LAST position of
                   the bare rewrite prompt (EasyEdit's "prompt_last"), averaged over the object's tokens.
                   ROME/EasyEdit's GPT-2 XL FT-L (``hparams/FT/gpt2-xl_constr.json``): layer 0, Adam lr 5e-4,
                   weight decay 0, at most 25 steps (none once the loss < 1e-2), ε = 5e-4, on the module's
                   weight and bias. ROME's ε is an absolute number, not scaled to the weight's size;
                   ``relative=True`` reads ``norm_bound`` as a fraction of the weight's mean |w| instead,
                   so one bound means the same on models whose weights differ in size. Causal models only.
    ft-m  ``FtM``  EasyEdit's FT-M ("target_new"): the new object's full teacher-forced NLL after the prompt.
                   kneuron's defaults, chosen on smollm2-135m (BENCHMARKS.md, "Editing methods"): ROME's
                   layer (``rome.default_layer``; in the bench, ROME's sweep's), lr 1e-3, at most 25 steps
                   (stop once the NLL < 0.05), ε = 1e-2 (EasyEdit bounds 7B models by 5e-5; on smollm2 a
                   bound that small moves nothing). ``use_prefixes`` / ``kl_factor`` add ROME's prefixes and
                   KL term (both off). Works for masked models too (the object's tokens masked).

``ft`` is ft-m's old name, still accepted (``registry.ALIASES``). Table 4 of the ROME paper has FT-L (and
FT: the same loss at layer 1 with no bound, ``gpt2-xl_unconstr.json``); FT-M has no row there.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from kneuron.errors import ConfigError
from kneuron.models import hooks
from kneuron.models.load import ModelHandle
from kneuron.models.sites import is_conv1d, value_vectors

from ..base import Change, Edit, EditContext, EditMethod, Rewrite, param_name
from ..objective import Batch, Objective, adam, batch, prefixes, work_dtype
from .rome import check_layer

LR, STEPS, NORM_BOUND, STOP = 1e-3, 25, 1e-2, 0.05                  # ft-m (kneuron's)
L_LR, L_STEPS, L_NORM_BOUND, L_STOP, L_LAYER = 5e-4, 25, 5e-4, 1e-2, 0   # ft-l (ROME's gpt2-xl_constr.json)
# the bounds the bench's ft-l sweep tries (at layer 0) before its layer: ROME set ε per model (5e-4 for GPT-2 XL,
# 5e-5 for GPT-J); on smollm2-135m (mean |w| ~0.15) 5e-4 moves nothing; 25 Adam steps of 5e-4 move no entry
# much beyond 1e-2
L_BOUNDS = (5e-4, 1e-3, 2e-3, 5e-3, 1e-2)


def _bounded(name: str, norm_bound: float) -> None:
    if not norm_bound > 0:
        raise ConfigError(f"{name}: norm_bound must be > 0, not {norm_bound!r}")


def _tune(handle: ModelHandle, proj: torch.nn.Module, obj: Objective, *, lr: float, steps: int, stop: float,
          bound: float, kl_factor: float = 0.0, bias: bool = False):
    """Adam on d (and on db, the bias's change, where ``bias`` and the projection has one) added to the
    projection's weight, each entry clamped to [-bound, bound] after every step: (d, db or None, log)."""
    values = value_vectors(proj).detach()
    d = torch.zeros(values.shape, dtype=work_dtype(handle), device=values.device, requires_grad=True)
    db = None
    if bias and getattr(proj, "bias", None) is not None:
        db = torch.zeros(proj.bias.shape, dtype=d.dtype, device=values.device, requires_grad=True)

    def add(x, out):
        out = out + (x.to(d.dtype) @ d).to(out.dtype)
        return out if db is None else out + db.to(out.dtype)

    def loss():
        with hooks.patch(handle, proj, add, on="output", with_input=True):
            nll, kl = obj()
        total = nll + kl_factor * kl
        return total, {"loss": total.item(), "nll": nll.item(), "kl": kl.item()}

    def clamp():
        d.clamp_(-bound, bound)
        if db is not None:
            db.clamp_(-bound, bound)

    log = adam([d] if db is None else [d, db], loss, steps, lr, clamp, stop)
    return d.detach(), None if db is None else db.detach(), log


def _changes(handle: ModelHandle, proj: torch.nn.Module, d: torch.Tensor, db: torch.Tensor | None) -> list[Change]:
    values = value_vectors(proj).detach()
    new = (values.to(d.dtype) + d).to(values.dtype)
    out = [Change(param_name(handle, proj.weight), (new if is_conv1d(proj) else new.T).contiguous())]
    if db is not None:
        b = proj.bias.detach()
        out.append(Change(param_name(handle, proj.bias), (b.to(db.dtype) + db).to(b.dtype)))
    return out


def prompt_last(b: Batch) -> Batch:
    """``b`` with each prompt's every target token read at that prompt's first target position -- the
    bare prompt's last position, the next-token prediction (ROME's FT-L loss); the weights (mean over the
    object's tokens, then over prompts) unchanged."""
    rows, first = b.rows.tolist(), {}
    for r, c in zip(rows, b.cols.tolist()):
        first.setdefault(r, c)
    return dataclasses.replace(b, cols=torch.tensor([first[r] for r in rows], dtype=b.cols.dtype,
                                                    device=b.cols.device))


@dataclass(frozen=True)
class FtM(EditMethod):
    """FT-M at ``layer`` (None: ``rome.default_layer``); ``info`` holds the layer, the losses and the
    largest change of one weight entry (≤ ``norm_bound``)."""
    layer: int | None = None
    norm_bound: float = NORM_BOUND
    lr: float = LR
    steps: int = STEPS
    use_prefixes: bool = False
    kl_factor: float = 0.0
    stop: float = STOP
    seed: int = 0
    name = "ft-m"
    help = "FT-M (EasyEdit): norm-bounded fine-tuning of one layer's MLP output projection on the teacher-forced NLL"

    def __post_init__(self):
        _bounded(self.name, self.norm_bound)

    def edit(self, handle: ModelHandle, rewrite: Rewrite, ctx: EditContext = EditContext()) -> Edit:
        t0 = time.perf_counter()
        self.check(handle, rewrite)
        layer = check_layer(handle, rewrite, self.layer, self.name)
        proj = handle.sites[layer]
        b = batch(handle, rewrite, prefixes(handle, self.seed) if self.use_prefixes else [], kl_at="last")
        obj = Objective(handle, b)
        nll0 = float(obj.reference())
        d, _, log = _tune(handle, proj, obj, lr=self.lr, steps=self.steps, stop=self.stop, bound=self.norm_bound,
                          kl_factor=self.kl_factor)
        info = {"layer": layer, "steps": len(log), "nll_before": nll0, "nll": log[-1]["nll"],
                "losses": [s["loss"] for s in log], "norm_bound": self.norm_bound, "max_change": float(d.abs().max()),
                "prompts": b.n_prompts}
        return Edit(handle, self.name, rewrite, _changes(handle, proj, d, None), info, time.perf_counter() - t0)


@dataclass(frozen=True)
class FtL(EditMethod):
    """ROME's FT-L at ``layer`` (default 0, ROME's for GPT-2 XL; None: ``rome.default_layer``; the bench sweeps
    ε over ``swept_bounds`` at this layer, then the layer as ROME's at that ε, ``sweeps_layer``): ``info`` holds the layer, the losses (the first: the unedited model's), ε and the
    largest change of one entry (≤ ε)."""
    layer: int | None = L_LAYER
    norm_bound: float = L_NORM_BOUND
    relative: bool = False
    lr: float = L_LR
    steps: int = L_STEPS
    stop: float = L_STOP
    bias: bool = True
    name = "ft-l"
    help = "FT-L (ROME's): one layer's MLP output projection fine-tuned on the last prompt position, L∞-bounded"
    causal_only: ClassVar[bool] = True
    sweeps_layer: ClassVar[bool] = True
    swept_bounds: ClassVar[tuple[float, ...]] = L_BOUNDS

    def __post_init__(self):
        _bounded(self.name, self.norm_bound)

    def epsilon(self, proj: torch.nn.Module) -> float:
        """The L∞ bound on this projection (its bias too): ``norm_bound``, times the weight's mean |w| if
        ``relative``."""
        if not self.relative:
            return self.norm_bound
        return self.norm_bound * float(proj.weight.detach().abs().double().mean())

    def edit(self, handle: ModelHandle, rewrite: Rewrite, ctx: EditContext = EditContext()) -> Edit:
        t0 = time.perf_counter()
        self.check(handle, rewrite)
        layer = check_layer(handle, rewrite, self.layer, self.name)
        proj = handle.sites[layer]
        b = prompt_last(batch(handle, rewrite, [], kl_at="last"))
        obj = Objective(handle, b)
        nll0 = float(obj.reference())
        eps = self.epsilon(proj)
        d, db, log = _tune(handle, proj, obj, lr=self.lr, steps=self.steps, stop=self.stop, bound=eps, bias=self.bias)
        info = {"layer": layer, "objective": "prompt_last", "steps": len(log), "nll_before": nll0,
                "nll": log[-1]["nll"], "losses": [s["loss"] for s in log], "norm_bound": self.norm_bound,
                "relative": self.relative, "epsilon": eps,
                "max_change": max(float(d.abs().max()), 0.0 if db is None else float(db.abs().max())),
                "bias": db is not None}
        return Edit(handle, self.name, rewrite, _changes(handle, proj, d, db), info, time.perf_counter() - t0)


FT = FtM                     # the class's old name (the method's old name, "ft", is registry.ALIASES')
