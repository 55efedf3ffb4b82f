"""Key/value caches of the causal rows: cut from the clean pass, stacked across prompts, shared by rows.

A causal row runs one token against the cache of the tokens before it. That cache is the clean pass's,
cut to the answer token's prefix (views, no extra pass) where every layer is a plain growing cache;
otherwise one pass of the decoder over the prefix (``prefix_cache``). Rows of several prompts sharing a
batch read the prompts' caches stacked and zero-padded to the longest (``stack``), behind an attention
mask. How a batch's rows read their cache:

* ``shared``: ONE copy of each prompt's prefix that every row attends to without a copy per row
  (``prefix.py``'s attention; where the family allows it, see ``checks.prefix_ok``);
* ``gathered``: rows of several prompts, each with a copy of its own prompt's stacked prefix;
* ``repeated``: rows of one prompt, its prefix expanded (stride 0) or repeated per row.

With the layer staircase, block j's cache holds only the rows that run block j (``reached[j]``).
"""
from __future__ import annotations

import copy

import torch

import kneuron.attribution.prefix as prefix
from kneuron.models import hooks


def growing_cache_layers(cache) -> bool:
    """Whether every layer of ``cache`` is a plain growing key/value cache (one we can cut and stack)."""
    try:
        from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer
    except ImportError:                               # older transformers: no per-layer cache objects
        return False
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(isinstance(x, DynamicLayer) and not isinstance(x, DynamicSlidingWindowLayer)
                                and isinstance(getattr(x, "keys", None), torch.Tensor) for x in layers)


def prefix_cache(handle, clean, input_ids: torch.Tensor, position: int):
    """The key/value cache of the first ``position`` tokens: the clean pass's (``clean.cache``), cut
    (no extra pass), where every layer is a plain growing cache; otherwise one pass of the decoder
    without its output layer."""
    if growing_cache_layers(clean.cache):           # views of the clean pass's tensors (nothing writes to them)
        past = copy.copy(clean.cache)
        past.layers = [copy.copy(x) for x in clean.cache.layers]
        for x in past.layers:
            x.keys, x.values = x.keys[..., :position, :], x.values[..., :position, :]
        return past
    with torch.no_grad():
        return hooks.forward(handle, input_ids[:, :position], use_cache=True, head=False).cache


def stack(problems) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], object]:
    """The problems' caches stacked: per layer, keys and values [P, heads, T_max, d], zero-padded
    (a problem without a cache: zeros), and one of the caches as the template of the batches' caches."""
    pasts = [p.past for p in problems if p.past is not None]
    P, M = len(problems), max(p.past_len for p in problems)
    kv = []
    for j in range(len(pasts[0].layers)):
        ref = pasts[0].layers[j]
        k = ref.keys.new_zeros(P, *ref.keys.shape[1:-2], M, ref.keys.shape[-1])
        v = ref.values.new_zeros(P, *ref.values.shape[1:-2], M, ref.values.shape[-1])
        for i, p in enumerate(problems):
            if p.past is not None:
                k[i, ..., :p.past_len, :] = p.past.layers[j].keys[0]
                v[i, ..., :p.past_len, :] = p.past.layers[j].values[0]
        kv.append((k, v))
    return kv, pasts[0]


def _rows(j: int, reached: list[int] | None, B: int) -> int:
    return max(reached[j], 1) if reached is not None else B


def shared(template, kv, rows_problem: torch.Tensor, mixed: bool, reached: list[int] | None):
    """A cache whose layer j serves the rows that run block j (``reached``, or all) from ONE copy of
    each prompt's prefix: ``template``'s own layers (one prompt: a view of the clean pass's cache) or,
    for rows of several problems (``mixed``), the stacked prefixes ``kv`` and which one each row reads."""
    B = len(rows_problem)
    past = copy.copy(template)
    if kv is None:
        kv = [(x.keys, x.values) for x in past.layers]
    layers = []
    for j, (k, v) in enumerate(kv):
        n = _rows(j, reached, B)
        layers.append(prefix.make_layer(k, v, n, rows_problem[:n] if mixed else None))
    past.layers = layers
    return past


def gathered(template, kv, rows_problem: torch.Tensor, reached: list[int] | None):
    """Rows of several problems: a copy of ``template`` whose layer j holds each row's own stacked prefix."""
    B = len(rows_problem)
    past = copy.deepcopy(template)
    for j, layer in enumerate(past.layers):
        n = _rows(j, reached, B)
        layer.keys, layer.values = kv[j][0][rows_problem[:n]], kv[j][1][rows_problem[:n]]
    return past


def repeated(past, B: int, reached: list[int] | None):
    """Rows of one problem: a copy of its cache, expanded to the rows of each block (staircase) or
    repeated for the ``B`` rows."""
    past = copy.deepcopy(past)
    if reached is not None:
        for layer, n in zip(past.layers, reached):   # block j sees only its own rows
            layer.keys = layer.keys.expand(max(n, 1), *layer.keys.shape[1:])
            layer.values = layer.values.expand(max(n, 1), *layer.values.shape[1:])
    elif B > 1:
        past.batch_repeat_interleave(B)
    return past
