"""Editing metrics, computed the way the anchors compute them (shared/docs/editing.md §3), side by side.

Scoring one (prompt, object): the object's tokens are taken in context (``encode``) and scored in one
teacher-forced forward pass; ``nll`` = mean over its tokens of -log p, so P(o) = exp(-nll) is the geometric
mean of the per-token probabilities, as ROME's ``eval_utils_counterfact`` does. Masked models: the object
gets one [MASK] per token and every mask is predicted in the same pass (the other answer tokens masked,
not given), as everywhere in kneuron; P(o) is again the geometric mean over the masks.

Per record (``record_scores``; fractions, averaged over records and x100 by ``summarize``):

    ES / EM       [P(new) > P(old)] / P(new) - P(old) on the rewrite prompt               (CounterFact)
    PS / PM       the same, averaged over the record's paraphrases                          (CounterFact)
    NS / NM       [P(true) > P(new)] / P(true) - P(new) over the neighbours, each with its own true object
    S             harmonic mean of ES, PS, NS (of the averages; 0 if one is 0)              (CounterFact)
    GE            mean over generated texts of mean(2/3 H2, 4/3 H3), H_n the n-gram entropy in bits of the
                  text's words (characters for Chinese); texts are ≤ 100 tokens, prompt included, sampled
                  top-k 5 as ROME's ``generate_fast``; x100 as in ROME's tables; causal models only
    reliability   teacher-forced token accuracy of the new object on the rewrite prompt    (EasyEdit)
    generalization  the same over the paraphrases                                            (EasyEdit)
    locality      share of the neighbours' teacher-forced top-1 tokens (over their true objects) that the
                  edit leaves unchanged                                                      (EasyEdit)
    flip_rate     the top-1 token at the rewrite prompt's answer position is the new object's first token
    symmetry      P36/P1376 only: token accuracy of the subject on the reverse prompt (Niu et al.)
    attribute     records with attribute prompts only: their mean P(new) (CounterFact scores them; no
                  headline metric uses them)
    essence       records with essence texts only: the texts' mean token NLL under the edited model minus
                  under the unedited one (ROME's essence score, on model-written text: ``protocol``)

``ns_split`` gives NS over a record's same-object neighbours (CounterFact's kind) and over its other-object
ones apart.

Words for GE are runs of letters and digits, every other non-space character alone, and every CJK
character alone (ROME uses nltk's word_tokenize, which only differs on English contractions).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from statistics import mean
from typing import Iterable

import torch

from kneuron.facts.templates import is_cjk
from kneuron.models import hooks
from kneuron.models.load import ModelHandle
from kneuron.models.targets import encode

from .records import Record

GEN_LENGTH, GEN_TOP_K = 100, 5          # ROME's generate_fast: max_out_len 100 (prompt included), top-k 5
CHAIN_GE_PROMPTS = 5                    # a sequential chain's GE per checkpoint: its first records' prompts
LOGIT_BUDGET = 1 << 25                  # floats of logits per forward pass (batch x length x vocab)
METRICS = ("ES", "PS", "NS", "S", "EM", "PM", "NM", "GE", "reliability", "generalization", "locality",
           "flip_rate", "seconds_per_edit", "params_changed")
RATES = ("ES", "PS", "NS", "EM", "PM", "NM", "reliability", "generalization", "locality", "flip_rate")


# ----------------------------------------------------------------------------- teacher-forced scoring

@dataclass(frozen=True)
class Scored:
    """One (prompt, object) scored teacher-forced."""
    nll: float                 # mean over the object's tokens of -log p
    acc: float                 # share of the object's tokens that are the model's top-1
    argmax: list[int]          # the top-1 token at each answer position
    target: list[int]          # the object's tokens

    @property
    def p(self) -> float:
        return math.exp(-self.nll)

    def to_json(self) -> dict:
        return {"nll": self.nll, "acc": self.acc, "argmax": list(self.argmax), "target": list(self.target)}

    @classmethod
    def from_json(cls, d: dict) -> "Scored":
        return cls(float(d["nll"]), float(d["acc"]), list(d["argmax"]), list(d["target"]))


def _vocab(handle: ModelHandle) -> int:
    emb = handle.model.get_output_embeddings()
    return int(emb.weight.shape[0]) if emb is not None else int(getattr(handle.model.config, "vocab_size", 50000))


def score(handle: ModelHandle, items: Iterable[tuple[str, str]]) -> list[Scored]:
    """Each (prompt, object) scored teacher-forced, in as few right-padded forward passes as the logit
    budget allows. QueryError (one line) for an object the tokenizer cannot encode after its prompt."""
    encs = [encode(handle.tokenizer, handle.kind, p, o) for p, o in items]
    out: list[Scored | None] = [None] * len(encs)
    order = sorted(range(len(encs)), key=lambda i: len(encs[i].input_ids))
    vocab = _vocab(handle)
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end - start + 1) * len(encs[order[end]].input_ids) * vocab <= LOGIT_BUDGET:
            end += 1
        rows = order[start:end]
        padded = hooks.pad(handle, [encs[i].input_ids for i in rows])
        with torch.no_grad():
            logits = handle.model(input_ids=padded.ids, attention_mask=padded.attention_mask).logits
        for r, i in enumerate(rows):
            e = encs[i]
            lg = logits[r, e.positions].double()
            tgt = torch.tensor(e.target_ids, device=lg.device)
            lp = torch.log_softmax(lg, -1)[torch.arange(len(tgt), device=lg.device), tgt]
            top = lg.argmax(-1)
            out[i] = Scored(float(-lp.mean()), float((top == tgt).float().mean()), top.tolist(), list(e.target_ids))
        start = end
    return out  # type: ignore[return-value]


# ----------------------------------------------------------------------------- generation and GE

def words(text: str) -> list[str]:
    """Runs of letters/digits; every CJK character and every other non-space character alone."""
    out, buf = [], ""
    for ch in text:
        if (ch.isalnum() or ch == "_") and not is_cjk(ch):
            buf += ch
            continue
        if buf:
            out.append(buf)
            buf = ""
        if not ch.isspace():
            out.append(ch)
    return out + ([buf] if buf else [])


def ngram_entropy(text: str) -> float:
    """ROME's ``compute_n_gram_entropy``: mean(2/3 H2, 4/3 H3), H_n the entropy (bits) of the text's n-grams."""
    toks, hs = words(text), []
    for n, w in ((2, 2 / 3), (3, 4 / 3)):
        grams: dict = {}
        for k in range(len(toks) - n + 1):
            g = tuple(toks[k:k + n])
            grams[g] = grams.get(g, 0) + 1
        total = sum(grams.values())
        hs.append(w * -sum(c / total * math.log2(c / total) for c in grams.values()) if total else 0.0)
    return sum(hs) / len(hs)


def generate(handle: ModelHandle, prompts: Iterable[str], seed: int = 0, length: int = GEN_LENGTH,
             top_k: int = GEN_TOP_K) -> list[str]:
    """One sampled text per prompt (top-k ``top_k``), at most ``length`` tokens with the prompt, seeded;
    the text includes the prompt, as ROME's. Causal models only."""
    if handle.kind != "causal":
        return []
    tok, model = handle.tokenizer, handle.model
    limit = min(length, handle.max_positions or length)
    texts = []
    for k, prompt in enumerate(prompts):
        ids = torch.tensor([tok(prompt)["input_ids"]], device=handle.device)
        if ids.shape[1] < limit:
            devices = [handle.device] if handle.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                torch.manual_seed(seed * 1000 + k)
                ids = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=top_k,
                                     top_p=1.0, temperature=1.0, max_length=limit, pad_token_id=hooks.pad_id(handle))
        texts.append(tok.decode(ids[0].tolist(), skip_special_tokens=True))
    return texts


