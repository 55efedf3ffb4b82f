"""Second moments of an MLP output projection's input (ROME's key statistics), cached on disk.

``second_moment(handle, layer)`` is C = E[k kᵀ] (uncentred, float32) over the tokens of a corpus, k the
input of ``handle.sites[layer]`` (the knowledge neurons' activations). ROME takes it over 100k Wikipedia
articles; without such data the default corpus is **text the model writes itself**: ``texts`` sequences
of ``length`` tokens sampled (temperature 1, nucleus 0.95, special tokens never drawn, seeded) from the
model's start token ("<|endoftext|>" where the vocabulary has it), the keys read while it writes them
(one pass, no second forward). The default 32 x 128 (4k tokens, in batches of 32) is what a CPU computes
once per model and layer in about a minute (BENCHMARKS.md, "Editing methods"); ROME's 100k articles are
out of reach here, and 4k tokens still give a full-rank estimate of smollm2-135m's 1536 x 1536 moment (a
small ridge is added before inverting). ``corpus=`` an iterable of texts (e.g.
an organism's training text) instead: each truncated to ``max_length`` tokens, every non-special token
counted.

Cache: ``kneuron.store.cache`` (``$KNEURON_CACHE``, else the user cache directory) ``/stats/``, one file
per model name + weights fingerprint (``kneuron.models.fingerprint``) + layer + corpus settings, written
atomically; a damaged or mismatching file is computed again (one warning) and rewritten.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterable

import torch

from kneuron.models import hooks
from kneuron.models.hooks import hook as hook_on
from kneuron.models.load import ModelHandle
from kneuron.models.fingerprint import weights_fingerprint
from kneuron.models.sites import proj_dims
from kneuron.report.progress import progress as display
from kneuron.store.cache import Cache
from kneuron.store.cache import cache_dir as store_cache_dir

TEXTS, LENGTH, MAX_LENGTH, CHUNK, TOP_P = 32, 128, 256, 32, 0.95


def cache_dir() -> Path:
    """Where kneuron caches what it computes once per model (``kneuron.store.cache.cache_dir``)."""
    return store_cache_dir()


def second_moment(handle: ModelHandle, layer: int, *, corpus: Iterable[str] | None = None, texts: int = TEXTS,
                  length: int = LENGTH, seed: int = 0, max_length: int = MAX_LENGTH,
                  progress: bool = True) -> torch.Tensor:
    """C = E[k kᵀ] at ``handle.sites[layer]``'s input, [n, n] float32 on the CPU (see the module doc)."""
    return second_moments(handle, [layer], corpus=corpus, texts=texts, length=length, seed=seed,
                          max_length=max_length, progress=progress)[layer]


def second_moments(handle: ModelHandle, layers: Iterable[int], *, corpus: Iterable[str] | None = None,
                   texts: int = TEXTS, length: int = LENGTH, seed: int = 0, max_length: int = MAX_LENGTH,
                   progress: bool = True) -> dict[int, torch.Tensor]:
    """``second_moment`` for several layers; those not cached are computed together, in one pass."""
    layers = sorted({int(l) for l in layers})
    for l in layers:
        if not 0 <= l < handle.n_layers:
            raise ValueError(f"layer {l} is outside {handle.name} ({handle.n_layers} layers)")
    corpus = None if corpus is None else _texts(corpus)
    desc = _describe(handle, corpus, texts, length, seed, max_length)
    fp = weights_fingerprint(handle.model)
    out, missing = {}, []
    for l in layers:
        meta = {"model": handle.name, "fingerprint": fp, "layer": l, "corpus": desc}
        got = _load(_path(handle.name, fp, l, desc), meta, proj_dims(handle.sites[l])[0])
        if got is None:
            missing.append(l)
        else:
            out[l] = got
    if missing:
        sums = _collect(handle, missing, corpus, texts, length, seed, max_length, progress)
        for l in missing:
            total, count = sums[l]
            if count == 0:
                raise ValueError(f"no tokens to take the second moment over (layer {l} of {handle.name})")
            moment = (total / count).float()
            meta = {"model": handle.name, "fingerprint": fp, "layer": l, "corpus": desc}
            _save(_path(handle.name, fp, l, desc), {"moment": moment, "tokens": count, "meta": _dump(meta)})
            out[l] = moment
    return out


# ----------------------------------------------------------------------------- the cache files

