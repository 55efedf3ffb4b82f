"""The paper's statistics: the Table 1 metric (paper Eq. 11), how much editing a fact's neurons moves
that fact compared with an unrelated one, with means / medians and their bootstrap intervals
(``kneuron.report.stats.ci``); and Table 3's true/false verdict scores (precision, recall, F1, AUROC).

For each fact, Δ = (p_after - p_before) / p_before. For an operation x (suppress or
enhance), "related" is the fact itself with its own neurons edited and "unrelated" is a
fact of another relation queried under the same edit:

    SR_x = mean Δ_related / mean Δ_unrelated,     SR = |SR_enhance| + |SR_suppress|

(SR as in the released code). A fact with p_before == 0 has no Δ: it is dropped and
counted. The paper's outlier cuts (suppression Δ > 20, enhancement Δ >= 250) are off
by default; each list is filtered on its own and its dropped facts are counted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, astuple, dataclass

import numpy as np

from kneuron.report.stats import auroc, best_threshold, ci
from kneuron.report.table import Column, Table, interval, signed as fixed_signed

SUPPRESS_MAX = 20.0   # outlier cut: drop suppression Δ > 20
ENHANCE_MAX = 250.0   # outlier cut: drop enhancement Δ >= 250


def relative_change(before, after) -> np.ndarray:
    """(after - before) / before per fact; NaN where before == 0."""
    before = np.asarray(before, dtype=np.float64)
    after = np.asarray(after, dtype=np.float64)
    if before.shape != after.shape:
        raise ValueError(f"before has shape {before.shape} but after has {after.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = (after - before) / before
    return np.where(before == 0, np.nan, delta)


@dataclass
class Interval:
    value: float
    low: float
    high: float


def bootstrap_ci(values, stat=np.mean, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Interval:
    """stat(values) with a percentile-bootstrap interval (`kneuron.report.stats.ci`, fixed seed).

    `stat` must accept an `axis` keyword (np.mean, np.median, ...).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return Interval(math.nan, math.nan, math.nan)
    low, high = ci(x, stat, n_boot=n_boot, seed=seed, level=level)
    return Interval(float(stat(x)), low, high)


@dataclass
class OpSummary:
    related: float            # mean Δ over the related facts kept
    unrelated: float          # mean Δ over the unrelated facts kept
    sr: float | None          # related / unrelated; None when undefined (see note)
    related_median: Interval
    unrelated_median: Interval
    related_mean: Interval
    unrelated_mean: Interval
    n_related: int            # facts kept in each list
    n_unrelated: int
    dropped_related: int      # facts dropped from each list (p_before == 0, outlier cut)
    dropped_unrelated: int
    note: str = ""            # why sr is None, if it is


@dataclass
class Table1:
    n_facts: int
    suppress: OpSummary
    enhance: OpSummary
    sr: float | None          # |SR_enhance| + |SR_suppress|; None if either is undefined
    dropped: int              # facts dropped from at least one list
    outlier_cut: bool = False
    sr_interval: Interval | None = None   # SR with a paired percentile-bootstrap interval over facts

    def to_table(self, title: str = "") -> Table:
        """Per operation: the related and unrelated mean change with their 95 % intervals, the related
        median and SR_x (what `kneuron evaluate` prints)."""
        signed = fixed_signed(3)
        t = Table(["op", Column("related Δp (mean, 95% CI)", interval(signed)),
                   Column("unrelated Δp (mean, 95% CI)", interval(signed)), Column("related median", signed),
                   Column("SR_x", ".3f")], title=title)
        for op in ("suppress", "enhance"):
            o = getattr(self, op)
            t.add(op, astuple(o.related_mean), astuple(o.unrelated_mean), o.related_median.value, o.sr)
        return t

    def to_json(self) -> dict:
        """A plain dict (NaN/inf as None), ready for json.dumps."""
        return _clean({
            "n_facts": self.n_facts, "dropped": self.dropped, "outlier_cut": self.outlier_cut,
            "suppress": asdict(self.suppress), "enhance": asdict(self.enhance), "sr": self.sr,
            "sr_interval": asdict(self.sr_interval) if self.sr_interval else None,
        })


def _clean(v):
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _keep(delta: np.ndarray, op: str, outlier_cut: bool) -> np.ndarray:
    """Mask of the facts a list keeps."""
    keep = np.isfinite(delta)
    if outlier_cut:
        with np.errstate(invalid="ignore"):
            keep &= ~(delta > SUPPRESS_MAX) if op == "suppress" else ~(delta >= ENHANCE_MAX)
    return keep