# ----------------------------------------------------------------------------- one model state

def _items(rec: Record) -> list[tuple[str, str]]:
    """Every (prompt, object) a record is scored on, in a fixed order (see ``_split``)."""
    out = [(rec.prompt, rec.new), (rec.prompt, rec.old)]
    for p in rec.paraphrases:
        out += [(p.text, rec.new), (p.text, rec.old)]
    for nb in rec.neighbours:
        out += [(nb.prompt, nb.target), (nb.prompt, rec.new)]
    if rec.symmetry:
        out.append((rec.symmetry.prompt, rec.symmetry.target))
        if rec.symmetry.true:
            out.append((rec.symmetry.prompt, rec.symmetry.true))
    return out


@dataclass(frozen=True)
class RewriteScores:
    """A rewrite prompt (or a paraphrase of it) scored with the new object and the old one."""
    new: Scored
    old: Scored

    def to_json(self) -> dict:
        return {"new": self.new.to_json(), "old": self.old.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> "RewriteScores":
        return cls(Scored.from_json(d["new"]), Scored.from_json(d["old"]))


@dataclass(frozen=True)
class NeighbourScores:
    """A neighbour's prompt scored with its own true object and the edit's new one."""
    true: Scored
    new: Scored

    def to_json(self) -> dict:
        return {"true": self.true.to_json(), "new": self.new.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> "NeighbourScores":
        return cls(Scored.from_json(d["true"]), Scored.from_json(d["new"]))


@dataclass(frozen=True)
class SymmetryScores:
    """The reverse prompt scored with the subject (``target``) and, where known, its true answer."""
    target: Scored
    true: Scored | None

    def to_json(self) -> dict:
        return {"target": self.target.to_json(), "true": None if self.true is None else self.true.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> "SymmetryScores":
        return cls(Scored.from_json(d["target"]), None if d.get("true") is None else Scored.from_json(d["true"]))


@dataclass(frozen=True)
class Measured:
    """One record measured under the model as it was: every prompt kind scored, and the sampled texts
    (None: not sampled; [] for a masked model). ``to_json()`` is the dict the editing bench's run
    directories hold (keys in this order); ``from_json()`` reads one back (KeyError / TypeError /
    ValueError for one that is not)."""
    rewrite: RewriteScores
    paraphrases: tuple[RewriteScores, ...] = ()
    neighbours: tuple[NeighbourScores, ...] = ()
    symmetry: SymmetryScores | None = None
    generation: tuple[str, ...] | None = None
    attributes: tuple[Scored, ...] = ()            # the record's attribute prompts with the new object
    essence: float | None = None                   # mean over its essence texts of their mean token NLL

    def to_json(self) -> dict:
        return {"rewrite": self.rewrite.to_json(), "paraphrases": [x.to_json() for x in self.paraphrases],
                "neighbours": [x.to_json() for x in self.neighbours],
                "symmetry": None if self.symmetry is None else self.symmetry.to_json(),
                "generation": None if self.generation is None else list(self.generation),
                **({"attributes": [x.to_json() for x in self.attributes]} if self.attributes else {}),
                **({"essence": self.essence} if self.essence is not None else {})}    # none: as before

    @classmethod
    def from_json(cls, d: dict) -> "Measured":
        sym, gen, ess = d.get("symmetry"), d.get("generation"), d.get("essence")
        return cls(RewriteScores.from_json(d["rewrite"]), tuple(map(RewriteScores.from_json, d["paraphrases"])),
                   tuple(map(NeighbourScores.from_json, d["neighbours"])),
                   None if sym is None else SymmetryScores.from_json(sym),
                   None if gen is None else tuple(str(t) for t in gen),
                   tuple(map(Scored.from_json, d.get("attributes", ()))), None if ess is None else float(ess))


def _split(rec: Record, s: list[Scored], generation: list[str] | None) -> Measured:
    """``_items``' scores back into the record's prompt kinds."""
    k = 2 + 2 * len(rec.paraphrases)
    paras = tuple(RewriteScores(s[i], s[i + 1]) for i in range(2, k, 2))
    nbs = tuple(NeighbourScores(s[i], s[i + 1]) for i in range(k, k + 2 * len(rec.neighbours), 2))
    k += 2 * len(rec.neighbours)
    sym = SymmetryScores(s[k], s[k + 1] if rec.symmetry.true else None) if rec.symmetry else None
    return Measured(RewriteScores(s[0], s[1]), paras, nbs, sym, None if generation is None else tuple(generation))


def attribute_probes(rec: Record) -> list:
    """The record's attribute prompts (``Probe`` kind "attribute"), each scored with its target (the new object)."""
    return [p for p in rec.probes if p.kind == "attribute"]


def text_nll(handle: ModelHandle, texts: Iterable[str]) -> list[float]:
    """Each text's mean token NLL (every token after the first, teacher-forced; NaN for a text of one token)."""
    out = []
    for t in texts:
        ids = torch.tensor([handle.tokenizer(t)["input_ids"][: handle.max_positions or None]], device=handle.device)
        if ids.shape[1] < 2:
            out.append(math.nan)
            continue
        with torch.no_grad():
            lg = handle.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, :-1].double()
        out.append(float(-torch.log_softmax(lg, -1).gather(1, ids[0, 1:, None]).mean()))
    return out


def measure(handle: ModelHandle, records: list[Record], *, generation: bool | Iterable[str] = True,
            seed: int = 0) -> list[Measured]:
    """Each record's scores under the model as it is now (one ``Measured`` per record; all records'
    prompts batched together; attribute prompts apart, after them). ``generation``: sample the generation
    prompts' texts (for GE) for every record (True), none (False) or the records of these languages."""
    items, spans = [], []
    for r in records:
        it = _items(r)
        spans.append((len(items), len(items) + len(it)))
        items += it
    scored = score(handle, items)
    attrs = [attribute_probes(r) for r in records]
    flat = score(handle, [(p.prompt, p.target) for ps in attrs for p in ps]) if any(attrs) else []
    out, k = [], 0
    for r, (a, b), ps in zip(records, spans, attrs):
        gen = generation if isinstance(generation, bool) else r.lang in set(generation)
        m = _split(r, scored[a:b], generate(handle, r.generation, seed) if gen else None)
        nll = [x for x in text_nll(handle, r.essence) if not math.isnan(x)] if r.essence else []
        out.append(replace(m, attributes=tuple(flat[k:k + len(ps)]), essence=mean(nll) if nll else None))
        k += len(ps)
    return out


# ----------------------------------------------------------------------------- metrics

def _avg(xs: list[float]) -> float | None:
    return mean(xs) if xs else None


def record_scores(after: Measured, before: Measured | None = None) -> dict:
    """One record's metric values (fractions; None where the record has nothing to measure) from its
    measurement ``after`` an edit and, for locality, ``before`` it (the unedited model's)."""
    rw, paras, nbs = after.rewrite, after.paraphrases, after.neighbours
    out = {
        "ES": float(rw.new.nll < rw.old.nll),
        "EM": rw.new.p - rw.old.p,
        "PS": _avg([float(x.new.nll < x.old.nll) for x in paras]),
        "PM": _avg([x.new.p - x.old.p for x in paras]),
        "NS": _avg([float(x.true.nll < x.new.nll) for x in nbs]),
        "NM": _avg([x.true.p - x.new.p for x in nbs]),
        "reliability": float(rw.new.acc),
        "generalization": _avg([float(x.new.acc) for x in paras]),
        "locality": None,
        "flip_rate": float(rw.new.argmax[0] == rw.new.target[0]),
        "GE": _avg([ngram_entropy(t) for t in after.generation or []]),
        "symmetry": None,
        "symmetry_success": None,
    }
    if before is not None:
        pairs = [(a.true.argmax, b.true.argmax) for a, b in zip(nbs, before.neighbours)]
        out["locality"] = _avg([mean(float(x == y) for x, y in zip(a, b)) for a, b in pairs])
    sym = after.symmetry
    if sym is not None:
        out["symmetry"] = float(sym.target.acc)
        if sym.true is not None:
            out["symmetry_success"] = float(sym.target.nll < sym.true.nll)
    if after.attributes:                           # the keys only where there is something: as before
        out["attribute"] = mean(x.p for x in after.attributes)
    if after.essence is not None and before is not None and before.essence is not None:
        out["essence"] = after.essence - before.essence
    return out


def ns_split(after: Measured, rec: Record) -> dict:
    """NS (fraction) over the record's neighbours with its true object ("NS_same", CounterFact's kind) and
    over those with another one ("NS_other"); None where it has none of that kind."""
    kinds = [nb.same_object for nb in rec.neighbours]
    return {k: _avg([float(x.true.nll < x.new.nll) for x, same in zip(after.neighbours, kinds) if same == want])
            for k, want in (("NS_same", True), ("NS_other", False))}


def hmean(xs: list[float | None]) -> float | None:
    """Harmonic mean (CounterFact's S); None if a value is missing, 0 if one is 0."""
    if any(x is None for x in xs):
        return None
    if any(x <= 0 for x in xs):
        return 0.0
    return len(xs) / sum(1 / x for x in xs)


def summarize(rows: list[dict], seconds: list[float] | None = None, params: list[int] | None = None) -> dict:
    """The METRICS of many records: each rate averaged over the records that have it, x100 (as ROME's
    tables); GE x100; S = harmonic mean of ES, PS, NS; seconds per edit and parameters changed averaged
    (0 for the unedited model)."""
    out: dict = {}
    for k in METRICS:
        if k in ("S", "seconds_per_edit", "params_changed"):
            continue
        vals = [r[k] for r in rows if r.get(k) is not None]
        out[k] = 100 * mean(vals) if vals else None
    out["S"] = hmean([out["ES"], out["PS"], out["NS"]])
    out["seconds_per_edit"] = mean(seconds) if seconds else 0.0
    out["params_changed"] = mean(params) if params else 0
    return {k: out[k] for k in METRICS}


__all__ = ["METRICS", "RATES", "Measured", "NeighbourScores", "RewriteScores", "Scored", "SymmetryScores",
           "attribute_probes", "generate", "hmean", "measure", "ngram_entropy", "ns_split", "record_scores", "score",
           "summarize", "text_nll", "words"]
