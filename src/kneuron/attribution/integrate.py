"""The integration: every (layer, path, node) row planned, cut into batches, run, and its gradient summed.

For each problem (answer token) with its paths (baselines), ``integrate`` lays out one row per layer,
path and quadrature node, ordered layer-major so that a batch spans few layers of as many problems as
fit (the staircase then skips most of the lower blocks), and accumulates the weighted gradients in
float64. Nodes at alpha = 1 are the unpatched model for every layer and path: ONE clean row per problem
rides along in the first batch that holds the problem instead. Running out of memory halves the
batch and retries (``_Schedule``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kneuron.attribution.runner import RowRunner
from kneuron.models.capabilities import is_oom


@dataclass
class Paths:
    """The integration paths of one problem: ``acts`` [L, N] (the end point), ``baselines`` [P, L, N]."""
    acts: torch.Tensor
    baselines: torch.Tensor


def integrate(runner: RowRunner, paths: list[Paths] | Paths, alphas: torch.Tensor, weights: torch.Tensor,
              endpoints: bool, batch_size: int, progress=None, share: bool = True):
    """Weighted sums of gradients along each path of each of the runner's problems.

    For problem i with ``paths[i]`` (baselines [P, L, N]): G [P, L, N] = sum_k w_k dF/dx(b + alpha_k (a - b))
    and, if ``endpoints``, F at alpha = 0 for every (path, layer) [P, L] (for the completeness check).
    Rows are ordered by layer, then problem, path and node, and cut into batches of ``batch_size``
    rows; rows of several problems share a batch when ``share`` and the model allows it
    (``RowRunner.can_share``). Returns a list of (G, F0) on the CPU (a single pair when ``paths`` is one Paths).
    """
    single = isinstance(paths, Paths)
    paths = [paths] if single else list(paths)
    L, N = runner.h.n_layers, runner.h.n_neurons
    dev = paths[0].acts.device                      # everything on the model's device; G returns on the CPU
    # nodes at alpha = 1 are the unpatched model for every layer and path: one shared row per problem
    ones = alphas == 1
    w1 = float(weights[ones].sum()) if bool(ones.any()) else None
    alphas, weights = alphas[~ones], weights[~ones]
    # F at alpha = 0: from a node at 0 if the rule has one (left, linspace, trapezoid), else an extra row
    zero = (alphas == 0).nonzero().flatten().tolist()
    extra = endpoints and not zero
    f0_node = (len(alphas) if extra else zero[0]) if endpoints else -1
    alphas_e = (torch.cat([alphas, alphas.new_zeros(1)]) if extra else alphas).to(dev)
    weights_e = (torch.cat([weights, weights.new_zeros(1)]) if extra else weights).to(dev)
    K = len(alphas_e)
    # global path table: path g belongs to problem owner[g]
    n_paths = [p.baselines.shape[0] for p in paths]
    owner = torch.repeat_interleave(torch.arange(len(paths), device=dev), torch.tensor(n_paths, device=dev))
    first_path = torch.tensor([0] + n_paths[:-1], device=dev).cumsum(0)
    base = torch.cat([p.baselines for p in paths])                     # [GP, L, N]
    diff = torch.cat([p.acts.unsqueeze(0) - p.baselines for p in paths])
    GP = len(base)
    # rows: (layer, path, node), layer-major: a batch spans few layers, of as many problems as fit
    layer = torch.arange(L, device=dev).repeat_interleave(GP * K)
    path = torch.arange(GP, device=dev).repeat_interleave(K).repeat(L)
    node = torch.arange(K, device=dev).repeat(L * GP)
    point = lambda idx: base[path[idx], layer[idx]] + alphas_e[node[idx]].to(base.dtype).unsqueeze(1) * diff[path[idx], layer[idx]]
    share = share and len(paths) > 1 and len(layer) > 0 and _can_share(runner, layer, owner[path], point)
    batches = _Schedule(layer, None if share else owner[path], max(1, batch_size))
    G = torch.zeros(GP * L, N, dtype=torch.float64, device=dev)
    F0 = torch.zeros(GP * L, dtype=torch.float64, device=dev)
    Gp = G.view(GP, L, N)
    need_clean = set(owner.unique().tolist()) if w1 is not None else set()
    while (idx := batches.next()) is not None:
        problem = owner[path[idx]]
        clean = sorted(need_clean & set(problem.unique().tolist()))    # each problem's shared row rides along
        try:
            r = runner(layer[idx], point(idx), problem, clean=clean)
        except RuntimeError as e:                   # back off on out-of-memory, re-raise otherwise
            if not is_oom(e) or len(idx) == 1:
                raise
            batches.halve(len(idx))
            continue
        batches.advance(len(idx))
        obj, g = r.obj, r.grad
        for i, g1 in zip(clean, r.clean_grad if clean else []):    # every path of problem i, every layer
            Gp[owner == i] += w1 * g1.double()
        need_clean -= set(clean)
        flat = path[idx] * L + layer[idx]
        G.index_add_(0, flat, g.double() * weights_e[node[idx]].unsqueeze(1))
        if endpoints:
            is0 = node[idx] == f0_node
            F0[flat[is0]] = obj[is0].double()
        if progress is not None:
            progress(len(idx))
    for i in sorted(need_clean):                    # no other rows (a rule with its only node at 1)
        Gp[owner == i] += w1 * runner.clean_grads(i)[1].double()
    G, F0 = G.view(GP, L, N).cpu(), F0.view(GP, L).cpu()
    out = [(G[s:s + n], F0[s:s + n] if endpoints else None) for s, n in zip(first_path.tolist(), n_paths)]
    return out[0] if single else out


def _can_share(runner: RowRunner, layer, problem, point) -> bool:
    """Checked once per model, on the first row of each of two problems."""
    firsts = torch.stack([(problem == p).nonzero()[0, 0] for p in problem.unique()[:2]])
    return runner.can_share(layer[firsts], point(firsts), problem[firsts])


class _Schedule:
    """Consecutive runs of at most ``bs`` rows (indices into the row order), halved on demand
    (out-of-memory). Without sharing (``problem`` given), rows go problem by problem (layer-major
    within each) and a batch never holds two problems."""

    def __init__(self, layer: torch.Tensor, problem: torch.Tensor | None, bs: int):
        R = len(layer)
        self.order = torch.arange(R, device=layer.device)
        if problem is not None:
            self.order = torch.argsort(problem * (int(layer.max()) + 1) + layer, stable=True)
        self.problem = None if problem is None else problem[self.order]
        self.start, self.bs = 0, bs

    def next(self) -> torch.Tensor | None:
        if self.start >= len(self.order):
            return None
        end = min(self.start + self.bs, len(self.order))
        if self.problem is not None:
            p = self.problem[self.start:end]
            change = (p != p[0]).nonzero()
            if len(change):
                end = self.start + int(change[0, 0])
        return self.order[self.start:end]

    def halve(self, n: int) -> None:
        """The last batch (``n`` rows) did not fit: half as many from now on."""
        self.bs = max(1, n // 2)

    def advance(self, n: int) -> None:
        self.start += n
