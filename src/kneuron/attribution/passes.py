"""The clean pass and the objective: what every attribution starts from and differentiates.

``clean_pass`` runs the prompt once without gradients and reads every layer's neuron activations at
the answer positions (the end points of the integration paths), the logits there and, for the rows
that follow, each block's output (replayed below a row's patched layer) and the key/value cache
(cut to each answer token's prefix, ``kvcache.prefix_cache``). Many sequences at once (AMIG's
baselines) go in chunks that fit the memory budget.

``objective_values`` is p(target) or log p(target) of each row, with a fused log-softmax whose
backward needs neither a [rows, vocabulary] one-hot nor a stored softmax (``_TargetLogProb``).
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import torch

import kneuron.attribution.budget as budget
from kneuron.errors import ConfigError
from kneuron.models import hooks
from kneuron.models.load import ModelHandle

OBJECTIVES = ("prob", "logprob")


@dataclass
class CleanPass:
    acts: torch.Tensor           # [S, K, L, N] activations at the answer positions
    logits: torch.Tensor         # [S, K, V] logits at the answer positions
    outputs: list | None         # per layer: output of the layer block (S == 1 only), for replay
    cache: object | None = None  # causal models, S == 1: the key/value cache of the whole input


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
    outputs = [None] * handle.n_layers
    cache = keep_outputs and handle.kind == "causal"
    with ExitStack() as stack, torch.no_grad():
        got = stack.enter_context(hooks.capture(handle, inputs={"acts": handle.sites}, at=pos))
        if keep_outputs:
            for l, block in enumerate(handle.layers):
                def keep(mod, args, out, l=l):
                    outputs[l] = out
                stack.enter_context(hooks.hook(block, keep, on="output"))
        # the output layer on the answer positions only (where the model takes logits_to_keep)
        out = hooks.forward(handle, input_ids, use_cache=True if cache else None, logits_at=pos)
    past = out.cache if cache else None
    return CleanPass(torch.stack(got["acts"], dim=2), out.logits, outputs if keep_outputs else None, past)


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
