"""The `reproduce` report: report.md and a self-contained report.html (figures inlined), built from one
results dict as a `kneuron.report.Document`, one section per function. Its sections: the run; beside the
paper's numbers (paper.beside); a verdict per claim (paper.findings); the facts each step uses and how
many the model knows (paper.facts_used); Tables 1-3 and Module 3; after the paper, with --next-questions
(paper.next_questions); Figures 3-5 (paper.figures); provenance.
``write_report`` also returns the comparison, the verdicts and the facts used as JSON (results.json keeps
them under "report")."""
from __future__ import annotations

from pathlib import Path

from kneuron.paper import beside, findings
from kneuron.paper import figures as F
from kneuron.paper.facts_used import Known, facts_used, read_known
from kneuron.report import render
from kneuron.report.document import Document
from kneuron.report.table import Column, Table, interval, number

NUM, NUM2 = number(3), number(2)
CI = interval(NUM)


# ----------------------------------------------------------------------------- the report

def document(res: dict, figs: list[tuple[str, str]], used: dict | None = None,
             t2_known: dict | None = None) -> Document:
    """The whole report: the run, beside the paper's numbers, the verdicts, the facts used (``used``:
    ``facts_used``'s JSON; None: not shown), Tables 1-3 (``t2_known``: Table 2 split by known,
    ``table2_by_known``'s), Module 3, Figures 3-5, provenance."""
    doc = _intro(res)
    doc.extend(beside.document(res)).extend(_verdicts(res))     # first: what a reader wants
    if used is not None:
        doc.extend(_facts_used(used))
    doc.extend(_table1(res)).extend(_table2(res, t2_known))
    for section in (_dkn, _table3):
        doc.extend(section(res))
    if res.get("next"):
        from kneuron.paper import next_questions
        doc.extend(next_questions.section(res))
    return doc.extend(_figures(res, figs)).extend(_provenance(res))


def _verdicts(res: dict) -> Document:
    fs = findings.findings(res)
    n = {v: sum(f.verdict == v for f in fs) for v in (findings.HOLDS, findings.FAILS, findings.UNTESTED)}
    doc = Document().heading(2, "Beside the paper's findings — a verdict per claim")
    doc.para(f"Each claim the paper makes, the rule we test it by (thresholds in `kneuron.paper.findings`), the "
             f"paper's own numbers for it, ours and the verdict: {n[findings.HOLDS]} hold, {n[findings.FAILS]} do not "
             f"hold, {n[findings.UNTESTED]} cannot be tested here. A verdict compares point values; small runs give "
             "wide intervals, so read the tables below before the verdicts.")
    return doc.table(findings.table(fs))


def _facts_used(used: dict) -> Document:
    doc = Document().heading(2, "Facts used — which facts each table uses and why")
    doc.para(used["principle"])
    doc.para(f"Known by: {used['rule']}." if used["rule"] else
             "No per-fact knowledge records beside this run (known.json is written for a model judged by the rank "
             "rule; an organism knows exactly the facts it was trained on, the only ones used here): known not "
             "counted.")
    if used.get("languages"):
        doc.para("What the model knows, per language: " + "; ".join(
            f"{lang} {x['known']} of {x['facts']} known, {x['top1']} top-1, median rank {x['median_rank']}"
            for lang, x in used["languages"].items()) + " (known.json has each fact's rank and p).")
    langs = sorted({lang for r in used["steps"] for lang in r["per_lang"]})
    cols = [f"{lang}: facts{' (known / not)' if used['rule'] else ''}" for lang in langs]
    t = Table(["step", "uses", "why", *cols])
    for r in used["steps"]:
        cells = []
        for lang in langs:
            c = r["per_lang"].get(lang)
            if c is None:
                cells.append("—")
            elif "known" in c:
                cells.append(f"{c['facts']} ({c['known']} / {c['not_known']})"
                             + (f", {c['not_judged']} not judged" if c["not_judged"] else ""))
            else:
                cells.append(str(c["facts"]))
        t.add(r["step"], r["uses"], r["why"] + (f" ({r['note']})" if r.get("note") else ""), *cells)
    return doc.table(t)


def _intro(res: dict) -> Document:
    meta, cfg = res["meta"], res["meta"]["config"]
    m = meta["model"]
    doc = Document().heading(1, f"kneuron reproduce — {m['name']}")
    doc.para(f"Chen et al., *Journey to the Center of the Knowledge Neurons* (AAAI 2024), Modules 1–3 and "
             f"Tables 1–3, on {m['name']} ({m['kind']}, {m['n_layers']} layers × {m['n_neurons']} neurons, "
             f"site {m['site']}, {m['dtype']}) with {meta['data']['n_ids']} fact ids from "
             f"{meta['data']['relations']} relations in {', '.join(meta['langs_used'])}.")
    doc.code("kneuron reproduce " + f"--model {cfg['model']} --facts {cfg['facts']} --langs {','.join(cfg['langs'])}"
             + (f" --limit {cfg['limit']}" if cfg["limit"] else "")
             + (f" --relations {cfg['relations']}" if cfg.get("relations") else "") + f" --steps {cfg['steps']}"
             + f" --prompts {cfg.get('prompts') or 0}")
    for n in meta["notes"]:
        doc.para("Note: " + n)
    return doc


