"""Localization scored against facts injected into the model's own neurons (``kneuron.plant.inject``),
by difficulty, for every attribution method behind ``attribute`` (ig, amig and the baselines):

    injected             one fact, one set of ``per_set`` neurons drawn from the middle third of the depth
    injected-split       the set drawn from two layers only (a third and two thirds of the depth)
    injected-weak        taught only to p(new) >= 0.2 (a weak key: the fact barely known)
    injected-multi       a new object of two or more tokens
    injected-shared      one set taught the fact in two languages (a planted language-independent fact)
    injected-degenerate  two disjoint sets, each sufficient alone (the truth: both)

Per method and difficulty, over facts and seeds (each seed a new draw of facts and sets): recall and
precision of the truth among the top ``budget`` x (layers x neurons) neurons for each of ``BUDGETS``, the
median rank of the truth's neurons, the deletion damage (the method's top |truth| neurons suppressed at
every position: the drop of log p(new) on the fact, and the mean |change| of log p on the controls),
and seconds per fact; each mean with a 95 % bootstrap interval over the facts.
"""
from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from kneuron.attribution import attribute
from kneuron.facts import Fact
from kneuron.facts.templates import QueryError
from kneuron.intervene import suppress
from kneuron.models.load import ModelHandle
from kneuron.models.targets import encode
from kneuron.neurons import Neuron
from kneuron.plant.inject import InjectSpec, inject
from kneuron.plant.read import read_many
from kneuron.report.stats import ci

DIFFICULTIES = ("injected", "injected-split", "injected-weak", "injected-multi", "injected-shared",
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
         ) -> list[tuple[str, list[tuple[str, str]]]]:
    """k (fact id, [(prompt, new object)]) for the difficulty: the fact's first prompt and a wrong object
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
        out.append((fid, items))
    return out


def truths(handle: ModelHandle, facts: list[Fact], difficulty: str, k: int, seed: int, per_set: int = 8,
           controls: int = 8, **inject_options) -> list[Truth]:
    """The difficulty's k injected facts on one copy of the model (seeded), with ``controls`` other facts'
    (prompt, true object) to measure collateral on."""
    rng = random.Random(f"{seed}:{difficulty}")
    drawn = draw(handle, facts, difficulty, k, rng)
    if not drawn:
        raise ValueError(f"no fact of the set suits {difficulty!r} on {handle.name}")
    used = {fid for fid, _ in drawn}
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
    inj = inject(handle, [InjectSpec(tuple(items), kind) for _, items in drawn], per_set=per_set, layers=layers,
                 controls=ctrl, seed=seed, **opts)
    return [Truth(inj.handle, list(f.spec.items), f.neurons, difficulty, fid, ctrl)
            for (fid, _), f in zip(drawn, inj.facts) if f.known]


def recall_at(scores: torch.Tensor, truth: list[Neuron], budget: float) -> tuple[float, float]:
    """(recall, precision) of ``truth`` among the top max(1, round(budget x all neurons)) neurons."""
    k = max(1, round(budget * scores.numel()))
    top = set(scores.flatten().topk(k).indices.tolist())
    n = scores.shape[1]
    hit = sum(1 for l, i in truth if l * n + i in top)
    return hit / len(truth), hit / k


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


def score_method(t: Truth, method: str, steps: int | str, budgets=BUDGETS) -> dict:
    """One method on one truth: every taught prompt attributed, the scores summed over them."""
    t0 = time.perf_counter()
    scores = None
    for p, o in t.items:
        s = attribute(t.handle, p, o, method=method, steps=steps).scores.double()
        scores = s if scores is None else scores + s
    seconds = (time.perf_counter() - t0) / len(t.items)
    row = {"seconds": seconds, "median_rank": statistics.median(ranks(scores, t.neurons))}
    for b in budgets:
        row[f"recall@{b:g}"], row[f"precision@{b:g}"] = recall_at(scores, t.neurons, b)
    return {**row, **deletion(t, scores)}


def _interval(xs: list[float]) -> dict:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return {"mean": None, "ci": None}
    iv = ci(np.array(xs, dtype=float))
    return {"mean": float(np.mean(xs)), "ci": None if iv is None else [float(iv[0]), float(iv[1])]}


def ground_truth_bench(handle: ModelHandle, facts: list[Fact], *, difficulties=DIFFICULTIES, methods=METHODS,
                       seeds=(0,), k: int = 4, per_set: int = 8, steps: int | str = 20, budgets=BUDGETS,
                       progress=None, **inject_options) -> dict:
    """Every method on every difficulty's injected facts, for each seed (see the module doc): the rows
    (one per fact and method) and the summary per difficulty and method, means with 95 % intervals."""
    rows, skipped = [], {}
    for seed in seeds:
        for d in difficulties:
            try:
                ts = truths(handle, facts, d, k, seed, per_set=per_set, **inject_options)
            except ValueError as e:
                skipped[d] = str(e)
                continue
            for t in ts:
                for m in methods:
                    rows.append({"seed": seed, "difficulty": d, "fact_id": t.fact_id, "method": m,
                                 "truth": [list(n) for n in t.neurons], **score_method(t, m, steps, budgets)})
                    if progress:
                        progress(f"{d} {t.fact_id} {m}: recall@{budgets[0]:g} {rows[-1][f'recall@{budgets[0]:g}']:.2f}")
    keys = ["seconds", "median_rank", "fact_drop", "control_change",
            *(f"{w}@{b:g}" for b in budgets for w in ("recall", "precision"))]
    summary: dict = {}
    for d in difficulties:
        for m in methods:
            mine = [r for r in rows if r["difficulty"] == d and r["method"] == m]
            if mine:
                summary.setdefault(d, {})[m] = {"n": len(mine), **{x: _interval([r[x] for r in mine]) for x in keys}}
    return {"model": handle.name, "n_neurons_total": handle.n_layers * handle.n_neurons, "seeds": list(seeds),
            "k": k, "per_set": per_set, "steps": steps, "budgets": list(budgets), "methods": list(methods),
            "summary": summary, "rows": rows, "skipped": skipped}


__all__ = ["BUDGETS", "DIFFICULTIES", "METHODS", "Truth", "deletion", "draw", "ground_truth_bench", "ranks",
           "recall_at", "score_method", "truths"]
