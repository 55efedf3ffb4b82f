"""Table 3: checking facts with degenerate knowledge neurons (DKN).

Per relation the facts are split 80/20 (seed 42); the 80 % is split again into a fitting part and a
validation part (25 % of it). A relation's DKN set is the set of neurons in the DKN groups of its
facts, kept when found more than int(t x the most frequent one's count) times (the released
code's rule). An item — a fact's prompt with its true object, or with one wrong object of the same
relation — is scored by the mean attribution (the locate method) of p(object) over its relation's
DKN set, and judged true when the score exceeds lam.

t and lam are tuned on the validation part (DKN sets from the fitting part); the test part is
scored once, with the DKN sets counted on the whole 80 %. The paper's fixed setting (t = 0.7,
lam = 1e-6) is reported beside it. Baselines on the same test items: "direct" (the model's own
greedy answer is the object: the paper's "wo DKN", by exact token match) and "compare" (the model
gives the object a higher probability than the fact's other candidate). Positive class = true facts.
"""
from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from kneuron.facts import Fact
from kneuron.paper.stats import auroc, best_threshold, binary_metrics
from kneuron.models.load import ModelHandle
from kneuron.facts.templates import QueryError
from kneuron.models.targets import encode
from kneuron.paper.dkn import DKNRun
from kneuron.paper.table1 import _saved_json, first_prompt
from kneuron.neurons import Neuron
from kneuron.report.progress import progress
from kneuron.store import write_json

T_GRID = (0.1, 0.3, 0.5, 0.7, 0.9)
PAPER_T, PAPER_LAMBDA = 0.7, 1e-6


@dataclass
class Split:
    fit: list[Fact]
    val: list[Fact]
    test: list[Fact]

    @property
    def train(self) -> list[Fact]:          # the 80 %
        return self.fit + self.val


def _cut(facts: list[Fact], share: float, rng: random.Random) -> tuple[list[Fact], list[Fact]]:
    fs = list(facts)
    rng.shuffle(fs)
    k = math.ceil(share * len(fs)) if len(fs) >= 2 else 0
    return fs[k:], fs[:k]


def split_facts(facts: list[Fact], test_size: float = 0.2, val_size: float = 0.25, seed: int = 42) -> Split:
    """Per relation: test = ceil(20 %), validation = ceil(25 %) of the rest (a relation with one fact
    left goes to fitting). Each relation draws from its own seeded generator, so adding a relation
    does not move the others' split."""
    by_rel: dict[str, list[Fact]] = defaultdict(list)
    for f in facts:
        by_rel[f.relation].append(f)
    fit, val, test = [], [], []
    for rel in sorted(by_rel):
        rng = random.Random(f"{seed}:{rel}")
        rest, t = _cut(by_rel[rel], test_size, rng)
        fi, va = _cut(rest, val_size, rng)
        fit, val, test = fit + fi, val + va, test + t
    return Split(fit, val, test)


def relation_dkns(dkn_rows: dict[tuple[str, str], list], facts: list[Fact], t: float,
                  by: Callable[[Fact], str] | None = None) -> dict[str, list[Neuron]]:
    """Per relation, the neurons of its facts' DKN groups found more than int(t x max count) times.
    ``by``: what a fact is counted under (default its relation; `factcheck` pools relations with it)."""
    count: dict[str, Counter] = defaultdict(Counter)
    for f in facts:
        for n in {tuple(x) for g in dkn_rows.get(f.key, []) for x in g}:
            count[by(f) if by else f.relation][n] += 1
    out = {}
    for rel, c in count.items():
        cut = int(max(c.values()) * t)
        out[rel] = sorted(n for n, k in c.items() if k > cut)
    return out


def wrong_object(handle: ModelHandle | None, f: Fact, others: list[str], seed: int = 42) -> str | None:
    """One wrong object for a fact: ``random.Random(seed).choice`` over its own wrong objects that the
    model can spell (no unknown token), else over ``others`` (objects of the same relation)."""
    def usable(o: str) -> bool:
        if o == f.object or o in f.aliases:
            return False
        if handle is None:
            return True
        try:
            enc = encode(handle.tokenizer, handle.kind, *_prompt_with(handle, f, o))
        except QueryError:
            return False
        unk = getattr(handle.tokenizer, "unk_token_id", None)
        return unk is None or unk not in enc.target_ids
    for pool in (list(f.wrong_objects), sorted(set(others))):
        ok = [o for o in pool if usable(o)]
        if ok:
            return random.Random(seed).choice(ok)
    return None


