"""The run-time checks of the engine's fast paths, for families the architecture table does not know.

Each fast path -- the layer staircase, rows of several prompts in one batch, attention to one shared
key/value prefix -- must give the rows the plain path gives. The architecture table
(``models.sites.ARCHITECTURES``) declares it per family (verified on a tiny model of each by
tests/unit/attribution/test_checks.py); for any other family the check below runs once per handle, on a few rows of
the first batch that would use the path, and ``h.capabilities`` keeps the verdict
(``models.capabilities``: a no is logged with its reason).
"""
from __future__ import annotations

import torch

import kneuron.attribution.kvcache as kvcache
import kneuron.attribution.prefix as prefix
from kneuron.attribution.rows import RowBatch


def close(xs, ys, like: torch.Tensor) -> bool:
    """Whether the optimised numbers ``xs`` equal the plain ones ``ys`` up to float rounding (fp32 /
    fp64: 1e-4 of the largest; half precision or autocast: 3e-2)."""
    exact = like.dtype in (torch.float32, torch.float64) and not torch.is_autocast_enabled()
    tol = 1e-4 if exact else 3e-2
    return all(bool(((x - y).abs() <= tol * y.abs().max() + 1e-12).all()) for x, y in zip(xs, ys))


def staircase_agrees(run, batch: RowBatch) -> bool:
    """Rows computed with the staircase equal the same rows computed on every row of the batch
    (one row of each of up to three of the batch's layers, with a clean row)."""
    problem = batch.problem[batch.n_clean:]
    first = torch.unique_consecutive(batch.layers, return_counts=True)[1].cumsum(0).roll(1)
    first[0] = 0
    pick = first[torch.linspace(0, len(first) - 1, min(3, len(first))).round().long().unique()]
    small = run.assemble(batch.layers[pick], batch.points[pick], problem[pick], [int(problem[pick[0]])])
    x, y = run.forward(small, staircase=True), run.forward(small, staircase=False)
    return close([x.obj, x.grad, x.clean_grad], [y.obj, y.grad, y.clean_grad], batch.points)


def share_agrees(run, layers: torch.Tensor, points: torch.Tensor, problem: torch.Tensor) -> bool:
    """The rows of several problems in one batch equal the same rows run problem by problem."""
    alone = [run(layers[problem == p], points[problem == p], problem[problem == p], staircase=False)
             for p in problem.unique().tolist()]
    order = torch.argsort(problem, stable=True)      # the shared batch's rows, grouped by problem
    together = run(layers, points, problem, staircase=False)
    return close([together.obj[order], together.grad[order]],
                 [torch.cat([a.obj for a in alone]), torch.cat([a.grad for a in alone])], points)


def prefix_ok(run, batch: RowBatch, check: bool = True) -> bool:
    """Whether the batch's rows attend to their key/value prefix through ``prefix.attend`` (one
    shared prefix, no copy per row): where every prefix is a plain growing cache and the family
    allows it (``run.capable``; without ``check``, a family not yet checked says no)."""
    if run._force_prefix is not None:
        return run._force_prefix
    if batch.prefix is not None:
        return batch.prefix
    if run.h.kind != "causal" or not prefix.supported():
        return False
    if batch.mixed:
        if run.kv is None:
            return False
    elif not kvcache.growing_cache_layers(run.problems[int(batch.problem[0])].past):
        return False
    if not check:
        return bool(run.h.capabilities.known(run.h.model, "prefix", batch.mixed))
    return run.capable("prefix", batch.mixed, lambda: prefix_agrees(run, batch))


def prefix_agrees(run, batch: RowBatch) -> bool:
    """Rows attending to the shared prefix equal the same rows run against transformers' own
    (copied, concatenated) cache: one row of each of up to three of the batch's layers, a clean row."""
    problem = batch.problem[batch.n_clean:]
    pick = torch.linspace(0, len(problem) - 1, min(3, len(problem))).round().long().unique()
    small = run.assemble(batch.layers[pick], batch.points[pick], problem[pick], [int(batch.problem[0])])
    small.prefix = True
    x = run.forward(small, staircase=False)
    small.prefix = False
    y = run.forward(small, staircase=False)
    return close([x.obj, x.grad, x.clean_grad], [y.obj, y.grad, y.clean_grad], batch.points)
