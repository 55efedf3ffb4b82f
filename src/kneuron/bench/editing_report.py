"""The editing benchmark's results (results.json) and its report (report.md, self-contained report.html)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from kneuron.bench import crosslingual, editing_health, editing_protocol, editing_sequential
from kneuron.editing.health import DISABLING_MARGIN
from kneuron.editing.metrics import METRICS, hmean, record_scores, summarize
from kneuron.report import render
from kneuron.report.document import Document
from kneuron.report.stats import ci
from kneuron.report.table import Column, Table, fixed, interval

N_BOOT = 1000
# ROME paper Table 4, CounterFact, GPT-2 XL: S, ES, PS, NS (shared/docs/editing.md §4 and editing-review.md B5,
# recalled from the paper; each S is the harmonic mean of its ES, PS, NS)
PUBLISHED = [("GPT-2 XL unedited", 30.5, 22.2, 24.7, 78.1), ("KN (GPT-2 XL)", 35.6, 28.7, 28.0, 72.9),
             ("FT (GPT-2 XL)", 65.1, 100.0, 87.9, 40.4), ("FT-L (GPT-2 XL)", 66.9, 99.1, 48.7, 70.3),
             ("ROME (GPT-2 XL)", 89.2, 100.0, 96.4, 75.4)]
# our row -> (its like-for-like row of PUBLISHED, or None: there is none; what the pairing rests on)
PAIRED = {
    "unedited": ("GPT-2 XL unedited", "the model before any edit"),
    "rome": ("ROME (GPT-2 XL)", "ROME"),
    "kn-eai": ("KN (GPT-2 XL)", "the paper's KN is this x2 rule (EleutherAI's, ROME's fork; its neurons there from "
                                "the rewrite prompt alone, unrefined)"),
    "ft-l": ("FT-L (GPT-2 XL)", "ROME's FT-L: the object read at the last prompt position, L-inf bound"),
    "kn": (None, "Dai et al.'s norm-scaled rule (lambda2 = 8): not the paper's KN row, which is the x2 rule (kn-eai)"),
    "ft-m": (None, "EasyEdit's FT-M (teacher-forced NLL): no Table 4 row (its FT and FT-L read the object at the "
                   "last prompt position; FT is unbounded)"),
}
PAIRED["ft"] = (None, "ft-m's old name: " + PAIRED["ft-m"][1])
SHOWN = ("S", "ES", "PS", "NS", "EM", "PM", "NM", "GE", "reliability", "generalization", "locality", "flip_rate",
         "seconds_per_edit", "params_changed")
HEAD = {"reliability": "Rel", "generalization": "Gen", "locality": "Loc", "flip_rate": "flip",
        "seconds_per_edit": "s/edit", "params_changed": "params"}
RATES = ("ES", "PS", "NS", "EM", "PM", "NM", "GE", "reliability", "generalization", "locality", "flip_rate")


# ----------------------------------------------------------------------------- numbers

def _intervals(rows: list[dict], seed: int = 0) -> dict:
    """95 % percentile-bootstrap intervals over records of every rate (x100), GE and S (ES, PS and NS
    resampled together). Every call of `ci` draws the same resamples (one seed), so the records of a
    resample are the same for every score."""
    n = len(rows)
    if n == 0:
        return {}
    col = {k: np.array([np.nan if r.get(k) is None else 100 * r[k] for r in rows], dtype=float) for k in RATES}
    col = {k: x for k, x in col.items() if not np.isnan(x).all()}
    iv = lambda data, stat: ci(data, stat, n_boot=N_BOOT, seed=seed, quantiles=(0.025, 0.975))  # noqa: E731
    out = {k: _pair(iv(x, np.nanmean)) for k, x in col.items()}
    if all(k in col for k in ("ES", "PS", "NS")):
        out["S"] = _pair(iv((col["ES"], col["PS"], col["NS"]), _s))
    return out


def _s(es, ps, ns, axis=-1) -> np.ndarray:
    """S (the harmonic mean of ES, PS, NS) of each resample; NaN where one of them is undefined."""
    means = [np.nanmean(x, axis=axis) for x in (es, ps, ns)]
    return np.array([hmean([a, b, c]) if not np.isnan([a, b, c]).any() else np.nan for a, b, c in zip(*means)])


def _pair(iv) -> list[float]:
    """[low, high]; NaN when no resample had a value (as the results always held)."""
    return [math.nan, math.nan] if iv is None else list(iv)


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def results(meta: dict, cases, before: dict, rows: dict, curves: dict, sweep: dict | None, layer: int | None,
            timings: dict, unrelated: dict | None = None, sweeps: dict | None = None) -> dict:
    """results.json: the --json summary (model, n_records, unedited, methods) and the details behind it.
    ``before``: case id -> lang -> the unedited ``metrics.Measured``; ``rows``: method -> (case id, edit
    lang) -> its ``EditRow``; ``curves``: method -> lang -> k -> its sequential ``Checkpoint``; ``sweep``,
    ``layer``: ROME's; ``unrelated``: the unedited model's unrelated-text NLL per language (edit health,
    ``editing_health``); ``sweeps``: method -> {"layer", "sweep"} of the other methods' own sweeps (ft-l)."""
    langs = cases[0].langs
    res: dict = {"model": meta["model"], "n_records": len(cases), "unedited": {}, "methods": {}}
    iv: dict = {"unedited": {}, "methods": {}, "matrix": {}}
    base: dict = {}                                   # (case id, lang) -> the unedited model's scores
    for lang in langs:
        sc = [record_scores(before[c.case_id][lang], before[c.case_id][lang]) for c in cases]
        base.update({(c.case_id, lang): s for c, s in zip(cases, sc)})
        res["unedited"][lang] = summarize(sc)
        iv["unedited"][lang] = _intervals(sc)
    matrix, extras, lifts, health = {}, {}, {}, {}
    for m, got in rows.items():
        res["methods"][m], iv["methods"][m], matrix[m], extras[m] = {}, {}, {}, {}
        iv["matrix"][m], lifts[m], health[m] = {}, {}, {}
        for lang in langs:
            mine = [r for (cid, e), r in sorted(got.items()) if e == lang]
            health[m][lang] = editing_health.summary(mine)
            sc = [r.scores[lang] for r in mine]
            res["methods"][m][lang] = summarize(sc, [r.seconds for r in mine], [r.params_changed for r in mine])
            iv["methods"][m][lang] = _intervals(sc)
            extras[m][lang] = {"n": len(mine), "failed": sum(1 for r in mine if r.error),
                               "unchanged": sum(1 for r in mine if not r.params_changed),
                               "edit_seconds": _mean(r.edit_seconds for r in mine),
                               "localize_seconds": _mean(r.localize_seconds for r in mine),
                               "symmetry": _pct(s.get("symmetry") for s in sc),
                               "symmetry_success": _pct(s.get("symmetry_success") for s in sc)}
            for other in langs:                      # the 2 x 2 matrix: every cell with its intervals
                sc_other, pair = [r.scores[other] for r in mine], f"{lang}->{other}"
                s = summarize(sc_other)
                matrix[m][pair] = {k: s[k] for k in crosslingual.KEYS}
                iv["matrix"][m][pair] = _intervals(sc_other)
                if other != lang:                    # the gain over the unedited model on the same records
                    was = [base[(r.case_id, other)] for r in mine]
                    lifts[m][pair] = {k: crosslingual.lift(sc_other, was, k) for k in crosslingual.LIFTED}
        if len(langs) > 1:
            res["methods"][m]["cross"] = {f"{a}->{b}": {k: matrix[m][f"{a}->{b}"][k] for k in ("ES", "PS")}
                                          for a in langs for b in langs if a != b}
    res.update(intervals=iv, matrix=matrix, extras=extras,
               crosslingual={"cells": {m: crosslingual.cell_kind(m) for m in rows}, "lift": lifts},
               sequential={m: {lang: [{"k": int(k), **{x: p.summary[x] for x in ("ES", "PS", "NS", "S")},
                                       **editing_sequential.chain_state(p.state)}
                                      for k, p in sorted(c.items(), key=lambda kv: int(kv[0]))]
                               for lang, c in cur.items()} for m, cur in curves.items()},
               rome_sweep=sweep, rome_layer=layer, meta=meta, timings=timings, unrelated=unrelated,
               disabling_margin=DISABLING_MARGIN, health=health, disabling=editing_health.disabling(rows),
               **editing_protocol.summaries(cases, before, rows, base))
    if sweeps:
        res["layer_sweeps"] = sweeps
    return res