def wrong_objects(handle: ModelHandle | None, facts: list[Fact], seed: int = 42) -> dict[tuple[str, str], str]:
    """Fact key -> its wrong object (``wrong_object``, the other objects of its relation as the fallback
    pool); facts without one are left out."""
    by_rel = defaultdict(list)
    for f in facts:
        by_rel[f.relation].append(f.object)
    wrong = {}
    for f in facts:
        w = wrong_object(handle, f, [o for o in by_rel[f.relation] if o != f.object], seed)
        if w is not None:
            wrong[f.key] = w
    return wrong


def _prompt_with(handle: ModelHandle, f: Fact, obj: str) -> tuple[str, str]:
    prompt, _ = first_prompt(handle, f)
    return prompt, obj


@dataclass
class Item:
    fact: Fact
    candidate: str
    label: int                    # 1: the true object, 0: a wrong one
    other: str                    # the fact's other candidate (for the "compare" baseline)


def items_for(facts: list[Fact], wrong: dict[tuple[str, str], str]) -> list[Item]:
    out = []
    for f in facts:
        w = wrong.get(f.key)
        if w is None:
            continue
        out += [Item(f, f.object, 1, w), Item(f, w, 0, f.object)]
    return out


def model_scorers(handle: ModelHandle, method: str = "amig", steps: int = 20, **options):
    """(attribution scores of p(candidate) for every neuron, (log p(candidate), greedy answer == candidate))."""
    from kneuron.attribution import attribute, make_method
    from kneuron.probe import answer_prob
    m = make_method(method, **options)            # a bad method or option fails here, before any work

    def attr(item: Item) -> torch.Tensor:
        prompt, _ = first_prompt(handle, item.fact)
        return attribute(handle, prompt, item.candidate, method=m, steps=steps).scores

    def prob(item: Item) -> tuple[float, bool]:
        a = answer_prob(handle, first_prompt(handle, item.fact)[0], item.candidate)
        return a.logp, a.greedy
    return attr, prob


def _mean_score(scores: torch.Tensor, neurons: list[Neuron]) -> float:
    if not neurons:
        return -math.inf
    idx = torch.tensor(neurons)
    return float(scores[idx[:, 0], idx[:, 1]].double().mean())


def _verdicts(items: list[Item], scores: list[torch.Tensor], sets: dict[str, list[Neuron]]) -> list[float]:
    return [_mean_score(s, sets.get(it.fact.relation, [])) for it, s in zip(items, scores)]


def _report(labels, judged, scores) -> dict:
    b = binary_metrics(labels, judged)
    return {"precision": b.precision, "recall": b.recall, "f1": b.f1, "accuracy": b.accuracy,
            "tp": b.tp, "fp": b.fp, "fn": b.fn, "tn": b.tn, "auroc": auroc(labels, scores),
            "released_code": b.released()}


