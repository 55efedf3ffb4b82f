"""An edit's health: how large it is against the weights it writes, and whether the model still writes
ordinary text after it (r-ROME's "disabling edits"; shared/docs/editing-review.md, B1). ES cannot tell:
a broken model may still rank the new object above the old one.

    weight_ratio   ‖ΔW‖/‖W‖ (Frobenius) of every parameter the edit writes -- ‖W‖ that of the whole
                   parameter before the edit, also where the edit writes a slice of it -- and of all of
                   them together, √Σ‖ΔW‖² / √Σ‖W‖²
    u_dot_k        ROME's u·key (``info["u_dot_k"]``) where the method reports it: near 0, Λ = δ/(u·key)
                   is huge
    nll            the mean token NLL (nats, every token after the first) of a fixed set of ordinary
                   sentences unrelated to any fact (``data/unrelated.json``, 8 per language), per
                   language, before and after the edit; causal models only, in as few forward passes as
                   ``metrics.LOGIT_BUDGET`` allows (one for small vocabularies)
    continuation   the rewrite prompt's greedy continuation (CONTINUATION new tokens) after the edit

An edit is *disabling* when the unrelated NLL of some language rises by more than DISABLING_MARGIN nats
(or is no longer finite). 0.5 nats is perplexity x 1.65: the reviewer's disabling ROME edits raised it by
2.8-4 nats, ordinary ones move it by hundredths. The methods know nothing of this: the bench (and anyone
holding an applied ``Edit``) calls ``health``.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from kneuron.models import hooks
from kneuron.models.load import ModelHandle

from .base import Edit, EditError
from .metrics import LOGIT_BUDGET, _vocab
from .stats import start_ids

DISABLING_MARGIN = 0.5          # nats of mean token NLL on the unrelated sentences (any language)
CONTINUATION = 20               # new tokens of the greedy continuation
UNRELATED_FILE = Path(__file__).resolve().parent.parent / "data" / "unrelated.json"


@lru_cache(maxsize=1)
def unrelated_sentences() -> dict[str, tuple[str, ...]]:
    """The bundled unrelated sentences, per language (``data/unrelated.json``)."""
    d = json.loads(UNRELATED_FILE.read_text(encoding="utf-8"))
    return {lang: tuple(s) for lang, s in d.items() if lang != "about"}


def unrelated_digest() -> str:
    """sha256 of the sentences: a run keeps it beside its unedited NLL, so other sentences are noticed."""
    text = json.dumps(unrelated_sentences(), ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def unrelated_nll(handle: ModelHandle, langs=None) -> dict[str, float]:
    """The model's mean token NLL of the unrelated sentences of each of ``langs`` (default all; languages
    the set lacks are left out), each sentence started as a document (``stats.start_ids``); {} for a masked
    model. Deterministic: the same weights give the same numbers, bit for bit."""
    sents = unrelated_sentences()
    langs = [lang for lang in (sents if langs is None else langs) if lang in sents]
    if handle.kind != "causal" or not langs:
        return {}
    rows = [(lang, start_ids(handle.tokenizer, s)) for lang in langs for s in sents[lang]]
    per = max(1, LOGIT_BUDGET // (max(len(ids) for _, ids in rows) * _vocab(handle)))
    total, count = dict.fromkeys(langs, 0.0), dict.fromkeys(langs, 0)
    for a in range(0, len(rows), per):
        chunk = rows[a:a + per]
        padded = hooks.pad(handle, [ids for _, ids in chunk])
        with torch.no_grad():
            logits = handle.model(input_ids=padded.ids, attention_mask=padded.attention_mask).logits
        for r, (lang, ids) in enumerate(chunk):
            n = len(ids)
            lp = torch.log_softmax(logits[r, : n - 1].double(), -1)
            tgt = padded.ids[r, 1:n]
            total[lang] += float(-lp[torch.arange(n - 1, device=lp.device), tgt].sum())
            count[lang] += n - 1
    return {lang: total[lang] / count[lang] for lang in langs if count[lang]}


def weight_ratios(edit: Edit) -> tuple[float | None, dict[str, float]]:
    """(overall ‖ΔW‖/‖W‖, per parameter name) of the edit: applied (ΔW against what it overwrote) or not
    (ΔW against the weights as they are now); (None, {}) for an edit that writes nothing."""
    params = dict(edit.handle.model.named_parameters())
    names = list(dict.fromkeys(c.param for c in edit.changes))
    missing = [n for n in names if n not in params]
    if missing:
        raise EditError(f"{edit.method} edit: the model has no parameter {missing[0]!r}")
    saved = edit.overwritten or [None] * len(edit.changes)
    per, dd, ww = {}, 0.0, 0.0
    with torch.no_grad():
        for name in names:
            p = params[name].detach()
            mine = [(c, old) for c, old in zip(edit.changes, saved) if c.param == name]
            if edit.applied:                          # the weights before: what undo would write back
                after, before = p, p.clone()
                for c, old in reversed(mine):
                    _write(before, c.index, old)
            else:                                     # the weights after: what apply would write
                before, after = p, p.clone()
                for c, _ in mine:
                    _write(after, c.index, c.new_value(p).to(device=p.device, dtype=p.dtype))
            d, w = float((after.double() - before.double()).norm()), float(before.double().norm())
            per[name] = _ratio(d, w)
            dd, ww = dd + d * d, ww + w * w
    return (_ratio(math.sqrt(dd), math.sqrt(ww)) if names else None), per


def drift(handle: ModelHandle, origin: dict[str, torch.Tensor]) -> float | None:
    """‖W − W₀‖/‖W₀‖ over the parameters in ``origin`` (name -> its value before a chain of edits first wrote
    it), √Σ‖ΔW‖² / √Σ‖W₀‖², with the weights as they are now: how far a chain of kept edits has moved them
    (each edit's own ``weight_ratios`` cannot say, the edits being measured against the chain before them).
    None for an empty ``origin``."""
    if not origin:
        return None
    params = dict(handle.model.named_parameters())
    dd = ww = 0.0
    with torch.no_grad():
        for name, w0 in origin.items():
            w = params[name].detach().double()
            dd += float((w - w0.to(w.device).double()).norm()) ** 2
            ww += float(w0.double().norm()) ** 2
    return _ratio(math.sqrt(dd), math.sqrt(ww))


def _write(t: torch.Tensor, index, value: torch.Tensor) -> None:
    if index is None:
        t.copy_(value)
    else:
        t[index] = value


def _ratio(d: float, w: float) -> float:
    return d / w if w > 0 else (0.0 if d == 0 else math.inf)


def continuation(handle: ModelHandle, prompt: str, tokens: int = CONTINUATION) -> str | None:
    """The model's greedy continuation of ``prompt`` (the new text only, at most ``tokens`` tokens, within
    the model's context); None for a masked model. Greedy: no random state is read or changed."""
    if handle.kind != "causal":
        return None
    from transformers import GenerationConfig
    tok, model = handle.tokenizer, handle.model
    ids = torch.tensor([tok(prompt)["input_ids"]], device=handle.device)
    room = tokens if handle.max_positions is None else min(tokens, handle.max_positions - ids.shape[1])
    if room <= 0:
        return ""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    cfg = GenerationConfig(do_sample=False, max_new_tokens=room, pad_token_id=hooks.pad_id(handle), eos_token_id=eos)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=cfg)
    return tok.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)


