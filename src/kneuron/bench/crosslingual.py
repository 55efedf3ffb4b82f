"""The editing bench's cross-lingual 2 x 2 matrix -- edit in one language, measure in each -- and the question
the field asks of it: does an edit made in one language reach the other?

    cell_kind("rome") -> "transfer"     the edit is computed from the edit language's prompts only
    cell_kind("likn") -> "both"         one edit of both languages at once: its other-language cell is not transfer
    lift(after, before, "PS")           the paired gain over the unedited model on the same records, with its
                                        95 % interval (``report.stats.ci``)
    BI_ZSRE                             the published reference points (Bi-ZsRE), with what differs from here

What each method's edit is computed from (the bench gives a method only the context names it reads,
``BenchContext.options``): kn, kn-eai and kn-erase localise the fact's neurons on the edit language's prompts
and write its object's / new object's embeddings; kn-opt, rome and ft-m optimise on the edit language's
rewrite prompt (bare and behind the model's own prefixes -- self-written from English openers, the same for
every fact and language, never the fact's prompts in the other language) with the KL term on the edit
language's subject, ft-l on the bare rewrite prompt alone, and ROME's C comes from self-written text, the same
for every edit; likn-transfer writes
the neurons both languages' localisations share, from the edit language's terms alone. Their cells in the
other language are transfer. likn writes both languages' terms in one edit, so its row for either edit
language is the same edit and its cell in the other language is its direct edit there.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kneuron.editing.registry import lookup
from kneuron.report.document import Document
from kneuron.report.stats import ci
from kneuron.report.table import Column, Table, fixed, interval, signed

N_BOOT = 1000
KEYS = ("ES", "PS", "NS", "S", "EM", "PM", "reliability", "generalization")    # a matrix cell's scores
LIFTED = ("ES", "PS", "generalization")                                         # gains over the unedited model
KINDS = {"transfer": "transfer", "both": "not transfer: one edit of both languages"}
COMPUTED_FROM = (
    "What each edit is computed from: kn, kn-eai and kn-erase localise the fact's neurons on the edit language's "
    "prompts and write its object's / new object's output embeddings; kn-opt, rome and ft-m optimise on the "
    "edit language's rewrite prompt (bare and behind the model's own prefixes, which it writes from English "
    "openers, the same for every fact and language -- never the fact's prompts in the other language) with the "
    "KL term on the edit language's subject, ft-l on the bare rewrite prompt alone, and ROME's C comes from text the model writes, the same for every edit; "
    "likn-transfer writes the neurons the two languages' localisations share (that is what makes them "
    "language-independent) with the edit language's terms alone. Their cells in the other language are "
    "transfer. likn writes both languages' terms in one edit: its rows for the two edit languages are the same "
    "edit, and its cell in the other language is its own edit there, not transfer.")


def cell_kind(method: str) -> str | None:
    """What a method's off-diagonal cells are: "both" for a method whose one edit rewrites both languages
    (``languages`` > 1: likn), "transfer" for any other registered method; None for a name not registered."""
    cls = lookup(method)
    if cls is None:
        return None
    return "both" if cls.languages > 1 else "transfer"


def lift(after: list[dict], before: list[dict], key: str, seed: int = 0) -> list[float] | None:
    """The mean gain of ``key`` (x100) over the unedited model on the same records -- record i's score after
    the edit minus its unedited score, records without the score left out -- and its 95 % paired bootstrap
    interval: [mean, low, high]; None when no record has the score."""
    a = np.array([np.nan if r.get(key) is None else 100 * r[key] for r in after], dtype=float)
    b = np.array([np.nan if r.get(key) is None else 100 * r[key] for r in before], dtype=float)
    d = a - b
    d = d[~np.isnan(d)]
    if d.size == 0:
        return None
    iv = ci(d, np.mean, n_boot=N_BOOT, seed=seed, quantiles=(0.025, 0.975))
    return [float(d.mean()), *(iv if iv is not None else (float("nan"), float("nan")))]


def reaches(lifts: dict, keys=("ES", "PS")) -> list[str]:
    """The scores among ``keys`` whose gain over the unedited model has its interval above 0."""
    return [k for k in keys if lifts.get(k) and lifts[k][1] > 0]


# ----------------------------------------------------------------------------- the report's section

F1 = fixed(1)


def section(doc: Document, res: dict) -> Document:
    """The report's cross-lingual section (two languages or more): what the cells are, whether each edit
    reaches the other language (its gains over the unedited model, with intervals), each method's matrix with
    95 % intervals per cell, and the published reference points beside ours."""
    langs, methods = list(res["unedited"]), list(res["methods"])
    cross = res.get("crosslingual") or {}
    cells = {m: (cross.get("cells") or {}).get(m, cell_kind(m)) for m in methods}
    ivs, lifts = res["intervals"].get("matrix") or {}, cross.get("lift") or {}
    doc.heading(2, "Cross-lingual: edit in one language, measure in each")
    doc.para(COMPUTED_FROM)
    doc.heading(3, "Does the edit reach the other language?")
    doc.para("Each edit measured in the language it was not made in: ES / PS / Gen with 95 % bootstrap intervals "
             "over records, and the gain over the unedited model on the same records (paired, with its interval); "
             "'above unedited' names the scores whose gain has its interval above 0.")
    rows = []
    for m in methods:
        for a, b in ((a, b) for a in langs for b in langs if a != b):
            pair, c = f"{a}->{b}", res["matrix"][m][f"{a}->{b}"]
            iv, lf = ivs.get(m, {}).get(pair, {}), lifts.get(m, {}).get(pair, {})
            up = reaches(lf)
            rows.append([m, f"{a} → {b}", KINDS.get(cells[m], "?"),
                         *((c.get(k), *(iv.get(k) or (None, None))) for k in ("ES", "PS", "generalization")),
                         *(tuple(lf[k]) if lf.get(k) else (None, None, None) for k in ("ES", "PS")),
                         "n/a (its own edit)" if cells[m] == "both" else (", ".join(up) or "neither")])
    both = interval(F1)
    gain = interval(signed(1))
    doc.table(Table(["method", "edit → measure", "cells", Column("ES", both), Column("PS", both),
                     Column("Gen", both), Column("ΔES", gain), Column("ΔPS", gain), "above unedited"], rows))
    doc.para("Rows: the language of the edit; columns: the language measured. Each cell: S, ES, PS and NS with "
             "95 % bootstrap intervals over records.")
    for m in methods:
        label = "one edit of both languages at once: not transfer" if cells[m] == "both" else \
            "off-diagonal cells: transfer" if cells[m] == "transfer" else "cells of an unregistered method"
        t = Table(["", *(Column(f"measure {c}", _cell) for c in langs)],
                  [[f"edit {a}"] + [(res["matrix"][m][f"{a}->{c}"], ivs.get(m, {}).get(f"{a}->{c}", {}))
                                    for c in langs] for a in langs])
        doc.heading(4, f"{m} ({label})").table(t)
    return published(doc, res)


def _cell(cell) -> str:
    d, iv = cell
    return " · ".join(f"{k} {interval(F1)((d.get(k), *(iv.get(k) or (None, None))))}" for k in ("S", "ES", "PS", "NS"))


def published(doc: Document, res: dict) -> Document:
    """The published reference points (``BI_ZSRE``), the caveats, and ours in the same shape: for each
    method with transfer cells, its Gen / PS in the other language, the unedited model's there, and the share
    of its edit-language score left in the other language."""
    doc.heading(3, "Beside the published cross-lingual numbers")
    pts = BI_ZSRE.points
    doc.para(f"{BI_ZSRE.source}: {BI_ZSRE.model} on {BI_ZSRE.data}; {BI_ZSRE.metric}. "
             + "; ".join(f"{p.method} edit in {p.edit_lang}, measured in {p.measure_lang}: "
                         f"{'~' if p.approximate else ''}{p.value:g}" for p in pts) + ". "
             + caveats(res["model"]))
    rows = [[f"{p.method} (published)", f"{p.edit_lang} → {p.measure_lang}", "F1", p.value, None,
             _kept(BI_ZSRE.value(p.method, p.edit_lang, p.edit_lang), p)] for p in pts if p.edit_lang != p.measure_lang]
    langs = list(res["unedited"])
    for m in res["methods"]:
        if cell_kind(m) == "both" or (res.get("crosslingual") or {}).get("cells", {}).get(m) == "both":
            continue
        for a, b in ((a, b) for a in langs for b in langs if a != b):
            for k, name in (("generalization", "Gen"), ("PS", "PS")):
                here, there = res["matrix"][m][f"{a}->{a}"].get(k), res["matrix"][m][f"{a}->{b}"].get(k)
                rows.append([m, f"{a} → {b}", name, there, res["unedited"][b].get(k),
                             None if not here or there is None else there / here])
    return doc.table(Table(["method", "edit → measure", "metric", Column("other language", fixed(2)),
                            Column("unedited there", fixed(2)), Column("share of the edit language's", fixed(2))],
                           rows))


def _kept(own: Point | None, other: Point) -> float | None:
    return None if own is None or not own.value else other.value / own.value


# ----------------------------------------------------------------------------- published reference points

@dataclass(frozen=True)
class Point:
    """One published number: ``method``'s edit in ``edit_lang`` measured in ``measure_lang``."""
    method: str
    edit_lang: str
    measure_lang: str
    value: float
    approximate: bool = False        # given as "about" by the source we take it from