def _pct(xs) -> float | None:
    m = _mean(xs)
    return None if m is None else 100 * m


# ----------------------------------------------------------------------------- report

F1, F2 = fixed(1), fixed(2)


def scores_table(res: dict, lang: str, shown=SHOWN, intervals: bool = True, head=None, title: str = "") -> Table:
    """One row per method (the unedited model first) of its scores edited and measured in ``lang``:
    ``shown`` result keys as columns (headers from ``head``, default `HEAD`), S/ES/PS/NS with their
    bootstrap interval when ``intervals``. The bench report, `kneuron bench editing` and
    scripts/summarize_editing.py all show this table."""
    head = {**HEAD, **(head or {})}
    cols = ["method"]
    for k in shown:
        fmt = {"seconds_per_edit": F2, "params_changed": lambda v: f"{v:,.0f}"}.get(k, F1)
        cols.append(Column(head.get(k, k), interval(fmt) if intervals and k in ("S", "ES", "PS", "NS") else fmt,
                           align="right"))
    t = Table(cols, title=title)
    named = [("unedited", res["unedited"][lang], res["intervals"]["unedited"][lang] if intervals else {})]
    named += [(m, d[lang], res["intervals"]["methods"][m][lang] if intervals else {}) for m, d in res["methods"].items()]
    for name, d, iv in named:
        t.add(name, *((d.get(k), *(iv.get(k) or (None, None))) if intervals and k in ("S", "ES", "PS", "NS")
                      else d.get(k) for k in shown))
    return t