_EDIT_COLUMNS = [Column(c, NUM) for c in ("suppress rel", "suppress unrel", "enhance rel", "enhance unrel")]


def _table1(res: dict) -> Document:
    doc = Document().heading(2, "Table 1 — localization (suppress / enhance the knowledge neurons)")
    doc.para("Δ = (p_after − p_before) / p_before on the fact itself (related) and on a fact of another relation "
             "under the same edit (unrelated); SR = |mean Δ_rel / mean Δ_unrel| summed over suppress and enhance "
             "(the released code's Eq. 11), with a 95% paired-bootstrap interval over facts. No outlier cut. "
             "Rows marked 'known' / 'not known' are the same cells over the facts the model knows / does not "
             "(where the run has per-fact knowledge records).")
    t = Table(["method", "lang", "facts", Column("KN/fact", NUM2), *_EDIT_COLUMNS, Column("SR [95% CI]", CI)])
    for meth, d in res["table1"].items():
        name = {"ig": "B-KN (ig)", "amig": "AMIG"}[meth]
        for lang, x in d.items():
            for label, c in ((name, x), *((f"{name}, {k.replace('_', ' ')}", x[k]) for k in ("known", "not_known")
                                          if x.get(k))):
                t.add(label, lang, c["n_facts"], c["mean_neurons"], c["suppress"]["related"],
                      c["suppress"]["unrelated"], c["enhance"]["related"], c["enhance"]["unrelated"],
                      c.get("sr_interval"))
    return doc.table(t)


def _table2(res: dict, t2_known: dict | None = None) -> Document:
    t2 = res.get("table2")
    doc = Document().heading(2, "Module 2 and Table 2 — language-independent neurons, cross-lingual editing")
    if not t2:
        return doc.para("Skipped: " + ("; ".join(res["meta"]["notes"]) or "one language only"))
    lk = t2["likn"]
    doc.para(f"{lk['n_with_likn']} of {lk['n_facts']} facts ({lk['share_nonempty']:.0%}) have language-"
             f"independent neurons (AMIG, τ en 0.3 / zh 0.2), {lk['mean_likn_per_fact']:.2f} per fact. Table 2 "
             f"uses the facts with a non-empty LIKN. 'other' = the other language's KNs (zh→en in the en "
             "column, en→zh in the zh column); 'both' = both languages' KNs edited at once (the paper's "
             "'sequential', done as meant; the released code's version equals 'other' for en and 'own' for zh); "
             "'random' = as many random non-KN neurons as the LIKN, in the same layers.")
    t = Table(["edited", "measured", "facts", Column("neurons", NUM2), *_EDIT_COLUMNS, Column("SR [95% CI]", CI)])
    for cond, d in t2["table"].items():
        for lang, x in d.items():
            t.add(cond, lang, x["n_facts"], x["mean_edited"], x["suppress_related"], x["suppress_unrelated"],
                  x["enhance_related"], x["enhance_unrelated"], x.get("sr_interval"))
    doc.para("SR divides by the change of an unrelated fact, which shrinks with the number of neurons edited: "
             "a small set (the LIKN, the random control) can score a high SR while barely moving the fact. "
             "Read SR together with the related change and the random control.")
    doc.table(t)
    if t2_known:
        doc.para("The same conditions over the fact ids the model knows in both languages, and over the others "
                 "(by known.json):")
        t = Table(["part", "edited", "measured", "facts", Column("suppress rel", NUM), Column("SR [95% CI]", CI)])
        for part, tab in t2_known.items():
            for cond, d in tab.items():
                for lang, x in d.items():
                    t.add(part.replace("_", " "), cond, lang, x["n_facts"], x["suppress_related"], x.get("sr_interval"))
        doc.table(t)
    lt = F.likn_table(res)
    if lt is not None:
        doc.para("How many LIKN each fact has (results.json: table2.likn.facts_by_count, and count_per_fact per id):")
        doc.table(lt)
    return doc


def _dkn(res: dict) -> Document:
    dk = res["dkn"]
    c = dk["config"]
    doc = Document().heading(2, "Module 3 — degenerate knowledge neurons")
    doc.para(f"Algorithm 1 on the top {c['top_n']} AMIG knowledge neurons; a part may cost ≤ {c['t_low']} and the "
             f"whole group > {c['t_high']} ({'relative' if c['relative'] else 'absolute'} drops of p(answer)); "
             f"groups up to size {c['max_size']}.")
    t = Table(["lang", "facts", Column("with DKN", lambda v: f"{v:.0%}"), Column("groups/fact", NUM2), "sizes",
               Column("group cost", NUM), Column("largest part cost", NUM), Column("forward passes/fact", NUM2),
               Column("ablations/fact", number(1)), "cut by budget"])
    for lang, x in dk["langs"].items():
        t.add(lang, x["n_facts"], x["share_with_dkn"], x["groups_per_fact"], str(x["sizes"] or "—"),
              x["mean_group_drop"], x["mean_max_part_drop"], x["forward_passes_per_fact"], x["ablations_per_fact"],
              x["truncated"])
    return doc.table(t)


