"""Rows: what one patched forward computes, and a batch of them assembled.

A *problem* is one answer token of one prompt: the tokens a row runs, the answer position, the target
and the clean outputs of every block (replayed below the row's patched layer). A *row* sets one
layer's activation at the answer position of one problem to a point on an integration path; a
``RowBatch`` holds the rows of one forward pass, sorted by layer, with the problems' clean rows
first (``RowRunner.assemble`` builds it, ``RowRunner.forward`` runs it).

Causal models with the prefix cache: a row is ONE token (the answer position) run against the key/value
cache of the tokens before it, which ``kvcache.prefix_cache`` cuts from the clean pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

import kneuron.attribution.kvcache as kvcache
from kneuron.attribution.passes import CleanPass
from kneuron.models.hooks import hidden, like
from kneuron.models.load import ModelHandle


@dataclass
class Problem:
    """One answer token of one prompt: what a row of a batch runs and against what."""
    ids: torch.Tensor            # [1, t] the tokens a row runs (causal with cache: the one query token)
    pos: int                     # the answer position in ``ids``
    target: int                  # the answer token
    outputs: list                # per layer: the clean output of the block, cut to ``ids``' positions
    past: object | None = None   # causal with cache: the key/value cache of the tokens before ``ids``
    past_len: int = 0


def make_problem(handle: ModelHandle, input_ids: torch.Tensor, position: int, target: int, clean: CleanPass,
                 prefix_cache: bool = True) -> Problem:
    """The answer token at ``position`` of ``input_ids`` [1, T] (whose clean pass is ``clean``)."""
    if handle.kind == "causal" and prefix_cache:
        # one query token against the cached prefix; replayed outputs are that position's (copied, so
        # that the clean pass's [1, T, D] outputs can go)
        past = kvcache.prefix_cache(handle, clean, input_ids, position) if position > 0 else None
        return Problem(input_ids[:, position:position + 1], 0, target,
                       [like(o, hidden(o)[:, position:position + 1].clone()) for o in clean.outputs],
                       past, position)
    end = position + 1 if handle.kind == "causal" else input_ids.shape[1]
    return Problem(input_ids[:, :end], position, target, [like(o, hidden(o)[:, :end]) for o in clean.outputs])



@dataclass
class RunResult:
    """What a batch of rows gives (``RowRunner.__call__``)."""
    obj: torch.Tensor                        # [R] the objective of each patched row
    grad: torch.Tensor | None                # [R, N] its gradient w.r.t. the row's patched activation
    clean_obj: torch.Tensor | None = None    # [C] each clean row's (unpatched) objective
    clean_grad: torch.Tensor | None = None   # [C, L, N] its gradient w.r.t. every layer's activation


@dataclass
class RowBatch:
    """The rows of one batch, assembled: what each row runs, before any hook or forward pass.
    Rows 0..C-1 are the clean rows, then the R patched rows."""
    layers: torch.Tensor         # [R] the layer each patched row sets, ascending
    points: torch.Tensor         # [R, N] the activation it sets there
    problem: torch.Tensor        # [C + R] the problem of every row
    n_clean: int                 # C
    pos: torch.Tensor            # [C + R] the answer position of every row in ``ids``
    ids: torch.Tensor            # [C + R, T] the tokens every row runs
    outs: list                   # per block: the rows' recorded clean outputs [C + R, T, D]
    reached: list[int]           # per block j: the rows that compute it (patched layer <= j, and the clean rows)
    mixed: bool                  # rows of several problems (padded and masked)
    prefix: bool | None = None   # causal rows with a cache: attend to one shared prefix (None: as known, see checks.prefix_ok)

    @property
    def size(self) -> int:
        return len(self.problem)

    @property
    def partial(self) -> bool:
        """Some block is needed by some of the rows only: the staircase would save work."""
        return any(0 < n < self.size for n in self.reached)


def pad_stack(xs: list[torch.Tensor], T: int) -> torch.Tensor:
    """[1, t_i, D] tensors -> [n, T, D], zero-padded on the right."""
    out = xs[0].new_zeros(len(xs), T, *xs[0].shape[2:])
    for i, x in enumerate(xs):
        out[i, :x.shape[1]] = x[0]
    return out
