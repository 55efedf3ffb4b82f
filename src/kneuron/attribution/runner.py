"""The hooked forward of a batch of rows: patch, replay, staircase, objective and gradient.

``RowRunner(handle, problems, objective)`` evaluates, for a batch of rows that each set one layer's
activation at the answer position of one problem, the objective and its gradient w.r.t. the set
activation (``__call__``). Within one forward pass:

* each row's point is written into its layer's neuron site (a ``models.hooks.patch`` of the site's
  input); clean rows add a zero probe to every layer instead, whose gradient is that row's gradient
  w.r.t. every layer's activation;
* replay (``replay=True``): a block no row needs (below every row's layer) returns its recorded clean
  output instead of running;
* the layer staircase: rows are sorted by layer, and block j runs only on the rows that have reached
  it, the others taking its recorded output (``_first_rows``; where the family allows it: declared in
  the architecture table or checked once, ``checks.py``);
* rows of several problems (prompts, answer tokens) share the batch where the model takes an
  attention mask and their caches can be stacked: inputs right-padded (``models.hooks.pad``) and masked;
* causal rows run against their prompt's key/value prefix (``kvcache.py``: one shared copy or one per row);
* masked models: the output head runs on the answer position alone.
"""
from __future__ import annotations

import contextlib
from contextlib import ExitStack
from typing import Callable

import torch

import kneuron.attribution.checks as checks
import kneuron.attribution.kvcache as kvcache
import kneuron.attribution.prefix as prefix
from kneuron.attribution.passes import objective_values
from kneuron.attribution.rows import Problem, RowBatch, RunResult, pad_stack
from kneuron.models import hooks
from kneuron.models.hooks import hidden, like
from kneuron.models.load import ModelHandle


