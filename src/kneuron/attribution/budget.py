"""How many rows go into one batch: a memory budget against the model's dimensions and the prompt.

``plan`` is a pure function of the model's dimensions (``Dims``), the prompt's length, the kind of rows
and the budget: it returns the rows per batch and its own estimate of their peak bytes. The engine asks
it with the budget ``Execution.max_memory`` (``--max-memory``), by default ``default_budget()``: half of
the memory available (``MemAvailable`` of /proc/meminfo, read after the model is loaded) on a CPU,
where the budget is what keeps the kernel from killing the process, and 80 % of the free memory on
a GPU, where running out of memory still backs off by halving.

The estimate (bytes; ``b`` the model's bytes per number, ``a`` the softmax's: max(4, b)):

* single-token rows (causal, against the prompt's key/value cache), per row:
  ``3·V·a`` (the output layer's logits, kept for the backward, and their gradient)
  + ``L_eff · (16·D + 4·I) · b`` (what each block it runs keeps for the backward: about sixteen
  vectors of the hidden width D and four of the MLP width I)
  + ``3·H·(T+1)·a`` (one layer's attention scores to the T-token prefix, their exponentials and
  their gradient: transient, one layer at a time; the shared-prefix attention keeps nothing of
  length T per row)
  + ``(2·b + 8)·N`` (the row's point, its gradient, the sum in float64)
  and, where the family's attention must concatenate the prefix per row (``shared_prefix=False``),
  ``L_eff · 2·kv·d·(T+1)·b`` kept plus ``2·H·d·(T+1)·b`` transient (heads repeated for the scores);
* full-sequence rows (masked models; causal models without the cache), per row:
  ``L_eff · T · (16·D + 4·I) · b + L_eff · 2·H·T²·a`` (attention probabilities kept) + the output layer
  (``3·V·a`` on the answer position, ``T·V·a`` more for a causal model's every position);
* per batch, fixed: ``S·(2·L·kv·d·T + L·T·D)·b`` (each of the ``S`` prompts' cache and recorded block
  outputs) + ``L·N·16·paths`` (the float64 gradient sums) + 64 MiB (the allocator's slack);
* ``L_eff``, the blocks a row runs on average: a batch of R rows starting at layer 0 with r rows per
  layer (``rows_per_layer``, the paths times the nodes) spans s = ceil(R / r) layers, so its rows run
  ``L - (s - 1) / 2`` blocks on average (the layer staircase); ``L`` where that is not known.

The estimate grows with R, so the plan is the largest R (up to ``max_rows``, the speed cap) whose
estimate fits the budget; if not even one row fits, a ConfigError says what one row needs.
"""
from __future__ import annotations

import contextvars
import math
import re
from dataclasses import dataclass

from kneuron.errors import ConfigError

SLACK = 64 * 2**20
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)
_CURRENT: contextvars.ContextVar[int | None] = contextvars.ContextVar("kneuron_memory_budget", default=None)


def parse_size(value, what: str = "max-memory") -> int:
    """Bytes from a size: an integer (bytes) or a string like "512MB", "4GB" (decimal), "4GiB",
    "4G" (binary); a ConfigError (one line) otherwise."""
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a size like 512MB, 4GB or 4GiB, not {value!r}")
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE.match(str(value))
        if not m or m.group(2).lower() not in _UNITS:
            raise ConfigError(f"{what} must be a size like 512MB, 4GB or 4GiB, not {value!r}")
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n <= 0:
        raise ConfigError(f"{what} must be a positive size, not {value!r}")
    return n


def format_size(n: float) -> str:
    for unit, f in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= f:
            return f"{n / f:.1f} {unit}"
    return f"{int(n)} B"


def available_bytes(device=None) -> int | None:
    """Free memory where the rows will run: MemAvailable (CPU, Linux), the free device memory (CUDA);
    None where unknown."""
    import torch
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(dev)[0])
        except (RuntimeError, AssertionError):
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def default_budget(device=None) -> int | None:
    """Half of the available memory on a CPU, 80 % of the free memory on a GPU; None where unknown."""
    free = available_bytes(device)
    if free is None:
        return None
    share = 0.8 if str(device).startswith("cuda") else 0.5
    return int(free * share)


@dataclass(frozen=True)
class Dims:
    """What the estimate needs of a model."""
    layers: int
    hidden: int
    neurons: int            # the MLP's width (the neurons per layer)
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    dtype_bytes: int = 4


