"""The objective that ROME's v* and kn-opt optimise, and FT-L's (the NLL term alone).

    loss = mean over prompts of the new object's mean token NLL   (the rewrite prompt, bare and behind
                                                                   the model's own short prefixes)
         + kl_factor * KL(P_edited || P_original)                  (next-token distribution on
                                                                   "{subject} is a", one position)
         + a method's own penalty (weight decay)

The pieces:

``prefixes(handle)``   ~10 short texts the model writes itself (ROME's context templates): each of five
                       openers ("The", "Therefore", "Because", "I", "You", as EasyEdit seeds them)
                       continued by 5 and by 10 sampled tokens (top-k 5, seeded, special tokens never
                       sampled), cached per model (name + weight fingerprint) in memory.
``batch(handle, rewrite, ...)``  the prompts as one right-padded batch: for each, the position of the last
                       subject token (ROME's lookup position), the positions predicting the new object's
                       tokens (taken in context, ``encode``), and the KL prompt's position.
``Objective``          runs the model (logits only where needed) and returns (nll, kl).

Masked models: no prefixes (they cannot write), the rewrite prompt with the new object's tokens masked,
and the KL prompt "{subject} is a [MASK]." (at the mask). ROME itself refuses masked models.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch

from kneuron.facts.templates import QueryError, is_cjk
from kneuron.models import hooks
from kneuron.models.load import ModelHandle
from kneuron.models.targets import encode

from .base import EditError, Rewrite
from kneuron.models.fingerprint import weights_fingerprint
from .stats import sample, start_ids

OPENERS = ("The", "Therefore", "Because", "I", "You")
PREFIX_LENGTHS = (5, 10)          # new tokens per prefix: ten prefixes, five of each length
PREFIX_TOP_K = 5
_PREFIX_CACHE: dict[tuple, list[str]] = {}


# ----------------------------------------------------------------------------- prefixes

def prefixes(handle: ModelHandle, seed: int = 0) -> list[str]:
    """The model's own short prefixes (ROME's context templates), seeded and deterministic; [] for a
    masked model. Cached per model name + weights."""
    if handle.kind != "causal":
        return []
    key = (handle.name, weights_fingerprint(handle.model), seed)
    if key not in _PREFIX_CACHE:
        if len(_PREFIX_CACHE) > 16:
            _PREFIX_CACHE.clear()
        _PREFIX_CACHE[key] = _write_prefixes(handle, seed)
    return list(_PREFIX_CACHE[key])


def _write_prefixes(handle: ModelHandle, seed: int) -> list[str]:
    tok, out = handle.tokenizer, []
    for i, opener in enumerate(OPENERS):
        start = start_ids(tok, opener)
        rows = sample(handle, start, len(PREFIX_LENGTHS), max(PREFIX_LENGTHS), seed + i, PREFIX_TOP_K)
        for row, n in zip(rows, PREFIX_LENGTHS):
            text = tok.decode(row[: len(start) + n].tolist(), skip_special_tokens=True)
            out.append(re.sub(r"\s+", " ", text).strip() or opener)
    return out


def in_context(prefix: str, prompt: str) -> str:
    """A prompt behind a prefix, as ROME joins them: "{prefix}. {prompt}"."""
    return f"{prefix}. {prompt}"


# ----------------------------------------------------------------------------- the batch

@dataclass
class Batch:
    """Right-padded prompts; row r's lookup position is ``lookup[r]``; the NLL is taken at (``rows``,
    ``cols``) predicting ``targets`` with ``weights`` (summing to 1: the mean over prompts of the mean
    over each object's tokens); the KL at (``kl_row``, ``kl_col``)."""
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lookup: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor
    kl_row: int
    kl_col: int
    n_prompts: int                 # rows 0 .. n_prompts-1 hold the rewrite prompts (0: the bare one)
    prompt: str                    # the bare rewrite prompt

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_ids.shape)


def rewrite_prompt(rewrite: Rewrite, kind: str) -> tuple[str, int]:
    """The fact's first usable prompt and the character offset where its subject starts."""
    fact = rewrite.fact
    try:
        q = fact.first_query(kind)
    except QueryError as e:
        raise EditError(str(e)) from None
    template = fact.templates[q.template_index]
    at = template.find("[X]")
    if at < 0 or q.prompt[at:at + len(fact.subject)] != fact.subject:
        at = q.prompt.rfind(fact.subject)
    if at < 0:
        raise EditError(f"{fact.where('templates')}the subject {fact.subject!r} is not in the prompt {q.prompt!r}")
    return q.prompt, at


