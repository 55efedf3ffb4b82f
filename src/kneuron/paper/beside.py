"""Our Tables 1-3 beside the paper's published rows (paper.published), and where the two are not like
for like. ``rows(res)`` is the comparison as JSON (results.json keeps it under report.beside_paper);
``document(res)`` is the report's section.

Which of our cells stands for which of the paper's rows:
  Table 1  AMIG vs B-KN SR gain %  <- (SR_amig - SR_ig) / SR_ig of Table 1, per language
  Table 2  LIKN     <- condition "likn" (the LIKN edited, the fact measured in that language)
           Mono-KN  <- "other" (the other language's KNs edited: zh->en in the en row, en->zh in the zh row)
           Seq-KN   <- "both" (both languages' KNs edited at once: what the paper describes); the released
                       code's own Seq-KN (paper-method.md §7 C5) edits zh's KNs only: "other" for en, "own" for zh
  Table 3  wo_DKN   <- "direct" (the model's greedy answer is the candidate)
           with_DKN <- "dkn_paper" (the paper's t = 0.7, lambda = 1e-6) and "dkn" (t, lambda tuned on validation)
Table 3's P and R are given in the released code's convention (swapped, paper-method.md §7 C6), as the paper
printed them; F1 does not depend on it.
"""
from __future__ import annotations

from kneuron.paper import published as P
from kneuron.report.document import Document
from kneuron.report.table import Column, Table, interval, number

NUM = number(3)
T2_ROWS = (("LIKN", {"en": "likn", "zh": "likn"}), ("Mono-KN", {"en": "other", "zh": "other"}),
           ("Seq-KN", {"en": "both", "zh": "both"}), ("Seq-KN", {"en": "other", "zh": "own"}))
T2_AS = {"likn": "likn: the LIKN", "other": "other: the other language's KNs", "both": "both: both languages' KNs",
         "own": "own: this language's KNs"}
T3_ROWS = (("wo_DKN", "direct", "direct: the model's greedy answer"),
           ("with_DKN", "dkn_paper", "DKN, the paper's t = 0.7, λ = 1e-6"),
           ("with_DKN", "dkn", "DKN, t and λ tuned on validation"))
MODELS = ("m-GPT", "m-BERT")


def gain(a: float | None, b: float | None, over: float | None) -> float | None:
    """(a - b) / over in %, None when a number is missing or ``over`` is 0."""
    return None if a is None or b is None or not over else 100.0 * (a - b) / over


def _paper(table: str, lang: str, row: str, metric: str) -> dict:
    return {m: P.value(table, m, lang, row, metric) for m in MODELS}


def table1_rows(res: dict) -> list[dict]:
    out = []
    for lang in res["meta"]["langs_used"]:
        a, b = (res["table1"][m][lang]["sr"] for m in ("amig", "ig"))
        out.append({"table": "Table 1", "lang": lang, "row": "AMIG vs B-KN", "metric": "SR gain %",
                    "paper": _paper("Table 1", lang, "AMIG vs B-KN", "SR gain %"), "ours": gain(a, b, b),
                    "ours_as": f"AMIG SR {NUM(a)} vs B-KN SR {NUM(b)}", "n": res["table1"]["amig"][lang]["n_facts"]})
    return out


def table2_rows(res: dict) -> list[dict]:
    t2 = res.get("table2")
    if not t2:
        return []
    out = []
    for lang in t2["langs"]:
        cell = lambda c, lang=lang: (t2["table"].get(c) or {}).get(lang) or {}  # noqa: E731
        for i, (row, conds) in enumerate(T2_ROWS):
            c = conds.get(lang)
            x = cell(c)
            code = i == 3
            out.append({"table": "Table 2", "lang": lang, "row": row + (" (the released code's)" if code else ""),
                        "metric": "SR", "paper": _paper("Table 2", lang, row, "SR"), "ours": x.get("sr"),
                        "ours_interval": x.get("sr_interval"), "ours_as": T2_AS.get(c, c), "n": x.get("n_facts"),
                        "ours_suppress_related": x.get("suppress_related")})
        lk, mono, seq = (cell(c).get("sr") for c in ("likn", "other", "both"))
        pl, pm, ps = (_paper("Table 2", lang, r, "SR") for r in ("LIKN", "Mono-KN", "Seq-KN"))
        out.append({"table": "Table 2", "lang": lang, "row": "LIKN over Mono-KN",
                    "metric": "(LIKN - Mono-KN) / Mono-KN %",
                    "paper": {m: gain(pl[m], pm[m], pm[m]) for m in MODELS}, "ours": gain(lk, mono, mono),
                    "ours_as": "likn vs other", "n": cell("likn").get("n_facts")})
        out.append({"table": "Table 2", "lang": lang, "row": "LIKN over Seq-KN", "metric": "(LIKN - Seq-KN) / LIKN %",
                    "paper": {m: gain(pl[m], ps[m], pl[m]) for m in MODELS}, "ours": gain(lk, seq, lk),
                    "ours_as": "likn vs both", "n": cell("likn").get("n_facts")})
    return out


