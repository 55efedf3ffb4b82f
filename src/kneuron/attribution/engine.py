"""The shared machinery of every attribution method.

Given the answer-position activations ``a`` of every layer and one or more baselines ``b``, the
engine evaluates the gradient of the objective at the path points ``b + alpha (a - b)`` for every
(layer, path, node) row and returns their weighted sums. It is exact (equal to patching one
layer at a time in a full forward pass) and fast:

* every layer's activations, and every baseline's, come from one batched forward pass;
* rows of all layers and steps are batched together, with automatic back-off when memory runs out;
* a row that patches layer l does not compute layers below l: a batch holds rows of several layers,
  sorted by layer, and each block runs on the rows that have reached it (the others take its
  recorded clean output) -- one large batch with no wasted work. Whether a family's blocks can run
  on a subset of the batch is declared in the architecture table (models.sites.ARCHITECTURES; for a
  family it does not know, checked once per model against running them on every row, and logged);
  where not (a block takes per-row tensors we cannot cut, e.g. BLOOM's ALiBi), rows replay only the
  layers below the batch's lowest;
* rows of several prompts (answer tokens, facts) can share a batch, padded and masked (declared per
  family too);
* causal models: only the answer position changes, so each row is ONE token run against the
  prompt's key/value cache (the prefix is computed once, and the rows attend to it without a copy
  per row: ``prefix.py``; families whose attention bypasses transformers' attention interface
  concatenate it per row, as the architecture table declares);
* rows per batch are planned against a memory budget (``budget.py``; ``Execution.max_memory``);
* masked models: the output head (e.g. BERT's 30k-word decoder) runs on the answer position only.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import weakref
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Callable

import torch

import kneuron.attribution.budget as budget
import kneuron.attribution.prefix as prefix
from kneuron.models.load import ModelHandle
from kneuron.errors import ConfigError
from kneuron.models.sites import CAPABILITIES, as_bsn, declared_capability, model_type

log = logging.getLogger("kneuron")
OBJECTIVES = ("prob", "logprob")


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
    if not keep_outputs and S > 1:               # many sequences (AMIG's baselines): in chunks that fit the budget
        n = budget.clean_chunk(budget.dims_of(handle), T, S, budget.current())
        if n < S:
            parts = [clean_pass(handle, input_ids[i:i + n], positions) for i in range(0, S, n)]
            return CleanPass(torch.cat([p.acts for p in parts]), torch.cat([p.logits for p in parts]), None)
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
    softmax): d/dlogits = onehot(target) - softmax(logits). ``target``: an int, or one per row."""

    @staticmethod
    def forward(ctx, logits, target):
        lse = torch.logsumexp(logits, dim=-1)
        ctx.save_for_backward(logits, lse)
        ctx.target = target
        if isinstance(target, torch.Tensor):
            return logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) - lse
        return logits[..., target] - lse

    @staticmethod
    def backward(ctx, g):
        logits, lse = ctx.saved_tensors
        grad = torch.sub(logits, lse.unsqueeze(-1)).exp_().mul_(-g.unsqueeze(-1))
        if isinstance(ctx.target, torch.Tensor):
            grad.scatter_add_(-1, ctx.target.unsqueeze(-1), g.unsqueeze(-1))
        else:
            grad[..., ctx.target] += g
        return grad, None


