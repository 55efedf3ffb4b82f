"""Rows per batch: the speed cap, and fewer where the memory budget needs it (``budget.plan``).

The cap is what speed asks for (large batches keep the staircase's savings and the device busy); the
budget is what memory allows (``Execution.max_memory``, by default ``budget.default_budget``). The
planner itself is a pure function of the model's dimensions (``budget.py``); this module says what to
ask it for a handle.
"""
from __future__ import annotations

import kneuron.attribution.prefix as prefix
from kneuron.attribution.budget import Plan, dims_of, plan
from kneuron.models.load import ModelHandle
from kneuron.models.sites import declared_capability


def speed_cap(handle: ModelHandle, seq_len: int, prefix_cache: bool) -> int:
    """The most rows per batch that speed asks for (the budget may allow fewer). Causal single-token
    rows: as many as keep the [rows, vocabulary] logits near 32M numbers (CPU; 128M on a GPU), at most
    640 (CPU) or 2,048 (GPU) -- rows of every layer share one batch, each block computing only the rows
    that reached it, so larger batches are faster up to the point where the logits dominate.
    Full-sequence rows (masked models): 448 tokens per batch on a CPU, 8,192 on a GPU. The measurements
    behind these caps: BENCHMARKS.md, "Attribution: rows per batch"."""
    cuda = handle.device.type == "cuda"
    if handle.kind == "causal" and prefix_cache:
        vocab = getattr(getattr(handle.model, "config", None), "vocab_size", None) or 50_000
        return max(16, min(2048 if cuda else 640, (128 if cuda else 32) * 2**20 // vocab))
    return max(1, (8192 if cuda else 448) // max(1, seq_len))


def plan_batch(handle: ModelHandle, tokens: int, budget: int | None, *, prefix_cache: bool = True,
               rows_per_layer: int | None = None, prompts: int = 1, paths: int = 1) -> Plan:
    """Rows per batch for prompts of at most ``tokens`` tokens: the speed cap, fewer where the memory
    ``budget`` (bytes; None: none) needs it (``budget.plan``; a ConfigError if one row does not fit).
    Out-of-memory on a GPU still backs off by halving."""
    shared = handle.kind == "causal" and declared_capability(handle.model, "prefix") is True and prefix.supported()
    return plan(dims_of(handle), tokens, budget, kind=handle.kind, prefix_cache=prefix_cache, shared_prefix=shared,
                max_rows=speed_cap(handle, tokens, prefix_cache), rows_per_layer=rows_per_layer, prompts=prompts,
                paths=paths)
