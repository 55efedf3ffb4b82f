"""The editing bench's edit health in results.json and the report (``kneuron.editing.health``): per method
and edit language the median ‖ΔW‖/‖W‖, the mean rise of the unrelated-text NLL per language, how many
edits are disabling (their NLL rose by more than ``DISABLING_MARGIN``) and how many the sequential guard
undid; then every disabling edit, with its greedy continuation. ES counts a broken model's ranking of the
new object above the old one as a success: these numbers stand beside it so that it cannot hide one.
Rows stored before health existed count in ``n`` but not in ``with_health``; their cells are n/a."""
from __future__ import annotations

import json
import math
from statistics import mean, median

from kneuron.editing.health import DISABLING_MARGIN, unrelated_sentences
from kneuron.report.document import Document
from kneuron.report.table import Column, Table, fixed, signed

LISTED = 50                       # disabling edits listed in the report (results.json holds them all)


def summary(rows) -> dict:
    """One method's health in one edit language, over its ``EditRow``s."""
    hs = [r.health for r in rows if r.health is not None]
    ratios = [h.weight_ratio for h in hs if h.weight_ratio is not None]
    langs = list(dict.fromkeys(g for h in hs for g in h.rise))
    finite = lambda xs: [x for x in xs if math.isfinite(x)]  # noqa: E731
    rises = {g: finite([h.rise[g] for h in hs if g in h.rise]) for g in langs}
    return {"n": len(rows), "with_health": len(hs),
            "weight_ratio_median": median(ratios) if ratios else None,
            "weight_ratio_max": max(ratios) if ratios else None,
            "nll_rise": {g: mean(x) if x else None for g, x in rises.items()},
            "disabling": sum(1 for h in hs if h.disabling()),
            "guarded": sum(1 for r in rows if r.guarded),
            "stopped_at": next((r.case_id for r in rows if r.guarded == "stop"), None)}


def disabling(rows: dict) -> list[dict]:
    """Every disabling edit of ``rows`` (method -> (case id, edit lang) -> EditRow), method by method."""
    out = []
    for m, got in rows.items():
        for _, r in sorted(got.items()):
            h = r.health
            if h is not None and h.disabling():
                out.append({"method": m, "case_id": r.case_id, "fact_id": r.fact_id, "edit_lang": r.edit_lang,
                            "new": r.new, "nll_rise": h.nll_rise, "rise": h.rise, "weight_ratio": h.weight_ratio,
                            "u_dot_k": h.u_dot_k, "guarded": r.guarded, "continuation": h.continuation})
    return out


def section(doc: Document, res: dict) -> Document:
    """The report's health section; nothing for results stored before health existed."""
    health = res.get("health")
    if not health:
        return doc
    mode, margin = res["meta"].get("mode"), res.get("disabling_margin", DISABLING_MARGIN)
    base = res.get("unrelated") or {}
    n_sents = {g: len(s) for g, s in unrelated_sentences().items()}
    langs = list(dict.fromkeys([*base, *(g for d in health.values() for e in d.values() for g in e["nll_rise"])]))
    doc.heading(2, "Edit health")
    doc.para("Per edit: ‖ΔW‖/‖W‖, the Frobenius norm of the change over the norm of the weights it changes (every "
             "parameter the edit writes, together), and the mean token NLL of fixed ordinary sentences unrelated to "
             "any fact (kneuron's data/unrelated.json: "
             + ", ".join(f"{n_sents.get(g, '?')} in {g}" for g in langs)
             + (("; unedited model: " + ", ".join(f"{g} {v:.3f}" for g, v in base.items()) + " nats") if base else "")
             + f"), before and after the edit. An edit is **disabling** when that NLL rises by more than {margin} "
             f"nats in some language (perplexity x {math.exp(margin):.2f}): the model no longer writes ordinary "
             "text, whatever its ES. "
             + ("In sequential mode the rise is against the chain before that edit, and the guard "
                f"(--on-collapse {res['meta'].get('on_collapse', 'keep')}) "
                + {"undo": "undid each disabling edit, bit for bit, before its record was measured (its scores are "
                           "the chain's without it); the chain went on.",
                   "stop": "undid the first disabling edit before its record was measured and stopped the chain "
                           "there: later records are not edited.",
                   "keep": "kept every edit (no guard)."}.get(res["meta"].get("on_collapse", "keep"), "")
                if mode == "sequential" else
                "In batch mode a row's health is the whole batch's (its continuation its own)." if mode == "batch"
                else "")
             + " Edits stored by a run before health was recorded count in 'edits' but not in 'with health'.")
    ratio = lambda v: f"{v:.3g}"  # noqa: E731
    doc.table(Table(["method", "edit lang", "edits", "with health", Column("median ‖ΔW‖/‖W‖", ratio),
                     Column("max ‖ΔW‖/‖W‖", ratio), *(Column(f"mean ΔNLL {g}", signed(3)) for g in langs),
                     "disabling", "guarded"],
                    [[m, lang, e["n"], e["with_health"], e["weight_ratio_median"], e["weight_ratio_max"],
                      *(e["nll_rise"].get(g) for g in langs), e["disabling"], e["guarded"]]
                     for m, d in health.items() for lang, e in d.items()]))
    stopped = [f"{m} ({lang}) at case {e['stopped_at']}" for m, d in health.items() for lang, e in d.items()
               if e.get("stopped_at") is not None]
    if stopped:
        doc.para("Chains stopped by the guard: " + ", ".join(stopped) + ".")
    bad = res.get("disabling") or []
    if bad:
        doc.heading(3, f"Disabling edits ({len(bad)})")
        doc.table(Table(["method", "record", "lang", "new", Column("ΔNLL", signed(2)), Column("‖ΔW‖/‖W‖", ratio),
                         Column("u·k", fixed(3)), "guarded", Column("greedy continuation", _quoted)],
                        [[b["method"], f"{b['case_id']} ({b['fact_id']})", b["edit_lang"], b["new"], b["nll_rise"],
                          b["weight_ratio"], b["u_dot_k"], b["guarded"] or "", b["continuation"]] for b in bad[:LISTED]]))
        if len(bad) > LISTED:
            doc.para(f"… and {len(bad) - LISTED} more (results.json, \"disabling\", lists them all).")
    return doc


def _quoted(text) -> str:
    """A continuation on one line, quoted (newlines and quotes escaped)."""
    return json.dumps(text, ensure_ascii=False)


__all__ = ["LISTED", "disabling", "section", "summary"]