def kl_prompt(rewrite: Rewrite, handle: ModelHandle) -> str:
    """ROME's essence prompt "{subject} is a" ("{subject}是" for CJK subjects; masked: with a mask)."""
    s = rewrite.fact.subject
    cjk = is_cjk(s[-1]) or rewrite.fact.lang.startswith("zh")
    if handle.kind == "masked":
        mask = handle.tokenizer.mask_token
        return f"{s}是{mask}。" if cjk else f"{s} is a {mask}."
    return f"{s}是" if cjk else f"{s} is a"


def _encode(handle: ModelHandle, rewrite: Rewrite, prompt: str):
    try:
        return encode(handle.tokenizer, handle.kind, prompt, rewrite.new)
    except QueryError as e:
        raise EditError(f"{rewrite.fact.where('new')}{e}") from None


def last_token_of(handle: ModelHandle, text: str, start: int, end: int, ids: list[int]) -> int:
    """Index (in ``ids``, the tokenisation of ``text`` or its start) of the last token covering characters
    [start, end) of ``text``."""
    tok = handle.tokenizer
    if getattr(tok, "is_fast", False):
        enc = tok(text, return_offsets_mapping=True, return_special_tokens_mask=True)
        hits = [i for i, (s, e) in enumerate(enc["offset_mapping"])
                if not enc["special_tokens_mask"][i] and max(s, start) < min(e, end)]
        if hits and hits[-1] < len(ids):
            return hits[-1]
    n = len(tok(text[:end])["input_ids"])
    return min(max(n - 1 - _trailing_specials(tok), 0), len(ids) - 1)


def _trailing_specials(tok) -> int:
    ids = tok("x")["input_ids"]
    special = set(getattr(tok, "all_special_ids", []) or [])
    n = 0
    while ids and ids[-1] in special:
        ids, n = ids[:-1], n + 1
    return n


def batch(handle: ModelHandle, rewrite: Rewrite, contexts: list[str] | None = None, kl_at: str = "subject") -> Batch:
    """The objective's prompts: the rewrite prompt bare and behind each of ``contexts`` (prefixes), each
    followed by the new object's tokens but the last (causal), plus the KL prompt as the last row.
    ``kl_at``: "subject" (ROME: the KL prompt's last subject token) or "last" (its last position)."""
    prompt, at = rewrite_prompt(rewrite, handle.kind)
    subject = rewrite.fact.subject
    texts = [prompt] + [in_context(c, prompt) for c in (contexts or [])]
    rows_ids, lookup, rows, cols, targets, weights = [], [], [], [], [], []
    for r, text in enumerate(texts):
        enc = _encode(handle, rewrite, text)
        s0 = len(text) - len(prompt) + at
        causal = handle.kind == "causal"          # (masked: no lookup position, ROME is causal only)
        lookup.append(last_token_of(handle, text, s0, s0 + len(subject), enc.input_ids) if causal else 0)
        rows_ids.append(enc.input_ids)
        k = len(enc.target_ids)
        rows += [r] * k
        cols += enc.positions
        targets += enc.target_ids
        weights += [1.0 / (k * len(texts))] * k
    kl_text = kl_prompt(rewrite, handle)
    kl_ids = handle.tokenizer(kl_text)["input_ids"]
    kl_subject = last_token_of(handle, kl_text, 0, len(subject), kl_ids)
    if kl_at == "subject":
        kl_col = kl_subject
    elif handle.kind == "masked":
        kl_col = kl_ids.index(handle.tokenizer.mask_token_id)
    else:
        kl_col = len(kl_ids) - 1
    rows_ids.append(kl_ids)
    lookup.append(kl_subject)
    padded = hooks.pad(handle, rows_ids)
    dev = handle.device
    t = lambda x, dt=torch.long: torch.tensor(x, dtype=dt, device=dev)  # noqa: E731
    return Batch(padded.ids, padded.attention_mask, t(lookup), t(rows), t(cols), t(targets), t(weights, torch.float64),
                 len(texts), kl_col, len(texts), prompt)


# ----------------------------------------------------------------------------- running it

