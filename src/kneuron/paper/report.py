"""The `reproduce` report: per-layer figures (PNG), report.md and a self-contained report.html
(figures inlined), built from one results dict as a `kneuron.report.Document`, one section per function."""
from __future__ import annotations

from pathlib import Path

from kneuron.paper import findings
from kneuron.report import render
from kneuron.report.document import Document
from kneuron.report.table import Column, Table, interval, number

NUM, NUM2 = number(3), number(2)
CI = interval(NUM)


# ----------------------------------------------------------------------------- figures

def _share(counts: list[int]) -> list[float]:
    t = sum(counts)
    return [100.0 * c / t if t else 0.0 for c in counts]


def figures(res: dict, out: Path) -> list[tuple[str, str]]:
    """Per-layer shares (% of all neurons of the kind) as PNGs: (path, caption) per figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    model = res["meta"]["model"]["name"]
    lay = res["layers"]
    figs = []
    panels = [(f"KN, {m}, {lang}", c) for m, d in lay["kn"].items() for lang, c in d.items()]
    if lay.get("likn"):
        panels.append(("LIKN (amig, en ∩ zh)", lay["likn"]))
    panels += [(f"DKN, amig, {lang}", c) for lang, c in lay["dkn"].items()]
    for kind, sel in (("kn", "KN"), ("likn", "LIKN"), ("dkn", "DKN")):
        ps = [(t, c) for t, c in panels if t.startswith(sel + ",") or t.startswith(sel + " ")]
        if not ps:
            continue
        fig, axes = plt.subplots(1, len(ps), figsize=(3.6 * len(ps), 2.8), squeeze=False)
        for ax, (t, c) in zip(axes[0], ps):
            ax.bar(range(len(c)), _share(c), color="#4a7ab5")
            ax.set_title(f"{t}  (n={sum(c)})", fontsize=9)
            ax.set_xlabel("layer")
            ax.set_ylabel("% of neurons")
        fig.suptitle(f"{model}: {sel} per layer", fontsize=10)
        fig.tight_layout()
        path = out / f"fig-{kind}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        figs.append((str(path), f"Share of {sel} per layer ({model}); the paper's Figures 3-5"))
    return figs


# ----------------------------------------------------------------------------- the report

def document(res: dict, figs: list[tuple[str, str]]) -> Document:
    """The whole report: the run, the paper's findings beside ours, Tables 1-3, Module 3, figures, provenance."""
    doc = _intro(res)
    doc.heading(2, "Beside the paper's findings")
    doc.para("Each row: a finding the paper states, our number, and whether we agree. Small runs give wide "
             "intervals; read the tables below before the verdicts.")
    doc.table(findings.table(findings.findings(res)))   # first: it is what a reader wants
    for section in (_table1, _table2, _dkn, _table3):
        doc.extend(section(res))
    doc.heading(2, "Figures — where the neurons are")
    for p, cap in figs:
        doc.figure(p, cap)
    return doc.extend(_provenance(res))


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
             "(the released code's Eq. 11), with a 95% paired-bootstrap interval over facts. No outlier cut.")
    t = Table(["method", "lang", "facts", Column("KN/fact", NUM2), *_EDIT_COLUMNS, Column("SR [95% CI]", CI)])
    for meth, d in res["table1"].items():
        for lang, x in d.items():
            t.add({"ig": "B-KN (ig)", "amig": "AMIG"}[meth], lang, x["n_facts"], x["mean_neurons"],
                  x["suppress"]["related"], x["suppress"]["unrelated"], x["enhance"]["related"],
                  x["enhance"]["unrelated"], x.get("sr_interval"))
    return doc.table(t)


def _table2(res: dict) -> Document:
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
    return doc.table(t)


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


def _provenance(res: dict) -> Document:
    meta, cfg = res["meta"], res["meta"]["config"]
    rows = ([[k, str(v)] for k, v in sorted(cfg.items())]
            + [["data file", meta["data"]["facts"]], ["data sha256", meta["data"]["facts_hash"]],
               ["facts used", f"{meta['data']['n_facts']} (facts.jsonl)"]]
            + [[f"version: {k}", v] for k, v in sorted(meta.get("versions", {}).items())]
            + [["started", meta.get("started", "")]])
    doc = Document().heading(2, "Parameters and provenance").table(Table(["item", "value"], rows))
    return doc.para("Step times (s): " + ", ".join(f"{k}: {v}" for k, v in res.get("timings", {}).items()))


def write_report(res: dict, out) -> dict:
    figs = figures(res, Path(out))
    paths = render.save(document(res, figs), out, f"kneuron reproduce — {res['meta']['model']['name']}")
    return {**paths, "figures": [p for p, _ in figs]}
