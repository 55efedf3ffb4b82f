"""Localization scored against a known ground truth, by difficulty, for every attribution method behind
``attribute`` (ig, amig and the baselines): facts injected into the model's own neurons
(``kneuron.plant.inject``) and, for reference, the easy grown neuron of ``kneuron.plant``:

    planted              one new neuron grown beside the model's own, one layer, one token (kneuron plant)
    injected             one fact, one set of ``per_set`` neurons drawn from the middle third of the depth
    injected-split       the set drawn from two layers only (a third and two thirds of the depth)
    injected-weak        taught only to p(new) >= 0.2 (a weak key: the fact barely known)
    injected-multi       a new object of two or more tokens
    injected-shared      one set taught the fact in two languages (a planted language-independent fact)
    injected-degenerate  two disjoint sets, each sufficient alone (the truth: both)

Per method and difficulty, over facts and seeds (each seed a new draw of facts and sets): recall and
precision of the truth among the top ``budget`` x (layers x neurons) neurons for each of ``BUDGETS``, the
median rank of the truth's neurons, the share-weighted recall (``mass_at``: of what the set carries, the part
found), the deletion damage (the method's top |truth| neurons suppressed at
every position: the drop of log p(new) on the fact, and the mean |change| of log p on the controls),
and seconds per fact; each mean with a 95 % bootstrap interval over the facts. Beside them, what the
paper's modules recover of the truth, each run on the method's scores as ``reproduce`` runs it: Module 1's
knowledge neurons (tau x the best score, per language: ``neurons_of``) against the truth (``kn_f1``);
Module 2's language-independent neurons (the two languages' sets intersected) against a shared fact's set
(``likn_f1``); Module 3's degenerate groups (``find_dkn`` over the top knowledge neurons) against a
degenerate fact's two sets (``dkn_f1`` of the groups' neurons, and ``dkn_spans``: some group holds
neurons of both sets, i.e. Module 3 found the degeneracy that was planted), and the same for the clusters
rule on the same candidates (``DKNConfig(method="clusters")``: ``dkn_clusters_f1`` of its DKN's neurons, and
``dkn_clusters_spans``: two of its kept clusters are each within one set, one set each, i.e. it found the
two planted sets as two of its clusters).
"""
from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass, field, replace

import torch

from kneuron.attribution import attribute
from kneuron.facts import Fact
from kneuron.facts.templates import QueryError
from kneuron.intervene import suppress
from kneuron.models.load import ModelHandle
from kneuron.models.targets import encode
from kneuron.neurons import LocateConfig, Neuron, neurons_of
from kneuron.paper.dkn import DKNConfig, find_dkn
from kneuron.plant.counterfactuals import plant_fact_counterfactuals
from kneuron.plant.inject import InjectSpec, inject
from kneuron.plant.read import read_many

DIFFICULTIES = ("planted", "injected", "injected-split", "injected-weak", "injected-multi", "injected-shared",
                "injected-degenerate")
METHODS = ("ig", "amig", "actgrad", "activation", "gradient", "mask", "random")
BUDGETS = (0.001, 0.005, 0.01)
WEAK_P = 0.2


@dataclass
class Truth:
    """One injected fact on its model: the prompts it was taught on, the trained neurons, the controls."""
    handle: ModelHandle
    items: list[tuple[str, str]]
    neurons: list[Neuron]
    difficulty: str
    fact_id: str
    controls: list[tuple[str, str]]
    langs: list[str]                                 # the language of each item
    sets: list[list[Neuron]]                         # the trained sets (two for a degenerate fact)
    shares: list[float] | None = None                # per truth neuron: log p(new) lost with it alone suppressed
    logp: list[float] = field(init=False)            # log p(new) of each item and log p(true) of each
    control_logp: list[float] = field(init=False)    # control, unsuppressed (read once, for every method)

    def __post_init__(self):
        self.logp = [r.logp for r in read_many(self.handle, self.items)]
        self.control_logp = [r.logp for r in read_many(self.handle, self.controls)] if self.controls else []


def _prompt(f: Fact, kind: str) -> str | None:
    try:
        return f.first_query(kind).prompt
    except QueryError:
        return None


def _tokens(h: ModelHandle, prompt: str, obj: str) -> int:
    try:
        return len(encode(h.tokenizer, h.kind, prompt, obj).target_ids)
    except QueryError:
        return 0