def like_for_like(method: str) -> tuple[tuple | None, str]:
    """(the PUBLISHED row ``method``'s row is to be read against, or None: Table 4 has none; why)."""
    name, why = PAIRED.get(method, (None, "no Table 4 row"))
    return next((r for r in PUBLISHED if r[0] == name), None), why


def published_table(res: dict) -> Table:
    """Each of our rows (per language) beside its like-for-like row of Table 4 (``PAIRED``), or none."""
    t = Table(["method", "lang", *(Column(k, F1) for k in ("S", "ES", "PS", "NS")), "Table 4 row",
               *(Column(f"its {k}", F1) for k in ("S", "ES", "PS", "NS")), "pairing"])
    for lang in res["unedited"]:
        for m, d in [("unedited", res["unedited"][lang]), *((m, v[lang]) for m, v in res["methods"].items())]:
            row, why = like_for_like(m)
            t.add(m, lang, *(d.get(k) for k in ("S", "ES", "PS", "NS")), row[0] if row else "none",
                  *(row[1:] if row else (None,) * 4), why)
    return t


def _finding(res: dict, lang: str) -> str | None:
    m = res["methods"]
    rome = (m.get("rome") or {}).get(lang, {}).get("S")
    kn = [(k, m[k][lang]["S"]) for k in ("kn", "kn-eai", "likn", "kn-opt", "kn-erase") if k in m]
    if rome is None or not kn:
        return None
    base = res["unedited"][lang]["S"]
    parts = [f"{k} {F1(s)}" + ("" if s is None else f" ({s - rome:+.1f})") for k, s in kn]
    return (f"{lang}: S of ROME {F1(rome)} (unedited {F1(base)}); the neuron-level edits, in points against ROME: "
            + ", ".join(parts) + ". ROME's paper has KN 53.6 points below ROME on GPT-2 XL (35.6 vs 89.2); its KN "
            "is the x2 rule, kn-eai's here, not kn's Dai rule.")