def _texts(corpus: Iterable[str]) -> list[str]:
    if isinstance(corpus, str):
        raise TypeError("corpus must be an iterable of texts, not one string")
    texts = [t for t in corpus]
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"corpus must hold texts (str), found {bad[0]}")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("the corpus holds no text")
    return texts


def _describe(handle: ModelHandle, corpus: list[str] | None, texts: int, length: int, seed: int,
              max_length: int) -> dict:
    if corpus is None:
        return {"source": "self", "texts": int(texts), "length": int(length), "seed": int(seed),
                "start": start_ids(handle.tokenizer), "top_p": TOP_P, "chunk": CHUNK}
    h = hashlib.sha1()
    for t in corpus:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    return {"source": "corpus", "sha1": h.hexdigest(), "texts": len(corpus), "max_length": int(max_length)}


def _dump(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True, ensure_ascii=False)


def _path(name: str, fp: str, layer: int, desc: dict) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name if os.sep in name else name)[-60:] or "model"
    key = hashlib.sha1(_dump(desc).encode()).hexdigest()[:12]
    return cache_dir() / "stats" / f"{slug}-{fp}-L{layer}-{desc['source']}-{key}.pt"


def _cache() -> Cache:
    return Cache("stats", load=lambda f: torch.load(f, map_location="cpu", weights_only=True),
                 dump=lambda obj, f: torch.save(obj, f), directory=cache_dir(), what="statistics file")


def _load(path: Path, meta: dict, n: int) -> torch.Tensor | None:
    """The cached moment, or None when the file is missing, damaged or for something else (one warning)."""
    def usable(obj) -> bool:
        m = obj["moment"]
        return (obj["meta"] == _dump(meta) and isinstance(m, torch.Tensor) and m.shape == (n, n)
                and m.dtype == torch.float32 and bool(torch.isfinite(m).all()))
    obj = _cache().get(path.name, usable)
    return None if obj is None else obj["moment"]


def _save(path: Path, obj: dict) -> None:
    """Write ``obj`` to ``path`` atomically (``kneuron.store``); a cache that cannot be written is said."""
    _cache().put(path.name, obj)


# ----------------------------------------------------------------------------- text the model writes

def sample(handle: ModelHandle, start: list[int], n: int, new_tokens: int, seed: int, top_k: int = 0,
           top_p: float = 1.0) -> torch.Tensor:
    """``n`` sampled continuations of ``new_tokens`` tokens after ``start`` (ids), as [n, len(start) +
    new_tokens]; seeded (the global RNG is left as it was); special tokens are never sampled."""
    tok, model = handle.tokenizer, handle.model
    ids = torch.tensor([start] * n, device=handle.device)
    special = sorted(set(getattr(tok, "all_special_ids", []) or []))
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    devices = [handle.device.index or 0] if handle.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                             top_k=top_k, top_p=top_p, temperature=1.0, max_new_tokens=new_tokens,
                             suppress_tokens=special or None, pad_token_id=pad)
    return out


def start_ids(tok, text: str = "") -> list[int]:
    """Token ids that start a document: ``text``'s own tokens when the tokenizer puts a special token first
    (a BOS), else behind "<|endoftext|>" where the vocabulary has it (GPT-2, SmolLM2, Qwen: the pre-training
    document separator; SmolLM2's declared BOS is a chat token), else behind the BOS or EOS token."""
    ids = tok(text)["input_ids"] if text else []
    special = set(getattr(tok, "all_special_ids", []) or [])
    if ids and ids[0] in special:
        return ids
    sep = tok.convert_tokens_to_ids("<|endoftext|>") if "<|endoftext|>" in tok.get_vocab() else None
    for first in (sep, getattr(tok, "bos_token_id", None), getattr(tok, "eos_token_id", None)):
        if first is not None:
            return [first] + ids
    return ids or tok("The")["input_ids"]


# ----------------------------------------------------------------------------- collecting the keys