def dims_of(handle) -> Dims:
    """A loaded model's ``Dims`` (from its config, with the usual names of each family)."""
    cfg = getattr(handle.model, "config", None)

    def get(*names, default=None):
        for n in names:
            v = getattr(cfg, n, None)
            if isinstance(v, int) and v > 0:
                return v
        return default
    hidden = get("hidden_size", "n_embd", "d_model", "dim", default=handle.n_neurons // 4 or 1)
    heads = get("num_attention_heads", "n_head", "num_heads", "n_heads", "encoder_attention_heads", default=1)
    kv = get("num_key_value_heads", "num_kv_heads", "n_head_kv", default=heads)
    if getattr(cfg, "multi_query", False) and not getattr(cfg, "new_decoder_architecture", False):
        kv = 1
    head_dim = get("head_dim", default=max(1, hidden // heads))
    vocab = get("vocab_size", default=50_000)
    return Dims(handle.n_layers, hidden, handle.n_neurons, heads, kv, head_dim, vocab,
                handle.dtype.itemsize if hasattr(handle.dtype, "itemsize") else 4)


@dataclass(frozen=True)
class Plan:
    rows: int               # rows per batch
    bytes: int              # the estimate of their peak memory (fixed + rows x per row)
    per_row: int            # bytes per row at that batch size
    fixed: int              # bytes that do not depend on the rows
    budget: int | None


def estimate(d: Dims, tokens: int, rows: int, *, single_token: bool = True, causal: bool = True,
             shared_prefix: bool = True, rows_per_layer: int | None = None, prompts: int = 1,
             paths: int = 1) -> tuple[int, int]:
    """(fixed bytes, bytes per row) of a batch of ``rows`` rows for a prompt of ``tokens`` tokens."""
    b = d.dtype_bytes
    a = max(4, b)
    T = max(1, tokens)
    L = d.layers
    if rows_per_layer:
        s = min(L, math.ceil(rows / max(1, rows_per_layer)))
        l_eff = L - (s - 1) / 2
    else:
        l_eff = L
    block = (16 * d.hidden + 4 * d.neurons) * b
    out = 3 * d.vocab * a
    point = (2 * b + 8) * d.neurons
    if single_token:
        per_row = out + l_eff * block + 3 * d.heads * (T + 1) * a + point
        if not shared_prefix:
            per_row += l_eff * 2 * d.kv_heads * d.head_dim * (T + 1) * b + 2 * d.heads * d.head_dim * (T + 1) * b
    else:
        per_row = l_eff * T * block + l_eff * 2 * d.heads * T * T * a + out + point
        if causal:
            per_row += T * d.vocab * a
    fixed = (prompts * (2 * L * d.kv_heads * d.head_dim * T + L * T * d.hidden) * b
             + L * d.neurons * 16 * max(1, paths) + SLACK)
    return int(fixed), int(math.ceil(per_row))


def plan(d: Dims, tokens: int, budget: int | None, *, kind: str = "causal", prefix_cache: bool = True,
         shared_prefix: bool = True, max_rows: int = 640, rows_per_layer: int | None = None,
         prompts: int = 1, paths: int = 1) -> Plan:
    """The most rows per batch (at most ``max_rows``) whose estimated peak memory fits ``budget``
    bytes (None: no budget, ``max_rows``). ``kind``: "causal" or "masked"; causal rows are single
    tokens against the prompt's cache where ``prefix_cache``; ``shared_prefix``: they attend to it
    without a copy per row. A ConfigError (one line) if one row does not fit."""
    if kind not in ("causal", "masked"):
        raise ConfigError(f"kind must be causal or masked, not {kind!r}")
    opts = dict(single_token=kind == "causal" and prefix_cache, causal=kind == "causal", shared_prefix=shared_prefix,
                rows_per_layer=rows_per_layer, prompts=prompts, paths=paths)

    def total(r: int) -> tuple[int, int, int]:
        fixed, per_row = estimate(d, tokens, r, **opts)
        return fixed + r * per_row, fixed, per_row
    hi = max(1, int(max_rows))
    if budget is None:
        t, fixed, per_row = total(hi)
        return Plan(hi, t, per_row, fixed, None)
    t1, fixed, per_row = total(1)
    if t1 > budget:
        raise ConfigError(f"the memory budget ({format_size(budget)}) is too small: one row of a "
                          f"{tokens}-token prompt needs about {format_size(t1)} (--max-memory / Execution(max_memory=...))")
    lo = 1                                            # total(lo) fits; find the largest that does
    if total(hi)[0] <= budget:
        lo = hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if total(mid)[0] <= budget:
            lo = mid
        else:
            hi = mid - 1
    t, fixed, per_row = total(lo)
    return Plan(lo, t, per_row, fixed, budget)


# ----------------------------------------------------------------------------- the budget in force

def current() -> int | None:
    """The budget of the attribution running in this context (None outside one)."""
    return _CURRENT.get()


class limit:
    """``with limit(bytes):`` the budget in force for the clean passes of this attribution (AMIG's
    baselines are chunked to fit it)."""

    def __init__(self, budget: int | None):
        self.budget = budget

    def __enter__(self):
        self.token = _CURRENT.set(self.budget)
        return self

    def __exit__(self, *exc):
        _CURRENT.reset(self.token)


def clean_chunk(d: Dims, tokens: int, sequences: int, budget: int | None) -> int:
    """Sequences per no-grad forward pass (the clean pass, AMIG's baselines) so that the pass fits
    ``budget``: per sequence ``T·(6·D + 3·I)·b`` of activations, ``H·T²·a`` of attention scores (an
    eager attention's; sdpa's are smaller) and the layers' readings ``L·I·b``; at least one."""
    if budget is None or sequences <= 1:
        return max(1, sequences)
    b, a, T = d.dtype_bytes, max(4, d.dtype_bytes), max(1, tokens)
    per = T * (6 * d.hidden + 3 * d.neurons) * b + d.heads * T * T * a + d.layers * d.neurons * b
    return max(1, min(sequences, (budget - SLACK) // max(1, per)))