class Runner:
    """Runs a batch: log-probs at its NLL positions then its KL position. Forward hooks on the model see
    tensors of ``shape`` (B, T') in which row r's lookup position is ``lookup[r]``.

    ``reuse_prefix``: for edits that change the model only from each row's lookup position on (ROME's δ):
    the rows are left-aligned on their lookup positions, the part before is run once (its keys and values
    cached) and every call runs the rest only -- several times faster. ``check()`` compares it with a
    plain run and falls back to that if the two differ (a family whose cache or padding behaves otherwise).
    """

    def __init__(self, handle: ModelHandle, b: Batch, reuse_prefix: bool = False):
        self.handle, self.b = handle, b
        self._plain()
        if reuse_prefix:
            self._split()

    def _plain(self) -> None:
        b = self.b
        self.rows = torch.cat([b.rows, b.rows.new_tensor([b.kl_row])])
        self.cols = torch.cat([b.cols, b.cols.new_tensor([b.kl_col])])
        self.shape, self.lookup, self.cache = b.shape, b.lookup, None

    def _split(self) -> None:
        b, dev = self.b, self.handle.device
        P = int(b.lookup.max())
        lengths = b.attention_mask.sum(1)
        shift = P - b.lookup                                    # left padding per row
        width = int((lengths + shift).max())
        ids = torch.full((b.shape[0], width), int(b.input_ids[0, -1]), dtype=torch.long, device=dev)
        mask = torch.zeros_like(ids)
        for r in range(b.shape[0]):
            n, s = int(lengths[r]), int(shift[r])
            ids[r, s:s + n] = b.input_ids[r, :n]
            mask[r, s:s + n] = 1
        self.full = (ids, mask, (mask.cumsum(1) - 1).clamp(min=0))
        self.P = P
        self.cols = self.cols + shift[self.rows] - P
        self.shape, self.lookup = (b.shape[0], width - P), torch.zeros_like(b.lookup)
        if P > 0:
            with torch.no_grad():
                self.cache = hooks.forward(self.handle, ids[:, :P], attention_mask=mask[:, :P],
                                           position_ids=self.full[2][:, :P], use_cache=True).cache

    def log_probs(self) -> torch.Tensor:
        """[N + 1, vocabulary] (float32 at least), the KL position last. The output layer runs on the
        NLL and KL positions alone (the full logits over every position cost more than the rest of a
        small model)."""
        at = (self.rows, self.cols)
        if self.shape == self.b.shape:
            logits = hooks.forward(self.handle, self.b.input_ids, attention_mask=self.b.attention_mask,
                                   logits_at=at).logits
        else:
            ids, mask, pos = self.full
            cache = copy.deepcopy(self.cache) if self.cache is not None else None
            logits = hooks.forward(self.handle, ids[:, self.P:], attention_mask=mask, position_ids=pos[:, self.P:],
                                   past=cache, use_cache=True, logits_at=at).logits
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        return torch.log_softmax(logits, -1)

    @torch.no_grad()
    def check(self, tol: float = 1e-3) -> bool:
        """Whether the prefix-reusing run gives the plain run's log-probs (else it becomes a plain run)."""
        if self.shape == self.b.shape:
            return True
        fast, plain = self.log_probs(), Runner(self.handle, self.b).log_probs()
        same = bool(torch.allclose(fast, plain, atol=tol, rtol=tol))
        if not same:
            self._plain()
        return same


class Objective:
    """(nll, kl) of the edited model on a batch: call ``reference()`` once with the model unedited (the
    KL's P_original), then ``__call__`` with the edit active (hooks)."""

    def __init__(self, handle: ModelHandle, b: Batch, reuse_prefix: bool = False):
        self.b = b
        # the prefix reuse, checked against the plain run once per handle (h.capabilities)
        known = handle.capabilities.known(handle.model, "reuse_prefix")
        reuse_prefix = reuse_prefix and known is not False
        self.run = Runner(handle, b, reuse_prefix)
        if reuse_prefix and known is None:
            handle.capabilities.record("reuse_prefix", self.run.check())
        self.ref: torch.Tensor | None = None

    @torch.no_grad()
    def reference(self) -> torch.Tensor:
        lp = self.run.log_probs()
        self.ref = lp[-1].detach()
        return self.nll(lp)

    def nll(self, lp: torch.Tensor) -> torch.Tensor:
        got = lp[:-1].gather(1, self.b.targets[:, None])[:, 0]
        return -(got.double() * self.b.weights).sum()

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        lp = self.run.log_probs()
        kl = torch.zeros((), dtype=torch.float64, device=lp.device)
        if self.ref is not None:
            cur = lp[-1]
            kl = (cur.exp() * (cur - self.ref.to(cur.dtype))).sum().double()   # KL(P_edited || P_original)
        return self.nll(lp), kl


def work_dtype(handle: ModelHandle) -> torch.dtype:
    return torch.float64 if handle.dtype == torch.float64 else torch.float32


def adam(params: list[torch.Tensor], loss_fn, steps: int, lr: float, project=None, stop: float | None = None,
         stop_on: str = "loss") -> list[dict]:
    """Adam on ``params`` for at most ``steps`` steps; ``loss_fn()`` -> (total, parts dict of floats, the
    total as "loss"); ``project()`` after each step (norm bounds); stops once ``parts[stop_on]`` <
    ``stop``. Returns each step's parts."""
    opt = torch.optim.Adam(params, lr=lr)
    log = []
    for _ in range(steps):
        opt.zero_grad()
        total, parts = loss_fn()
        log.append(parts)
        if stop is not None and parts[stop_on] < stop:
            break
        total.backward()
        opt.step()
        if project is not None:
            with torch.no_grad():
                project()
    return log
