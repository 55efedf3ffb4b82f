"""The paper's claims checked against a `reproduce` result: each `Finding` is a claim, the rule that
tests it (its threshold named here), the paper's own numbers for it, ours, and a verdict — holds, does
not hold, or cannot be tested here (with the reason).

These are the scientific claims of the report, so each rule is a small function with its threshold
named below, and tests/unit/paper/test_findings.py flips each verdict across its threshold.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from kneuron.paper import published as P
from kneuron.report.table import Table, number

SR_MARGIN = 0.0             # Tables 1, 2: one SR beats another when it is above it by more than this
CONTROL_MARGIN = 0.0        # Table 2 control: the LIKN's suppress Δ below the random set's by more than this
MASKED_LAST_THIRD = 0.5     # a masked model's KNs: more than half in the last third of the layers
CAUSAL_THIRD_MIN = 0.1      # a causal model's KNs: every third of the layers holds at least 10 % ...
CAUSAL_THIRD_MAX = 0.6      # ... and none holds more than 60 %
LANG_COSINE = 0.8           # English and Chinese KN layer histograms alike: cosine above 0.8
LIKN_LAST_TWO = 0.5         # LIKN: more than half in the last two layers
LIKN_SHARE_MIN = 0.0        # Module 2: LIKN exist when more than this share of the facts has one
DKN_SHARE_MIN = 0.0         # Module 3: DKN exist when more than this share of the facts has a group
DKN_COSINE = 0.8            # DKN and KN layer histograms: cosine above 0.8
F1_MARGIN = 0.0             # Table 3: with_DKN beats wo_DKN when its F1 is above by more than this
JUDGED_TRUE = 0.5           # Table 3: the model "tends to call facts true" when it judges more than half true

UNDEFINED_SR = "an SR is undefined (no facts with a LIKN, or an unrelated mean of 0)"
HOLDS, FAILS, UNTESTED = "holds", "does not hold", "cannot be tested here"
_fmt = number(3)


@dataclass(frozen=True)
class Finding:
    claim: str            # what the paper states
    here: str             # our numbers
    agree: bool | None    # None: cannot be tested here (``reason`` says why)
    rule: str = ""        # how we test it, with its threshold
    paper: str = ""       # the paper's own numbers for it, where it gives any
    reason: str = ""      # why it cannot be tested

    @property
    def verdict(self) -> str:
        return UNTESTED if self.agree is None else (HOLDS if self.agree else FAILS)

    def to_json(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}


def findings(res: dict) -> list[Finding]:
    """Every claim of the paper, in the report's order (those a run cannot test say why)."""
    out = sr_beats_bkn(res) + kn_layers(res) + kn_langs_alike(res)
    out += likn_findings(res) + cross_lingual(res) + dkn_findings(res) + fact_checking(res)
    return out + [recall_by_architecture(res), not_multilinguality(res)]


def table(fs: list[Finding]) -> Table:
    return Table(["the paper's claim", "rule", "the paper's numbers", "here", "verdict"],
                 [[f.claim, f.rule, f.paper or "—", f.here,
                   f.verdict + (f": {f.reason}" if f.agree is None and f.reason else "")] for f in fs])


def _above(a, b, margin: float) -> bool | None:
    return None if a is None or b is None else a - b > margin


def apart(a: dict | None, b: dict | None) -> str:
    """Whether two SRs' 95 % intervals (Interval JSON: value, low, high) overlap, for the 'here' column: a
    verdict compares point values, this says how much to trust it."""
    if not (a and b) or None in (a.get("low"), a.get("high"), b.get("low"), b.get("high")):
        return ""
    return (" (95% intervals apart)" if a["low"] > b["high"] or b["low"] > a["high"]
            else " (95% intervals overlap)")


def _untested(claim: str, rule: str, reason: str, paper: str = "", here: str = "—") -> Finding:
    return Finding(claim, here, None, rule, paper, reason)


# ----------------------------------------------------------------------------- Table 1, Figure 3

