"""Every scorer on each split of a plan, from the items' rows and hidden states.

The protocol is Table 3's: t (the neuron scorers), each threshold and the probe's layer are tuned on
validation only, with neuron sets counted on the training part; the test part is scored with the sets
counted on training + validation (on the facts split, dkn is Table 3's "dkn" row). The probe is fit on
the training part only (``probe.choose_layer``; ``check_held_out`` refuses a training item of a held-out
fact or relation). On the test items: AUROC with a 95 % percentile-bootstrap interval over facts (a
fact's two items resampled together, fixed seed), and precision, recall, F1 and accuracy of "true when
score > the validation threshold".
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from kneuron.paper.factcheck.items import item_key
from kneuron.paper.factcheck.plan import PARTS, SPLITS, Plan, RelationSplit, check_held_out, set_name
from kneuron.paper.factcheck.probe import L2, choose_layer
from kneuron.paper.factcheck.results import ScorerResult, SplitResult
from kneuron.paper.stats import auroc, best_threshold, binary_metrics
from kneuron.paper.table3 import T_GRID, Item, Split
from kneuron.report.stats import ci, paired_auroc

SCORERS = ("dkn", "kn", "logp", "probe")


def _parts(sp: Split, items: list[Item]) -> dict[str, list[int]]:
    """Indices into ``items`` of each part's items."""
    keys = {"train": {f.key for f in sp.fit}, "val": {f.key for f in sp.val}, "test": {f.key for f in sp.test}}
    return {p: [i for i, it in enumerate(items) if it.fact.key in keys[p]] for p in PARTS}


def auroc_interval(items: list[Item], scores, n_boot: int, seed: int) -> tuple[float, float] | None:
    """95 % percentile-bootstrap interval of the AUROC over facts: each fact's (true, wrong) scores
    are one resampled unit (``report.stats.ci`` with ``paired_auroc``)."""
    pair: dict = {}
    for it, s in zip(items, scores):
        pair.setdefault(it.fact.key, {})[it.label] = s
    both = [p for p in pair.values() if len(p) == 2]
    if not both:
        return None
    return ci((np.array([p[1] for p in both]), np.array([p[0] for p in both])), paired_auroc, n_boot=n_boot,
              seed=seed)


def result(items: list[Item], val: list[int], test: list[int], scores: Callable[[str, list[int]], list[float]],
           n_boot: int, seed: int, tuned: dict | None = None) -> ScorerResult:
    """A scorer's result: its threshold tuned on the ``val`` items (``best_threshold``), then AUROC, its
    interval and the verdicts on the ``test`` items. ``scores(part, indices)``: the scores to use."""
    yv, yt = [items[i].label for i in val], [items[i].label for i in test]
    sv, st = scores("val", val), scores("test", test)
    lam, val_f1 = best_threshold(yv, sv)
    b = binary_metrics(yt, [s > lam for s in st])
    iv = auroc_interval([items[i] for i in test], st, n_boot, seed) or (None, None)
    return ScorerResult(auroc(yt, st), *iv, lam, b.precision, b.recall, b.f1, b.accuracy, auroc(yv, sv), val_f1,
                        len(test), tuned or {}, sum(math.isinf(s) for s in st))


def _neuron_scorer(split: str, scorer: str, items, rows, parts, t_grid, n_boot, seed) -> ScorerResult:
    """dkn / kn: t and lambda tuned on validation (sets from the training part), as Table 3; the test
    scored with the sets counted on training + validation."""
    def means(part: str, t: float, idx: list[int]) -> list[float]:
        name = set_name(split, scorer, part, t)
        vals = [rows.get(item_key(items[i]))["means"][name] for i in idx]
        return [-math.inf if v is None else v for v in vals]
    best_t, best_f1 = None, None
    for t in t_grid:
        f1 = best_threshold([items[i].label for i in parts["val"]], means("fit", t, parts["val"]))[1]
        if best_f1 is None or f1 > best_f1:
            best_t, best_f1 = t, f1
    pick = lambda part, idx: means("fit" if part == "val" else "train", best_t, idx)  # noqa: E731
    return result(items, parts["val"], parts["test"], pick, n_boot, seed, {"t": best_t})


def _probe_scorer(items, feats: torch.Tensor, parts, n_boot, seed, l2) -> ScorerResult:
    """The probe: fit on the training items only, its layer and threshold chosen on validation."""
    y = [it.label for it in items]
    probe, aucs = choose_layer(feats, y, parts["train"], parts["val"], l2)
    sc = lambda part, idx: probe.score(feats[idx, probe.layer]).tolist()  # noqa: E731
    return result(items, parts["val"], parts["test"], sc, n_boot, seed,
                  {"layer": probe.layer, "val_auroc_by_layer": aucs})


def evaluate_split(name: str, sp: Split, items: list[Item], rows, feats: torch.Tensor, t_grid=T_GRID,
                   n_boot: int = 1000, seed: int = 42, l2: float = L2,
                   relations: RelationSplit | None = None) -> SplitResult:
    """Every scorer on one split (``rows``: the scored items' rows; ``feats``: ``hidden_states`` of
    ``items``, row for row)."""
    parts = _parts(sp, items)
    check_held_out(name, sp, [items[i] for i in parts["train"]])
    rels = ({"train": list(relations.train), "val": list(relations.val), "test": list(relations.test)} if relations
            else {p: sorted({f.relation for f in fs}) for p, fs in zip(PARTS, (sp.fit, sp.val, sp.test))})
    res = SplitResult(name, rels, {p: sorted(f.id for f in fs) for p, fs in zip(PARTS, (sp.fit, sp.val, sp.test))},
                      {p: len(v) for p, v in parts.items()}, dict.fromkeys(SCORERS))
    if not parts["val"] or not parts["test"]:
        res.notes.append(f"no {'validation' if not parts['val'] else 'test'} items: nothing is tuned or scored")
        return res
    for scorer in ("dkn", "kn"):
        res.scorers[scorer] = _neuron_scorer(name, scorer, items, rows, parts, t_grid, n_boot, seed)
    res.scorers["logp"] = result(items, parts["val"], parts["test"],
                                 lambda _, idx: [rows.get(item_key(items[i]))["logp"] for i in idx], n_boot, seed)
    if parts["train"]:
        res.scorers["probe"] = _probe_scorer(items, feats, parts, n_boot, seed, l2)
    else:
        res.notes.append("no training items: no probe")
    return res


def evaluate(plan: Plan, rows, feats: torch.Tensor, n_boot: int = 1000, seed: int = 42,
             l2: float = L2) -> dict[str, SplitResult | None]:
    """``evaluate_split`` over each split of the plan (None for a split the plan has not)."""
    return {name: (evaluate_split(name, plan.splits[name], plan.items, rows, feats, plan.t_grid, n_boot, seed, l2,
                                  plan.relations if name == "relations" else None)
                   if name in plan.splits else None) for name in SPLITS}