def draw(handle: ModelHandle, facts: list[Fact], difficulty: str, k: int, rng: random.Random
         ) -> list[tuple[str, list[tuple[str, str]], list[str]]]:
    """k (fact id, [(prompt, new object)], [language]) for the difficulty: the fact's first prompt and a wrong object
    (multi: one of two or more tokens, else one token); shared: the same id's prompts in two languages,
    each with its language's wrong object at the same index."""
    by_id: dict = {}
    for f in facts:
        by_id.setdefault(f.id, {})[f.lang] = f
    ids = sorted(by_id)
    rng.shuffle(ids)
    out = []
    for fid in ids:
        if len(out) >= k:
            break
        langs = sorted(by_id[fid])
        if difficulty == "injected-shared":
            if len(langs) < 2:
                continue
            fs = [by_id[fid][g] for g in langs[:2]]
        else:
            fs = [by_id[fid][langs[0]]]
        n = min(len(f.wrong_objects) for f in fs)
        if n == 0:
            continue
        i = rng.randrange(n)
        items = [(_prompt(f, handle.kind), f.wrong_objects[i]) for f in fs]
        if any(p is None for p, _ in items):
            continue
        sizes = [_tokens(handle, p, o) for p, o in items]
        if 0 in sizes or (difficulty == "injected-multi") != all(s >= 2 for s in sizes):
            continue
        out.append((fid, items, [f.lang for f in fs]))
    return out