def sr_beats_bkn(res: dict) -> list[Finding]:
    """Table 1: AMIG's SR above B-KN's (IG), per language."""
    t1, out = res["table1"], []
    for lang in res["meta"]["langs_used"]:
        a, b = t1["amig"][lang]["sr"], t1["ig"][lang]["sr"]
        g = {m: P.value("Table 1", m, lang, "AMIG vs B-KN", "SR gain %") for m in ("m-GPT", "m-BERT")}
        paper = "; ".join(f"{m} +{v}% SR" for m, v in g.items() if v is not None) or "AMIG above B-KN (no cells)"
        ok = _above(a, b, SR_MARGIN)
        iv = apart(t1["amig"][lang].get("sr_interval"), t1["ig"][lang].get("sr_interval"))
        out.append(Finding(f"Table 1: AMIG localises better than B-KN: higher SR ({lang})",
                           f"AMIG {_fmt(a)} vs B-KN {_fmt(b)}{iv}", ok, f"SR_AMIG − SR_B-KN > {SR_MARGIN}", paper,
                           "" if ok is not None else "an SR is undefined (no facts, or an unrelated mean of 0)"))
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
            claim, rule, ok = ("Fig. 3: a masked model's KNs sit mostly in the last layers",
                               f"last third > {MASKED_LAST_THIRD:.0%}", l > MASKED_LAST_THIRD)
        else:
            claim = "Fig. 3: a causal model's KNs spread over early, middle and last layers"
            rule = f"each third ≥ {CAUSAL_THIRD_MIN:.0%} and ≤ {CAUSAL_THIRD_MAX:.0%}"
            ok = min(e, m, l) >= CAUSAL_THIRD_MIN and max(e, m, l) <= CAUSAL_THIRD_MAX
        here = f"early/middle/late thirds: {e:.0%} / {m:.0%} / {l:.0%} of {sum(c)} KNs"
        out.append(Finding(f"{claim} ({lang})", here, ok if sum(c) else None, rule, "Fig. 3 (bars, no numbers)",
                           "" if sum(c) else "no knowledge neuron found"))
    return out


def cosine(a: list[int], b: list[int]) -> float | None:
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b)) / (na * nb) if na and nb else None


def kn_langs_alike(res: dict) -> list[Finding]:
    """Fig. 3: English and Chinese KNs are distributed over the layers alike (similar, not identical)."""
    kn = res["layers"]["kn"]["amig"]
    claim, rule = "Fig. 3: English and Chinese KNs are distributed over layers alike", f"cosine > {LANG_COSINE}"
    if not ("en" in kn and "zh" in kn):
        return [_untested(claim, rule, "the run has not both English and Chinese")]
    cs = cosine(kn["en"], kn["zh"])
    return [Finding(claim, "no KN" if cs is None else f"cosine of the en and zh layer histograms {cs:.2f}",
                    None if cs is None else cs > LANG_COSINE, rule, "Fig. 3 (bars, no numbers)",
                    "no knowledge neuron in a language" if cs is None else "")]


# ----------------------------------------------------------------------------- Module 2, Table 2

def likn_findings(res: dict) -> list[Finding]:
    """Module 2: facts have language-independent neurons; Fig. 3: they sit in the last one or two layers."""
    claim_e = "Module 2: facts have language-independent neurons (𝒩_en ∩ 𝒩_zh not empty)"
    rule_e = f"share of facts with a LIKN > {LIKN_SHARE_MIN:.0%}"
    claim_l = "Fig. 3: LIKN sit mostly in the last one or two layers"
    rule_l = f"last two layers > {LIKN_LAST_TWO:.0%} of the LIKN"
    t2 = res.get("table2")
    if not t2:
        why = "Module 2 needs two languages; " + ("; ".join(res["meta"].get("notes") or []) or "the run has one")
        return [_untested(claim_e, rule_e, why), _untested(claim_l, rule_l, why)]
    lk = t2["likn"]
    s = lk["share_nonempty"]
    out = [Finding(claim_e, f"{lk['n_with_likn']} of {lk['n_facts']} facts ({s:.0%})", s > LIKN_SHARE_MIN, rule_e,
                   "LIKN found for m-BERT and m-GPT (no share given)")]
    return out + [likn_layers(res["layers"].get("likn") or [])]