def _op(rel: np.ndarray, unrel: np.ndarray, keep_rel, keep_unrel, n_boot: int, seed: int) -> OpSummary:
    r, u = rel[keep_rel], unrel[keep_unrel]
    mean_r = float(r.mean()) if r.size else math.nan
    mean_u = float(u.mean()) if u.size else math.nan
    sr, note = None, ""
    if not (r.size and u.size):
        note = "no facts left in a list; SR undefined"
    elif mean_u == 0:
        note = f"unrelated mean is 0; SR is {math.copysign(math.inf, mean_r) if mean_r else math.nan}"
    else:
        sr = mean_r / mean_u
    iv = lambda v, stat: bootstrap_ci(v, stat, n_boot=n_boot, seed=seed)  # noqa: E731
    return OpSummary(
        related=mean_r, unrelated=mean_u, sr=sr,
        related_median=iv(r, np.median), unrelated_median=iv(u, np.median),
        related_mean=iv(r, np.mean), unrelated_mean=iv(u, np.mean),
        n_related=int(r.size), n_unrelated=int(u.size),
        dropped_related=int((~keep_rel).sum()), dropped_unrelated=int((~keep_unrel).sum()), note=note,
    )


def table1(p_before_rel, p_sup_rel, p_enh_rel, p_before_unrel, p_sup_unrel, p_enh_unrel,
           outlier_cut: bool = False, n_boot: int = 1000, seed: int = 0) -> Table1:
    """Table 1 from per-fact probabilities of the right answer before and after each edit.

    Index i of the unrelated arrays is the probe queried while fact i's neurons are edited.
    """
    d = {
        ("suppress", "rel"): relative_change(p_before_rel, p_sup_rel),
        ("enhance", "rel"): relative_change(p_before_rel, p_enh_rel),
        ("suppress", "unrel"): relative_change(p_before_unrel, p_sup_unrel),
        ("enhance", "unrel"): relative_change(p_before_unrel, p_enh_unrel),
    }
    keep = {k: _keep(v, k[0], outlier_cut) for k, v in d.items()}
    ops = {op: _op(d[op, "rel"], d[op, "unrel"], keep[op, "rel"], keep[op, "unrel"], n_boot, seed)
           for op in ("suppress", "enhance")}
    n = max(m.size for m in keep.values())
    dropped = np.zeros(n, dtype=bool)
    for m in keep.values():
        dropped[: m.size] |= ~m
    sup, enh = ops["suppress"].sr, ops["enhance"].sr
    sr = None if sup is None or enh is None else abs(enh) + abs(sup)
    masked = {k: np.where(keep[k], v, np.nan) for k, v in d.items()}
    sr_ci = sr_bootstrap(masked, n_boot, seed) if sr is not None else None
    return Table1(n_facts=int(d["suppress", "rel"].size), suppress=ops["suppress"], enhance=ops["enhance"],
                  sr=sr, dropped=int(dropped.sum()), outlier_cut=outlier_cut,
                  sr_interval=Interval(sr, *sr_ci) if sr_ci else None)


def sr_bootstrap(d: dict, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval of SR = |SR_enh| + |SR_sup| over resamples of the facts: fact i's related
    and unrelated changes stay together. ``d[(op, "rel"|"unrel")]``: per-fact changes, NaN = dropped.
    Resamples whose SR is not finite are left out; None when none is left."""
    keys = [(op, side) for op in ("suppress", "enhance") for side in ("rel", "unrel")]
    return ci(tuple(d[k] for k in keys), _sr, n_boot=n_boot, seed=seed, level=level)


def _sr(sup_rel, sup_unrel, enh_rel, enh_unrel, axis=-1):
    """|SR_sup| + |SR_enh| of each resample (rows), NaN-dropped facts left out of the means."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.abs(np.nanmean(sup_rel, axis) / np.nanmean(sup_unrel, axis))
                + np.abs(np.nanmean(enh_rel, axis) / np.nanmean(enh_unrel, axis)))


# ----------------------------------------------------------------------------- fact-checking (Table 3)

@dataclass
class Binary:
    precision: float | None   # of the facts judged true, the share that are true (positive class = true facts)
    recall: float | None      # of the true facts, the share judged true
    f1: float | None
    accuracy: float | None
    tp: int
    fp: int
    fn: int
    tn: int

    def released(self) -> dict:
        """The released code's swapped precision/recall (paper-method.md §7 C6): its "precision" is
        tp / (tp + fn) and its "recall" tp / (tp + fp); F1 is the same."""
        return {"precision": self.recall, "recall": self.precision, "f1": self.f1}


def _div(a: float, b: float) -> float | None:
    return a / b if b else None


def binary_metrics(labels, judged) -> Binary:
    """Precision, recall, F1 and accuracy of true/false verdicts (label 1 = a true fact)."""
    y = np.asarray(labels, dtype=bool)
    p = np.asarray(judged, dtype=bool)
    if y.shape != p.shape:
        raise ValueError(f"labels have shape {y.shape} but verdicts {p.shape}")
    tp, fp = int((y & p).sum()), int((~y & p).sum())
    fn, tn = int((y & ~p).sum()), int((~y & ~p).sum())
    prec, rec = _div(tp, tp + fp), _div(tp, tp + fn)
    f1 = _div(2 * tp, 2 * tp + fp + fn)
    return Binary(prec, rec, f1, _div(tp + tn, y.size), tp, fp, fn, tn)


__all__ = ["Binary", "Interval", "OpSummary", "Table1", "auroc", "best_threshold", "binary_metrics",
           "bootstrap_ci", "relative_change", "sr_bootstrap", "table1"]
