"""The paper's findings (paper-method.md §5) checked against a `reproduce` result: each `Finding` is
a claim, our numbers, and whether they agree (None when the run cannot say).

These are the scientific claims of the report, so each rule is a small function with its threshold
named here, and tests/unit/paper/test_findings.py flips each verdict across its threshold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from kneuron.report.table import Table, number

MASKED_LAST_THIRD = 0.5     # a masked model's KNs: more than half in the last third of the layers
CAUSAL_THIRD_MIN = 0.1      # a causal model's KNs: every third of the layers holds at least 10 % ...
CAUSAL_THIRD_MAX = 0.6      # ... and none holds more than 60 %
LIKN_LAST_TWO = 0.5         # LIKN: more than half in the last two layers
DKN_COSINE = 0.8            # DKN and KN layer histograms: cosine above 0.8

_fmt = number(3)


@dataclass(frozen=True)
class Finding:
    claim: str            # what the paper states
    here: str             # our numbers
    agree: bool | None    # None: not measurable in this run

    @property
    def verdict(self) -> str:
        return "n/a" if self.agree is None else ("agree" if self.agree else "disagree")


def findings(res: dict) -> list[Finding]:
    """Every finding the run can be compared with, in the report's order."""
    out = list(sr_beats_bkn(res)) + list(kn_layers(res))
    if res["layers"].get("likn"):
        out.append(likn_layers(res["layers"]["likn"]))
    if res.get("table2"):
        out += cross_lingual(res["table2"])
    out += dkn_layers(res) + fact_checking(res)
    return out


def table(fs: list[Finding]) -> Table:
    return Table(["the paper", "here", "verdict"], [[f.claim, f.here, f.verdict] for f in fs])


# ----------------------------------------------------------------------------- the rules

def sr_beats_bkn(res: dict) -> list[Finding]:
    """Table 1: AMIG's SR above B-KN's (IG), per language."""
    t1, out = res["table1"], []
    for lang in res["meta"]["langs_used"]:
        a, b = t1["amig"][lang]["sr"], t1["ig"][lang]["sr"]
        out.append(Finding(f"Table 1: AMIG's SR beats B-KN's ({lang})", f"AMIG {_fmt(a)} vs B-KN {_fmt(b)}",
                           None if a is None or b is None else a > b))
    return out


def thirds(counts: list[int]) -> tuple[float, float, float]:
    """Shares of the neurons in the early, middle and last third of the layers."""
    n = len(counts)
    a, b = n // 3, n - n // 3
    t = sum(counts) or 1
    return sum(counts[:a]) / t, sum(counts[a:b]) / t, sum(counts[b:]) / t


def kn_layers(res: dict) -> list[Finding]:
    """Fig. 3: a masked model's KNs sit in the last layers; a causal model's spread over all three thirds."""
    out = []
    masked = res["meta"]["model"]["kind"] == "masked"
    for lang, c in res["layers"]["kn"]["amig"].items():
        e, m, l = thirds(c)
        if masked:
            claim, ok = "Fig. 3: a masked model's KNs sit mostly in the last layers", l > MASKED_LAST_THIRD
        else:
            claim = "Fig. 3: a causal model's KNs spread over early, middle and last layers"
            ok = min(e, m, l) >= CAUSAL_THIRD_MIN and max(e, m, l) <= CAUSAL_THIRD_MAX
        out.append(Finding(f"{claim} ({lang})", f"early/middle/late thirds: {e:.0%} / {m:.0%} / {l:.0%}", ok))
    return out


def likn_layers(counts: list[int]) -> Finding:
    """Fig. 3: language-independent neurons sit mostly in the last one or two layers."""
    s = sum(counts[-2:]) / sum(counts) if sum(counts) else None
    return Finding("Fig. 3: LIKN sit mostly in the last one or two layers",
                   "no LIKN" if s is None else f"{s:.0%} in the last two layers",
                   None if s is None else s > LIKN_LAST_TWO)


def cross_lingual(t2: dict) -> list[Finding]:
    """Table 2: editing the LIKN beats editing the other language's KNs, and beats editing both."""
    tab, out = t2["table"], []
    for lang in t2["langs"]:
        cell = lambda c, k: (tab.get(c) or {}).get(lang, {}).get(k)  # noqa: E731
        lk, oth, both = cell("likn", "sr"), cell("other", "sr"), cell("both", "sr")
        e_lk, e_oth, e_both = (cell(c, "suppress_related") for c in ("likn", "other", "both"))
        src = "zh→en" if lang == "en" else "en→zh"
        out.append(Finding(f"Table 2: editing the LIKN beats editing the other language's KNs ({src})",
                           f"SR: LIKN {_fmt(lk)} vs {src} {_fmt(oth)}; suppress Δ on the fact: LIKN {_fmt(e_lk)} vs "
                           f"{_fmt(e_oth)}", None if lk is None or oth is None else lk > oth))
        out.append(Finding(f"Table 2: editing both languages' KNs (sequential) is below LIKN ({lang})",
                           f"SR: both {_fmt(both)} vs LIKN {_fmt(lk)}; suppress Δ on the fact: both {_fmt(e_both)} vs "
                           f"LIKN {_fmt(e_lk)}", None if lk is None or both is None else both < lk))
    return out


def cosine(a: list[int], b: list[int]) -> float | None:
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b)) / (na * nb) if na and nb else None


def dkn_layers(res: dict) -> list[Finding]:
    """Fig. 4/5: DKNs are distributed over the layers like the KNs they come from."""
    out = []
    for lang, c in res["layers"]["dkn"].items():
        cs = cosine(c, res["layers"]["kn"]["amig"][lang])
        out.append(Finding(f"Fig. 4/5: DKNs are distributed over layers like KNs ({lang})",
                           "no DKN" if cs is None else f"cosine of the layer histograms {cs:.2f}",
                           None if cs is None else cs > DKN_COSINE))
    return out


def fact_checking(res: dict) -> list[Finding]:
    """Table 3: DKN fact-checking beats the direct baseline in F1; the model alone favours recall."""
    out = []
    for lang, t in res["table3"].items():
        d, base = (t.get("dkn") or {}).get("f1"), t["direct"]["f1"]
        out.append(Finding(f"Table 3: DKN fact-checking beats the direct baseline in F1 ({lang})",
                           f"DKN {_fmt(d)} vs direct {_fmt(base)}", None if d is None or base is None else d > base))
        p, r = t["direct"]["precision"], t["direct"]["recall"]
        out.append(Finding(f"Table 3: the model itself tends to call facts true (high recall) ({lang})",
                           f"direct precision {_fmt(p)}, recall {_fmt(r)}",
                           None if p is None or r is None or p == r else r > p))
    return out


__all__ = ["Finding", "cosine", "findings", "table", "thirds"]