def fact_check(facts: list[Fact], dkn_groups: dict[tuple[str, str], list], wrong: dict[tuple[str, str], str],
               attr: Callable[[Item], torch.Tensor], prob: Callable[[Item], tuple[float, bool]],
               t_grid=T_GRID, seed: int = 42, progress: Callable | None = None) -> dict:
    """Table 3 for one language. ``dkn_groups``: fact key -> its DKN groups; ``wrong``: fact key ->
    its wrong object; ``attr``/``prob``: how the model scores an item (see ``model_scorers``)."""
    sp = split_facts(facts, seed=seed)
    val_items, test_items = items_for(sp.val, wrong), items_for(sp.test, wrong)
    step = progress or (lambda: None)

    def scored(items):
        out = []
        for it in items:
            out.append(attr(it))
            step()
        return out
    # --- tuning: validation only (DKN sets from the fitting part)
    val_scores = scored(val_items)
    yv = [it.label for it in val_items]
    tuned = {"t": None, "lambda": None, "val_f1": None}
    for t in t_grid if val_items else ():
        sv = _verdicts(val_items, val_scores, relation_dkns(dkn_groups, sp.fit, t))
        lam, f1 = best_threshold(yv, sv)
        if tuned["val_f1"] is None or f1 > tuned["val_f1"]:
            tuned = {"t": t, "lambda": lam, "val_f1": f1}
    # --- test: scored once, DKN sets counted on the whole 80 %
    test_scores = scored(test_items)
    y = [it.label for it in test_items]
    res = {"n_facts": len(facts), "n_fit": len(sp.fit), "n_val": len(sp.val), "n_test": len(sp.test),
           "n_test_items": len(test_items), "n_val_items": len(val_items),
           "missing_wrong_object": sum(f.key not in wrong for f in facts), "tuned": tuned, "seed": seed,
           "test_ids": sorted(f.id for f in sp.test), "val_ids": sorted(f.id for f in sp.val)}
    for name, t, lam in (("dkn", tuned["t"], tuned["lambda"]), ("dkn_paper", PAPER_T, PAPER_LAMBDA)):
        if t is None:
            continue
        sets = relation_dkns(dkn_groups, sp.train, t)
        s = _verdicts(test_items, test_scores, sets)
        res[name] = {**_report(y, [v > lam for v in s], s), "t": t, "lambda": lam,
                     "items_without_dkn": sum(math.isinf(v) for v in s),
                     "relations_with_dkn": sum(bool(v) for v in sets.values()),
                     "mean_dkn_per_relation": (sum(map(len, sets.values())) / len(sets)) if sets else 0.0}
    probs = [prob(it) for it in test_items]
    logp = {(it.fact.key, it.candidate): lp for it, (lp, _) in zip(test_items, probs)}
    res["direct"] = _report(y, [m for _, m in probs], [lp for lp, _ in probs])
    margin = [logp[it.fact.key, it.candidate] - logp[it.fact.key, it.other] for it in test_items]
    res["compare"] = _report(y, [m > 0 for m in margin], margin)
    return res


@dataclass(frozen=True)
class FactCheck:
    """Table 3 for one language of a run: ``table`` is ``fact_check``'s result (the split, the tuned t and
    lambda, and per scorer — "dkn", "dkn_paper", "direct", "compare" — precision, recall, F1, accuracy,
    AUROC and counts); ``to_json()`` is table3-<lang>.json."""
    lang: str
    method: str
    steps: int
    table: dict

    def to_json(self) -> dict:
        return {"lang": self.lang, "method": self.method, "steps": self.steps, **self.table}

    @classmethod
    def from_json(cls, j: dict) -> "FactCheck":
        t = {k: v for k, v in j.items() if k not in ("lang", "method", "steps")}
        return cls(j["lang"], j["method"], j["steps"], t)

    def save(self, directory) -> Path:
        """table3-<lang>.json in ``directory``, atomically (the bytes `reproduce` writes)."""
        return write_json(self.path(directory, self.lang), self.to_json(), indent=2, sort_keys=True,
                          ensure_ascii=False, default=str)

    @classmethod
    def load(cls, directory, lang: str) -> "FactCheck":
        """What ``save`` wrote for ``lang`` (a RunStoreError, one line, when it is not there or damaged)."""
        return cls.from_json(_saved_json(cls.path(directory, lang)))

    @staticmethod
    def path(directory, lang: str) -> Path:
        return Path(directory) / f"table3-{lang}.json"


def table3_from_run(handle: ModelHandle, run_dir, lang: str, dkn: DKNRun | list[dict], method: str = "amig",
                    steps: int = 20, method_options: dict | None = None, seed: int = 42,
                    show_progress: bool = False) -> FactCheck:
    """Table 3 over one language of a `locate` run whose DKNs were found (``dkn``: ``dkn_from_run``'s
    result, or its rows); nothing is written (``.save(directory)`` does that)."""
    from kneuron.runs.reopen import check_model, load_run
    dkn_rows = dkn.rows if isinstance(dkn, DKNRun) else dkn
    run = load_run(run_dir)
    check_model(handle, run)
    facts = [f for f in run.facts if f.lang == lang]
    wrong = wrong_objects(handle, facts, seed)
    groups = {(r["fact_id"], r["lang"]): r["groups"] for r in dkn_rows if r["lang"] == lang}
    attr, prob = model_scorers(handle, method, steps, **(method_options or {}))
    sp = split_facts(facts, seed=seed)
    total = 2 * sum(f.key in wrong for f in sp.val + sp.test)
    with progress(f"fact-checking ({lang})", total, show=show_progress) as advance:
        res = fact_check(facts, groups, wrong, attr, prob, seed=seed, progress=advance)
    return FactCheck(lang, method, steps, res)
