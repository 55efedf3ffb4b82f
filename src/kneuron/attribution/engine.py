"""The shared machinery of every attribution method.

Given the answer-position activations ``a`` of every layer and one or more baselines ``b``, the
engine evaluates the gradient of the objective at the path points ``b + alpha (a - b)`` for every
(layer, path, node) row and returns their weighted sums. It is exact (equal to patching one
layer at a time in a full forward pass) and fast:

* every layer's activations, and every baseline's, come from one batched forward pass;
* rows of all layers and steps are batched together, with automatic back-off when memory runs out;
* a row that patches layer l does not recompute layers below l: their outputs are replayed;
* causal models: only the answer position changes, so each row is ONE token run against the
  prompt's key/value cache (the prefix is computed once);
* masked models: the output head (e.g. BERT's 30k-word decoder) runs on the answer position only.
"""
from __future__ import annotations

import copy
import inspect
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch

from ..models.load import ModelHandle
from ..models.sites import as_bsn


@dataclass
class CleanPass:
    acts: torch.Tensor           # [S, K, L, N] activations at the answer positions
    logits: torch.Tensor         # [S, K, V] logits at the answer positions
    outputs: list | None         # per layer: output of the layer block (S == 1 only), for replay


def _hidden(out):
    return out[0] if isinstance(out, tuple) else out


def _expand_like(out, hidden: torch.Tensor):
    return (hidden,) + tuple(out[1:]) if isinstance(out, tuple) else hidden


def clean_pass(handle: ModelHandle, input_ids: torch.Tensor, positions: list[int],
               keep_outputs: bool = False) -> CleanPass:
    """One no-grad forward of ``input_ids`` [S, T] reading every layer at ``positions``."""
    pos = torch.tensor(positions, device=input_ids.device)
    S, T = input_ids.shape
    acts, outputs = [None] * handle.n_layers, [None] * handle.n_layers
    with ExitStack() as stack, torch.no_grad():
        for l, site in enumerate(handle.sites):
            def read(mod, args, l=l):
                acts[l] = as_bsn(args[0], S, T)[:, pos, :].detach()
            stack.enter_context(_hook(site.register_forward_pre_hook(read)))
            if keep_outputs:
                def keep(mod, args, out, l=l):
                    outputs[l] = out
                stack.enter_context(_hook(handle.layers[l].register_forward_hook(keep)))
        if _takes(handle.model, "logits_to_keep"):     # the output layer on the answer positions only
            logits = handle.model(input_ids=input_ids, logits_to_keep=pos).logits
        else:
            logits = handle.model(input_ids=input_ids).logits[:, pos, :]
    return CleanPass(torch.stack(acts, dim=2), logits, outputs if keep_outputs else None)


@contextmanager
def _hook(h):
    try:
        yield h
    finally:
        h.remove()


def objective_values(logits: torch.Tensor, target: int, objective: str) -> torch.Tensor:
    logp = torch.log_softmax(logits, dim=-1)[..., target]
    if objective == "prob":
        return logp.exp()
    if objective == "logprob":
        return logp
    raise ValueError(f"objective must be 'prob' or 'logprob', not {objective!r}")


