"""Interventions on knowledge neurons.

``suppress`` and ``enhance`` are context managers that patch the neurons' activations at the answer
position(s) of every forward pass run inside the ``with`` block; the model is untouched afterwards.
``erase`` zeroes the neurons' value vectors in the weights (persistent until ``undo()``).

Answer positions ("answer", the default): those set by kneuron's scoring functions (the positions
that predict the gold answer's tokens); for a forward run by the caller, the mask tokens of a
masked LM or the last position of a causal LM. ``at="all"`` patches every position; a list of
ints patches those positions.
"""
from __future__ import annotations

import contextvars
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from typing import Callable, Iterable, Sequence

import torch

from kneuron.models import hooks
from kneuron.models.load import ModelHandle
from kneuron.models.sites import value_vectors
from kneuron.neurons import Neuron

_ANSWER_POSITIONS: contextvars.ContextVar[Sequence[int] | None] = contextvars.ContextVar("answer_positions", default=None)


@contextmanager
def answer_positions(positions: Sequence[int]):
    """Declare the answer positions of the forward passes run inside the block."""
    token = _ANSWER_POSITIONS.set(list(positions))
    try:
        yield
    finally:
        _ANSWER_POSITIONS.reset(token)


def _by_layer(handle: ModelHandle, neurons: Iterable[Neuron]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for layer, idx in handle.check_neurons(neurons):
        groups[layer].append(idx)
    return groups


def _masks(handle: ModelHandle, neurons: Iterable[Neuron] | None = None,
           each: Sequence[Iterable[Neuron]] | None = None) -> dict[int, torch.Tensor]:
    """Per layer, a bool mask of the neurons to patch: [N] (every row) or [B, N] (row b: each[b])."""
    if each is None:
        out = {}
        for layer, idx in _by_layer(handle, neurons).items():
            m = torch.zeros(handle.n_neurons, dtype=torch.bool)
            m[idx] = True
            out[layer] = m
        return out
    out: dict[int, torch.Tensor] = {}
    for b, ns in enumerate(each):
        for layer, idx in _by_layer(handle, ns).items():
            out.setdefault(layer, torch.zeros(len(each), handle.n_neurons, dtype=torch.bool))[b, idx] = True
    return out


@contextmanager
def _patched(handle: ModelHandle, masks: dict[int, torch.Tensor], fn: Callable[[torch.Tensor], torch.Tensor], at):
    with ExitStack() as stack:
        seen = stack.enter_context(hooks.model_input(handle))

        def where(B: int, T: int, device) -> torch.Tensor:
            mask = torch.zeros(B, T, dtype=torch.bool, device=device)
            if at == "all":
                mask[:] = True
            elif at == "answer":
                pos = _ANSWER_POSITIONS.get()
                if pos is not None:
                    mask[:, [p for p in pos if p < T]] = True
                elif handle.kind == "masked" and seen.get("ids") is not None and seen["ids"].dtype == torch.long:
                    mask = seen["ids"] == handle.tokenizer.mask_token_id
                else:
                    mask[:, -1] = True
            else:
                mask[:, list(at)] = True
            return mask

        for layer, nm in masks.items():
            def new(x3, nm=nm):                       # the site's input as [B, T, n]
                B, T = x3.shape[0], x3.shape[1]
                rows = nm.to(x3.device).unsqueeze(-2) if nm.dim() == 2 else nm.to(x3.device)
                if nm.dim() == 2 and nm.shape[0] != B:
                    raise ValueError(f"suppress_each got {nm.shape[0]} neuron sets for a batch of {B} rows")
                sel = where(B, T, x3.device).unsqueeze(-1) & rows
                return torch.where(sel, fn(x3), x3)
            stack.enter_context(hooks.patch(handle, handle.sites[layer], new))
        yield


def patch(handle: ModelHandle, neurons: Iterable[Neuron], fn: Callable[[torch.Tensor], torch.Tensor],
          at="answer"):
    """Replace the activation x of each neuron by fn(x) at the chosen positions."""
    return _patched(handle, _masks(handle, neurons), fn, at)


def suppress_each(handle: ModelHandle, sets: Sequence[Iterable[Neuron]], at="answer"):
    """Row b of every batch run inside the block has the neurons ``sets[b]`` set to 0: many
    different ablations of one prompt in one forward pass (batch = len(sets) copies of it)."""
    return _patched(handle, _masks(handle, each=list(sets)), torch.zeros_like, at)


def suppress(handle: ModelHandle, neurons: Iterable[Neuron], at="answer"):
    """Set the neurons to 0 (at the answer positions by default) inside the ``with`` block."""
    return patch(handle, neurons, torch.zeros_like, at)


def enhance(handle: ModelHandle, neurons: Iterable[Neuron], factor: float = 2.0, at="answer"):
    """Multiply the neurons by ``factor`` (x2 in the paper) inside the ``with`` block."""
    return patch(handle, neurons, lambda x: x * factor, at)


class Erasure:
    """Zeroed value vectors of some neurons (the weight columns of the output projection).
    Persistent until ``undo()``; also a context manager that undoes itself on exit."""

    def __init__(self, handle: ModelHandle, neurons: Iterable[Neuron]):
        self.saved: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        with torch.no_grad():
            for layer, idx in _by_layer(handle, neurons).items():
                rows = value_vectors(handle.sites[layer])
                idx_t = torch.tensor(sorted(set(idx)))
                self.saved.append((rows, idx_t, rows[idx_t].clone()))
                rows[idx_t] = 0

    def undo(self) -> None:
        with torch.no_grad():
            for rows, idx, old in reversed(self.saved):
                rows[idx] = old
        self.saved = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.undo()


def erase(handle: ModelHandle, neurons: Iterable[Neuron]) -> Erasure:
    return Erasure(handle, neurons)
