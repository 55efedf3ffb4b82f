"""A learned mask over the neurons (the strongest localizer in Chang et al.'s INJ/DEL benchmark, NAACL 2024,
there a HardConcrete mask): one logit θ per neuron of every layer, the neuron's activation at the answer
positions multiplied by σ(θ), θ trained by Adam to keep the answer while keeping as few neurons as it can:

    loss = Σ_k −log p(answer token k | masked model, gold prefix) + l1 · Σ σ(θ)

from θ = ``init`` (every neuron nearly kept) for ``mask_steps`` steps of rate ``lr``. The score of a
neuron is its final θ: the neurons the answer needs are those the penalty could not close. The penalty
is per neuron kept, so its weight does not scale with the model's size. This is the sigmoid relaxation
with an L1 penalty (the issue allows it beside HardConcrete): deterministic, no sampled gates.

Cost: ``mask_steps`` forward and backward passes of the whole prompt (IG: steps x layers rows).
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import torch

from kneuron.attribution.local import Direct
from kneuron.attribution.passes import objective_values
from kneuron.errors import ConfigError
from kneuron.models import hooks

MASK_STEPS, LR, L1, INIT = 100, 0.1, 1e-4, 3.0


@dataclass(frozen=True)
class LearnedMask(Direct):
    """The learned mask (see the module doc). Its options are named apart from ``attribute``'s ``steps``."""
    mask_steps: int = MASK_STEPS
    lr: float = LR
    l1: float = L1
    init: float = INIT
    name = "mask"

    def __post_init__(self):
        def bad(option, want, got):
            raise ConfigError(f"mask {option} must be {want}, not {got!r}")
        if isinstance(self.mask_steps, bool) or not isinstance(self.mask_steps, int) or self.mask_steps < 1:
            bad("mask_steps", "an integer >= 1", self.mask_steps)
        for option in ("lr", "l1"):
            v = getattr(self, option)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                bad(option, "> 0", v)
        if isinstance(self.init, bool) or not isinstance(self.init, (int, float)):
            bad("init", "a number", self.init)

    def run(self, handle, enc, prompt, target, objective):
        dev = handle.device
        ids = torch.tensor([enc.input_ids], device=dev)
        pos = torch.tensor(enc.positions, device=dev)
        theta = torch.full((handle.n_layers, handle.n_neurons), float(self.init), dtype=torch.float32, device=dev,
                           requires_grad=True)
        opt = torch.optim.Adam([theta], lr=self.lr)

        def gate(l):
            def fn(x):
                x = x.clone()
                x[0, pos] = x[0, pos] * torch.sigmoid(theta[l]).to(x.dtype)
                return x
            return fn
        targets = torch.tensor(enc.target_ids, device=dev)
        with ExitStack() as stack:
            for l, site in enumerate(handle.sites):
                stack.enter_context(hooks.patch(handle, site, gate(l), on="input"))
            for _ in range(self.mask_steps):
                with torch.enable_grad():
                    logits = hooks.forward(handle, ids, logits_at=pos).logits[0]
                    nll = -objective_values(logits, targets, "logprob").sum()
                    loss = nll + self.l1 * torch.sigmoid(theta).sum()
                    opt.zero_grad()
                    loss.backward(inputs=[theta])
                opt.step()
        with torch.no_grad():
            logits = hooks.forward(handle, ids, logits_at=pos).logits[0]     # the unmasked model's
        return theta.detach().double().cpu(), logits


__all__ = ["LearnedMask"]
