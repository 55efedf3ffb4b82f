"""The editing bench's protocol in results.json and the report: NS split by the neighbours' object (every
run), the attribute prompts' P(new) and the essence score (runs whose records have them), and what a
"counterfact" run (``kneuron.editing.protocol``) still does otherwise than ROME's CounterFact.

NS split: each neighbour knows whether its true object is the record's (CounterFact's neighbours all are);
a record counts in "same" / "other" when it has neighbours of that kind, scored on those only."""
from __future__ import annotations

from statistics import mean

from kneuron.editing.metrics import Measured, ns_split
from kneuron.editing.counterfact import N_CF_GENERATION
from kneuron.report.document import Document
from kneuron.report.table import Column, Table, fixed, signed

F1 = fixed(1)


def _rates(pairs) -> dict:
    """NS, NS over same-object and over other-object neighbours (x100) and their record counts, from
    (record_scores, ns_split) pairs."""
    out = {}
    for key, src in (("NS", 0), ("NS_same", 1), ("NS_other", 1)):
        vals = [p[src][key] for p in pairs if p[src].get(key) is not None]
        out[key], out[f"n_{key}"] = (100 * mean(vals) if vals else None), len(vals)
    return out


def _probes(before: list[dict], after: list[dict]) -> dict:
    """The attribute prompts' mean P(new) before and after the edit (x100) and the essence NLL difference."""
    def avg(rows, k):
        vals = [r[k] for r in rows if r.get(k) is not None]
        return (mean(vals) if vals else None), len(vals)
    (b, nb), (a, na), (e, ne) = avg(before, "attribute"), avg(after, "attribute"), avg(after, "essence")
    return {"attribute_before": None if b is None else 100 * b, "attribute_after": None if a is None else 100 * a,
            "n_attribute": na, "essence": e, "n_essence": ne}


def _split(m, case, lang) -> dict:
    """``ns_split`` of a record's measurement ({} where there is no measurement or record to split)."""
    rec = (getattr(case, "records", None) or {}).get(lang)
    return ns_split(m, rec) if isinstance(m, Measured) and rec is not None else {}


def summaries(cases, before: dict, rows: dict, base: dict) -> dict:
    """results.json's "ns_split" and "probes": per row (the unedited model, each method) and edit language,
    measured in that language. ``before``: case id -> lang -> unedited ``Measured``; ``rows``: method ->
    (case id, edit lang) -> ``EditRow``; ``base``: (case id, lang) -> the unedited model's record scores."""
    langs = cases[0].langs
    split: dict = {"unedited": {}, "methods": {}}
    probes: dict = {"unedited": {}, "methods": {}}
    by_id = {c.case_id: c for c in cases}
    for lang in langs:
        sc = [base[(c.case_id, lang)] for c in cases]
        split["unedited"][lang] = _rates([(s, _split(before[c.case_id][lang], c, lang)) for s, c in zip(sc, cases)])
        probes["unedited"][lang] = _probes(sc, sc)
    for m, got in rows.items():
        split["methods"][m], probes["methods"][m] = {}, {}
        for lang in langs:
            mine = [r for (cid, e), r in sorted(got.items()) if e == lang]
            sc = [r.scores[lang] for r in mine]
            split["methods"][m][lang] = _rates([(s, _split(r.measured[lang].raw, by_id[r.case_id], lang))
                                                for s, r in zip(sc, mine)])
            probes["methods"][m][lang] = _probes([base[(r.case_id, lang)] for r in mine], sc)
    return {"ns_split": split, "probes": probes}


def header(meta: dict) -> str | None:
    """The report's paragraph on a "counterfact" run's records and what remains unlike ROME's (None for kneuron's)."""
    if meta.get("protocol", "kneuron") != "counterfact":
        return None
    short = meta.get("neighbour_shortfall") or {}
    seed = meta.get("paraphrase_prefix_seed")
    return ("Protocol **counterfact**: the records follow CounterFact's construction as far as the fact set allows. "
            "Each paraphrase stands behind a prefix the model wrote itself ("
            + (f"its prefix generator, seed {seed}, not the seed of an edit method's prefixes" if seed is not None
               else "a masked model writes none: its paraphrases are bare")
            + "); neighbours are only other subjects of the relation with the record's true object ("
            + (f"{short['fewer']} of {short['records']} records have fewer than {short['n_neighbours']}, "
               f"{short['none']} none" if short else "counts not stored")
            + f"); at least {N_CF_GENERATION} generation prompts about the subject per record (GE); attribute "
            "prompts (subjects "
            "whose true object is the new one) and an essence score are reported below. Unlike ROME's: the "
            "essence text is text the unedited model wrote about the subject, not its Wikipedia text; there is "
            "no RS (no Wikipedia snippets offline); the prefixes are our generator's, not CounterFact's texts; "
            "paraphrases and neighbours come from the fact set's templates and facts.")


def section(doc: Document, res: dict) -> Document:
    """The report's NS-split section, and the attribute / essence one where any record has them; nothing for
    results stored before them."""
    split, probes = res.get("ns_split"), res.get("probes")
    if not split:
        return doc
    named = lambda d: [("unedited", d["unedited"]), *d["methods"].items()]  # noqa: E731
    doc.heading(2, "NS by the neighbours' object")
    doc.para("NS over all neighbours, over those whose true object is the record's (CounterFact's neighbours all "
             "are) and over those with another object; each record scored on its neighbours of that kind, n the "
             "records that have any. Edited and measured in the same language.")
    doc.table(Table(["method", "lang", Column("NS", F1), "n", Column("NS same object", F1), "n same",
                     Column("NS other object", F1), "n other"],
                    [[m, lang, e["NS"], e["n_NS"], e["NS_same"], e["n_NS_same"], e["NS_other"], e["n_NS_other"]]
                     for m, d in named(split) for lang, e in d.items()]))
    if probes and any(e["n_attribute"] or e["n_essence"] for _, d in named(probes) for e in d.values()):
        doc.heading(2, "Attribute prompts and essence")
        doc.para("Attribute prompts: the relation's prompt about other subjects whose true object is the record's "
                 "new object; their mean P(new) before and after the edit (CounterFact scores them; no headline "
                 "metric uses them). Essence: the mean token NLL, under the edited model minus under the unedited "
                 "one, of text the unedited model wrote about the subject (model-written text, not the subject's "
                 "Wikipedia text ROME scores; higher: the edit moved the model's own account of the subject).")
        doc.table(Table(["method", "lang", Column("attribute P(new) before", F1), Column("after", F1), "n",
                         Column("essence ΔNLL", signed(3)), "n essence"],
                        [[m, lang, e["attribute_before"], e["attribute_after"], e["n_attribute"], e["essence"],
                          e["n_essence"]] for m, d in named(probes)[1:] for lang, e in d.items()]))
    return doc


__all__ = ["header", "section", "summaries"]