def truths(handle: ModelHandle, facts: list[Fact], difficulty: str, k: int, seed: int, per_set: int = 8,
           controls: int = 8, **inject_options) -> list[Truth]:
    """The difficulty's k injected facts on one copy of the model (seeded), with ``controls`` other facts'
    (prompt, true object) to measure collateral on."""
    if difficulty == "planted":
        return _planted(handle, facts, k, seed, controls)
    rng = random.Random(f"{seed}:{difficulty}")
    drawn = draw(handle, facts, difficulty, k, rng)
    if not drawn:
        raise ValueError(f"no fact of the set suits {difficulty!r} on {handle.name}")
    used = {fid for fid, *_ in drawn}
    ctrl = []
    for f in facts:
        if len(ctrl) >= controls:
            break
        p = _prompt(f, handle.kind)
        if f.id not in used and p is not None and _tokens(handle, p, f.object):
            ctrl.append((p, f.object))
    kind = {"injected-shared": "shared", "injected-degenerate": "degenerate"}.get(difficulty, "single")
    L = handle.n_layers
    layers = sorted({L // 3, (2 * L) // 3}) if difficulty == "injected-split" else None
    opts = dict(inject_options)
    if difficulty == "injected-weak":
        opts["p_target"] = WEAK_P
    inj = inject(handle, [InjectSpec(tuple(items), kind) for _, items, _ in drawn], per_set=per_set, layers=layers,
                 controls=ctrl, seed=seed, **opts)
    return [Truth(inj.handle, list(f.spec.items), f.neurons, difficulty, fid, ctrl, langs, f.sets, f.shares)
            for (fid, _, langs), f in zip(drawn, inj.facts) if f.known]


def _planted(handle: ModelHandle, facts: list[Fact], k: int, seed: int, controls: int) -> list[Truth]:
    """k counterfactuals planted as one new neuron each (``plant_fact_counterfactuals``, no pair or shared
    neuron): the benchmark this module makes harder, kept as its easiest row."""
    planted, cfs, _ = plant_fact_counterfactuals(handle, facts, k, pair=False, shared=False, seed=seed)
    ctrl = [(r.prompt, r.answer) for r in planted.controls[:controls]]
    return [Truth(planted.handle, [(f.spec.prompt, f.spec.new_object)], list(f.neurons), "planted", c.fact.id, ctrl,
                  [c.fact.lang], [list(f.neurons)])
            for f, c in zip(planted.facts, cfs) if all(q.is_top1 for q in f.prompts)]


def recall_at(scores: torch.Tensor, truth: list[Neuron], budget: float) -> tuple[float, float]:
    """(recall, precision) of ``truth`` among the top max(1, round(budget x all neurons)) neurons."""
    k = max(1, round(budget * scores.numel()))
    top = set(scores.flatten().topk(k).indices.tolist())
    n = scores.shape[1]
    hit = sum(1 for l, i in truth if l * n + i in top)
    return hit / len(truth), hit / k


def mass_at(scores: torch.Tensor, truth: list[Neuron], shares: list[float] | None, budget: float) -> float | None:
    """The share-weighted recall: of the truth's single-neuron shares (clipped at 0), the part held by the
    truth neurons among the top budget x all neurons. Training leaves some neurons of a set idle (they do
    not fire at the prompt, or another carries the fact), and no method that reads the model's behaviour can
    be asked to find those: this is the recall of what the set actually carries. None without shares."""
    if not shares:
        return None
    w = [max(0.0, float(x)) for x in shares]
    if sum(w) <= 0:
        return None
    k = max(1, round(budget * scores.numel()))
    top = set(scores.flatten().topk(k).indices.tolist())
    n = scores.shape[1]
    return sum(x for (l, i), x in zip(truth, w) if l * n + i in top) / sum(w)


def ranks(scores: torch.Tensor, truth: list[Neuron]) -> list[int]:
    """Each truth neuron's rank among all (1 = best; ties count against it)."""
    return [int((scores >= scores[l, i]).sum()) for l, i in truth]


def deletion(t: Truth, scores: torch.Tensor) -> dict:
    """The method's top |truth| neurons suppressed at every position: the drop of log p(new) on the
    fact's prompts (mean) and the mean |change| of log p(true) on the controls."""
    n = scores.shape[1]
    found = [(int(j) // n, int(j) % n) for j in scores.flatten().topk(len(t.neurons)).indices]
    before, c0 = t.logp, t.control_logp
    with suppress(t.handle, found, at="all"):
        after = [r.logp for r in read_many(t.handle, t.items)]
        c1 = [r.logp for r in read_many(t.handle, t.controls)] if t.controls else []
    return {"fact_drop": statistics.mean(b - a for b, a in zip(before, after)),
            "control_change": statistics.mean(abs(b - a) for b, a in zip(c0, c1)) if c0 else None}


def f1(found, truth) -> float:
    """F1 of a found neuron set against the truth (0 when either is empty)."""
    found, truth = {tuple(map(int, n)) for n in found}, {tuple(map(int, n)) for n in truth}
    hit = len(found & truth)
    return 2 * hit / (len(found) + len(truth)) if hit else 0.0


def modules(t: Truth, attributions: list, dkn: DKNConfig | None = None) -> dict:
    """What the paper's modules recover of the truth from one method's attributions (one per item; see the
    module doc): kn_f1 always, likn_f1 for a fact taught in two languages, dkn_f1 / dkn_spans (the pairs
    rule) and dkn_clusters_f1 / dkn_clusters_spans (the clusters rule), both with ``dkn``'s other settings,
    for a degenerate one."""
    cfg = LocateConfig()
    per_item = [neurons_of([a], lang, cfg) for a, lang in zip(attributions, t.langs)]
    out = {"kn_f1": statistics.mean(f1(s.neurons, t.neurons) for s in per_item)}
    if len(set(t.langs)) >= 2:
        shared = set(per_item[0].neurons).intersection(*(set(s.neurons) for s in per_item[1:]))
        out["likn_f1"] = f1(shared, t.neurons)
    if len(t.sets) == 2:
        out.update(_degenerate(t, per_item[0].neurons, dkn))
    return out


def _degenerate(t: Truth, kn: list[Neuron], dkn: DKNConfig | None) -> dict:
    """Module 3 by both rules on a degenerate truth's first item, from Module 1's neurons ``kn``."""
    (p, o), cfg = t.items[0], dkn or DKNConfig()
    a, b = ({tuple(n) for n in s} for s in t.sets)
    got = find_dkn(t.handle, p, o, kn, replace(cfg, method="pairs")) if len(kn) >= 2 else None
    groups = got.groups if got is not None else []
    clus = find_dkn(t.handle, p, o, kn, replace(cfg, method="clusters")) if len(kn) >= 2 else None
    kept = clus.clusters.kept_clusters() if clus is not None and clus.groups else []
    within = [set(map(tuple, c)) for c in kept]
    return {"dkn_groups": len(groups), "dkn_f1": f1({n for g in groups for n in g}, t.neurons),
            "dkn_spans": float(any(set(map(tuple, g)) & a and set(map(tuple, g)) & b for g in groups)),
            "dkn_clusters": len(kept),
            "dkn_clusters_f1": f1({n for g in (clus.groups if clus else []) for n in g}, t.neurons),
            "dkn_clusters_spans": float(any(c & a and not c & b for c in within)
                                        and any(c & b and not c & a for c in within))}


def score_method(t: Truth, method, steps: int | str, budgets=BUDGETS, dkn: DKNConfig | None = None) -> dict:
    """One method (a name or a method object) on one truth: every taught prompt attributed, the scores
    summed over them for the recall, rank and deletion scores; the modules run on each prompt's own."""
    t0 = time.perf_counter()
    found = [attribute(t.handle, p, o, method=method, steps=steps) for p, o in t.items]
    seconds = (time.perf_counter() - t0) / len(t.items)
    scores = sum(a.scores.double() for a in found)
    row = {"seconds": seconds, "median_rank": statistics.median(ranks(scores, t.neurons))}
    for b in budgets:
        row[f"recall@{b:g}"], row[f"precision@{b:g}"] = recall_at(scores, t.neurons, b)
        row[f"mass@{b:g}"] = mass_at(scores, t.neurons, t.shares, b)
    return {**row, **deletion(t, scores), **modules(t, found, dkn)}


__all__ = ["BUDGETS", "DIFFICULTIES", "METHODS", "Truth", "deletion", "draw", "f1", "mass_at", "modules", "ranks",
           "recall_at", "score_method", "truths"]
