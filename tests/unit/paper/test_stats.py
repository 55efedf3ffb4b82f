import json
import math

import numpy as np
import pytest

from kneuron.paper.stats import Interval, auroc, best_threshold, binary_metrics, bootstrap_ci, relative_change, table1

approx = pytest.approx

# Three facts, worked by hand:
#   related:   before     suppress          enhance
#     f0        0.5   0.25 -> Δ -0.5    1.0 -> Δ 1
#     f1        0.2   0.1  -> Δ -0.5    0.6 -> Δ 2
#     f2        0.1   0.0  -> Δ -1      0.3 -> Δ 2
#   mean Δ_rel: suppress -2/3, enhance 5/3
#   unrelated: before     suppress          enhance
#     f0        0.4   0.36 -> Δ -0.1    0.44 -> Δ 0.1
#     f1        0.5   0.45 -> Δ -0.1    0.55 -> Δ 0.1
#     f2        0.2   0.2  -> Δ 0       0.22 -> Δ 0.1
#   mean Δ_unrel: suppress -1/15, enhance 1/10
#   SR_sup = (-2/3) / (-1/15) = 10;  SR_enh = (5/3) / (1/10) = 50/3;  SR = 80/3
REL = ([0.5, 0.2, 0.1], [0.25, 0.1, 0.0], [1.0, 0.6, 0.3])
UNREL = ([0.4, 0.5, 0.2], [0.36, 0.45, 0.2], [0.44, 0.55, 0.22])


def test_relative_change():
    assert relative_change(REL[0], REL[1]) == approx([-0.5, -0.5, -1.0])
    assert relative_change(REL[0], REL[2]) == approx([1.0, 2.0, 2.0])
    d = relative_change([0.0, 0.5], [0.1, 0.5])
    assert math.isnan(d[0]) and d[1] == 0.0


def test_table1_by_hand():
    t = table1(*REL, *UNREL, n_boot=200)
    assert t.n_facts == 3 and t.dropped == 0 and not t.outlier_cut
    assert t.suppress.related == approx(-2 / 3) and t.suppress.unrelated == approx(-1 / 15)
    assert t.enhance.related == approx(5 / 3) and t.enhance.unrelated == approx(1 / 10)
    assert t.suppress.sr == approx(10) and t.enhance.sr == approx(50 / 3)
    assert t.sr == approx(80 / 3)
    assert t.suppress.related_median.value == approx(-0.5)   # median of -0.5, -0.5, -1
    assert t.enhance.related_median.value == approx(2.0)     # median of 1, 2, 2
    assert t.suppress.related_mean.value == approx(-2 / 3)
    assert (t.suppress.n_related, t.suppress.n_unrelated) == (3, 3)
    assert (t.suppress.dropped_related, t.enhance.dropped_unrelated) == (0, 0)
    j = t.to_json()
    json.dumps(j, allow_nan=False)
    assert j["sr"] == approx(80 / 3) and j["suppress"]["sr"] == approx(10)
    assert set(j["enhance"]["related_mean"]) == {"value", "low", "high"}


def test_zero_before_is_dropped_and_counted():
    # a 4th fact: related p 0.5 -> 0.5 (Δ 0 both ways), unrelated p_before 0 (no Δ):
    # it stays in the related lists and leaves both unrelated lists
    t = table1(*(r + [0.5] for r in REL), *(u + [0.0] for u in UNREL), n_boot=50)
    assert t.suppress.n_related == 4 and t.suppress.dropped_related == 0
    assert t.suppress.n_unrelated == 3 and t.suppress.dropped_unrelated == 1
    assert t.enhance.dropped_unrelated == 1
    assert t.dropped == 1 and t.n_facts == 4
    # SR_sup = (-2/4) / (-1/15) = 7.5;  SR_enh = (5/4) / (1/10) = 12.5
    assert t.suppress.sr == approx(7.5) and t.enhance.sr == approx(12.5) and t.sr == approx(20)


