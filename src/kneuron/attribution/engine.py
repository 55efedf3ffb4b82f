"""The shared machinery of every attribution method.

Given the answer-position activations ``a`` of every layer and one or more baselines ``b``, the
engine evaluates the gradient of the objective at the path points ``b + alpha (a - b)`` for every
(layer, path, node) row and returns their weighted sums. It is exact (equal to patching one
layer at a time in a full forward pass) and fast:

* every layer's activations, and every baseline's, come from one batched forward pass;
* rows of all layers and steps are batched together, with automatic back-off when memory runs out;
* a row that patches layer l does not compute layers below l: a batch holds rows of several layers,
  sorted by layer, and each block runs on the rows that have reached it (the others take its
  recorded clean output) -- one large batch with no wasted work. Whether a model's blocks can run on
  a subset of the batch is checked once per model against running them on every row; where not
  (a block takes per-row tensors we cannot cut), rows replay only the layers below the batch's lowest;
* causal models: only the answer position changes, so each row is ONE token run against the
  prompt's key/value cache (the prefix is computed once);
* masked models: the output head (e.g. BERT's 30k-word decoder) runs on the answer position only.
"""
from __future__ import annotations

import copy
import inspect
import weakref
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
    cache: object | None = None  # causal models, S == 1: the key/value cache of the whole input


def _hidden(out):
    return out[0] if isinstance(out, tuple) else out


def _expand_like(out, hidden: torch.Tensor):
    return (hidden,) + tuple(out[1:]) if isinstance(out, tuple) else hidden


def clean_pass(handle: ModelHandle, input_ids: torch.Tensor, positions: list[int],
               keep_outputs: bool = False) -> CleanPass:
    """One no-grad forward of ``input_ids`` [S, T] reading every layer at ``positions`` (with
    ``keep_outputs``: also every block's output and, for causal models, the key/value cache)."""
    pos = torch.tensor(positions, device=input_ids.device)
    S, T = input_ids.shape
    acts, outputs = [None] * handle.n_layers, [None] * handle.n_layers
    cache = keep_outputs and handle.kind == "causal"
    with ExitStack() as stack, torch.no_grad():
        for l, site in enumerate(handle.sites):
            def read(mod, args, l=l):
                acts[l] = as_bsn(args[0], S, T)[:, pos, :].detach()
            stack.enter_context(_hook(site.register_forward_pre_hook(read)))
            if keep_outputs:
                def keep(mod, args, out, l=l):
                    outputs[l] = out
                stack.enter_context(_hook(handle.layers[l].register_forward_hook(keep)))
        kwargs = {"use_cache": True} if cache else {}
        if _takes(handle.model, "logits_to_keep"):     # the output layer on the answer positions only
            out = handle.model(input_ids=input_ids, logits_to_keep=pos, **kwargs)
            logits = out.logits
        else:
            out = handle.model(input_ids=input_ids, **kwargs)
            logits = out.logits[:, pos, :]
    past = (getattr(out, "cache", None) or getattr(out, "past_key_values", None)) if cache else None
    return CleanPass(torch.stack(acts, dim=2), logits, outputs if keep_outputs else None, past)


@contextmanager
def _hook(h):
    try:
        yield h
    finally:
        h.remove()


class _TargetLogProb(torch.autograd.Function):
    """log softmax(logits)[..., target] with a one-pass backward (no [rows, vocab] zeros, no stored
    softmax): d/dlogits = onehot(target) - softmax(logits)."""

    @staticmethod
    def forward(ctx, logits, target: int):
        lse = torch.logsumexp(logits, dim=-1)
        ctx.save_for_backward(logits, lse)
        ctx.target = target
        return logits[..., target] - lse

    @staticmethod
    def backward(ctx, g):
        logits, lse = ctx.saved_tensors
        grad = torch.sub(logits, lse.unsqueeze(-1)).exp_().mul_(-g.unsqueeze(-1))
        grad[..., ctx.target] += g
        return grad, None


def objective_values(logits: torch.Tensor, target: int, objective: str) -> torch.Tensor:
    """The objective of each row of ``logits`` [..., V]: p(target) ("prob") or log p ("logprob")."""
    if objective not in ("prob", "logprob"):
        raise ValueError(f"objective must be 'prob' or 'logprob', not {objective!r}")
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    logp = _TargetLogProb.apply(logits, target)
    return logp.exp() if objective == "prob" else logp