@dataclass(frozen=True)
class Published:
    """Published cross-lingual editing numbers and what they were measured on."""
    source: str
    model: str
    data: str
    metric: str
    points: tuple[Point, ...]

    def value(self, method: str, edit_lang: str, measure_lang: str) -> Point | None:
        return next((p for p in self.points if (p.method, p.edit_lang, p.measure_lang) ==
                     (method, edit_lang, measure_lang)), None)


BI_ZSRE = Published(
    source="Wang et al. 2024, Cross-Lingual Knowledge Editing in Large Language Models (ACL 2024, arXiv 2309.08952; "
           "krystalan/Bi_ZsRE); the numbers as kneuron's issue 20 quotes them, not re-read from the paper's tables",
    model="Chinese-LLaMA-7B",
    data="Bi-ZsRE: the 1,037 zsRE test questions of Yao et al. 2023, translated from English into Chinese",
    metric="generalization as token F1 of the teacher-forced answer on the rephrased questions",
    points=(Point("ROME", "en", "en", 95.0, approximate=True), Point("MEMIT", "en", "en", 95.0, approximate=True),
            Point("ROME", "en", "zh", 26.65), Point("MEMIT", "en", "zh", 28.26), Point("KN", "en", "zh", 6.66)))


def caveats(model: str) -> str:
    """Why the published numbers and ours are not comparable as numbers, for a run on ``model``."""
    return (f"Not comparable as numbers: another model ({BI_ZSRE.model}, a 7B LLaMA further trained on Chinese, "
            f"against {model} here), other data (translated zsRE questions against the fact set's templates as "
            "CounterFact-style records) and another metric (token F1 of the teacher-forced answer, against ES / PS, "
            "which ask whether P(new) > P(old); Gen, EasyEdit's teacher-forced token accuracy on the paraphrases, "
            "is the nearest of ours). What can be set beside them is the shape: how much of the edit language's "
            "score is left in the other language.")


__all__ = ["BI_ZSRE", "COMPUTED_FROM", "KEYS", "KINDS", "LIFTED", "Point", "Published", "caveats", "cell_kind", "lift",
           "published", "reaches", "section"]