def document(res: dict, fig: str | None) -> Document:
    meta = res["meta"]
    langs = list(res["unedited"])
    methods = list(res["methods"])
    source = (f"--records {meta.get('facts') or '?'} --records-format {meta['records_format']}"
              if meta.get("records_format") else f"--facts {meta.get('facts') or '?'}")
    cmd = (f"kneuron bench editing --model {meta['model']} {source} --n {meta['n']} "
           f"--methods {','.join(methods)} --mode {meta['mode']}"
           + "".join(f" --option {m}.{k}={json.dumps(v)}" for m, o in (meta.get("method_options") or {}).items()
                     for k, v in o.items() if isinstance(v, (str, int, float, bool)))
           + _localize_flags(meta)
           + (f" --protocol {meta['protocol']}" if meta.get("protocol", "kneuron") != "kneuron" else "") + " --out DIR")
    doc = Document().heading(1, f"kneuron bench editing — {res['model']}")
    short = res["n_records"] < meta["n"]
    kind = (f"records of {meta.get('facts')} ({meta['records_format']})" if meta.get("records_format")
            else "CounterFact-style cases (fact ids)")
    doc.para(f"{res['n_records']} {kind}, each rewritten in {', '.join(langs)} "
             + (f"(of the {meta['n']} asked: " + ("the file holds no more) " if meta.get("records_format") else
                                                   "only these fact ids have a usable record in every language) ")
                if short else "")
             + f"({meta['kind']} model, {meta['n_layers']} layers × {meta['n_neurons']} neurons); mode {meta['mode']}: "
             + {"single": "each edit is measured, then undone.",
                "batch": "every edit is computed on the unedited model, all are applied at once, and each record "
                         "is measured under the whole batch."}.get(
                 meta["mode"], "edits are kept one after another; each row is measured right after its edit."))
    doc.code(cmd)
    if editing_protocol.header(meta):
        doc.para(editing_protocol.header(meta))
    doc.para("Scores in percent (ROME's tables): S = harmonic mean of ES, PS, NS; ES/PS = P(new) > P(old) on the "
             "rewrite prompt / its paraphrases; NS = P(true) > P(new) on neighbours; EM, PM, NM the probability "
             "differences; GE = n-gram entropy of generated text (x100); Rel/Gen/Loc EasyEdit's teacher-forced "
             "token accuracy and unchanged neighbour predictions; flip = top-1 becomes the new object's first "
             "token. 95 % bootstrap intervals over records in brackets. s/edit includes each KN method's "
             "localization (cached once, counted for every method that uses it).")
    if _localization(meta):
        doc.para(_localization(meta))
    for lang in langs:
        doc.heading(2, f"Edit in {lang}, measured in {lang}").table(scores_table(res, lang))
        f = _finding(res, lang)
        if f:
            doc.para(f)
    editing_protocol.section(doc, res)
    editing_health.section(doc, res)
    if len(langs) > 1:
        crosslingual.section(doc, res)
    sym = [[m, lang, e["symmetry"], e["symmetry_success"], e["edit_seconds"], e["localize_seconds"],
            f"{e['unchanged']} of {e['n']}", str(e["failed"])]
           for m, d in res["extras"].items() for lang, e in d.items()]
    if sym:
        doc.heading(2, "Symmetry, time and edits that changed nothing")
        doc.para("Symmetry (P36/P1376 records only): token accuracy of the subject on the reverse prompt about "
                 "the new object, and how often the subject beats that prompt's true answer (Niu et al.). "
                 "Time: computing the edit, and the localization it used. Changed nothing: edits that wrote no "
                 "weight -- those the method could not make (failed; the reason is in the edit's JSON) and those "
                 "left with nothing to write, such as a fact whose knowledge neurons are all among its "
                 "relation's common ones; all are measured as they are, as edits that change nothing.")
        doc.table(Table(["method", "lang", Column("symmetry acc", F1), Column("symmetry success", F1),
                         Column("edit s", F2), Column("localize s", F2), "changed nothing", "of them failed"], sym))
    if res["sequential"]:
        editing_sequential.section(doc, res, fig)
    takers = [m for m in methods if m not in ("rome", *res.get("layer_sweeps", {})) and "layer" in _options(m)]
    shared = f" {', '.join(takers)} {'edits' if len(takers) == 1 else 'edit'} the same layer." if takers else ""
    _sweep(doc, "ROME", res.get("rome_sweep"), res.get("rome_layer"), shared)
    for m, s in res.get("layer_sweeps", {}).items():
        _sweep(doc, m, s["sweep"], s["layer"], "")
    doc.heading(2, "Beside the published numbers (CounterFact, GPT-2 XL, ROME paper Table 4)")
    doc.para("Each row against its like-for-like row of Table 4, where there is one. Another model, records and "
             "protocol: the shapes compare, the numbers do not.")
    doc.table(published_table(res))
    doc.table(Table(["", "S", "ES", "PS", "NS"], [[n, *v] for n, *v in PUBLISHED]))
    doc.heading(2, "Parameters and provenance")
    shown = [k for k in sorted(meta) if k not in ("versions", "common_counts", "neighbour_shortfall")]   # in the text
    return doc.table(Table(["item", "value"], [[k, str(meta[k])] for k in shown]
                           + [[f"version: {k}", v] for k, v in sorted(meta.get("versions", {}).items())]
                           + _times(res.get("timings", {}))))


