"""Reading the residual stream and the value vectors in the vocabulary (Geva et al. 2022; LM-Debugger).

    logit_lens(handle, prompt) -> Lens      per layer, the top tokens of the residual stream before and
                                            after the MLP at the answer position, the neurons' activations
                                            there and the strongest neuron updates |a_i| * ||v_i||
    value_tokens(handle, layer, index)      the tokens neuron (layer, index)'s value vector promotes and
                                            suppresses: the unembedding times the value vector
    value_index(handle) -> ValueIndex       every neuron's top promoted tokens, built once per model and
                                            cached on disk; .search(token): the neurons that rank it highest
    greedy_continuation(handle, prompt)     the model's greedy continuation (causal models)

The lens reads the stream through the model's own head: the final norm and the unembedding (causal
models), the MLM head (masked models). "Before the MLP" is the layer's output minus the MLP's update
for pre-norm models (GPT-2, Llama, ...), and the residual input of the output block for BERT-style
post-norm models. Interventions (kneuron.intervene) active around a call apply to it.
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from kneuron.errors import ConfigError
from kneuron.facts.templates import QueryError
from kneuron.models import hooks
from kneuron.models.load import ModelHandle
from kneuron.models.fingerprint import weights_fingerprint
from kneuron.models.sites import as_bsn, value_vectors
from kneuron.store.cache import Cache, safe_name
from kneuron.store.cache import cache_dir as store_cache_dir

Tokens = list[tuple[str, float]]
_NORMS = ("norm", "ln_f", "final_layernorm", "final_layer_norm", "norm_f")   # a causal model's final norm


class LensError(ConfigError):
    """The model's head cannot be found, so its residual stream cannot be read in the vocabulary."""


@dataclass
class LayerLens:
    layer: int
    before: Tokens | None          # top tokens of the stream entering the MLP (None: not readable)
    after: Tokens                  # ... and leaving the layer


@dataclass
class Lens:
    position: int                  # the answer position read
    layers: list[LayerLens]
    activations: torch.Tensor      # [n_layers, n_neurons] at that position, on the CPU
    updates: list[tuple[int, int, float, float]]   # strongest (layer, index, activation, |a| * ||v||)


def check_neuron(handle: ModelHandle, layer: int, index: int) -> None:
    """A ConfigError (one line) for a neuron outside the model (``ModelHandle.check_neurons``)."""
    handle.check_neurons([(layer, index)])


def _input(handle: ModelHandle, prompt: str) -> tuple[list[int], int]:
    """Input ids and the answer position, as probe.predict reads them."""
    tok = handle.tokenizer
    if handle.kind == "masked":
        ids = tok(prompt.replace("[Y]", tok.mask_token))["input_ids"]
        where = [i for i, t in enumerate(ids) if t == tok.mask_token_id]
        if len(where) != 1:
            raise QueryError(f"a masked-model prompt needs exactly one [Y] or {tok.mask_token}; found {len(where)}")
        return ids, where[0]
    if not prompt.strip():
        raise QueryError("the prompt is empty")
    ids = tok(prompt.rstrip())["input_ids"]
    return ids, len(ids) - 1


def _parent(model: nn.Module, child: nn.Module) -> nn.Module | None:
    for mod in model.modules():
        if any(c is child for c in mod.children()):
            return mod
    return None


def head(handle: ModelHandle) -> Callable[[torch.Tensor], torch.Tensor]:
    """hidden [..., H] -> logits [..., vocab], as the model turns its last hidden state into logits."""
    model, unembed = handle.model, handle.model.get_output_embeddings()
    if unembed is None:
        raise LensError(f"{handle.name} has no output embeddings")
    if handle.kind == "masked":                     # the MLM head: transform + decoder (BERT, RoBERTa)
        mlm = _parent(model, unembed)
        if mlm is None or mlm is model:
            raise LensError(f"{handle.name}: no MLM head module around the output embeddings")
        return mlm
    inside = handle.site.layers_path + "."
    norms = [m for n, m in model.named_modules() if n.split(".")[-1] in _NORMS and not n.startswith(inside)]
    if not norms:
        raise LensError(f"{handle.name}: no final norm ({', '.join(_NORMS)}) found")
    norm = norms[-1]
    cap = _softcap(model)
    if cap:                                         # Gemma 2 / 3: logits squashed into (-cap, cap)
        return lambda h: cap * torch.tanh(unembed(norm(h)) / cap)
    return lambda h: unembed(norm(h))