def table3_rows(res: dict) -> list[dict]:
    out = []
    for lang, t in res["table3"].items():
        for row, key, label in T3_ROWS:
            x = t.get(key)
            if not x:
                continue
            code = x.get("released_code") or {}
            paper = {m: {k: P.value("Table 3", m, lang, row, k) for k in ("P", "R", "F1")} for m in MODELS}
            out.append({"table": "Table 3", "lang": lang, "row": row, "metric": "P / R / F1 (the code's P/R)",
                        "paper": paper,
                        "ours": {"P": code.get("precision"), "R": code.get("recall"), "F1": x.get("f1")},
                        "ours_true_class": {"precision": x.get("precision"), "recall": x.get("recall")},
                        "auroc": x.get("auroc"), "ours_as": label, "n": t.get("n_test_items")})
        wo, w = (t.get(k) or {} for k in ("direct", "dkn"))
        pw, pd = (_paper("Table 3", lang, r, "F1") for r in ("wo_DKN", "with_DKN"))
        out.append({"table": "Table 3", "lang": lang, "row": "with_DKN over wo_DKN", "metric": "F1 gain %",
                    "paper": {m: gain(pd[m], pw[m], pw[m]) for m in MODELS}, "ours": gain(w.get("f1"), wo.get("f1"),
                                                                                            wo.get("f1")),
                    "ours_as": "DKN (tuned) vs direct", "n": t.get("n_test_items")})
    return out


def rows(res: dict) -> list[dict]:
    """Every comparison row (JSON): table, lang, row, metric, the paper's m-GPT and m-BERT values, ours,
    what ours is (``ours_as``) and over how many facts / items (``n``)."""
    return table1_rows(res) + table2_rows(res) + table3_rows(res)


def not_like_for_like(res: dict) -> list[str]:
    """Point by point, where our numbers are not measured as the paper's were."""
    meta, cfg = res["meta"], res["meta"]["config"]
    m, pm = meta["model"], P.MODELS[P.like_model(meta["model"]["kind"])]
    t1 = res["table1"]["amig"]
    n1 = ", ".join(f"{lang} {x['n_facts']}" for lang, x in t1.items())
    t2 = res.get("table2")
    n2 = f"{t2['likn']['n_with_likn']} fact ids with a LIKN (of {t2['likn']['n_facts']})" if t2 else "not run"
    n3 = ", ".join(f"{lang} {t['n_test_items']} test items ({t['n_test']} facts)" for lang, t in res["table3"].items())
    return [
        (f"**Model.** Ours: {m['name']} ({m['kind']}, {m['n_layers']} layers × {m['n_neurons']} neurons, the input of "
         f"{m['site']}, {m['dtype']}). The paper's {pm.name}: {pm.hub_id}, {pm.size}; its neuron is the {pm.neuron}."),
        (f"**Facts.** Ours: {meta['data']['n_ids']} fact ids from {meta['data']['relations']} relations of kneuron's "
         f"'{cfg['facts']}' set, {cfg.get('prompts') or 'every'} template(s) each (the first the model can use). The "
         "paper: mLAMA (T-REx), English ∩ Chinese, 39 relations, one template per fact; how many facts it used is not "
         "stated."),
        (f"**Number of facts per table.** Ours: Table 1 {n1} per language; Table 2 {n2}; Table 3 {n3}. The paper "
         "gives no counts, but uses every mLAMA fact of the 39 relations in both languages (thousands)."),
        ("**SR (Tables 1, 2).** The released code's formula (relative Δ of p(gold), |SR_enhance| + |SR_suppress|), "
         "but: no outlier cut (the code drops suppression Δ > 20 and enhancement Δ ≥ 250); the unrelated fact is "
         "from another relation (the code draws any other fact); p(gold) is of the gold object's own tokens "
         "(teacher-forced, as the tokenizer spells it), where the code lowercases it, drops its leading space "
         "and continues multi-token objects greedily."),
        (f"**Attribution.** Ours: {cfg['steps']} IG steps; AMIG and B-KN as kneuron implements them (the paper: "
         "20 steps for m-GPT; its B-KN averages the target tokens' attributions where AMIG sums them)."),
        ("**Seq-KN.** Ours ('both') edits both languages' KNs at once, as the paper describes; the released code "
         "undoes the English edit before measuring, so its Seq-KN is the Chinese KNs alone (our 'other' in English, "
         "'own' in Chinese: the row marked 'the released code's')."),
        ("**Table 3.** The paper's wo_DKN: `generate` then the last whitespace-separated word equals the label "
         "(almost never in Chinese, hence F1 ≈ 0); ours ('direct'): the model's greedy answer is the candidate's "
         "tokens. The paper's with_DKN: t = 0.7, λ = 1e-6 on an 80/20 split; ours: that, and t, λ tuned on a "
         "validation part of the 80 %. P and R beside the paper are in the code's swapped convention."),
    ]


