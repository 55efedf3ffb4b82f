"""Attention of single-token rows to ONE shared key/value prefix, without a copy per row.

The engine runs each causal row as one token against the prompt's key/value cache. With transformers'
own cache every layer concatenates the prefix with the row's new key and value, which materialises
``[rows, kv heads, prefix + 1, head dim]`` per layer and keeps it for the backward pass -- memory that
grows with rows x prompt length (15 MB per prompt token on smollm2-135m at 630 rows).

Here instead:

* each cache layer (``SharedPrefixLayer``) keeps the prefix once (``[problems, kv heads, T, d]``, one
  per prompt sharing the batch, and which of them each row attends to) and does not concatenate: its
  ``update`` hands the attention the row's own new key and value only, marked;
* the model's attention function is swapped for ``attend`` while the rows run (``shared_prefix``):
  for a marked key it computes the softmax over prefix + the new token exactly, grouped-query heads
  against the shared prefix by batched products (no ``repeat_kv``, no broadcast copies); the
  backward recomputes the scores from the query instead of keeping them (as FlashAttention does), so
  the saved memory per row and layer is a few vectors of the head dimension, not of the prompt length;
* anything it does not handle (soft-capping, attention sinks, position biases, a mask of an
  unexpected shape, an unmarked key) runs the model's own attention function on the concatenated
  keys and values: exact, with the copy.

Families whose attention does not go through transformers' attention interface (BLOOM, Falcon,
GPT-Neo) keep the concatenating cache: the architecture table declares it (``Arch.prefix``).
"""
from __future__ import annotations

import functools
import sys
import threading
from contextlib import contextmanager

import torch

NAME = "kneuron_shared_prefix"
_UNSUPPORTED = ("softcap", "s_aux", "sinks", "position_bias", "attention_chunk_size")
_STATE = threading.local()


def _registry():
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    if NAME not in ALL_ATTENTION_FUNCTIONS:
        ALL_ATTENTION_FUNCTIONS.register(NAME, attend)
    if NAME not in ALL_MASK_ATTENTION_FUNCTIONS:
        ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)       # boolean [rows, 1, 1, kv] or None
    return ALL_ATTENTION_FUNCTIONS


def supported() -> bool:
    """Whether this transformers has per-layer cache objects and the attention and mask interfaces."""
    try:
        from transformers.cache_utils import DynamicLayer  # noqa: F401
        _registry()
        return True
    except (ImportError, AttributeError):
        return False


def make_layer(keys: torch.Tensor, values: torch.Tensor, rows: int, owner: torch.Tensor | None):
    """A cache layer of ``rows`` rows attending to ``keys`` / ``values`` [P, kv heads, T, d]: all to
    the first (``owner`` None) or row i to prefix ``owner[i]``."""
    return _layer_class()(keys, values, rows, owner)


@functools.cache
def _layer_class():
    from transformers.cache_utils import DynamicLayer

    class SharedPrefixLayer(DynamicLayer):
        """One prefix for all rows (or one per prompt); ``update`` returns the new token's key and
        value only, marked for ``attend``."""

        def __init__(self, keys, values, rows, owner):
            super().__init__()
            self.prefix, self.owner = (keys, values), owner
            # what the model may read (batch size, length, device): stride-0 views, no memory
            src = 0 if owner is None else int(owner[0])
            self.keys = keys[src:src + 1].expand(rows, *keys.shape[1:])
            self.values = values[src:src + 1].expand(rows, *values.shape[1:])
            self.is_initialized, self.device = True, keys.device

        def update(self, key_states, value_states, *args, **kwargs):
            _pending()[id(key_states)] = (key_states, value_states, self)
            return key_states, value_states

        def batch_repeat_interleave(self, repeats):
            raise NotImplementedError("a shared-prefix cache is built for its rows")

    return SharedPrefixLayer


def _pending() -> dict:
    if not hasattr(_STATE, "pending"):
        _STATE.pending, _STATE.original = {}, []
    return _STATE.pending


def _configs(model):
    seen = {}
    for m in model.modules():
        c = getattr(m, "config", None)
        if c is not None and hasattr(c, "_attn_implementation_internal"):
            seen[id(c)] = c
    return list(seen.values())