def objective_values(logits: torch.Tensor, target, objective: str) -> torch.Tensor:
    """The objective of each row of ``logits`` [..., V]: p(target) ("prob") or log p ("logprob");
    ``target`` an int or a tensor of one target per row."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    logp = _TargetLogProb.apply(logits, target)
    return logp.exp() if objective == "prob" else logp


def _growing_cache_layers(cache) -> bool:
    """Whether every layer of ``cache`` is a plain growing key/value cache (one we can cut and stack)."""
    try:
        from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer
    except ImportError:                               # older transformers: no per-layer cache objects
        return False
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(isinstance(x, DynamicLayer) and not isinstance(x, DynamicSlidingWindowLayer)
                                and isinstance(getattr(x, "keys", None), torch.Tensor) for x in layers)


def _prefix_cache(handle: ModelHandle, clean: CleanPass, input_ids: torch.Tensor, position: int):
    """The key/value cache of the first ``position`` tokens: the clean pass's, cut (no extra pass),
    where every layer is a plain growing cache; otherwise one pass of the decoder without its
    output layer."""
    if _growing_cache_layers(clean.cache):           # views of the clean pass's tensors (nothing writes to them)
        past = copy.copy(clean.cache)
        past.layers = [copy.copy(x) for x in clean.cache.layers]
        for x in past.layers:
            x.keys, x.values = x.keys[..., :position, :], x.values[..., :position, :]
        return past
    with torch.no_grad():
        decoder = getattr(handle.model, "base_model", handle.model)
        out = decoder(input_ids=input_ids[:, :position], use_cache=True)
    return getattr(out, "cache", None) or out.past_key_values


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
        past = _prefix_cache(handle, clean, input_ids, position) if position > 0 else None
        return Problem(input_ids[:, position:position + 1], 0, target,
                       [_expand_like(o, _hidden(o)[:, position:position + 1].clone()) for o in clean.outputs],
                       past, position)
    end = position + 1 if handle.kind == "causal" else input_ids.shape[1]
    return Problem(input_ids[:, :end], position, target, [_expand_like(o, _hidden(o)[:, :end]) for o in clean.outputs])


@dataclass
class RunResult:
    """What a batch of rows gives (``Runner.__call__``)."""
    obj: torch.Tensor                        # [R] the objective of each patched row
    grad: torch.Tensor | None                # [R, N] its gradient w.r.t. the row's patched activation
    clean_obj: torch.Tensor | None = None    # [C] each clean row's (unpatched) objective
    clean_grad: torch.Tensor | None = None   # [C, L, N] its gradient w.r.t. every layer's activation


@dataclass
class Batch:
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
    prefix: bool | None = None   # causal rows with a cache: attend to one shared prefix (None: as known, see _prefix_ok)

    @property
    def size(self) -> int:
        return len(self.problem)

    @property
    def partial(self) -> bool:
        """Some block is needed by some of the rows only: the staircase would save work."""
        return any(0 < n < self.size for n in self.reached)


class Runner:
    """Evaluates the objective, and its gradient w.r.t. the patched activation, for a batch of rows
    that each set one layer's activation at the answer position of one problem. Rows of several
    problems (answer tokens, prompts, facts) can share a batch: their inputs are padded and masked."""

    def __init__(self, handle: ModelHandle, problems: list[Problem] | Problem, objective: str, replay: bool = True):
        self.h, self.objective, self.replay = handle, objective, replay
        self._force_prefix: bool | None = None      # the shared-prefix attention: None = as capable() says
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        P = len(self.problems)
        dev = self.problems[0].ids.device
        self.pos = torch.tensor([p.pos for p in self.problems], device=dev)
        self.targets = torch.tensor([p.target for p in self.problems], device=dev)
        self.past_len = torch.tensor([p.past_len for p in self.problems], device=dev)
        self.seq = torch.tensor([p.ids.shape[1] for p in self.problems], device=dev)
        pasts = [p.past for p in self.problems if p.past is not None]
        # problems can share a batch where the model takes an attention mask and their caches can be
        # stacked (or there are none); positions go along where the model takes them (ALiBi models
        # derive them from the mask)
        self.positions = _takes(handle.model, "position_ids")
        self.can_mix = (P > 1 and _takes(handle.model, "attention_mask")
                        and all(_growing_cache_layers(x) for x in pasts))
        if self.can_mix:
            T = int(self.seq.max())
            pad = handle.tokenizer.pad_token_id or 0
            self.ids = torch.full((P, T), pad, dtype=self.problems[0].ids.dtype, device=dev)
            for i, p in enumerate(self.problems):
                self.ids[i, :p.ids.shape[1]] = p.ids[0]
            self.outs = [_pad_stack([_hidden(p.outputs[j]) for p in self.problems], T) for j in range(handle.n_layers)]
            self.kv = None
            if pasts:                                 # per layer: keys, values [P, heads, T_max, d], zero-padded
                M = int(self.past_len.max())
                self.kv = []
                for j in range(len(pasts[0].layers)):
                    ref = pasts[0].layers[j]
                    k = ref.keys.new_zeros(P, *ref.keys.shape[1:-2], M, ref.keys.shape[-1])
                    v = ref.values.new_zeros(P, *ref.values.shape[1:-2], M, ref.values.shape[-1])
                    for i, p in enumerate(self.problems):
                        if p.past is not None:
                            k[i, ..., :p.past_len, :] = p.past.layers[j].keys[0]
                            v[i, ..., :p.past_len, :] = p.past.layers[j].values[0]
                    self.kv.append((k, v))
                self.template = next(p.past for p in self.problems if p.past is not None)

    def __call__(self, layers: torch.Tensor, points: torch.Tensor, problem: torch.Tensor | None = None, *,
                 clean=(), grad: bool = True, staircase: bool | None = None) -> RunResult:
        """Rows: ``layers`` [R] sorted ascending, ``points`` [R, N], ``problem`` [R] (default: all 0).

        ``clean``: problems whose unpatched objective and gradient w.r.t. every layer's activation
        [C, L, N] are also returned, each from ONE extra row: a zero probe is added to each layer's
        activation in that row (every path through the network stays intact) and the gradient
        w.r.t. the probes is taken. ``staircase``: run each block on the rows that have reached it
        only (None: where the model's family allows it, see ``capable``)."""
        batch = self.assemble(layers, points, problem, clean)
        batch.prefix = self._prefix_ok(batch)
        if staircase is None:
            staircase = self.replay and batch.partial and self.capable(
                "staircase", batch.mixed, lambda: self._staircase_agrees(batch))
        return self.forward(batch, staircase=staircase, grad=grad)

    def assemble(self, layers: torch.Tensor, points: torch.Tensor, problem: torch.Tensor | None = None,
                 clean=()) -> Batch:
        """The batch's rows: the clean rows of the problems ``clean``, then one row per patched point."""
        L = self.h.n_layers
        dev = points.device
        problem = torch.zeros(len(layers), dtype=torch.long, device=dev) if problem is None else problem
        clean = [int(c) for c in clean]
        C = len(clean)
        rows = torch.cat([torch.tensor(clean, dtype=torch.long, device=dev), problem])
        B = len(rows)
        mixed = bool((rows != rows[0]).any()) if B else False
        if mixed and not self.can_mix:
            raise ValueError("these problems cannot share a batch (their caches cannot be stacked)")
        reached = (torch.bincount(layers, minlength=L).cumsum(0) + C).tolist()
        if mixed:
            ids, outs = self.ids[rows], [o[rows] for o in self.outs]
        else:
            p0 = self.problems[int(rows[0])]
            ids, outs = p0.ids.expand(B, -1), [_hidden(o).expand(B, *_hidden(o).shape[1:]) for o in p0.outputs]
        return Batch(layers, points, rows, C, self.pos[rows], ids, outs, reached, mixed)

    def forward(self, batch: Batch, *, staircase: bool, grad: bool = True) -> RunResult:
        """Run the assembled rows through the hooked model: each patched row sets its layer's activation
        at its answer position; with ``self.replay`` blocks no row needs take their recorded outputs,
        and with ``staircase`` each block computes only the rows that reached it."""
        L, N = self.h.n_layers, self.h.n_neurons
        C, B, layers, pos = batch.n_clean, batch.size, batch.layers, batch.pos
        dev = batch.points.device
        points = batch.points.detach().requires_grad_(grad)
        probes = torch.zeros(C, L, N, dtype=points.dtype, device=dev, requires_grad=grad) if C else None
        seq = batch.ids.shape[1]
        with ExitStack() as stack, torch.set_grad_enabled(grad):
            for l in range(L):
                rows = (layers == l).nonzero().squeeze(1)
                if not C and len(rows) == 0:
                    continue
                def patch(mod, args, l=l, rows=rows):
                    x = args[0]
                    x = as_bsn(x, x.shape[0] if x.dim() == 3 else x.shape[0] // seq, seq)
                    if len(rows):
                        x = x.index_put((rows + C, pos[rows + C]), points[rows].to(x.dtype))
                    if C:
                        x = x.index_put((torch.arange(C, device=dev), pos[:C]), probes[:, l].to(x.dtype), accumulate=True)
                    return (x.view(args[0].shape),) + args[1:]
                stack.enter_context(_hook(self.h.sites[l].register_forward_pre_hook(patch)))
            if self.replay:
                for j in range(L):
                    block, template = self.h.layers[j], self.problems[0].outputs[j]
                    if batch.reached[j] == 0:
                        stack.enter_context(_swapped_forward(block, lambda *a, t=template, o=batch.outs[j], **k: _expand_like(t, o)))
                    elif staircase and batch.reached[j] < B:
                        stack.enter_context(_first_rows(block, batch.outs[j], batch.reached[j], B))
            obj = self._objective(stack, batch, batch.reached if staircase else None)
            g = gp = None
            if grad:
                wrt = [points] + ([probes] if C else [])
                g, *rest = torch.autograd.grad(obj.sum(), wrt, allow_unused=True)
                g = torch.zeros_like(points) if g is None else g
                gp = rest[0] if C else None
        obj = obj.detach()
        return RunResult(obj[C:], g, obj[:C] if C else None, gp)

    def clean_grads(self, problem: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The unpatched model's objective and its gradient w.r.t. every layer's activation [L, N]."""
        dev = self.pos.device
        empty = torch.zeros(0, self.h.n_neurons, dtype=self.h.dtype, device=dev)
        none = torch.zeros(0, dtype=torch.long, device=dev)
        r = self(none, empty, none, clean=[problem])
        return r.clean_obj[0], r.clean_grad[0]

    def can_share(self, layers: torch.Tensor, points: torch.Tensor, problem: torch.Tensor) -> bool:
        """Whether rows of several problems may share a batch: where the problems' inputs can be
        stacked and the model's family allows it (see ``capable``)."""
        if not self.can_mix:
            return False

        def agrees():                                    # the shared batch's rows = the same rows run alone
            alone = [self(layers[problem == p], points[problem == p], problem[problem == p], staircase=False)
                     for p in problem.unique().tolist()]
            order = torch.argsort(problem, stable=True)  # the shared batch's rows, grouped by problem
            together = self(layers, points, problem, staircase=False)
            return _close([together.obj[order], together.grad[order]],
                          [torch.cat([a.obj for a in alone]), torch.cat([a.grad for a in alone])], points)
        return self.capable("share", True, agrees)

    def capable(self, capability: str, mixed: bool, check: Callable[[], bool]) -> bool:
        """Whether this model's blocks allow ``capability`` ("staircase" or "share"): as the
        architecture table declares for its family (models.sites.ARCHITECTURES); for a family the
        table does not know, ``check()``'s verdict (the optimised rows equal the plain ones), computed
        once per model (and per mixed / single-problem batches) and logged when it is no."""
        declared = declared_capability(self.h.model, capability)
        if declared is not None:
            return declared
        known = _CHECKED[capability].setdefault(self.h.model, {})
        if mixed not in known:
            known[mixed] = _verdict(self.h, capability, check)
        return known[mixed]

    def _staircase_agrees(self, batch: Batch) -> bool:
        """Rows computed with the staircase equal the same rows computed on every row of the batch
        (one row of each of up to three of the batch's layers, with a clean row)."""
        problem = batch.problem[batch.n_clean:]
        first = torch.unique_consecutive(batch.layers, return_counts=True)[1].cumsum(0).roll(1)
        first[0] = 0
        pick = first[torch.linspace(0, len(first) - 1, min(3, len(first))).round().long().unique()]
        small = self.assemble(batch.layers[pick], batch.points[pick], problem[pick], [int(problem[pick[0]])])
        x, y = self.forward(small, staircase=True), self.forward(small, staircase=False)
        return _close([x.obj, x.grad, x.clean_grad], [y.obj, y.grad, y.clean_grad], batch.points)

    def _prefix_ok(self, batch: Batch, check: bool = True) -> bool:
        """Whether the batch's rows attend to their key/value prefix through ``prefix.attend`` (one
        shared prefix, no copy per row): where every prefix is a plain growing cache and the family
        allows it (see ``capable``; without ``check``, a family not yet checked says no)."""
        if self._force_prefix is not None:
            return self._force_prefix
        if batch.prefix is not None:
            return batch.prefix
        if self.h.kind != "causal" or not prefix.supported():
            return False
        if batch.mixed:
            if self.kv is None:
                return False
        elif not _growing_cache_layers(self.problems[int(batch.problem[0])].past):
            return False
        if not check and declared_capability(self.h.model, "prefix") is None:
            return _CHECKED["prefix"].get(self.h.model, {}).get(batch.mixed, False)
        return self.capable("prefix", batch.mixed, lambda: self._prefix_agrees(batch))

    def _prefix_agrees(self, batch: Batch) -> bool:
        """Rows attending to the shared prefix equal the same rows run against transformers' own
        (copied, concatenated) cache: one row of each of up to three of the batch's layers, a clean row."""
        problem = batch.problem[batch.n_clean:]
        pick = torch.linspace(0, len(problem) - 1, min(3, len(problem))).round().long().unique()
        small = self.assemble(batch.layers[pick], batch.points[pick], problem[pick], [int(batch.problem[0])])
        small.prefix = True
        x = self.forward(small, staircase=False)
        small.prefix = False
        y = self.forward(small, staircase=False)
        return _close([x.obj, x.grad, x.clean_grad], [y.obj, y.grad, y.clean_grad], batch.points)

    def _shared_past(self, batch: Batch, reached: list[int] | None):
        """A cache whose layer j serves the rows that run block j (``reached``, or all) from ONE copy
        of each prompt's prefix: the problem's own (a view of the clean pass's cache) or, for rows of
        several problems, the stacked prefixes and which one each row reads."""
        rows_problem, B = batch.problem, batch.size
        if batch.mixed:
            past, kv = copy.copy(self.template), self.kv
        else:
            past = copy.copy(self.problems[int(rows_problem[0])].past)
            kv = [(x.keys, x.values) for x in past.layers]
        layers = []
        for j, (k, v) in enumerate(kv):
            n = max(reached[j], 1) if reached is not None else B
            layers.append(prefix.make_layer(k, v, n, rows_problem[:n] if batch.mixed else None))
        past.layers = layers
        return past

    def _objective(self, stack: ExitStack, batch: Batch, reached: list[int] | None) -> torch.Tensor:
        """Run the rows' inputs (against the prefix cache, if any) with the hooks already in ``stack``;
        the objective per row. ``reached``: the staircase's rows per block (block j's cache then holds
        that many rows). Masked models: after the last block only the answer position matters (the
        head is position-wise), so the head runs on that position alone."""
        ids, rows_problem, pos, mixed = batch.ids, batch.problem, batch.pos, batch.mixed
        B = len(rows_problem)
        kwargs = {}
        past_len = self.past_len[rows_problem]
        if mixed:
            seq_len = self.seq[rows_problem]
            T = ids.shape[1]
            if self.kv is not None:                      # [B, past + 1]: the row's own prefix, and its token
                M = self.kv[0][0].shape[-2]
                mask = torch.arange(M + 1, device=ids.device) < past_len.unsqueeze(1)
                mask[:, M] = True
                if self.positions:
                    kwargs["position_ids"] = past_len.unsqueeze(1)
            else:                                        # [B, T]: the row's own tokens
                mask = torch.arange(T, device=ids.device) < seq_len.unsqueeze(1)
            kwargs["attention_mask"] = mask.long()
        shared = contextlib.nullcontext()
        if self.problems[int(rows_problem[0])].past is not None or (mixed and self.kv is not None):
            if self._prefix_ok(batch, check=False):      # one prefix for all rows, attended without copies
                past = self._shared_past(batch, reached)
                shared = prefix.shared_prefix(self.h.model)
            elif mixed:
                past = copy.deepcopy(self.template)
                for j, layer in enumerate(past.layers):
                    n = max(reached[j], 1) if reached is not None else B
                    layer.keys, layer.values = self.kv[j][0][rows_problem[:n]], self.kv[j][1][rows_problem[:n]]
            else:
                past = copy.deepcopy(self.problems[int(rows_problem[0])].past)
                if reached is not None:
                    for layer, n in zip(past.layers, reached):   # block j sees only its own rows
                        layer.keys = layer.keys.expand(max(n, 1), *layer.keys.shape[1:])
                        layer.values = layer.values.expand(max(n, 1), *layer.values.shape[1:])
                elif B > 1:
                    past.batch_repeat_interleave(B)
            kwargs.update({_cache_kwarg(self.h.model): past, "use_cache": True})
        rows = torch.arange(B, device=ids.device)
        if self.h.kind == "masked":
            def keep(mod, args, out):
                return _expand_like(out, _hidden(out)[rows, pos].unsqueeze(1))
            stack.enter_context(_hook(self.h.layers[-1].register_forward_hook(keep)))
        with shared:
            logits = self.h.model(input_ids=ids, **kwargs).logits
        logits = logits.squeeze(1) if logits.shape[1] == 1 else logits[rows, pos]
        return objective_values(logits, self.targets[rows_problem], self.objective)


def _pad_stack(xs: list[torch.Tensor], T: int) -> torch.Tensor:
    """[1, t_i, D] tensors -> [n, T, D], zero-padded on the right."""
    out = xs[0].new_zeros(len(xs), T, *xs[0].shape[2:])
    for i, x in enumerate(xs):
        out[i, :x.shape[1]] = x[0]
    return out


def _close(xs, ys, like: torch.Tensor) -> bool:
    exact = like.dtype in (torch.float32, torch.float64) and not torch.is_autocast_enabled()
    tol = 1e-4 if exact else 3e-2
    return all(bool(((x - y).abs() <= tol * y.abs().max() + 1e-12).all()) for x, y in zip(xs, ys))


def _takes(model, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


def _cache_kwarg(model) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` during 5.x; use what this model takes."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


# the run-time verdicts for families the architecture table does not know: capability -> model -> {mixed: ok}
_CHECKED: dict[str, "weakref.WeakKeyDictionary"] = {c: weakref.WeakKeyDictionary() for c in CAPABILITIES}
_WHAT = {"staircase": "the layer staircase (blocks run on the rows that reached them)",
         "share": "shared batches of several prompts",
         "prefix": "attention to one shared key/value prefix (no copy per row)"}


def _verdict(handle: ModelHandle, capability: str, check: Callable[[], bool]) -> bool:
    """``check()`` once, for a model whose family the architecture table does not know; a no is
    logged with its reason. Only torch's runtime errors (a block's per-row tensor that cannot be cut
    or stacked: a shape mismatch) count as a no; anything else is a bug and raises, and running out
    of memory raises for the caller to back off."""
    family = model_type(handle.model) or type(handle.model).__name__
    try:
        if check():
            log.debug("%s (%s): %s checked: on", handle.name, family, _WHAT[capability])
            return True
        reason = "its rows differ from the plain batch's"
    except RuntimeError as e:
        if _is_oom(e):
            raise
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    log.info("%s (%s): %s off, as its family is not in the architecture table and the check failed: %s",
             handle.name, family, _WHAT[capability], reason)
    return False


def _first_rows(block, rows_out: torch.Tensor, n: int, batch: int):
    """Make ``block`` compute only the first ``n`` of ``batch`` rows; the rest take their recorded
    outputs ``rows_out`` [batch, ...]. Tensor arguments with ``batch`` rows are cut to ``n``."""
    rest = rows_out[n:]
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


@dataclass
class Paths:
    """The integration paths of one problem: ``acts`` [L, N] (the end point), ``baselines`` [P, L, N]."""
    acts: torch.Tensor
    baselines: torch.Tensor


def integrate(runner: Runner, paths: list[Paths] | Paths, alphas: torch.Tensor, weights: torch.Tensor,
              endpoints: bool, batch_size: int, progress=None, share: bool = True):
    """Weighted sums of gradients along each path of each of the runner's problems.

    For problem i with ``paths[i]`` (baselines [P, L, N]): G [P, L, N] = sum_k w_k dF/dx(b + alpha_k (a - b))
    and, if ``endpoints``, F at alpha = 0 for every (path, layer) [P, L] (for the completeness check).
    Rows are ordered by layer, then problem, path and node, and cut into batches of ``batch_size``
    rows; rows of several problems share a batch when ``share`` and the model allows it
    (``Runner.can_share``). Returns a list of (G, F0) on the CPU (a single pair when ``paths`` is one Paths).
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
    batches = _Batches(layer, None if share else owner[path], max(1, batch_size))
    G = torch.zeros(GP * L, N, dtype=torch.float64, device=dev)
    F0 = torch.zeros(GP * L, dtype=torch.float64, device=dev)
    Gp = G.view(GP, L, N)
    need_clean = set(owner.unique().tolist()) if w1 is not None else set()
    while (idx := batches.next()) is not None:
        prob = owner[path[idx]]
        clean = sorted(need_clean & set(prob.unique().tolist()))       # each problem's shared row rides along
        try:
            r = runner(layer[idx], point(idx), prob, clean=clean)
        except RuntimeError as e:                   # back off on out-of-memory, re-raise otherwise
            if not _is_oom(e) or len(idx) == 1:
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


def _can_share(runner: Runner, layer, prob, point) -> bool:
    """Checked once per model, on the first row of each of two problems."""
    firsts = torch.stack([(prob == p).nonzero()[0, 0] for p in prob.unique()[:2]])
    return runner.can_share(layer[firsts], point(firsts), prob[firsts])


class _Batches:
    """Consecutive runs of at most ``bs`` rows (indices into the row order), halved on demand
    (out-of-memory). Without sharing (``prob`` given), rows go problem by problem (layer-major within
    each) and a batch never holds two problems."""

    def __init__(self, layer: torch.Tensor, prob: torch.Tensor | None, bs: int):
        R = len(layer)
        self.order = torch.arange(R, device=layer.device)
        if prob is not None:
            self.order = torch.argsort(prob * (int(layer.max()) + 1) + layer, stable=True)
        self.prob = None if prob is None else prob[self.order]
        self.start, self.bs = 0, bs

    def next(self) -> torch.Tensor | None:
        if self.start >= len(self.order):
            return None
        end = min(self.start + self.bs, len(self.order))
        if self.prob is not None:
            p = self.prob[self.start:end]
            change = (p != p[0]).nonzero()
            if len(change):
                end = self.start + int(change[0, 0])
        return self.order[self.start:end]

    def halve(self, n: int) -> None:
        """The last batch (``n`` rows) did not fit: half as many from now on."""
        self.bs = max(1, n // 2)

    def advance(self, n: int) -> None:
        self.start += n