class Runner:
    """Evaluates the objective, and its gradient w.r.t. the patched activation, for a batch of rows
    that each set one layer's activation at one answer position (answer token k)."""

    def __init__(self, handle: ModelHandle, input_ids: torch.Tensor, k: int, position: int, target: int,
                 clean: CleanPass, objective: str, prefix_cache: bool = True, replay: bool = True):
        self.h, self.target, self.objective, self.replay = handle, target, objective, replay
        self.past = None
        if handle.kind == "causal" and prefix_cache:
            # one query token against the cached prefix; replayed outputs are that position's
            if position > 0:
                with torch.no_grad():             # no output layer needed for the cache
                    keep = {"logits_to_keep": 1} if _takes(handle.model, "logits_to_keep") else {}
                    out = handle.model(input_ids=input_ids[:, :position], use_cache=True, **keep)
                self.past = getattr(out, "cache", None) or out.past_key_values
            self.ids, self.pos = input_ids[:, position:position + 1], 0
            self.outputs = [_expand_like(o, _hidden(o)[:, position:position + 1]) for o in clean.outputs]
        else:
            end = position + 1 if handle.kind == "causal" else input_ids.shape[1]
            self.ids, self.pos = input_ids[:, :end], position
            self.outputs = [_expand_like(o, _hidden(o)[:, :end]) for o in clean.outputs]

    def __call__(self, layers: torch.Tensor, points: torch.Tensor, grad: bool = True):
        """``layers`` [B] sorted ascending, ``points`` [B, N] -> objective [B], gradient [B, N]."""
        B = len(layers)
        points = points.detach().requires_grad_(grad)
        seq = self.ids.shape[1]
        with ExitStack() as stack, torch.set_grad_enabled(grad):
            present = torch.unique_consecutive(layers).tolist()
            for l in present:
                rows = (layers == l).nonzero().squeeze(1)
                def patch(mod, args, rows=rows):
                    x = as_bsn(args[0], B, seq)
                    x = x.index_put((rows, torch.full_like(rows, self.pos)), points[rows].to(x.dtype))
                    return (x.view(args[0].shape),) + args[1:]
                stack.enter_context(_hook(self.h.sites[l].register_forward_pre_hook(patch)))
            if self.replay:
                for j in range(present[0]):
                    stack.enter_context(_replaced_forward(self.h.layers[j], self.outputs[j], B))
            obj = self._objective(stack, B)
            g = torch.autograd.grad(obj.sum(), points)[0] if grad else None
        return obj.detach(), g

    def clean_grads(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective of the unpatched model and its gradient w.r.t. every layer's activation at the
        answer position, in ONE row: a zero probe is added to each layer's activation (which leaves
        every path through the network intact), and the gradient w.r.t. the probes is taken."""
        L, N = self.h.n_layers, self.h.n_neurons
        probes = torch.zeros(L, N, dtype=self.h.dtype, device=self.ids.device, requires_grad=True)
        seq = self.ids.shape[1]
        with ExitStack() as stack, torch.enable_grad():
            for l in range(L):
                def probe(mod, args, l=l):
                    x = as_bsn(args[0], 1, seq)
                    add = torch.zeros_like(x)
                    add[0, self.pos] = probes[l].to(x.dtype)
                    return ((x + add).view(args[0].shape),) + args[1:]
                stack.enter_context(_hook(self.h.sites[l].register_forward_pre_hook(probe)))
            obj = self._objective(stack, 1)
            g = torch.autograd.grad(obj.sum(), probes)[0]
        return obj.detach()[0], g

    def _objective(self, stack: ExitStack, B: int) -> torch.Tensor:
        """Run ``B`` copies of the input (against the prefix cache, if any) with the hooks already in
        ``stack``; the objective per row. Masked models: after the last block only the answer
        position matters (the head is position-wise), so the head runs on that position alone."""
        kwargs = {}
        if self.past is not None:
            past = copy.deepcopy(self.past)
            if B > 1:
                past.batch_repeat_interleave(B)
            kwargs = {_cache_kwarg(self.h.model): past, "use_cache": True}
        pos = self.pos
        if self.h.kind == "masked":
            def keep(mod, args, out):
                return _expand_like(out, _hidden(out)[:, self.pos:self.pos + 1])
            stack.enter_context(_hook(self.h.layers[-1].register_forward_hook(keep)))
            pos = 0
        logits = self.h.model(input_ids=self.ids.expand(B, -1), **kwargs).logits[:, pos, :]
        return objective_values(logits, self.target, self.objective)


def _takes(model, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


def _cache_kwarg(model) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` during 5.x; use what this model takes."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@contextmanager
def _replaced_forward(block, output, batch: int):
    """Make ``block`` return its recorded (clean) output instead of computing it."""
    hidden = _hidden(output)
    replay = _expand_like(output, hidden.expand(batch, *hidden.shape[1:]))
    had = "forward" in block.__dict__
    old = block.__dict__.get("forward")
    block.forward = lambda *a, **k: replay
    try:
        yield
    finally:
        if had:
            block.forward = old
        else:
            del block.forward


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def integrate(runner: Runner, acts: torch.Tensor, baselines: torch.Tensor, alphas: torch.Tensor,
              weights: torch.Tensor, endpoints: bool, batch_size: int,
              progress=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weighted sum of gradients along each path, for one answer token.

    ``acts`` [L, N]; ``baselines`` [P, L, N]; returns G [P, L, N] = sum_i w_i dF/dx(b + alpha_i (a - b))
    and, if ``endpoints``, F at alpha = 0 for every (path, layer) [P, L] (for the completeness check).
    """
    P, L, N = baselines.shape
    dev = acts.device                               # everything on the model's device; G returns on the CPU
    # nodes at alpha = 1 are the unpatched model for every layer and path: one shared row gives them all
    ones = alphas == 1
    w1 = float(weights[ones].sum()) if bool(ones.any()) else None
    alphas, weights = alphas[~ones], weights[~ones]
    # F at alpha = 0: from a node at 0 if the rule has one (left, linspace, trapezoid), else an extra row
    zero = (alphas == 0).nonzero().flatten().tolist()
    extra = endpoints and not zero
    f0_node = (len(alphas) if extra else zero[0]) if endpoints else -1
    alphas_e = (torch.cat([alphas, alphas.new_zeros(1)]) if extra else alphas).to(dev)
    weights_e = (torch.cat([weights, weights.new_zeros(1)]) if extra else weights).to(dev)
    per_layer = P * len(alphas_e)
    R = L * per_layer
    G = torch.zeros(P * L, N, dtype=torch.float64, device=dev)
    F0 = torch.zeros(P * L, dtype=torch.float64, device=dev)
    diff = acts.unsqueeze(0) - baselines            # [P, L, N]
    if w1 is not None:
        _, g1 = runner.clean_grads()
        G += w1 * g1.double().repeat(P, 1)          # row p * L + l gets layer l's gradient
    start, bs = 0, max(1, batch_size)
    while start < R:
        idx = torch.arange(start, min(start + bs, R), device=dev)
        layer = idx // per_layer
        path = (idx % per_layer) // len(alphas_e)
        node = idx % len(alphas_e)
        pts = baselines[path, layer] + alphas_e[node].to(acts.dtype).unsqueeze(1) * diff[path, layer]
        try:
            obj, g = runner(layer, pts)
        except RuntimeError as e:                   # back off on out-of-memory, re-raise otherwise
            if not _is_oom(e) or len(idx) == 1:
                raise
            bs = max(1, len(idx) // 2)
            continue
        flat = path * L + layer
        G.index_add_(0, flat, g.double() * weights_e[node].unsqueeze(1))
        if endpoints:
            is0 = node == f0_node
            F0[flat[is0]] = obj[is0].double()
        start += len(idx)
        if progress is not None:
            progress(len(idx))
    return G.view(P, L, N).cpu(), (F0.view(P, L).cpu() if endpoints else None)