@contextmanager
def shared_prefix(model):
    """While the rows run: ``model``'s attention goes through ``attend`` (the model's own function
    for anything else); checks afterwards that every shared-prefix layer was attended through it."""
    _registry()
    _pending()
    configs = _configs(model)
    before = [c._attn_implementation_internal for c in configs]
    _STATE.original.append(before[0] if before else "sdpa")
    _STATE.pending = {}
    for c in configs:
        c._attn_implementation_internal = NAME
    try:
        yield
        if _STATE.pending:                       # a layer's new key never reached ``attend``
            raise RuntimeError(f"shared-prefix attention: {len(_STATE.pending)} layer(s) of "
                               f"{type(model).__name__} bypass transformers' attention interface")
    finally:
        for c, b in zip(configs, before):
            c._attn_implementation_internal = b
        _STATE.original.pop()
        _STATE.pending = {}


def _original(module):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    impl = _STATE.original[-1] if getattr(_STATE, "original", None) else "sdpa"
    if impl in (None, "eager", NAME) or impl not in ALL_ATTENTION_FUNCTIONS:
        mod = sys.modules.get(type(module).__module__)
        eager = getattr(mod, "eager_attention_forward", None)
        if eager is not None:
            return eager, "eager"
        impl = "sdpa"
    return ALL_ATTENTION_FUNCTIONS[impl], impl


def _run_original(module, query, key, value, mask, **kwargs):
    fn, impl = _original(module)
    if impl == "eager" and mask is not None and mask.dtype == torch.bool:   # our mask is sdpa's (True: attend)
        mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill_(
            ~mask, torch.finfo(query.dtype).min)
    return fn(module, query, key, value, mask, **kwargs)


