"""The attribution baselines a localization paper sets beside IG, behind ``attribute``'s interface (the
same ``Attribution``: one score per neuron of every layer), read from one forward pass at the point itself,
with no path integral:

    activation   |a|            the activation's magnitude at the answer position (no gradient)
    gradient     |∂F/∂a|        the objective's sensitivity to the neuron there
    actgrad      a · ∂F/∂a      activation × gradient: IG's first-order term (IG with one node at α = 1)
    random       uniform [0, 1), seeded by the method's ``seed`` and the (prompt, target) pair: the floor

F is the objective ``attribute`` is given (p or log p of the answer token after the gold prefix), as IG's.
A multi-token answer sums its tokens' scores, token k's read at the position that predicts it and
differentiated for F_k alone (later tokens' objectives are not, as IG's rows do not). The learned mask is
``mask.LearnedMask``. These methods know the model only through its hook points (``models.hooks``).
"""
from __future__ import annotations

import zlib
from contextlib import ExitStack
from dataclasses import dataclass, fields
from typing import ClassVar

import torch

from kneuron.attribution.passes import clean_pass, objective_values
from kneuron.errors import ConfigError
from kneuron.models import hooks
from kneuron.models.load import ModelHandle
from kneuron.models.targets import Encoded


@dataclass(frozen=True)
class Direct:
    """A method that scores the neurons at the point itself (no path; ``attribute`` calls ``run``)."""
    name: ClassVar[str] = ""
    needs_grad: ClassVar[bool] = True

    def params(self) -> dict:
        """The options, as recorded (run.json ``method_options``): one name per knob."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def proper(self) -> bool:
        return False                      # no completeness: nothing is integrated

    def score(self, acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
        """[L, N] scores of one answer token from its activations and gradients [L, N]."""
        raise NotImplementedError

    def run(self, handle: ModelHandle, enc: Encoded, prompt: str, target: str, objective: str
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores [L, N] float64 on the CPU, logits [K, V] at the answer positions) of one encoded item."""
        ids = torch.tensor([enc.input_ids], device=handle.device)
        if not self.needs_grad:
            clean = clean_pass(handle, ids, enc.positions)
            acts = clean.acts[0].double()                                  # [K, L, N]
            scores = sum(self.score(acts[k], None) for k in range(acts.shape[0]))
            return scores.cpu(), clean.logits[0]
        acts, grads, logits = point_gradients(handle, ids, enc.positions, enc.target_ids, objective)
        scores = sum(self.score(acts[k], grads[k]) for k in range(acts.shape[0]))
        return scores.cpu(), logits


def point_gradients(handle: ModelHandle, ids: torch.Tensor, positions: list[int], targets: list[int],
                    objective: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(activations [K, L, N], ∂F_k/∂a at position k [K, L, N], logits [K, V]) in one forward pass: a zero
    probe added to every layer's activations at the answer positions (so that each derivative is the total
    one, every later layer live), F_k differentiated alone for each token k."""
    pos = torch.tensor(positions, device=ids.device)
    probes: list[torch.Tensor | None] = [None] * handle.n_layers
    seen: list[torch.Tensor | None] = [None] * handle.n_layers

    def probe(l):
        def fn(x):
            seen[l] = x[0, pos].detach()                                   # [K, N]
            probes[l] = torch.zeros_like(seen[l], requires_grad=True)
            x = x.clone()
            x[0, pos] = x[0, pos] + probes[l].to(x.dtype)
            return x
        return fn
    with ExitStack() as stack, torch.enable_grad():
        for l, site in enumerate(handle.sites):
            stack.enter_context(hooks.patch(handle, site, probe(l), on="input"))
        logits = hooks.forward(handle, ids, logits_at=pos).logits[0]        # [K, V]
        grads = []
        for k, t in enumerate(targets):
            f = objective_values(logits[k], int(t), objective)
            g = torch.autograd.grad(f, probes, retain_graph=k + 1 < len(targets))
            grads.append(torch.stack([x[k] for x in g]))                     # [L, N]
    acts = torch.stack(seen, dim=1)                                          # [K, L, N]
    return acts.double(), torch.stack(grads).double(), logits.detach()


@dataclass(frozen=True)
class Activation(Direct):
    """|a| at the answer position: which neurons fire, whatever they do to the answer."""
    name = "activation"
    needs_grad = False

    def score(self, acts, grads):
        return acts.abs()


@dataclass(frozen=True)
class Gradient(Direct):
    """|∂F/∂a| at the answer position: how much the answer moves with the neuron, whether it fires or not."""
    name = "gradient"

    def score(self, acts, grads):
        return grads.abs()


@dataclass(frozen=True)
class ActGrad(Direct):
    """a · ∂F/∂a at the answer position: the first-order share of each neuron in F (signed; one backward)."""
    name = "actgrad"

    def score(self, acts, grads):
        return acts * grads


@dataclass(frozen=True)
class Random(Direct):
    """Uniform scores, seeded by ``seed`` and the (prompt, target) pair: what finding nothing scores."""
    seed: int = 0
    name = "random"
    needs_grad = False

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"random seed must be an integer, not {self.seed!r}")

    def run(self, handle, enc, prompt, target, objective):
        key = zlib.crc32(f"{self.seed}\x00{prompt}\x00{target}".encode())
        gen = torch.Generator().manual_seed(key)
        scores = torch.rand(handle.n_layers, handle.n_neurons, generator=gen, dtype=torch.float64)
        ids = torch.tensor([enc.input_ids], device=handle.device)
        with torch.no_grad():
            logits = hooks.forward(handle, ids, logits_at=torch.tensor(enc.positions, device=ids.device)).logits[0]
        return scores, logits


LOCAL: dict[str, type[Direct]] = {c.name: c for c in (Activation, Gradient, ActGrad, Random)}

__all__ = ["ActGrad", "Activation", "Direct", "Gradient", "LOCAL", "Random", "point_gradients"]