def _softcap(model: nn.Module) -> float | None:
    """The model's final logit soft-cap (``final_logit_softcapping``, Gemma 2 / 3), None where it has none."""
    config = getattr(model, "config", None)
    text = getattr(config, "get_text_config", None)
    if callable(text):
        config = text() or config
    cap = getattr(config, "final_logit_softcapping", None)
    return float(cap) if isinstance(cap, (int, float)) and not isinstance(cap, bool) and cap > 0 else None


def _top(logits: torch.Tensor, tok, k: int) -> Tokens:
    p, i = logits.float().softmax(-1).topk(k)
    return [(tok.decode([int(j)]), float(q)) for q, j in zip(p, i)]


def logit_lens(handle: ModelHandle, prompt: str, k: int = 10, n_updates: int = 10) -> Lens:
    """Per layer, the top-k tokens (with probabilities) of the residual stream before and after the MLP
    at the answer position (causal: the prompt's last token; masked: its [Y]); the activation of every
    neuron there; and the ``n_updates`` neurons whose updates |a_i| * ||v_i|| are largest."""
    ids, pos = _input(handle, prompt)
    T, L = len(ids), handle.n_layers
    residual = [None] * L

    def residual_hook(l):                           # BERT-style output block: (hidden, input_tensor)
        def hook(mod, args, kwargs):
            res = args[1] if len(args) > 1 else kwargs.get("input_tensor")
            if isinstance(res, torch.Tensor):
                residual[l] = as_bsn(res, 1, T)[0, pos]
        return hook

    with ExitStack() as stack, torch.no_grad():
        got = stack.enter_context(hooks.capture(handle, inputs={"acts": handle.sites},
                                                outputs={"after": handle.layers, "mlp": handle.sites}, at=pos))
        if handle.kind == "masked":
            for l in range(L):
                block = _parent(handle.layers[l], handle.sites[l])
                stack.enter_context(hooks.hook(block, residual_hook(l), with_kwargs=True))
        hooks.forward(handle, torch.tensor([ids], device=handle.device))
        after, mlp, acts = ([x[0] for x in got[k]] for k in ("after", "mlp", "acts"))
        before = residual if handle.kind == "masked" else [a - m for a, m in zip(after, mlp)]
        have = [l for l in range(L) if before[l] is not None]
        logits = head(handle)(torch.stack(after + [before[l] for l in have]))     # one pass: [L + |have|, V]
        tops = [_top(x, handle.tokenizer, k) for x in logits]
        below = dict(zip(have, tops[L:]))
        layers = [LayerLens(l, below.get(l), tops[l]) for l in range(L)]
        A = torch.stack(acts).float().cpu()
        norms = torch.stack([value_vectors(s).float().norm(dim=-1) for s in handle.sites]).cpu()
    size = (A.abs() * norms).flatten()
    v, i = size.topk(min(n_updates, size.numel()))
    N = handle.n_neurons
    updates = [(int(j) // N, int(j) % N, float(A.flatten()[j]), float(s)) for s, j in zip(v, i)]
    return Lens(pos, layers, A, updates)


def value_tokens(handle: ModelHandle, layer: int, index: int, k: int = 10) -> tuple[Tokens, Tokens]:
    """(promoted, suppressed): the k tokens with the highest and the lowest logit in W_U v, the
    unembedding times the neuron's value vector, with those logits."""
    check_neuron(handle, layer, index)
    with torch.no_grad():
        W = handle.model.get_output_embeddings().weight
        logits = (W @ value_vectors(handle.sites[layer])[index].to(W.dtype)).float()
    tok = handle.tokenizer
    hi, lo = logits.topk(k), (-logits).topk(k)
    return ([(tok.decode([int(j)]), float(s)) for s, j in zip(hi.values, hi.indices)],
            [(tok.decode([int(j)]), float(-s)) for s, j in zip(lo.values, lo.indices)])


def greedy_continuation(handle: ModelHandle, prompt: str, n: int = 12) -> str | None:
    """The model's greedy continuation of ``prompt`` (n tokens at most, to the end-of-text token);
    None for a masked model. Each step is a full forward pass, so an intervention at the answer
    position acts on the position that predicts each new token."""
    if handle.kind != "causal":
        return None
    ids, _ = _input(handle, prompt)
    start, eos = len(ids), handle.tokenizer.eos_token_id
    with torch.no_grad():
        for _ in range(n):
            nxt = int(handle.model(input_ids=torch.tensor([ids], device=handle.device)).logits[0, -1].argmax())
            if nxt == eos:
                break
            ids.append(nxt)
    return handle.tokenizer.decode(ids[start:])


# ----------------------------------------------------------------------------- the value-search index

def cache_dir() -> Path:
    """Where built indexes are kept (``kneuron.store.cache.cache_dir``: $KNEURON_CACHE, else the user
    cache directory)."""
    return store_cache_dir()


def fingerprint(handle: ModelHandle) -> str:
    """The weights fingerprint (``kneuron.models.fingerprint``): an index is reused only for the same
    weights."""
    return weights_fingerprint(handle.model)


@dataclass
class ValueIndex:
    tokens: np.ndarray            # [n_layers, n_neurons, k] int32: each neuron's top promoted token ids, best first
    logits: np.ndarray            # [n_layers, n_neurons, k] float32: their logits in W_U v
    path: Path | None = None

    def search(self, token_id: int, limit: int = 50) -> list[tuple[int, int, int, float]]:
        """The neurons that rank ``token_id`` among their top k, best rank first (then highest logit):
        (layer, index, rank, logit)."""
        l, i, r = np.nonzero(self.tokens == token_id)
        order = np.lexsort((-self.logits[l, i, r], r))[:limit]
        return [(int(l[j]), int(i[j]), int(r[j]), float(self.logits[l[j], i[j], r[j]])) for j in order]


def _build(handle: ModelHandle, k: int, progress: Callable[[int, int], None] | None) -> tuple[np.ndarray, np.ndarray]:
    W = handle.model.get_output_embeddings().weight.detach().float()
    L, N = handle.n_layers, handle.n_neurons
    tokens, logits = np.zeros((L, N, k), np.int32), np.zeros((L, N, k), np.float32)
    chunk = max(1, 2**24 // W.shape[0])            # neurons per product: ~64 MB of logits
    with torch.no_grad():
        for l in range(L):
            V = value_vectors(handle.sites[l]).detach().float()
            for a in range(0, N, chunk):
                top = (V[a:a + chunk] @ W.T).topk(k, dim=-1)
                tokens[l, a:a + chunk] = top.indices.cpu().numpy()
                logits[l, a:a + chunk] = top.values.cpu().numpy()
            if progress is not None:
                progress(l + 1, L)
    return tokens, logits


def value_index(handle: ModelHandle, k: int = 50, progress: Callable[[int, int], None] | None = None,
                directory=None) -> ValueIndex:
    """Every neuron's k top promoted tokens: read from the cache (``directory``, default ``cache_dir()``)
    when built before for these weights, else built (``progress(layers_done, n_layers)`` after each
    layer) and written there atomically (``kneuron.store.cache``: a damaged file is built again, with one
    warning)."""
    cache = Cache("value-index", load=_load_npz, dump=lambda tl, f: np.savez(f, tokens=tl[0], logits=tl[1]),
                  directory=directory or cache_dir(), what="value index")
    name = f"{safe_name(handle.name)}-{fingerprint(handle)}-k{k}.npz"
    tokens, logits = cache.get_or_build(name, lambda: _build(handle, k, progress))
    return ValueIndex(tokens, logits, cache.path(name))


def _load_npz(f) -> tuple[np.ndarray, np.ndarray]:
    with np.load(f) as z:
        return z["tokens"], z["logits"]


def token_id(handle: ModelHandle, text: str) -> int:
    """The one token ``text`` is (as typed, e.g. " Paris"); a QueryError names its pieces otherwise."""
    if not text:
        raise QueryError("the token is empty")
    ids = handle.tokenizer(text, add_special_tokens=False)["input_ids"]
    unk = getattr(handle.tokenizer, "unk_token_id", None)
    if len(ids) != 1 or ids[0] == unk:
        pieces = ", ".join(repr(handle.tokenizer.decode([i])) for i in ids) or "none"
        raise QueryError(f"{text!r} is not one token of {handle.name} (it is: {pieces}); search one token")
    return ids[0]