def attend(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention interface: (output [rows, 1, heads, d], None)."""
    hit = _pending().pop(id(key), None)
    if hit is None or hit[0] is not key or hit[1] is not value:
        return _run_original(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    layer = hit[2]
    K, V = layer.prefix
    n, H, q_len, d = query.shape
    KV, T = key.shape[1], K.shape[-2]
    bias = _bias(attention_mask, n, T + 1, query)
    plain = (q_len == 1 and H % KV == 0 and K.shape[1] == KV and bias is not False
             and not (dropout and module.training) and all(kwargs.get(k) is None for k in _UNSUPPORTED)
             and not kwargs.get("output_attentions"))
    if not plain:                                          # exact, with the copy
        owner = layer.owner
        Kr = K.expand(n, *K.shape[1:]) if owner is None else K[owner]
        Vr = V.expand(n, *V.shape[1:]) if owner is None else V[owner]
        return _run_original(module, query, torch.cat([Kr.to(key.dtype), key], -2),
                             torch.cat([Vr.to(value.dtype), value], -2), attention_mask, scaling=scaling,
                             dropout=dropout, **kwargs)
    scale = float(d ** -0.5 if scaling is None else scaling)
    out = PrefixAttention.apply(query, key, value, K, V, layer.owner, bias, scale)   # [KV, n, G, d]
    return out.permute(1, 0, 2, 3).reshape(n, 1, H, d), None


def _bias(mask, n: int, width: int, query):
    """The attention mask as an additive [n, width] bias (None: attend to all; False: not understood)."""
    if mask is None:
        return None
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2] != 1 or mask.shape[-1] != width or mask.shape[0] not in (1, n):
        return False
    m = mask[:, 0, 0, :].expand(n, width)
    if m.dtype == torch.bool:
        if bool(m.all()):
            return None
        return torch.zeros(m.shape, dtype=_acc(query.dtype), device=m.device).masked_fill_(~m, float("-inf"))
    return m.to(_acc(query.dtype))


def _acc(dtype: torch.dtype) -> torch.dtype:
    """The softmax's precision: fp32 for half types, else the model's own."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class PrefixAttention(torch.autograd.Function):
    """softmax(q [K; k]^T * scale + bias) [V; v] for one query token per row, computed in the layout
    [kv heads, rows, group, .] (grouped-query heads share their kv head without a copy). The prefix
    K, V [P, kv heads, T, d] is shared by the rows (row i reads prefix ``owner[i]``), never copied, and
    gets no gradient; prefix and new token are scored apart and joined by their log-sum-exp (no
    concatenation). The backward recomputes the scores (saved per row: q, k, v, the output and the
    log-sum-exp -- nothing of length T)."""

    @staticmethod
    def forward(ctx, query, key, value, K, V, owner, bias, scale):
        n, H, _, d = query.shape
        KV = key.shape[1]
        q = query.reshape(n, KV, H // KV, d).transpose(0, 1)                  # [KV, n, G, d] (views)
        k = key.reshape(n, KV, 1, d).transpose(0, 1)                           # [KV, n, 1, d]
        v = value.reshape(n, KV, 1, d).transpose(0, 1)
        with torch.no_grad(), torch.autocast(query.device.type, enabled=False):
            sp, sn = _scores(q, k, K, owner, bias, scale)
            lse = torch.logaddexp(torch.logsumexp(sp, dim=-1, keepdim=True), sn)         # [KV, n, G, 1]
            pp, pn = sp.sub_(lse).exp_(), sn.sub_(lse).exp_()
            out = _grouped(pp, V.to(pp.dtype), owner).add_(pn * v.to(pp.dtype))
        ctx.save_for_backward(q, k, v, K, V, out, lse, owner, bias)
        ctx.scale, ctx.dtype = scale, query.dtype
        return out.to(query.dtype)

    @staticmethod
    def backward(ctx, g):
        q, k, v, K, V, out, lse, owner, bias = ctx.saved_tensors
        n, KV, G, d = q.shape[1], q.shape[0], q.shape[2], q.shape[3]
        with torch.no_grad(), torch.autocast(q.device.type, enabled=False):
            sp, sn = _scores(q, k, K, owner, bias, ctx.scale)
            acc = sp.dtype
            pp, pn = sp.sub_(lse).exp_(), sn.sub_(lse).exp_()                  # [KV, n, G, T], [.., 1]
            g = g.to(acc)
            delta = (g * out).sum(-1, keepdim=True)                              # rowsum(dO * O)
            dsp = _grouped(g, V.to(acc).transpose(-1, -2), owner).sub_(delta).mul_(pp).mul_(ctx.scale)
            dsn = ((g * v.to(acc)).sum(-1, keepdim=True) - delta).mul_(pn).mul_(ctx.scale)
            dq = _grouped(dsp, K.to(acc), owner).add_(dsn * k.to(acc))          # [KV, n, G, d]
            dk = (dsn * q.to(acc)).sum(2, keepdim=True)                          # [KV, n, 1, d]
            dv = (pn * g).sum(2, keepdim=True)
        back = lambda x, heads: x.transpose(0, 1).reshape(n, heads, 1, d).to(ctx.dtype)
        return back(dq, KV * G), back(dk, KV), back(dv, KV), None, None, None, None, None


def _grouped(x: torch.Tensor, M: torch.Tensor, owner) -> torch.Tensor:
    """x [KV, n, G, a] times the shared M [P, KV, a, b] -> [KV, n, G, b]: row i by M[owner[i]]
    (batched over the kv heads; M is never expanded)."""
    KV, n, G, a = x.shape
    if owner is None:
        return torch.matmul(x.reshape(KV, n * G, a), M[0]).view(KV, n, G, M.shape[-1])
    out = x.new_empty(KV, n, G, M.shape[-1])
    for p in owner.unique().tolist():
        rows = (owner == p).nonzero().squeeze(1)
        out[:, rows] = torch.matmul(x[:, rows].reshape(KV, -1, a), M[p]).view(KV, len(rows), G, M.shape[-1])
    return out


def _scores(q, k, K, owner, bias, scale):
    """Scaled scores (+ bias) in the softmax's precision: against the prefix [KV, n, G, T] and
    against the row's own token [KV, n, G, 1]."""
    acc = _acc(q.dtype)
    T = K.shape[-2]
    q = q.to(acc)
    sp = _grouped(q, K.to(acc).transpose(-1, -2), owner).mul_(scale)
    sn = (q * k.to(acc)).sum(-1, keepdim=True).mul_(scale)
    if bias is not None:
        b = bias.view(1, bias.shape[0], 1, T + 1)
        sp.add_(b[..., :T])
        sn.add_(b[..., T:])
    return sp, sn