def likn_layers(counts: list[int]) -> Finding:
    """Fig. 3: language-independent neurons sit mostly in the last one or two layers."""
    s = sum(counts[-2:]) / sum(counts) if sum(counts) else None
    return Finding("Fig. 3: LIKN sit mostly in the last one or two layers",
                   "no LIKN" if s is None else f"{s:.0%} of {sum(counts)} LIKN in the last two layers",
                   None if s is None else s > LIKN_LAST_TWO, f"last two layers > {LIKN_LAST_TWO:.0%} of the LIKN",
                   "Fig. 3 (bars, no numbers)", "no fact has a LIKN" if s is None else "")


def _t2_paper(lang: str, a: str, b: str) -> str:
    parts = []
    for m in ("m-GPT", "m-BERT"):
        x, y = P.value("Table 2", m, lang, a, "SR"), P.value("Table 2", m, lang, b, "SR")
        if x is not None and y is not None:
            parts.append(f"{m} {a} {_fmt(x)} vs {b} {_fmt(y)}" + ("" if x > y else " (not so in the paper's own row)"))
    return "; ".join(parts)


def cross_lingual(res: dict) -> list[Finding]:
    """Table 2 per language: the LIKN beats Mono-KN and Seq-KN; one language's KNs move the other language
    less than their own; the LIKN beats as many random neurons (our control)."""
    t2 = res.get("table2")
    if not t2:
        return [_untested("Table 2: editing the LIKN beats editing one language's KNs (Mono-KN) and both (Seq-KN)",
                          f"SR_LIKN − SR_other > {SR_MARGIN}", "Table 2 needs two languages")]
    tab, out = t2["table"], []
    for lang in t2["langs"]:
        cell = lambda c, k, lang=lang: (tab.get(c) or {}).get(lang, {}).get(k)  # noqa: E731
        sr = {c: cell(c, "sr") for c in ("likn", "other", "both", "own", "random")}
        sup = {c: cell(c, "suppress_related") for c in sr}
        iv = lambda a, b, cell=cell: apart(cell(a, "sr_interval"), cell(b, "sr_interval"))  # noqa: E731
        src = "zh→en" if lang == "en" else "en→zh"
        why = lambda ok: "" if ok is not None else UNDEFINED_SR  # noqa: E731
        ok = _above(sr["likn"], sr["other"], SR_MARGIN)
        out.append(Finding(f"Table 2: editing the LIKN beats editing the other language's KNs, Mono-KN ({src})",
                           f"SR: LIKN {_fmt(sr['likn'])} vs {src} {_fmt(sr['other'])}{iv('likn', 'other')}; "
                           f"suppress Δ on the fact: LIKN "
                           f"{_fmt(sup['likn'])} vs {_fmt(sup['other'])}", ok, f"SR_LIKN − SR_Mono-KN > {SR_MARGIN}",
                           _t2_paper(lang, "LIKN", "Mono-KN"), why(ok)))
        ok = _above(sr["likn"], sr["both"], SR_MARGIN)
        out.append(Finding(f"Table 2: editing both languages' KNs (Seq-KN) is below editing the LIKN ({lang})",
                           f"SR: both {_fmt(sr['both'])} vs LIKN {_fmt(sr['likn'])}{iv('likn', 'both')}; "
                           f"suppress Δ on the fact: both "
                           f"{_fmt(sup['both'])} vs LIKN {_fmt(sup['likn'])}", ok, f"SR_LIKN − SR_Seq-KN > {SR_MARGIN}",
                           _t2_paper(lang, "LIKN", "Seq-KN"), why(ok)))
        ok = _above(sr["own"], sr["other"], SR_MARGIN)
        out.append(Finding(f"Table 2: one language's KNs move the other language less than their own ({src})",
                           f"SR: {src} {_fmt(sr['other'])} vs own {_fmt(sr['own'])}{iv('own', 'other')}", ok,
                           f"SR_own − SR_Mono-KN > {SR_MARGIN}", "prose: editing in one language and expecting a "
                           "change in another is challenging (no own-language cell)", why(ok)))
        ok = _above(sup["random"], sup["likn"], CONTROL_MARGIN)
        out.append(Finding(f"Control (not in the paper): the LIKN move the fact more than as many random neurons "
                           f"in the same layers ({lang})",
                           f"suppress Δ on the fact: LIKN {_fmt(sup['likn'])} vs random {_fmt(sup['random'])}", ok,
                           f"Δ_suppress(random) − Δ_suppress(LIKN) > {CONTROL_MARGIN}", "",
                           "" if ok is not None else "no fact with a LIKN"))
    return out