def test_outlier_cut():
    e = 2.0 ** -10  # exact in binary, so Δ below is exact
    # related: f3 suppress Δ = 20 (kept: cut is > 20), enhance Δ = 250 (dropped: cut is >= 250)
    #          f4 suppress Δ = 29 (dropped),           enhance Δ = 249 (kept)
    before = REL[0] + [e, e]
    sup = REL[1] + [21 * e, 30 * e]
    enh = REL[2] + [251 * e, 250 * e]
    assert relative_change(before, sup)[3:] == approx([20, 29])
    assert relative_change(before, enh)[3:] == approx([250, 249])
    unrel = [u + [0.5, 0.5] for u in UNREL]  # Δ = 0 for the two extra facts

    off = table1(before, sup, enh, *unrel, n_boot=50)
    assert off.dropped == 0 and off.suppress.dropped_related == 0 and off.enhance.dropped_related == 0
    assert off.suppress.related == approx((-2 + 20 + 29) / 5)
    assert off.enhance.related == approx((5 + 250 + 249) / 5)

    on = table1(before, sup, enh, *unrel, outlier_cut=True, n_boot=50)
    assert on.suppress.dropped_related == 1 and on.enhance.dropped_related == 1
    assert on.suppress.dropped_unrelated == 0 and on.enhance.dropped_unrelated == 0
    assert on.dropped == 2  # f3 (enhance list) and f4 (suppress list)
    assert on.suppress.n_related == 4 and on.suppress.related == approx((-2 + 20) / 4)
    assert on.enhance.n_related == 4 and on.enhance.related == approx((5 + 249) / 4)
    assert on.to_json()["suppress"]["dropped_related"] == 1


def test_zero_unrelated_mean_gives_none():
    # one fact; unrelated p 0.5 -> 0.5 under suppression (Δ exactly 0), -> 0.75 under enhancement (Δ 0.5)
    # related Δ: suppress -0.5, enhance 1  =>  SR_sup undefined, SR_enh = 1 / 0.5 = 2
    exact = table1([0.5], [0.25], [1.0], [0.5], [0.5], [0.75], n_boot=50)
    assert exact.suppress.sr is None and "-inf" in exact.suppress.note
    assert exact.sr is None and exact.enhance.sr == approx(2.0)   # 1 / 0.5
    j = exact.to_json()
    assert j["suppress"]["sr"] is None and j["sr"] is None
    json.dumps(j, allow_nan=False)


def test_bootstrap_ci():
    x = np.random.default_rng(1).normal(2.0, 1.0, size=200)
    ci = bootstrap_ci(x)
    assert ci.value == approx(x.mean()) and ci.low < ci.value < ci.high
    assert ci.high - ci.low < 0.5
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    assert bootstrap_ci(x, seed=3) != bootstrap_ci(x, seed=4)
    med = bootstrap_ci(x, np.median, n_boot=500)
    assert med.low <= med.value <= med.high
    flat = bootstrap_ci([0.7, 0.7, 0.7])  # np.mean gives 0.6999999999999998 here
    assert flat.value == flat.low == flat.high == approx(0.7)
    assert bootstrap_ci([0.7, 0.7, 0.7], np.median) == Interval(0.7, 0.7, 0.7)
    assert all(math.isnan(v) for v in vars(bootstrap_ci([])).values())


def test_sr_interval_pairs_each_fact_with_its_unrelated_probe():
    # every fact moves the same way: every resample gives the same SR, so the interval is a point
    t = table1([0.5] * 6, [0.25] * 6, [0.75] * 6, [0.4] * 6, [0.36] * 6, [0.44] * 6, n_boot=200)
    assert t.sr == pytest.approx(5.0 + 5.0)
    assert t.sr_interval.low == pytest.approx(10.0) and t.sr_interval.high == pytest.approx(10.0)
    # facts that differ: the interval brackets the point estimate and is reported in the JSON
    t = table1([0.5, 0.4, 0.3, 0.6], [0.1, 0.3, 0.2, 0.1], [0.9, 0.5, 0.5, 0.7],
               [0.5, 0.5, 0.5, 0.5], [0.45, 0.5, 0.4, 0.5], [0.55, 0.6, 0.5, 0.5], n_boot=500)
    assert t.sr_interval.low <= t.sr <= t.sr_interval.high and t.sr_interval.low < t.sr_interval.high
    assert t.to_json()["sr_interval"]["value"] == t.sr


