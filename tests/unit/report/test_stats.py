"""report.stats: the one bootstrap interval and the rank statistics.

The expected intervals below were computed by the hand-written bootstraps this module replaced
(kneuron 1c37887: metrics.bootstrap_ci, metrics.sr_bootstrap, benchmarks.editing_report._intervals)
on the same data; equality is exact, so no published number moved."""
import math

import numpy as np
import pytest

from kneuron.report import stats
from kneuron.report.stats import auroc, best_threshold, ci, resample

X = [0.31, -1.2, 0.05, 2.4, 0.77, -0.33, 1.05, 0.0, 0.58, -0.91, 3.3, 0.12, -0.07, 1.9, 0.44]
BIG = ((np.arange(2500) * 7919) % 1000) / 1000.0    # exact in binary: no platform-dependent rounding
NAN = math.nan
# per-fact relative changes of Table 1, NaN = a dropped fact
SUP_REL = [-0.9, -0.5, NAN, -0.7, -0.2, -0.95, -0.6, -0.4]
SUP_UNREL = [-0.1, 0.05, -0.2, NAN, -0.02, -0.3, 0.1, -0.05]
ENH_REL = [1.5, 0.8, 2.0, 1.1, NAN, 3.0, 0.4, 0.9]
ENH_UNREL = [0.1, 0.3, -0.1, 0.2, 0.05, NAN, 0.0, 0.15]


def sr(sup_rel, sup_unrel, enh_rel, enh_unrel, axis=-1):
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.abs(np.nanmean(sup_rel, axis) / np.nanmean(sup_unrel, axis))
                + np.abs(np.nanmean(enh_rel, axis) / np.nanmean(enh_unrel, axis)))


def test_ci_equals_the_old_percentile_bootstrap():
    assert ci(X) == (0.04060000000000007, 1.1588166666666664)
    assert ci(X, seed=3) == (-0.0015333333333331705, 1.1674)
    assert ci(X, np.median, n_boot=500) == (0.0, 0.77)
    assert ci(X, level=0.9) == (0.09193333333333331, 1.0621)
    assert ci(BIG, seed=1) == (0.48795372000000004, 0.51064867)   # drawn in two batches, as before


def test_ci_of_paired_samples_keeps_each_observation_together_and_leaves_out_non_finite_resamples():
    data = (SUP_REL, SUP_UNREL, ENH_REL, ENH_UNREL)
    assert ci(data, sr) == (15.326583397945337, 202.03919413919414)
    assert ci(data, sr, seed=5, n_boot=300) == (15.685721237883365, 217.42576923076936)
    # a resample with a zero unrelated mean gives inf: it is left out, not propagated
    zero = ([1.0, 2.0], [0.0, 1.0], [1.0, 1.0], [1.0, 1.0])
    dist = resample(zero, sr, n_boot=200, seed=0)
    assert np.isinf(dist).any() and np.isfinite(dist).any()
    low, high = ci(zero, sr, n_boot=200)
    assert math.isfinite(low) and math.isfinite(high)
    assert ci(([1.0, 1.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]), sr) is None   # no finite resample


def test_ci_quantiles_as_written():
    ns = [100.0, NAN, 50.0, 100.0, 75.0, 25.0, 100.0]   # the editing bench's NS of 7 records, one missing
    ge = [61.0, 55.0, NAN, 58.0, 60.0, 49.0, 57.0]
    assert ci(ns, np.nanmean, quantiles=(0.025, 0.975)) == (53.57142857142857, 95.83333333333333)
    assert ci(ge, np.nanmean, quantiles=(0.025, 0.975)) == (53.597500000000004, 59.5)
    assert ci(ge, np.nanmean, seed=2, quantiles=(0.025, 0.975)) == (53.42785714285714, 59.335)
    # the quantiles given are the ones used (not the level's): other quantiles, another interval
    assert ci(ge, np.nanmean, quantiles=(0.1, 0.9)) == (54.597142857142856, 58.8)


def test_batches_do_not_change_the_draws(monkeypatch):
    whole = resample(BIG, np.mean, n_boot=300, seed=4)
    monkeypatch.setattr(stats, "MAX_DRAWN", 3 * BIG.size + 7)    # 3 resamples per batch, then a short one
    assert np.array_equal(resample(BIG, np.mean, n_boot=300, seed=4), whole)


def test_ci_edge_cases():
    assert ci([]) is None
    assert ci(X, n_boot=0) is None
    assert ci([0.25]) == (0.25, 0.25)                # one observation: every resample is it
    assert ci(([0.25], [0.5]), lambda a, b, axis=-1: a.mean(axis) + b.mean(axis)) == (0.75, 0.75)
    assert ci(X, seed=1) != ci(X, seed=2)
    with pytest.raises(ValueError, match="one length"):
        ci(([1.0, 2.0], [1.0]), np.mean)


def _auroc_by_pairs(y, s):
    y, s = np.asarray(y, bool), np.asarray(s, float)
    pos, neg = s[y], s[~y]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def test_auroc_counts_ties_as_one_half():
    # positives 2, 2, 3, -inf against negatives 2, 1, 3: 1.5 + 1.5 + 2.5 + 0 of 12 pairs
    assert auroc([1, 1, 0, 0, 1, 0, 1], [2, 2, 2, 1, 3, 3, -math.inf]) == 5.5 / 12
    assert auroc([1, 0], [1.0, 1.0]) == 0.5
    assert auroc([1, 1, 0], [-math.inf, -math.inf, -math.inf]) == 0.5
    assert auroc([1, 0, 0], [NAN, 0.0, 1.0]) == 0.0      # a NaN score is above nothing and tied with nothing
    assert auroc([1, 1], [0.1, 0.2]) is None and auroc([0], [0.3]) is None
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 40))
        y = rng.random(n) < 0.5
        s = rng.integers(0, 4, n).astype(float)          # many ties
        s[rng.random(n) < 0.2] = -math.inf
        if y.all() or not y.any():
            continue
        assert auroc(y, s) == _auroc_by_pairs(y, s)


def _best_by_loop(y, s):
    s = np.asarray(s, float)
    finite = np.unique(s[np.isfinite(s)])
    cands = np.concatenate([[finite[0] - 1.0], (finite[:-1] + finite[1:]) / 2])
    best = (float(cands[0]), -1.0)
    for lam in cands:
        j = s > lam
        tp, fp, fn = int((y & j).sum()), int((~y & j).sum()), int((y & ~j).sum())
        f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0
        if f1 > best[1]:
            best = (float(lam), f1)
    return best


def test_best_threshold_is_the_first_best_midpoint():
    assert best_threshold([1, 0, 1, 1, 0, 0], [0.9, 0.4, 0.4, 0.7, 0.1, -math.inf]) == (0.25, 6 / 7)
    assert best_threshold([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == (0.25, 1.0)
    assert best_threshold([1, 1, 0], [0.5, 0.5, 0.5]) == (-0.5, 0.8)
    assert best_threshold([1, 0], [-math.inf, NAN]) == (0.0, 0.0)
    assert best_threshold([0, 0], [0.2, 0.3]) == (-0.8, 0.0)   # no positive: F1 0 everywhere, lowest lam
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(1, 30))
        y = rng.random(n) < 0.5
        s = rng.integers(0, 5, n) * 0.1
        s[rng.random(n) < 0.15] = -math.inf
        s[rng.random(n) < 0.1] = math.inf
        if not np.isfinite(s).any():
            continue
        assert best_threshold(y, s) == _best_by_loop(y, s)