@dataclass(frozen=True)
class Health:
    """One edit's health (see the module doc): ``nll_before`` / ``nll_after`` per language of the unrelated
    sentences ({} for a masked model), ``weight_ratio`` None for an edit that writes nothing."""
    weight_ratio: float | None
    weight_ratios: dict[str, float] = field(default_factory=dict)
    u_dot_k: float | None = None
    nll_before: dict[str, float] = field(default_factory=dict)
    nll_after: dict[str, float] = field(default_factory=dict)
    continuation: str | None = None

    @property
    def rise(self) -> dict[str, float]:
        """How much the unrelated NLL rose, per language (nats; negative: fell)."""
        return {lang: self.nll_after[lang] - b for lang, b in self.nll_before.items() if lang in self.nll_after}

    @property
    def nll_rise(self) -> float | None:
        """The largest rise over the languages (NaN where one is not finite); None: no NLL measured."""
        r = list(self.rise.values())
        if not r:
            return None
        return math.nan if any(not math.isfinite(x) for x in r) else max(r)

    def disabling(self, margin: float = DISABLING_MARGIN) -> bool:
        """The unrelated NLL rose by more than ``margin`` in some language, or is no longer finite."""
        r = self.nll_rise
        return r is not None and not r <= margin

    def to_json(self) -> dict:
        return {"weight_ratio": self.weight_ratio, "weight_ratios": dict(self.weight_ratios), "u_dot_k": self.u_dot_k,
                "nll_before": dict(self.nll_before), "nll_after": dict(self.nll_after),
                "continuation": self.continuation}

    @classmethod
    def from_json(cls, d: dict) -> "Health":
        f = lambda x: None if x is None else float(x)  # noqa: E731
        return cls(f(d["weight_ratio"]), {k: float(v) for k, v in (d.get("weight_ratios") or {}).items()},
                   f(d.get("u_dot_k")), {k: float(v) for k, v in d["nll_before"].items()},
                   {k: float(v) for k, v in d["nll_after"].items()}, d.get("continuation"))


def health(handle: ModelHandle, edit: Edit, prompt: str, before: dict[str, float], *,
           after: dict[str, float] | None = None) -> Health:
    """The health of ``edit`` with the model as it is now being the edited one (``edit`` applied, or in a
    batch the combined edit): ``before`` the unrelated NLL of the model before it (``unrelated_nll``; its
    languages are measured after), ``prompt`` the rewrite prompt; ``after``: the NLL after, measured
    already (a batch's members share it)."""
    ratio, per = weight_ratios(edit)
    u = edit.info.get("u_dot_k")
    nll = unrelated_nll(handle, list(before)) if after is None else after
    return Health(ratio, per, None if u is None else float(u), dict(before), dict(nll), continuation(handle, prompt))


__all__ = ["CONTINUATION", "DISABLING_MARGIN", "Health", "continuation", "drift", "health", "unrelated_digest",
           "unrelated_nll", "unrelated_sentences", "weight_ratios"]