# ----------------------------------------------------------------------------- Module 3, Table 3

def dkn_findings(res: dict) -> list[Finding]:
    """Module 3 per language: facts have degenerate groups; Fig. 4: DKNs are distributed like the KNs."""
    out = []
    for lang, x in res["dkn"]["langs"].items():
        s = x["share_with_dkn"]
        out.append(Finding(f"Module 3: facts have degenerate knowledge neurons ({lang})",
                           f"{x.get('n_with_dkn', round(s * x['n_facts']))} of {x['n_facts']} facts ({s:.0%})",
                           s > DKN_SHARE_MIN if x["n_facts"] else None, f"share of facts with a DKN group > "
                           f"{DKN_SHARE_MIN:.0%}", "DKN found for m-BERT, m-GPT, BERT, GPT-2 (no share given)",
                           "" if x["n_facts"] else "no facts"))
    for lang, c in res["layers"]["dkn"].items():
        cs = cosine(c, res["layers"]["kn"]["amig"][lang])
        out.append(Finding(f"Fig. 4: DKNs are distributed over layers like KNs ({lang})",
                           "no DKN" if cs is None else f"cosine of the DKN and KN layer histograms {cs:.2f}",
                           None if cs is None else cs > DKN_COSINE, f"cosine > {DKN_COSINE}",
                           "Fig. 4 (bars, no numbers)", "no DKN found" if cs is None else ""))
    return out


def _t3_paper(lang: str) -> str:
    parts = []
    for m in ("m-GPT", "m-BERT"):
        wo, w = (P.value("Table 3", m, lang, r, "F1") for r in ("wo_DKN", "with_DKN"))
        if wo is not None:
            parts.append(f"{m} F1 {_fmt(w)} vs {_fmt(wo)}")
    return "; ".join(parts)


def judged_true(x: dict) -> float | None:
    """The share of items a scorer judged true (from its counts)."""
    n = sum(x.get(k, 0) for k in ("tp", "fp", "fn", "tn"))
    return (x["tp"] + x["fp"]) / n if n else None


