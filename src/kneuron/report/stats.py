"""The statistics every result shares: one percentile-bootstrap interval (`ci`) and the rank statistics
of a binary judge (`auroc`, its vectorised form for paired resamples `paired_auroc`, `best_threshold`).

They live in `report/`, the lowest layer every user reaches: Table 1's metric (a compute-layer module),
the paper's tables and the editing benchmark all call them, so none keeps a bootstrap of its own.

`ci` resamples with `scipy.stats.bootstrap`: a `numpy.random.Generator` seeded with ``seed`` draws
``rng.integers(0, n, (batch, n))`` once per batch, the same draws the earlier hand-written bootstraps
made, so every published interval is unchanged. Its percentile is `numpy.quantile` (linear) of the
finite resampled statistics, not scipy's own interval: `scipy.stats.quantile` interpolates as
``(1 - g) * y[j] + g * y[j + 1]`` where numpy computes ``a + (b - a) * t`` (``b - (b - a) * (1 - t)``
for ``t >= 0.5``), which differs in the last bits, and scipy keeps NaN / inf resamples that a ratio
statistic (SR) must leave out.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
from scipy import stats as _stats

MAX_DRAWN = 2_000_000   # resample indices held in memory at once


def ci(data, statistic: Callable = np.mean, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
       quantiles: tuple[float, float] | None = None) -> tuple[float, float] | None:
    """Percentile-bootstrap interval ``(low, high)`` of ``statistic`` over ``n_boot`` resamples of the
    observations, or None when there is no observation or no resample gives a finite statistic.

    ``data``: one array of observations, or a tuple of arrays of equal length whose observation ``i``
    is resampled together (paired). ``statistic(*samples, axis=-1)`` must be vectorised over the
    leading axis of the resamples (``np.mean``, ``np.median``, ...). ``quantiles`` overrides the pair
    ``((1 - level) / 2, 1 - (1 - level) / 2)`` (the editing benchmark's intervals use 0.025 / 0.975 as
    written).
    """
    samples = _samples(data)
    n = samples[0].size
    if n == 0 or n_boot < 1:
        return None
    dist = resample(samples, statistic, n_boot=n_boot, seed=seed)
    dist = dist[np.isfinite(dist)]
    if dist.size == 0:
        return None
    if quantiles is None:
        alpha = (1.0 - level) / 2.0
        quantiles = (alpha, 1.0 - alpha)
    low, high = np.quantile(dist, list(quantiles))
    return float(low), float(high)


def resample(data, statistic: Callable, *, n_boot: int, seed: int) -> np.ndarray:
    """``statistic`` on each of ``n_boot`` paired resamples of ``data`` (see `ci`): the bootstrap
    distribution, NaN / inf included. RuntimeWarnings of the statistic (an all-NaN resample) are silenced.

    Resamples are drawn at most `MAX_DRAWN` indices at a time, which bounds memory without changing
    the draws: the bit generator carries the unused half of a 64-bit word from one call to the next,
    so the stream does not depend on how it is cut into batches (tests/unit/report/test_stats.py)."""
    samples = _samples(data)
    n = samples[0].size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", _stats.DegenerateDataWarning)
        if n == 1:   # scipy needs two observations; every resample of one is that one
            only = np.zeros((n_boot, 1), dtype=np.int64)
            return np.asarray(statistic(*(s[only] for s in samples), axis=-1), dtype=np.float64)
        res = _stats.bootstrap(samples, statistic, n_resamples=n_boot, batch=max(1, MAX_DRAWN // n),
                               vectorized=True, paired=True, method="percentile", rng=np.random.default_rng(seed))
    return np.asarray(res.bootstrap_distribution, dtype=np.float64)


def _samples(data) -> tuple[np.ndarray, ...]:
    if isinstance(data, tuple):
        arrays = tuple(np.asarray(d, dtype=np.float64).ravel() for d in data)
    else:
        arrays = (np.asarray(data, dtype=np.float64).ravel(),)
    if len({a.size for a in arrays}) > 1:
        raise ValueError(f"paired samples must have one length each, got {[a.size for a in arrays]}")
    return arrays


def auroc(labels, scores) -> float | None:
    """Area under the ROC curve: the chance that a random positive scores above a random negative
    (ties count one half), i.e. Mann-Whitney's U over n_pos * n_neg. None when a class is absent.
    -inf scores are allowed; NaN scores rank with neither class (they count as neither above nor tied)."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"labels have shape {y.shape} but scores {s.shape}")
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        return None
    p, q = pos[~np.isnan(pos)], neg[~np.isnan(neg)]
    u = 0.0
    if p.size and q.size:
        with warnings.catch_warnings():   # the p-value of all-tied scores divides by zero; U is exact
            warnings.simplefilter("ignore", RuntimeWarning)
            u = _stats.mannwhitneyu(p, q, method="asymptotic").statistic
    return float(u / (pos.size * neg.size))


def paired_auroc(pos, neg, axis: int = -1) -> np.ndarray:
    """`auroc` of each row of paired (positive, negative) scores, vectorised for `ci`: row r holds n
    positives ``pos[r]`` and n negatives ``neg[r]`` (one of each per resampled unit, e.g. a fact with its
    true and its wrong object), and its AUROC is Mann-Whitney's U over n x n from average ranks (ties
    count one half). Finite or infinite scores; a row with a NaN gives NaN."""
    p = np.moveaxis(np.asarray(pos, dtype=np.float64), axis, -1)
    q = np.moveaxis(np.asarray(neg, dtype=np.float64), axis, -1)
    n, m = p.shape[-1], q.shape[-1]
    ranks = _stats.rankdata(np.concatenate([p, q], axis=-1), axis=-1)
    u = ranks[..., :n].sum(-1) - n * (n + 1) / 2
    return np.where(np.isnan(np.concatenate([p, q], -1)).any(-1), np.nan, u / (n * m))


def best_threshold(labels, scores) -> tuple[float, float]:
    """The threshold lam maximising F1 of "positive when score > lam", over the midpoints between
    distinct finite scores and one below the lowest; ties go to the lowest lam. Returns (lam, F1);
    (0.0, 0.0) when no score is finite."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    finite = np.unique(s[np.isfinite(s)])
    if finite.size == 0:
        return 0.0, 0.0
    cands = np.concatenate([[finite[0] - 1.0], (finite[:-1] + finite[1:]) / 2])
    pos, neg = np.sort(s[y & ~np.isnan(s)]), np.sort(s[~y & ~np.isnan(s)])
    tp = pos.size - np.searchsorted(pos, cands, side="right")    # positives with score > lam
    fp = neg.size - np.searchsorted(neg, cands, side="right")
    fn = int(y.sum()) - tp
    den = 2 * tp + fp + fn
    f1 = np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)
    i = int(np.argmax(f1))
    return float(cands[i]), float(f1[i])


__all__: Sequence[str] = ["auroc", "best_threshold", "ci", "paired_auroc", "resample"]