def test_table1_intervals_did_not_move():
    # computed by the hand-written bootstraps before report.stats.ci replaced them (kneuron 1c37887);
    # fact 4 has p_before == 0 and is dropped from the related lists
    t = table1([0.5, 0.4, 0.3, 0.6, 0.0, 0.2], [0.1, 0.3, 0.2, 0.1, 0.1, 0.05], [0.9, 0.5, 0.5, 0.7, 0.2, 0.9],
               [0.5, 0.5, 0.5, 0.5, 0.3, 0.25], [0.45, 0.5, 0.4, 0.5, 0.3, 0.2], [0.55, 0.6, 0.5, 0.5, 0.36, 0.3],
               n_boot=500, seed=7)
    assert t.sr_interval == Interval(16.348571428571432, 10.057857142857149, 34.37500000000001)
    assert t.suppress.related_mean == Interval(-0.5933333333333334, -0.7966666666666666, -0.37666666666666665)
    assert t.suppress.unrelated_median == Interval(-0.04999999999999999, -0.19999999999999996, 0.0)
    assert t.enhance.related_median == Interval(0.6666666666666667, 0.16666666666666663, 3.4999999999999996)


def test_table1_as_a_table():
    t = table1([0.5, 0.2, 0.1], [0.25, 0.1, 0.0], [1.0, 0.6, 0.3], [0.4, 0.5, 0.2], [0.36, 0.45, 0.2],
               [0.44, 0.55, 0.22], n_boot=200)
    tab = t.to_table("Table 1")
    assert tab.title == "Table 1" and tab.header[0] == "op" and [r[0] for r in tab.rows] == ["suppress", "enhance"]
    sup = tab.cells()[0]
    m = t.suppress.related_mean
    assert sup[1] == f"{m.value:+.3f} [{m.low:+.3f}, {m.high:+.3f}]" and sup[1].startswith("-0.667 [")
    assert sup[3] == f"{t.suppress.related_median.value:+.3f}" and sup[4] == f"{t.suppress.sr:.3f}"
    undefined = table1([0.5], [0.25], [1.0], [0.4], [0.4], [0.4], n_boot=10).to_table()
    assert undefined.cells()[0][4] == "n/a"                     # SR_x undefined: the unrelated change is 0


def test_precision_recall_f1_by_hand():
    labels = [1, 1, 1, 0, 0, 0, 0, 1]
    judged = [1, 0, 1, 1, 0, 0, 0, 0]
    b = binary_metrics(labels, judged)
    assert (b.tp, b.fp, b.fn, b.tn) == (2, 1, 2, 3)
    assert b.precision == pytest.approx(2 / 3) and b.recall == pytest.approx(2 / 4)
    assert b.f1 == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert b.accuracy == pytest.approx(5 / 8)
    assert b.released() == {"precision": b.recall, "recall": b.precision, "f1": b.f1}   # the code's swap
    none = binary_metrics([1, 0], [0, 0])
    assert none.precision is None and none.recall == 0.0 and none.f1 == 0.0
    with pytest.raises(ValueError):
        binary_metrics([1, 0], [1])


def test_auroc_by_hand():
    assert auroc([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2]) == 1.0
    assert auroc([1, 1, 0, 0], [0.1, 0.2, 0.9, 0.8]) == 0.0
    # pairs (pos, neg): (3,1) > ; (3,3) tie ; (2,1) > ; (2,3) <  -> (2 + 0.5) / 4
    assert auroc([1, 1, 0, 0], [3, 2, 1, 3]) == pytest.approx(0.625)
    assert auroc([1, 0, 0], [-math.inf, -math.inf, 0.0]) == pytest.approx(0.25)
    assert auroc([1, 1], [0.1, 0.2]) is None


def test_best_threshold():
    lam, f1 = best_threshold([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4])
    assert 0.2 < lam < 0.3 and f1 == 1.0
    lam, f1 = best_threshold([1, 1, 0], [0.5, 0.5, 0.5])
    assert lam < 0.5 and f1 == pytest.approx(0.8)          # everything true: 2 tp, 1 fp