def fact_checking(res: dict) -> list[Finding]:
    """Table 3 per language: with_DKN beats wo_DKN in F1 (tuned, and with the paper's t, λ); the model alone
    calls most facts true; and the gain is larger in Chinese than in English."""
    out, gains = [], {}
    for lang, t in res["table3"].items():
        base = t["direct"]["f1"]
        for key, how in (("dkn", "t, λ tuned on validation"), ("dkn_paper", "the paper's t = 0.7, λ = 1e-6")):
            d = (t.get(key) or {}).get("f1")
            ok = _above(d, base, F1_MARGIN)
            out.append(Finding(f"Table 3: with_DKN beats wo_DKN in F1 ({lang}; {how})", f"with_DKN {_fmt(d)} vs "
                               f"wo_DKN {_fmt(base)} over {t['n_test_items']} test items", ok,
                               f"F1_with − F1_wo > {F1_MARGIN}", _t3_paper(lang),
                               "" if ok is not None else ("no validation part to tune on" if key == "dkn" and
                                                          key not in t else "an F1 is undefined (no test items)")))
            if key == "dkn" and ok is not None:
                gains[lang] = d - base
        jt = judged_true(t["direct"])
        pr = P.value("Table 3", "m-GPT", lang, "wo_DKN", "R")
        out.append(Finding(f"Table 3: the model itself tends to call facts true, hence a high recall ({lang})",
                           "no test items" if jt is None else f"wo_DKN judges {jt:.0%} of the items true (half are); "
                           f"precision {_fmt(t['direct']['precision'])}, recall {_fmt(t['direct']['recall'])}",
                           None if jt is None else jt > JUDGED_TRUE, f"share judged true > {JUDGED_TRUE:.0%}",
                           f"m-GPT printed R {pr}: by the code's P/R swap that is precision, so its true-class recall "
                           "is the printed P (the model rarely says true)" if pr is not None else "",
                           "" if jt is not None else "no test items"))
    claim, rule = "Table 3: DKNs help most in Chinese", f"F1 gain (with − wo) in zh > {F1_MARGIN} and > in en"
    paper = "; ".join(f"{m} F1 gain en {_f1_gain(m, 'en'):+.3f}, zh {_f1_gain(m, 'zh'):+.3f}"
                      for m in ("m-GPT", "m-BERT"))
    if "en" in gains and "zh" in gains:
        out.append(Finding(claim, f"F1 gain en {gains['en']:+.3f}, zh {gains['zh']:+.3f}",
                           gains["zh"] > F1_MARGIN and gains["zh"] > gains["en"], rule, paper))
    else:
        out.append(_untested(claim, rule, "needs tuned Table 3 results in both English and Chinese", paper))
    return out


def _f1_gain(model: str, lang: str) -> float:
    return P.value("Table 3", model, lang, "with_DKN", "F1") - P.value("Table 3", model, lang, "wo_DKN", "F1")


def recall_by_architecture(res: dict) -> Finding:
    """Table 3: auto-regressive models show a higher recall than auto-encoding ones (two models: not here)."""
    r = {m: P.value("Table 3", m, "en", "with_DKN", "R") for m in ("m-GPT", "m-BERT")}
    return _untested("Table 3: auto-regressive models show a higher recall than auto-encoding ones",
                     "recall of a causal model > of a masked one",
                     f"one model per run ({res['meta']['model']['name']}); "
                     "compare two runs, e.g. organism-clm and organism-mlm",
                     f"with_DKN R (printed) en: m-GPT {r['m-GPT']} vs m-BERT {r['m-BERT']}")


def not_multilinguality(res: dict) -> Finding:
    """Fig. 5 / Table 3: DKNs exist in monolingual models too, so they do not come from multilinguality."""
    from kneuron.models.registry import CARDS
    claim = "Fig. 5: monolingual models have DKNs too, which help fact-checking (not due to multilinguality)"
    rule = f"a monolingual model: share with a DKN > {DKN_SHARE_MIN:.0%} and F1_with − F1_wo > {F1_MARGIN}"
    paper = "; ".join(f"{m} F1 {P.value('Table 3', m, 'en', 'with_DKN', 'F1')} vs "
                      f"{P.value('Table 3', m, 'en', 'wo_DKN', 'F1')} (en)" for m in ("BERT", "GPT-2"))
    card = CARDS.get(res["meta"]["model"]["name"])
    if card is None or len(card.languages) != 1:
        return _untested(claim, rule, f"{res['meta']['model']['name']} is not a monolingual model; run reproduce "
                         "on one (e.g. smollm2-135m)", paper)
    lang = card.languages[0]
    x, t = res["dkn"]["langs"].get(lang), res["table3"].get(lang)
    d, base = ((t or {}).get("dkn") or {}).get("f1"), ((t or {}).get("direct") or {}).get("f1")
    if x is None or d is None or base is None:
        return _untested(claim, rule, f"no tuned Table 3 in {lang}", paper)
    return Finding(claim, f"{x['share_with_dkn']:.0%} of facts with a DKN; F1 {_fmt(d)} vs {_fmt(base)}",
                   x["share_with_dkn"] > DKN_SHARE_MIN and d - base > F1_MARGIN, rule, paper)


__all__ = ["Finding", "apart", "cosine", "findings", "judged_true", "table", "thirds"]