class _Sums:
    """Running Σ k kᵀ (float64) and token counts for several layers, fed by forward hooks."""

    def __init__(self, handle: ModelHandle, layers: list[int]):
        self.handle, self.layers = handle, layers
        n = handle.n_neurons
        self.total = {l: torch.zeros(n, n, dtype=torch.float64, device=handle.device) for l in layers}
        self.count = dict.fromkeys(layers, 0)
        self.select = None            # callable(x [.., n], layer) -> rows [N, n] to count; None: count nothing

    @contextmanager
    def hooked(self):
        """Inside: every layer's projection input counted (``select``) in each forward pass."""
        def make(l):
            def hook(mod, args):
                if self.select is None:
                    return
                k = self.select(args[0], l)
                if k.numel():
                    k = k.to(torch.float64 if k.dtype == torch.float64 else torch.float32)
                    self.total[l] += (k.T @ k).double()
                    self.count[l] += k.shape[0]
            return hook
        with ExitStack() as stack:
            for l in self.layers:
                stack.enter_context(hook_on(self.handle.sites[l], make(l)))
            yield

    def result(self) -> dict[int, tuple[torch.Tensor, int]]:
        return {l: (self.total[l].cpu(), self.count[l]) for l in self.layers}


def _collect(handle: ModelHandle, layers: list[int], corpus: list[str] | None, texts: int, length: int,
             seed: int, max_length: int, progress: bool) -> dict[int, tuple[torch.Tensor, int]]:
    """Σ k kᵀ and the token count at each layer's projection input, over the corpus or self-written text."""
    sums = _Sums(handle, layers)
    with sums.hooked():
        if corpus is None:
            _self_written(handle, sums, texts, length, seed, progress)
        else:
            _over_corpus(handle, sums, corpus, max_length, progress)
    return sums.result()


def _self_written(handle: ModelHandle, sums: _Sums, texts: int, length: int, seed: int, progress: bool) -> None:
    """Sample ``texts`` x ``length`` tokens, counting the key of every token the model reads after its
    start (the last sampled token is never read); ``progress``: kneuron's progress display over the tokens."""
    if handle.kind != "causal":
        raise ValueError(f"{handle.name} is a masked model and cannot write its own corpus; pass corpus=")
    n = handle.n_neurons
    start = start_ids(handle.tokenizer)
    if handle.max_positions:
        length = max(1, min(length, handle.max_positions - len(start)))
    label = f"statistics ({handle.name}, {texts}x{length} tokens)"
    calls = dict.fromkeys(sums.layers, 0)
    with display(label, texts * (length - 1), show=progress) as advance:     # the keys read: all but the last
        def select(x, layer):
            calls[layer] += 1
            if calls[layer] == 1:        # the start tokens
                return x.new_zeros(0, n)
            rows = x.reshape(-1, n)
            if layer == sums.layers[0]:
                advance(rows.shape[0])
            return rows

        try:
            for i, first in enumerate(range(0, texts, CHUNK)):
                calls.update(dict.fromkeys(calls, 0))
                sums.select = select
                sample(handle, start, min(CHUNK, texts - first), length, seed * 1000 + i, top_p=TOP_P)
        finally:
            sums.select = None


def _over_corpus(handle: ModelHandle, sums: _Sums, corpus: list[str], max_length: int, progress: bool) -> None:
    """Count the key of every non-special token of the corpus's texts, 8 texts a forward."""
    tok, n = handle.tokenizer, handle.n_neurons
    limit = min(max_length, handle.max_positions or max_length)
    batch = 8
    for first in _batches(handle, len(corpus), batch, progress):
        enc = [tok(t, truncation=True, max_length=limit, return_special_tokens_mask=True)
               for t in corpus[first:first + batch]]
        padded = hooks.pad(handle, [e["input_ids"] for e in enc])
        keep = torch.zeros(padded.shape, dtype=torch.bool)       # the texts' own tokens, specials aside
        for r, e in enumerate(enc):
            keep[r, :len(e["input_ids"])] = ~torch.tensor(e["special_tokens_mask"], dtype=torch.bool)
        keep = keep.to(handle.device)
        sums.select = lambda x, layer: x.reshape(-1, n)[keep.reshape(-1)]
        try:
            with torch.no_grad():
                handle.model(input_ids=padded.ids, attention_mask=padded.attention_mask)
        finally:
            sums.select = None


def _batches(handle: ModelHandle, count: int, batch: int, show: bool) -> Iterable[int]:
    """The first index of each batch of ``batch`` texts out of ``count``, under a progress display of texts."""
    with display(f"statistics ({handle.name}, {count} texts)", count, show=show) as advance:
        for first in range(0, count, batch):
            yield first
            advance(min(batch, count - first))