def _table3(res: dict) -> Document:
    doc = Document().heading(2, "Table 3 — fact-checking with DKNs")
    doc.para("Per relation 80/20 split (seed 42); t and λ tuned on a validation part of the 80% (never the test "
             "part); 'DKN (paper)' uses t = 0.7, λ = 1e-6. 'direct' = the model's own greedy answer is the object "
             "(the paper's baseline); 'compare' = p(object) above p(the other candidate). Positive class = true "
             "facts; the released code's swapped P/R is in the results JSON.")
    t = Table(["lang", "method", "test items", *(Column(c, NUM) for c in ("precision", "recall", "F1", "AUROC")),
               "setting"])
    for lang, x3 in res["table3"].items():
        for name, label in (("dkn", "DKN (tuned)"), ("dkn_paper", "DKN (paper)"), ("direct", "direct"),
                            ("compare", "compare")):
            x = x3.get(name)
            if x:
                t.add(lang, label, x3["n_test_items"], x["precision"], x["recall"], x["f1"], x["auroc"],
                      f"t={x['t']}, λ={NUM(x['lambda'])}" if "t" in x else "")
    doc.table(t)
    for lang, x3 in res["table3"].items():
        if not x3["n_test_items"]:
            doc.para(f"{lang}: no test items — every relation needs at least 2 facts for a test part.")
        elif x3["tuned"]["t"] is None:
            doc.para(f"{lang}: no validation part (every relation needs at least 3 facts), so t and λ were "
                     "not tuned; only the paper's fixed setting is shown.")
    return doc


def _figures(res: dict, figs: list[tuple[str, str]]) -> Document:
    doc = Document().heading(2, "Figures 3–5 — where the neurons are")
    doc.para(F.COUNTING + " Figure 5 (DKNs of the monolingual BERT and GPT-2) needs a monolingual model: "
             "not drawn here.")
    doc.table(F.layer_table(res))
    for p, cap in figs:
        doc.figure(p, cap)
    return doc


def _provenance(res: dict) -> Document:
    meta, cfg = res["meta"], res["meta"]["config"]
    rows = ([[k, str(v)] for k, v in sorted(cfg.items())]
            + [["data file", meta["data"]["facts"]], ["data sha256", meta["data"]["facts_hash"]],
               ["facts used", f"{meta['data']['n_facts']} (facts.jsonl)"]]
            + [[f"version: {k}", v] for k, v in sorted(meta.get("versions", {}).items())]
            + [["started", meta.get("started", "")]])
    doc = Document().heading(2, "Parameters and provenance").table(Table(["item", "value"], rows))
    return doc.para("Step times (s): " + ", ".join(f"{k}: {v}" for k, v in res.get("timings", {}).items()))


def run_ids(out) -> dict[str, list[str]]:
    """The fact ids of a reproduce directory per language, in its facts.jsonl's order ({} without one)."""
    from kneuron.facts import load_facts
    path = Path(out) / "facts.jsonl"
    ids: dict[str, list[str]] = {}
    for f in load_facts(path) if path.is_file() else []:
        ids.setdefault(f.lang, []).append(f.id)
    return ids


def write_report(res: dict, out, known: Known | None = None) -> dict:
    """report.md, report.html and the figures into ``out``; returns their paths and, as JSON, the comparison
    with the paper (beside_paper), the verdicts and the facts used. ``known``: whether the model knows each
    fact (default: ``out``/known.json when there is one)."""
    out = Path(out)
    known = known if known is not None else read_known(out)
    figs = F.figures(res, out)
    used = facts_used(res, run_ids(out), known)
    t2 = table2_known(res, out, known)
    paths = render.save(document(res, figs, used, t2), out, f"kneuron reproduce — {res['meta']['model']['name']}")
    return {**paths, "figures": [p for p, _ in figs], "beside_paper": beside.rows(res),
            "verdicts": [f.to_json() for f in findings.findings(res)], "facts_used": used,
            **({"table2_by_known": t2} if t2 else {})}


def table2_known(res: dict, out, known: Known | None) -> dict:
    """Table 2 split by known (``table2.table2_by_known``) from the per-fact effects the run saved
    (locate-amig/crosslingual.parquet); {} without Table 2, its effects or knowledge records."""
    from kneuron.paper.table1 import read_effects
    from kneuron.paper.table2 import table2_by_known
    t2 = res.get("table2")
    if not t2 or known is None:
        return {}
    effects = read_effects(Path(out) / "locate-amig" / "crosslingual.parquet")
    return table2_by_known(effects, known, tuple(t2["langs"]), res["meta"]["config"].get("n_boot", 1000))
