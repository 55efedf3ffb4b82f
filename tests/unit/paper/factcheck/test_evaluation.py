"""kneuron.paper.factcheck.evaluation: the held-out AUROC and its interval against the rank formula and a
bootstrap over facts by hand; every scorer on both splits, in memory (dkn there is Table 3's dkn row)."""
import math

import numpy as np
import pytest

from kneuron.facts import Fact
from kneuron.paper.factcheck.check import fact_check_beside
from kneuron.paper.factcheck.evaluation import SCORERS, auroc_interval, result
from kneuron.paper.table3 import Item, fact_check
from kneuron.report.stats import auroc, best_threshold, paired_auroc
from support.factcheck import features, inputs, synthetic, synthetic_facts


def mann_whitney(labels, scores) -> float:
    """AUROC by its definition: over every (positive, negative) pair, 1 when the positive is above, 1/2 tied."""
    pos = [s for y, s in zip(labels, scores) if y]
    neg = [s for y, s in zip(labels, scores) if not y]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


# ----------------------------------------------------------------------------- AUROC and its interval

def test_paired_auroc_is_the_rank_formula_ties_included():
    pos = np.array([[3.0, 2.0, 2.0, -math.inf], [1.0, 1.0, 1.0, 1.0]])
    neg = np.array([[1.0, 3.0, 2.0, -math.inf], [1.0, 0.0, 2.0, 1.0]])
    got = paired_auroc(pos, neg)
    for r in range(2):
        y, s = [1] * 4 + [0] * 4, list(pos[r]) + list(neg[r])
        assert got[r] == pytest.approx(mann_whitney(y, s)) == pytest.approx(auroc(y, s))
    assert got[0] == pytest.approx((3.5 + 2.5 + 2.5 + 0.5) / 16)      # per positive; ties count one half
    assert math.isnan(paired_auroc([1.0, math.nan], [0.0, 0.0]))


def _pairs(pos, neg):
    items, scores = [], []
    for i, (p, n) in enumerate(zip(pos, neg)):
        f = Fact(f"f{i}", "R", "en", "s", "o", ("[X] is [Y].",))
        items += [Item(f, "o", 1, "w"), Item(f, "w", 0, "o")]
        scores += [p, n]
    return items, scores


def test_held_out_auroc_and_its_interval_resample_facts():
    pos, neg = [0.9, 0.5, 0.5, 0.2, 0.7, 0.1], [0.1, 0.5, 0.6, 0.3, 0.2, 0.1]
    items, scores = _pairs(pos, neg)
    r = result(items, list(range(12)), list(range(12)), lambda _, idx: [scores[i] for i in idx], n_boot=500, seed=3)
    labels = [it.label for it in items]
    assert r.auroc == pytest.approx(mann_whitney(labels, scores))
    # the interval by hand: facts (a true and a wrong score together) drawn with numpy's seeded generator
    idx = np.random.default_rng(3).integers(0, 6, (500, 6))
    boot = paired_auroc(np.array(pos)[idx], np.array(neg)[idx])
    assert (r.auroc_low, r.auroc_high) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])))
    assert auroc_interval(items, scores, 500, 3) == pytest.approx((r.auroc_low, r.auroc_high))
    assert (r.threshold, r.val_f1) == best_threshold(labels, scores) and r.n_test_items == 12   # tuned on "val"


# ----------------------------------------------------------------------------- every scorer, both splits

def test_every_scorer_on_both_splits_and_dkn_is_table3s():
    fs = synthetic_facts(5, 6)
    dkn, kn, wrong = inputs(fs)
    attr, prob = synthetic(fs)
    plan, res = fact_check_beside(fs, dkn, kn, wrong, attr, prob, features, n_boot=50)
    for name in ("facts", "relations"):
        sc = res[name].scorers
        assert set(sc) == set(SCORERS) and all(sc[s] is not None for s in SCORERS)
        assert sc["dkn"].auroc == 1.0 and sc["logp"].auroc == 1.0 and sc["dkn"].f1 == 1.0
        assert sc["kn"].auroc == 1.0                 # (0, 0) is in the KN sets too
        assert sc["probe"].tuned["layer"] == 2 and sc["probe"].auroc == 1.0
        assert sc["dkn"].auroc_low <= sc["dkn"].auroc <= sc["dkn"].auroc_high
    t3 = fact_check(fs, dkn, wrong, attr, prob)
    f = res["facts"]
    assert f.ids["test"] == t3["test_ids"] and f.ids["val"] == t3["val_ids"]
    assert f.scorers["dkn"].tuned["t"] == t3["tuned"]["t"] and f.scorers["dkn"].threshold == t3["tuned"]["lambda"]
    assert f.scorers["dkn"].auroc == t3["dkn"]["auroc"] and f.scorers["dkn"].f1 == t3["dkn"]["f1"]
    # without the label feature the probe is not perfect: the 1.0 above comes from the features, not a leak
    _, flat = fact_check_beside(fs, dkn, kn, wrong, attr, prob, lambda items: features(items, False), n_boot=20)
    assert flat["relations"].scorers["probe"].auroc != 1.0