def _localize_flags(meta: dict) -> str:
    """The command line's flags for the KN methods' localization and Dai's filter (none for a run stored
    before they existed and not resumed since)."""
    if "common_over" not in meta:
        return ""
    over = meta["common_over"]
    return (f" --localize-prompts {meta['localize_prompts']} --common-over {over}"
            + (f" --common-facts {meta['common_facts']}" if over == "cases" else "")
            + (f" --common-max {meta['common_max']}" if over == "relation" and meta.get("common_max") else ""))


def _localization(meta: dict) -> str | None:
    """What the KN methods' neurons were localized on and how many facts Dai's filter counted per relation
    and language (None: no KN method ran)."""
    counts = sorted((meta.get("common_counts") or {}).values())
    if not counts:
        return None
    prompts, over = meta.get("localize_prompts", "all"), meta.get("common_over", "cases")
    on = ("its rewrite prompt only (the paraphrases PS is measured on are held out)" if prompts == "rewrite" else
          "every usable template, the paraphrases PS is measured on included (`--localize-prompts rewrite` holds "
          "them out)")
    if over == "relation":
        pool = "the relation's facts" + (f" (at most {meta['common_max']})" if meta.get("common_max") else "")
    else:
        pool = (f"the first {meta.get('common_facts')} facts of the relation, the records' own first (an estimate: "
                "Dai et al. count every fact; `--common-over relation`)")
    lo, hi, mid = counts[0], counts[-1], counts[len(counts) // 2]
    many = f"{lo}" if lo == hi else f"{lo}–{hi} (median {mid})"
    return (f"Knowledge neurons (KN methods): each fact localized on {on}. Dai et al.'s filter leaves out the "
            f"neurons found for more than 10 % of {pool}: counted over {many} facts per relation and language "
            f"({len(counts)} relation–language pairs; each one's count in run.json, `common_counts`).")
def _options(method: str) -> list[str]:
    from kneuron.editing.registry import lookup, option_names
    return option_names(lookup(method)) if lookup(method) is not None else []


def _sweep(doc: Document, who: str, sw: dict | None, layer: int | None, shared: str) -> None:
    """A layer sweep's section: the cases it ran on, its table, the layer chosen (or the layer given)."""
    if not sw:
        if layer is not None:
            doc.para(f"{who}'s layer: {layer} (given).{shared}")
        return
    doc.heading(2, f"{who}'s layer: {layer}")
    on = (f"{len(sw['cases'])} held-out cases ({sw['lang']}; fact ids not among the reported records)"
          if sw.get("held_out") else
          f"the first {len(sw['cases'])} reported cases ({sw['lang']}; their results are among those reported: "
          "the layer is chosen on test records; `--tune-records` holds cases out for it)")
    doc.para(f"Swept on {on}; the layer with the best S is used (ties: ES, then PS, then EM).{shared}")
    if sw.get("bounds"):
        doc.para(f"Its L∞ bound first, at layer {sw.get('bound_layer')}: ε = {sw['best_bound']:g} (the best S; ROME "
                 "set ε per model, 5e-4 for GPT-2 XL and 5e-5 for GPT-J), then the layers at that bound.")
        doc.table(Table(["ε", *(Column(k, F1) for k in ("S", "ES", "PS", "NS", "EM"))],
                        [[f"{r['norm_bound']:g}", *(r.get(k) for k in ("S", "ES", "PS", "NS", "EM"))]
                         for r in sw["bounds"]]))
    doc.table(Table(["layer", *(Column(k, F1) for k in ("S", "ES", "PS", "NS", "EM"))],
                    [[r["layer"], *(r.get(k) for k in ("S", "ES", "PS", "NS", "EM"))] for r in sw["layers"]]))


def _times(t: dict) -> list[list[str]]:
    """Each stage's wall time, summed over the run's sessions (timings.json)."""
    rows = [[f"time: {k} (s)", f"{v:.1f}"] for k, v in t.items() if k != "untimed"]
    if t.get("untimed"):
        rows.append(["time: note", "earlier sessions of this run were not timed (stored before timings.json): "
                                   "the times are lower bounds"])
    return rows


def write_report(res: dict, out) -> dict:
    fig = editing_sequential.figure(res, Path(out))
    return render.save(document(res, fig), out, f"kneuron bench editing — {res['model']}")


__all__ = ["METRICS", "PAIRED", "PUBLISHED", "document", "like_for_like", "published_table", "results", "scores_table",
           "write_report"]