def document(res: dict) -> Document:
    """The section 'Beside the paper's numbers'."""
    kind = res["meta"]["model"]["kind"]
    like = P.like_model(kind)
    doc = Document().heading(2, "Beside the paper's numbers")
    doc.para(f"Each result set beside the paper's {like} row ({P.PAPER}; {like} is its {kind} multilingual model) "
             f"and its {'m-GPT' if like == 'm-BERT' else 'm-BERT'} row. The paper's numbers are kept in "
             "`kneuron.paper.published`, each with its source; the list below says where ours are not like for like.")
    r1 = table1_rows(res)
    t = Table(["lang", "metric", Column("paper m-GPT", NUM), Column("paper m-BERT", NUM), Column("ours", NUM),
               "ours: what", "facts"], title="Table 1 (the paper gives only the Chinese gains in its prose)")
    for r in r1:
        t.add(r["lang"], r["metric"], r["paper"]["m-GPT"], r["paper"]["m-BERT"], r["ours"], r["ours_as"], r["n"])
    doc.table(t)
    r2 = table2_rows(res)
    if r2:
        t = Table(["lang", "row", "metric", Column("paper m-GPT", NUM), Column("paper m-BERT", NUM),
                   Column("ours [95% CI]", interval(NUM)), "ours: what", "facts"], title="Table 2 (SR)")
        for r in r2:
            iv = r.get("ours_interval")
            t.add(r["lang"], r["row"], r["metric"], r["paper"]["m-GPT"], r["paper"]["m-BERT"],
                  iv if iv else (r["ours"], None, None), r["ours_as"], r["n"])
        doc.table(t)
    r3 = table3_rows(res)
    prf = lambda d: " / ".join(NUM(d.get(k)) for k in ("P", "R", "F1")) if d else "n/a"  # noqa: E731
    t = Table(["lang", "row", "paper m-GPT P / R / F1", "paper m-BERT P / R / F1", "ours P / R / F1",
               Column("ours AUROC", NUM), "ours: what", "test items"], title="Table 3 (P / R in the code's convention)")
    for r in r3:
        if isinstance(r["ours"], dict):
            t.add(r["lang"], r["row"], prf(r["paper"]["m-GPT"]), prf(r["paper"]["m-BERT"]), prf(r["ours"]),
                  r["auroc"], r["ours_as"], r["n"])
        else:
            t.add(r["lang"], r["row"] + " (F1 gain %)", NUM(r["paper"]["m-GPT"]), NUM(r["paper"]["m-BERT"]),
                  NUM(r["ours"]), None, r["ours_as"], r["n"])
    doc.table(t)
    doc.para("Where ours is not like for like:")
    for point in not_like_for_like(res):
        doc.para("- " + point)
    return doc


__all__ = ["document", "gain", "not_like_for_like", "rows"]
