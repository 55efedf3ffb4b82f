"""kn-opt: optimise only the value vectors of the fact's knowledge neurons, on ROME's objective.

The neurons (``neurons=`` in the edit's context, else localised with the method's ``localize``, minus
``common=``, as in kn) keep their keys; their value vectors v_i move by δ_i = ‖v_i‖ z_i, z found by Adam
(``v_lr`` 0.02, at most ``v_steps`` 30) on

    the new object's mean NLL over the rewrite prompt bare and behind the model's own prefixes
    + kl_factor * KL(P_edited || P_original) at the last position of "{subject} is a"   (0.0625)
    + v_weight_decay * mean_i ‖z_i‖²                                                    (0.01)

with each ‖z_i‖ clamped to ``bound`` (1: a vector moves by at most its own length) after every step,
stopping once the NLL < 0.05 (the NLL alone: the decay of a full-length move is above that). The edit
writes only those columns (rows of GPT-2's Conv1D). The KL is taken at the prediction position, not at the
subject as in ROME, because the changed vectors act wherever their neurons fire.

Why it is here: it asks whether the knowledge neurons can carry a fact when their values are fitted as
well as ROME's vector is. It is not new: FiNE (Pan et al., ICLR 2025, "Precise Localization of Memories: A
Fine-grained Neuron-level Knowledge Editing Technique") optimises the value vectors (output-projection columns)
of contribution-scored neurons on an NLL + KL objective, and TNF-DA (Zhou et al., AAAI 2025) optimises
targeted neurons' value vectors similarly; kn-opt is that idea on Dai et al.'s knowledge neurons, an ablation
beside kn and rome. The knowledge neurons are largely shared by the relation, so without the relation's common
neurons dropped (``common=``) the new object wins for the relation's other facts too (BENCHMARKS.md,
"Editing methods"). A fact left with no neuron gets, as in kn, an edit that changes nothing (``info["note"]``).
"""
from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch

from kneuron.errors import ConfigError
from kneuron.models import hooks
from kneuron.models.load import ModelHandle
from kneuron.models.sites import is_conv1d, value_vectors
from kneuron.neurons import Neuron

from ..base import Change, Edit, EditContext, Rewrite, value_index
from ..objective import Objective, adam, batch, prefixes, work_dtype
from .kn import NeuronMethod

V_LR, V_STEPS, BOUND, V_WEIGHT_DECAY, KL_FACTOR, STOP = 0.02, 30, 1.0, 0.01, 0.0625, 0.05


@dataclass(frozen=True)
class KnOpt(NeuronMethod):
    """kn-opt (see the module doc); ``info`` holds the neurons, the losses and each vector's relative
    change ‖δ_i‖/‖v_i‖ (≤ ``bound``)."""
    v_lr: float = V_LR
    v_steps: int = V_STEPS
    bound: float = BOUND
    v_weight_decay: float = V_WEIGHT_DECAY
    kl_factor: float = KL_FACTOR
    use_prefixes: bool = True
    stop: float = STOP
    seed: int = 0
    name = "kn-opt"
    help = "the value vectors of the fact's knowledge neurons, optimised on ROME's objective"

    def __post_init__(self):
        super().__post_init__()
        if not self.bound > 0:
            raise ConfigError(f"kn-opt: bound must be > 0, not {self.bound!r}")

    def edit(self, handle: ModelHandle, rewrite: Rewrite, ctx: EditContext = EditContext()) -> Edit:
        t0 = time.perf_counter()
        self.check(handle, rewrite)
        fact = rewrite.fact
        b = batch(handle, rewrite, prefixes(handle, self.seed) if self.use_prefixes else [], kl_at="last")
        used, picked = self.neurons(handle, fact, ctx)
        if not used:                              # as kn: an edit that changes nothing, saying why (info's note)
            return Edit(handle, self.name, rewrite, [], picked, time.perf_counter() - t0)
        groups = _groups(used)
        obj = Objective(handle, b)
        nll0 = float(obj.reference())
        dt = work_dtype(handle)
        state = []                                # (layer, idx, original vectors [k, h], norms [k, 1], z)
        for layer, idx in groups.items():
            v = value_vectors(handle.sites[layer]).detach()[idx].to(dt)
            norms = v.norm(dim=1, keepdim=True).clamp_min(1e-12)
            state.append((layer, idx, v, norms, torch.zeros_like(v, requires_grad=True)))
        bound, kl_factor, v_weight_decay = self.bound, self.kl_factor, self.v_weight_decay

        def loss():
            with _hooks(handle, state):
                nll, kl = obj()
            decay = v_weight_decay * torch.cat([z.pow(2).sum(1) for *_, z in state]).mean()
            total = nll + kl_factor * kl + decay
            return total, {"loss": total.item(), "nll": nll.item(), "kl": kl.item(), "decay": decay.item()}

        def clamp():
            for *_, z in state:
                n = z.norm(dim=1, keepdim=True)
                z.mul_(torch.where(n > bound, bound / n.clamp_min(1e-12), torch.ones_like(n)))

        log = adam([z for *_, z in state], loss, self.v_steps, self.v_lr, clamp, self.stop, stop_on="nll")
        changes, rel = [], []
        for layer, idx, v, norms, z in state:
            proj = handle.sites[layer]
            new = (v + norms * z.detach()).to(handle.sites[layer].weight.dtype)
            name, index = value_index(handle, idx, layer)
            changes.append(Change(name, new if is_conv1d(proj) else new.T.contiguous(), index))
            rel += z.detach().norm(dim=1).tolist()
        info = {**picked, "steps": len(log), "nll_before": nll0, "nll": log[-1]["nll"], "kl": log[-1]["kl"],
                "losses": [s["loss"] for s in log], "relative_change": rel, "bound": bound, "prompts": b.n_prompts}
        return Edit(handle, self.name, rewrite, changes, info, time.perf_counter() - t0)


def _groups(neurons: list[Neuron]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for layer, idx in neurons:
        out.setdefault(layer, []).append(idx)
    return dict(sorted(out.items()))


@contextmanager
def _hooks(handle: ModelHandle, state: list):
    """While inside: each layer's projection adds Σ_i a_i δ_i (its neurons' activations a_i times their
    value changes δ_i = ‖v_i‖ z_i) -- the output the edited weights would give."""
    def adder(ix, norms, z):
        return lambda x, out: out + (x[..., ix].to(z.dtype) @ (norms * z)).to(out.dtype)

    with ExitStack() as stack:
        for layer, idx, v, norms, z in state:
            ix = torch.as_tensor(idx, device=v.device)
            stack.enter_context(hooks.patch(handle, handle.sites[layer], adder(ix, norms, z), on="output",
                                            with_input=True))
        yield