def _prefix_cache(handle: ModelHandle, clean: CleanPass, input_ids: torch.Tensor, position: int):
    """The key/value cache of the first ``position`` tokens: the clean pass's, cut (no extra pass),
    where every layer is a plain growing cache; otherwise one pass of the decoder without its
    output layer."""
    try:
        from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer
    except ImportError:                               # older transformers: no per-layer cache objects
        DynamicLayer = DynamicSlidingWindowLayer = None
    layers = getattr(clean.cache, "layers", None)
    if DynamicLayer is not None and layers and all(
            isinstance(x, DynamicLayer) and not isinstance(x, DynamicSlidingWindowLayer)
            and isinstance(getattr(x, "keys", None), torch.Tensor) for x in layers):
        past = copy.deepcopy(clean.cache)
        for x in past.layers:
            x.keys, x.values = x.keys[..., :position, :], x.values[..., :position, :]
        return past
    with torch.no_grad():
        decoder = getattr(handle.model, "base_model", handle.model)
        out = decoder(input_ids=input_ids[:, :position], use_cache=True)
    return getattr(out, "cache", None) or out.past_key_values


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
                self.past = _prefix_cache(handle, clean, input_ids, position)
            self.ids, self.pos = input_ids[:, position:position + 1], 0
            self.outputs = [_expand_like(o, _hidden(o)[:, position:position + 1]) for o in clean.outputs]
        else:
            end = position + 1 if handle.kind == "causal" else input_ids.shape[1]
            self.ids, self.pos = input_ids[:, :end], position
            self.outputs = [_expand_like(o, _hidden(o)[:, :end]) for o in clean.outputs]

    def __call__(self, layers: torch.Tensor, points: torch.Tensor, grad: bool = True,
                 staircase: bool | None = None, clean: bool = False):
        """``layers`` [B] sorted ascending, ``points`` [B, N] -> objective [B], gradient [B, N].

        ``staircase``: run each block on the rows that have reached it only (None: where the model
        allows it, checked once per model). ``clean``: also return the unpatched model's objective
        and its gradient w.r.t. every layer's activation [L, N], from ONE extra row: a zero probe is
        added to each layer's activation in that row (every path through the network stays intact)
        and the gradient w.r.t. the probes is taken."""
        L, N = self.h.n_layers, self.h.n_neurons
        extra = int(clean)
        B = len(layers) + extra                          # row 0 is the clean row, if any
        reached = (torch.bincount(layers, minlength=L).cumsum(0) + extra).tolist()  # rows at layer <= j
        if staircase is None:
            partial = self.replay and any(0 < n < B for n in reached)
            staircase = partial and self._staircase_ok(layers, points)
        points = points.detach().requires_grad_(grad)
        probes = torch.zeros(L, N, dtype=points.dtype, device=points.device, requires_grad=grad) if clean else None
        seq = self.ids.shape[1]
        with ExitStack() as stack, torch.set_grad_enabled(grad):
            for l in range(L):
                rows = (layers == l).nonzero().squeeze(1)
                if not clean and len(rows) == 0:
                    continue
                def patch(mod, args, l=l, rows=rows):
                    x = args[0]
                    x = as_bsn(x, x.shape[0] if x.dim() == 3 else x.shape[0] // seq, seq)
                    if len(rows):
                        x = x.index_put((rows + extra, torch.full_like(rows, self.pos)), points[rows].to(x.dtype))
                    if clean:
                        add = torch.zeros_like(x[:1])
                        add[0, self.pos] = probes[l].to(x.dtype)
                        x = torch.cat([x[:1] + add, x[1:]])
                    return (x.view(args[0].shape),) + args[1:]
                stack.enter_context(_hook(self.h.sites[l].register_forward_pre_hook(patch)))
            if self.replay:
                for j in range(L):
                    if reached[j] == 0:
                        stack.enter_context(_replaced_forward(self.h.layers[j], self.outputs[j], B))
                    elif staircase and reached[j] < B:
                        stack.enter_context(_first_rows(self.h.layers[j], self.outputs[j], reached[j], B))
            obj = self._objective(stack, B, reached if staircase else None)
            g = gp = None
            if grad:
                wrt = [points] + ([probes] if clean else [])
                g, *rest = torch.autograd.grad(obj.sum(), wrt, allow_unused=True)
                g = torch.zeros_like(points) if g is None else g
                gp = rest[0] if clean else None
        obj = obj.detach()
        if clean:
            return obj[1:], g, (obj[0], gp)
        return obj, g

    def clean_grads(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The unpatched model's objective and its gradient w.r.t. every layer's activation [L, N]."""
        empty = torch.zeros(0, self.h.n_neurons, dtype=self.h.dtype, device=self.ids.device)
        _, _, c = self(torch.zeros(0, dtype=torch.long, device=self.ids.device), empty, clean=True)
        return c

    def _staircase_ok(self, layers: torch.Tensor, points: torch.Tensor) -> bool:
        """Once per model: do rows computed by the staircase equal rows computed by every block?
        Checked on one row of each of (up to) three of this batch's layers."""
        key = self.h.model
        if key not in _STAIRCASE:
            first = torch.unique_consecutive(layers, return_counts=True)[1].cumsum(0).roll(1)
            first[0] = 0
            pick = first[torch.linspace(0, len(first) - 1, min(3, len(first))).round().long().unique()]
            ok = False
            try:
                a = self(layers[pick], points[pick], staircase=True, clean=True)
                b = self(layers[pick], points[pick], staircase=False, clean=True)
                exact = points.dtype in (torch.float32, torch.float64) and not torch.is_autocast_enabled()
                tol = 1e-4 if exact else 3e-2
                pairs = [(a[0], b[0]), (a[1], b[1]), (a[2][1], b[2][1])]
                ok = all(bool(((x - y).abs() <= tol * y.abs().max() + 1e-12).all()) for x, y in pairs)
            except (RuntimeError, ValueError, TypeError, IndexError):
                ok = False
            _STAIRCASE[key] = ok
        return _STAIRCASE[key]

    def _objective(self, stack: ExitStack, B: int, reached: list[int] | None = None) -> torch.Tensor:
        """Run ``B`` copies of the input (against the prefix cache, if any) with the hooks already in
        ``stack``; the objective per row. ``reached``: the staircase's rows per block (block j's cache
        then holds that many rows). Masked models: after the last block only the answer position
        matters (the head is position-wise), so the head runs on that position alone."""
        kwargs = {}
        if self.past is not None:
            past = copy.deepcopy(self.past)
            if reached is not None:
                for layer, n in zip(past.layers, reached):   # block j sees only its own rows
                    layer.keys = layer.keys.expand(max(n, 1), *layer.keys.shape[1:])
                    layer.values = layer.values.expand(max(n, 1), *layer.values.shape[1:])
            elif B > 1:
                past.batch_repeat_interleave(B)
            kwargs = {_cache_kwarg(self.h.model): past, "use_cache": True}
        pos = self.pos
        if self.h.kind == "masked":
            def keep(mod, args, out):
                return _expand_like(out, _hidden(out)[:, self.pos:self.pos + 1])
            stack.enter_context(_hook(self.h.layers[-1].register_forward_hook(keep)))
            pos = 0
        logits = self.h.model(input_ids=self.ids.expand(B, -1), **kwargs).logits
        logits = logits.squeeze(1) if logits.shape[1] == 1 else logits[:, pos, :]
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
    with _swapped_forward(block, lambda *a, **k: replay):
        yield


_STAIRCASE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # model -> staircase works


def _first_rows(block, output, n: int, batch: int):
    """Make ``block`` compute only the first ``n`` of ``batch`` rows; the rest take its recorded
    output. Tensor arguments with ``batch`` rows are cut to ``n``."""
    hidden = _hidden(output)
    rest = hidden.expand(batch - n, *hidden.shape[1:])
    forward = block.forward

    def cut(x):
        if isinstance(x, torch.Tensor):
            return x[:n] if x.dim() and x.shape[0] == batch else x
        if isinstance(x, (tuple, list)):
            return type(x)(cut(v) for v in x)
        return x

    def run(*args, **kwargs):
        out = forward(*cut(args), **{k: cut(v) for k, v in kwargs.items()})
        top = _hidden(out)
        return _expand_like(out, torch.cat([top, rest.to(top.dtype)]))
    return _swapped_forward(block, run)


@contextmanager
def _swapped_forward(block, forward):
    had = "forward" in block.__dict__
    old = block.__dict__.get("forward")
    block.forward = forward
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
    need_clean = w1 is not None                     # the shared row rides along with the first batch
    if need_clean and R == 0:
        _, g1 = runner.clean_grads()
        G += w1 * g1.double().repeat(P, 1)
    start, bs = 0, max(1, batch_size)
    while start < R:
        idx = torch.arange(start, min(start + bs, R), device=dev)
        layer = idx // per_layer
        path = (idx % per_layer) // len(alphas_e)
        node = idx % len(alphas_e)
        pts = baselines[path, layer] + alphas_e[node].to(acts.dtype).unsqueeze(1) * diff[path, layer]
        try:
            obj, g, *c = runner(layer, pts, clean=need_clean)
        except RuntimeError as e:                   # back off on out-of-memory, re-raise otherwise
            if not _is_oom(e) or len(idx) == 1:
                raise
            bs = max(1, len(idx) // 2)
            continue
        if need_clean:                              # row p * L + l gets layer l's gradient
            G += w1 * c[0][1].double().repeat(P, 1)
            need_clean = False
        flat = path * L + layer
        G.index_add_(0, flat, g.double() * weights_e[node].unsqueeze(1))
        if endpoints:
            is0 = node == f0_node
            F0[flat[is0]] = obj[is0].double()
        start += len(idx)
        if progress is not None:
            progress(len(idx))
    return G.view(P, L, N).cpu(), (F0.view(P, L).cpu() if endpoints else None)