class RowRunner:
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
        self.can_mix = (P > 1 and hooks.takes(handle.model, "attention_mask")
                        and all(kvcache.growing_cache_layers(x) for x in pasts))
        if self.can_mix:
            T = int(self.seq.max())
            self.ids = hooks.pad(handle, [p.ids[0] for p in self.problems], device=dev).ids.to(self.problems[0].ids.dtype)
            self.outs = [pad_stack([hidden(p.outputs[j]) for p in self.problems], T) for j in range(handle.n_layers)]
            self.kv = None
            if pasts:                                 # per layer: keys, values [P, heads, T_max, d], zero-padded
                self.kv, self.template = kvcache.stack(self.problems)

    def __call__(self, layers: torch.Tensor, points: torch.Tensor, problem: torch.Tensor | None = None, *,
                 clean=(), grad: bool = True, staircase: bool | None = None) -> RunResult:
        """Rows: ``layers`` [R] sorted ascending, ``points`` [R, N], ``problem`` [R] (default: all 0).

        ``clean``: problems whose unpatched objective and gradient w.r.t. every layer's activation
        [C, L, N] are also returned, each from ONE extra row: a zero probe is added to each layer's
        activation in that row (every path through the network stays intact) and the gradient
        w.r.t. the probes is taken. ``staircase``: run each block on the rows that have reached it
        only (None: where the model's family allows it, see ``capable``)."""
        batch = self.assemble(layers, points, problem, clean)
        batch.prefix = checks.prefix_ok(self, batch)
        if staircase is None:
            staircase = self.replay and batch.partial and self.capable(
                "staircase", batch.mixed, lambda: checks.staircase_agrees(self, batch))
        return self.forward(batch, staircase=staircase, grad=grad)

    def assemble(self, layers: torch.Tensor, points: torch.Tensor, problem: torch.Tensor | None = None,
                 clean=()) -> RowBatch:
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
            ids, outs = p0.ids.expand(B, -1), [hidden(o).expand(B, *hidden(o).shape[1:]) for o in p0.outputs]
        return RowBatch(layers, points, rows, C, self.pos[rows], ids, outs, reached, mixed)

    def forward(self, batch: RowBatch, *, staircase: bool, grad: bool = True) -> RunResult:
        """Run the assembled rows through the hooked model: each patched row sets its layer's activation
        at its answer position; with ``self.replay`` blocks no row needs take their recorded outputs,
        and with ``staircase`` each block computes only the rows that reached it."""
        L, N = self.h.n_layers, self.h.n_neurons
        C, B, layers, pos = batch.n_clean, batch.size, batch.layers, batch.pos
        dev = batch.points.device
        points = batch.points.detach().requires_grad_(grad)
        probes = torch.zeros(C, L, N, dtype=points.dtype, device=dev, requires_grad=grad) if C else None
        with ExitStack() as stack, torch.set_grad_enabled(grad):
            for l in range(L):
                rows = (layers == l).nonzero().squeeze(1)
                if not C and len(rows) == 0:
                    continue
                def set_point(x, l=l, rows=rows):
                    if len(rows):
                        x = x.index_put((rows + C, pos[rows + C]), points[rows].to(x.dtype))
                    if C:
                        x = x.index_put((torch.arange(C, device=dev), pos[:C]), probes[:, l].to(x.dtype), accumulate=True)
                    return x
                stack.enter_context(hooks.patch(self.h, self.h.sites[l], set_point))
            if self.replay:
                for j in range(L):
                    block, template = self.h.layers[j], self.problems[0].outputs[j]
                    if batch.reached[j] == 0:
                        stack.enter_context(hooks.replaced_forward(
                            block, lambda *a, t=template, o=batch.outs[j], **k: like(t, o)))
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
        return self.capable("share", True, lambda: checks.share_agrees(self, layers, points, problem))

    def capable(self, capability: str, mixed: bool, check: Callable[[], bool]) -> bool:
        """Whether this model's blocks allow ``capability`` ("staircase", "share", "prefix"): as the
        architecture table declares for its family; for a family the table does not know,
        ``check()``'s verdict (the optimised rows equal the plain ones), computed once per handle (and
        per mixed / single-problem batches), kept in ``h.capabilities`` and logged when it is no."""
        return self.h.capabilities.decide(self.h, capability, check, variant=mixed)

    def _objective(self, stack: ExitStack, batch: RowBatch, reached: list[int] | None) -> torch.Tensor:
        """Run the rows' inputs (against the prefix cache, if any) with the hooks already in ``stack``;
        the objective per row. ``reached``: the staircase's rows per block (block j's cache then holds
        that many rows). Masked models: after the last block only the answer position matters (the
        head is position-wise), so the head runs on that position alone."""
        ids, rows_problem, pos, mixed = batch.ids, batch.problem, batch.pos, batch.mixed
        B = len(rows_problem)
        mask = positions = past = None
        past_len = self.past_len[rows_problem]
        if mixed:
            seq_len = self.seq[rows_problem]
            T = ids.shape[1]
            if self.kv is not None:                      # [B, past + 1]: the row's own prefix, and its token
                M = self.kv[0][0].shape[-2]
                mask = torch.arange(M + 1, device=ids.device) < past_len.unsqueeze(1)
                mask[:, M] = True
                positions = past_len.unsqueeze(1)
            else:                                        # [B, T]: the row's own tokens
                mask = torch.arange(T, device=ids.device) < seq_len.unsqueeze(1)
            mask = mask.long()
        shared = contextlib.nullcontext()
        if self.problems[int(rows_problem[0])].past is not None or (mixed and self.kv is not None):
            if checks.prefix_ok(self, batch, check=False):   # one prefix for all rows, attended without copies
                if mixed:
                    past = kvcache.shared(self.template, self.kv, rows_problem, True, reached)
                else:
                    past = kvcache.shared(self.problems[int(rows_problem[0])].past, None, rows_problem, False, reached)
                shared = prefix.shared_prefix(self.h.model)
            elif mixed:
                past = kvcache.gathered(self.template, self.kv, rows_problem, reached)
            else:
                past = kvcache.repeated(self.problems[int(rows_problem[0])].past, B, reached)
        rows = torch.arange(B, device=ids.device)
        if self.h.kind == "masked":
            stack.enter_context(hooks.patch(self.h, self.h.layers[-1], lambda y: y[rows, pos].unsqueeze(1), on="output"))
        with shared:
            logits = hooks.forward(self.h, ids, attention_mask=mask, past=past, position_ids=positions).logits
        logits = logits.squeeze(1) if logits.shape[1] == 1 else logits[rows, pos]
        return objective_values(logits, self.targets[rows_problem], self.objective)


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
        top = hidden(out)
        return like(out, torch.cat([top, rest.to(top.dtype)]))
    return hooks.replaced_forward(block, run)
