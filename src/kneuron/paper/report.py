"""The `reproduce` report: per-layer figures (PNG), report.md and a self-contained report.html
(figures inlined), built from one results dict. Blocks are rendered twice, to Markdown and HTML."""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path

# ----------------------------------------------------------------------------- blocks
# ("h", level, text) | ("p", text) | ("table", header, rows) | ("img", path, caption) | ("code", text)


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) >= 1e4 or (v and abs(v) < 1e-3) else f"{v:.{digits}f}"
    return str(v)


def _ci(d: dict | None) -> str:
    if not d:
        return "n/a"
    return f"{_fmt(d['value'])} [{_fmt(d['low'])}, {_fmt(d['high'])}]"


def to_md(blocks: list[tuple]) -> str:
    out = []
    for b in blocks:
        if b[0] == "h":
            out.append("#" * b[1] + " " + b[2])
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "code":
            out.append("```\n" + b[1] + "\n```")
        elif b[0] == "table":
            head, rows = b[1], b[2]
            out.append("| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n"
                       + "\n".join("| " + " | ".join(str(c) for c in r) + " |" for r in rows))
        elif b[0] == "img":
            out.append(f"![{b[2]}]({Path(b[1]).name})\n\n*{b[2]}*")
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[tuple], title: str) -> str:
    e = html.escape
    body = []
    for b in blocks:
        if b[0] == "h":
            body.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            body.append(f"<p>{e(b[1]).replace('**', '')}</p>")
        elif b[0] == "code":
            body.append(f"<pre>{e(b[1])}</pre>")
        elif b[0] == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b[0] == "img":
            data = base64.b64encode(Path(b[1]).read_bytes()).decode()
            body.append(f'<figure><img alt="{e(b[2])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{e(b[2])}</figcaption></figure>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
             "pre{background:#f6f6f6;padding:.6em;overflow-x:auto}figcaption{font-size:90%;color:#444}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


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


# ----------------------------------------------------------------------------- the paper's findings

def _thirds(counts: list[int]) -> tuple[float, float, float]:
    n = len(counts)
    a, b = n // 3, n - n // 3
    t = sum(counts) or 1
    return sum(counts[:a]) / t, sum(counts[a:b]) / t, sum(counts[b:]) / t


def _cos(a: list[int], b: list[int]) -> float | None:
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b)) / (na * nb) if na and nb else None


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("agree" if ok else "disagree")


def comparison(res: dict) -> list[list[str]]:
    """Our result beside each finding the paper states (paper-method.md §5)."""
    rows = []
    kind = res["meta"]["model"]["kind"]
    t1 = res["table1"]
    for lang in res["meta"]["langs_used"]:
        a, b = t1["amig"][lang]["sr"], t1["ig"][lang]["sr"]
        ok = None if a is None or b is None else a > b
        rows.append([f"Table 1: AMIG's SR beats B-KN's ({lang})", f"AMIG {_fmt(a)} vs B-KN {_fmt(b)}", _verdict(ok)])
    for lang, c in res["layers"]["kn"]["amig"].items():
        e, m, l = _thirds(c)
        if kind == "masked":
            claim, ok = "Fig. 3: a masked model's KNs sit mostly in the last layers", l > 0.5
        else:
            claim = "Fig. 3: a causal model's KNs spread over early, middle and last layers"
            ok = min(e, m, l) >= 0.1 and max(e, m, l) <= 0.6         # every third holds some, none most
        rows.append([f"{claim} ({lang})", f"early/middle/late thirds: {e:.0%} / {m:.0%} / {l:.0%}", _verdict(ok)])
    if res["layers"].get("likn"):
        c = res["layers"]["likn"]
        s = sum(c[-2:]) / sum(c) if sum(c) else None
        rows.append(["Fig. 3: LIKN sit mostly in the last one or two layers",
                     "no LIKN" if s is None else f"{s:.0%} in the last two layers", _verdict(None if s is None else s > 0.5)])
    t2 = res.get("table2")
    if t2:
        tab = t2["table"]
        for lang in t2["langs"]:
            cell = lambda c, k: (tab.get(c) or {}).get(lang, {}).get(k)  # noqa: E731
            lk, oth, both = cell("likn", "sr"), cell("other", "sr"), cell("both", "sr")
            e_lk, e_oth, e_both = (cell(c, "suppress_related") for c in ("likn", "other", "both"))
            src = "zh→en" if lang == "en" else "en→zh"
            rows.append([f"Table 2: editing the LIKN beats editing the other language's KNs ({src})",
                         f"SR: LIKN {_fmt(lk)} vs {src} {_fmt(oth)}; suppress Δ on the fact: LIKN {_fmt(e_lk)} vs "
                         f"{_fmt(e_oth)}", _verdict(None if lk is None or oth is None else lk > oth)])
            rows.append([f"Table 2: editing both languages' KNs (sequential) is below LIKN ({lang})",
                         f"SR: both {_fmt(both)} vs LIKN {_fmt(lk)}; suppress Δ on the fact: both {_fmt(e_both)} vs "
                         f"LIKN {_fmt(e_lk)}", _verdict(None if lk is None or both is None else both < lk)])
    for lang, c in res["layers"]["dkn"].items():
        cs = _cos(c, res["layers"]["kn"]["amig"][lang])
        rows.append([f"Fig. 4/5: DKNs are distributed over layers like KNs ({lang})",
                     "no DKN" if cs is None else f"cosine of the layer histograms {cs:.2f}", _verdict(None if cs is None else cs > 0.8)])
    for lang, t in res["table3"].items():
        d, base = (t.get("dkn") or {}).get("f1"), t["direct"]["f1"]
        rows.append([f"Table 3: DKN fact-checking beats the direct baseline in F1 ({lang})",
                     f"DKN {_fmt(d)} vs direct {_fmt(base)}", _verdict(None if d is None or base is None else d > base)])
        p, r = t["direct"]["precision"], t["direct"]["recall"]
        rows.append([f"Table 3: the model itself tends to call facts true (high recall) ({lang})",
                     f"direct precision {_fmt(p)}, recall {_fmt(r)}",
                     _verdict(None if p is None or r is None or p == r else r > p)])
    return rows


# ----------------------------------------------------------------------------- the report

def blocks(res: dict, figs: list[tuple[str, str]]) -> list[tuple]:
    meta, cfg = res["meta"], res["meta"]["config"]
    m = meta["model"]
    b: list[tuple] = [("h", 1, f"kneuron reproduce — {m['name']}"),
                      ("p", f"Chen et al., *Journey to the Center of the Knowledge Neurons* (AAAI 2024), Modules 1–3 and "
                            f"Tables 1–3, on {m['name']} ({m['kind']}, {m['n_layers']} layers × {m['n_neurons']} neurons, "
                            f"site {m['site']}, {m['dtype']}) with {meta['data']['n_ids']} fact ids from "
                            f"{meta['data']['relations']} relations in {', '.join(meta['langs_used'])}."),
                      ("code", "kneuron reproduce " + f"--model {cfg['model']} --facts {cfg['facts']} --langs {','.join(cfg['langs'])}"
                               + (f" --limit {cfg['limit']}" if cfg["limit"] else "")
                               + (f" --relations {cfg['relations']}" if cfg.get("relations") else "") + f" --steps {cfg['steps']}"
                               + f" --prompts {cfg.get('prompts') or 0}")]
    for n in meta["notes"]:
        b.append(("p", "Note: " + n))
    # comparison first: it is what a reader wants
    b += [("h", 2, "Beside the paper's findings"),
          ("p", "Each row: a finding the paper states, our number, and whether we agree. Small runs give wide intervals; "
                "read the tables below before the verdicts."),
          ("table", ["the paper", "here", "verdict"], comparison(res))]
    # Table 1
    b += [("h", 2, "Table 1 — localization (suppress / enhance the knowledge neurons)"),
          ("p", "Δ = (p_after − p_before) / p_before on the fact itself (related) and on a fact of another relation "
                "under the same edit (unrelated); SR = |mean Δ_rel / mean Δ_unrel| summed over suppress and enhance "
                "(the released code's Eq. 11), with a 95% paired-bootstrap interval over facts. No outlier cut.")]
    rows = []
    for meth, d in res["table1"].items():
        for lang, t in d.items():
            rows.append([{"ig": "B-KN (ig)", "amig": "AMIG"}[meth], lang, t["n_facts"], _fmt(t["mean_neurons"], 2),
                         _fmt(t["suppress"]["related"]), _fmt(t["suppress"]["unrelated"]),
                         _fmt(t["enhance"]["related"]), _fmt(t["enhance"]["unrelated"]), _ci(t.get("sr_interval"))])
    b.append(("table", ["method", "lang", "facts", "KN/fact", "suppress rel", "suppress unrel", "enhance rel",
                        "enhance unrel", "SR [95% CI]"], rows))
    # Module 2 / Table 2
    t2 = res.get("table2")
    b.append(("h", 2, "Module 2 and Table 2 — language-independent neurons, cross-lingual editing"))
    if not t2:
        b.append(("p", "Skipped: " + ("; ".join(meta["notes"]) or "one language only")))
    else:
        lk = t2["likn"]
        b.append(("p", f"{lk['n_with_likn']} of {lk['n_facts']} facts ({lk['share_nonempty']:.0%}) have language-"
                       f"independent neurons (AMIG, τ en 0.3 / zh 0.2), {lk['mean_likn_per_fact']:.2f} per fact. Table 2 "
                       f"uses the facts with a non-empty LIKN. 'other' = the other language's KNs (zh→en in the en "
                       "column, en→zh in the zh column); 'both' = both languages' KNs edited at once (the paper's "
                       "'sequential', done as meant; the released code's version equals 'other' for en and 'own' for zh); "
                       "'random' = as many random non-KN neurons as the LIKN, in the same layers."))
        rows = []
        for cond, d in t2["table"].items():
            for lang, x in d.items():
                rows.append([cond, lang, x["n_facts"], _fmt(x["mean_edited"], 2), _fmt(x["suppress_related"]),
                             _fmt(x["suppress_unrelated"]), _fmt(x["enhance_related"]), _fmt(x["enhance_unrelated"]),
                             _ci(x.get("sr_interval"))])
        b.append(("p", "SR divides by the change of an unrelated fact, which shrinks with the number of neurons edited: "
                       "a small set (the LIKN, the random control) can score a high SR while barely moving the fact. "
                       "Read SR together with the related change and the random control."))
        b.append(("table", ["edited", "measured", "facts", "neurons", "suppress rel", "suppress unrel", "enhance rel",
                            "enhance unrel", "SR [95% CI]"], rows))
    # Module 3
    dk = res["dkn"]
    c = dk["config"]
    b += [("h", 2, "Module 3 — degenerate knowledge neurons"),
          ("p", f"Algorithm 1 on the top {c['top_n']} AMIG knowledge neurons; a part may cost ≤ {c['t_low']} and the "
                f"whole group > {c['t_high']} ({'relative' if c['relative'] else 'absolute'} drops of p(answer)); "
                f"groups up to size {c['max_size']}.")]
    rows = [[lang, x["n_facts"], f"{x['share_with_dkn']:.0%}", _fmt(x["groups_per_fact"], 2), str(x["sizes"] or "—"),
             _fmt(x["mean_group_drop"]), _fmt(x["mean_max_part_drop"]), _fmt(x["forward_passes_per_fact"], 2),
             _fmt(x["ablations_per_fact"], 1), x["truncated"]] for lang, x in dk["langs"].items()]
    b.append(("table", ["lang", "facts", "with DKN", "groups/fact", "sizes", "group cost", "largest part cost",
                        "forward passes/fact", "ablations/fact", "cut by budget"], rows))
    # Table 3
    b += [("h", 2, "Table 3 — fact-checking with DKNs"),
          ("p", "Per relation 80/20 split (seed 42); t and λ tuned on a validation part of the 80% (never the test part); "
                "'DKN (paper)' uses t = 0.7, λ = 1e-6. 'direct' = the model's own greedy answer is the object "
                "(the paper's baseline); 'compare' = p(object) above p(the other candidate). Positive class = true "
                "facts; the released code's swapped P/R is in the results JSON.")]
    rows = []
    for lang, t in res["table3"].items():
        for name, label in (("dkn", "DKN (tuned)"), ("dkn_paper", "DKN (paper)"), ("direct", "direct"), ("compare", "compare")):
            x = t.get(name)
            if not x:
                continue
            extra = f"t={x['t']}, λ={_fmt(x['lambda'])}" if "t" in x else ""
            rows.append([lang, label, t["n_test_items"], _fmt(x["precision"]), _fmt(x["recall"]), _fmt(x["f1"]),
                         _fmt(x["auroc"]), extra])
    b.append(("table", ["lang", "method", "test items", "precision", "recall", "F1", "AUROC", "setting"], rows))
    for lang, t in res["table3"].items():
        if not t["n_test_items"]:
            b.append(("p", f"{lang}: no test items — every relation needs at least 2 facts for a test part."))
        elif t["tuned"]["t"] is None:
            b.append(("p", f"{lang}: no validation part (every relation needs at least 3 facts), so t and λ were "
                           "not tuned; only the paper's fixed setting is shown."))
    # figures
    b.append(("h", 2, "Figures — where the neurons are"))
    b += [("img", p, cap) for p, cap in figs]
    # provenance
    b += [("h", 2, "Parameters and provenance"),
          ("table", ["item", "value"], [[k, str(v)] for k, v in sorted(cfg.items())]
           + [["data file", meta["data"]["facts"]], ["data sha256", meta["data"]["facts_hash"]],
              ["facts used", f"{meta['data']['n_facts']} (facts.jsonl)"]]
           + [[f"version: {k}", v] for k, v in sorted(meta.get("versions", {}).items())]
           + [["started", meta.get("started", "")]]),
          ("p", "Step times (s): " + ", ".join(f"{k}: {v}" for k, v in res.get("timings", {}).items()))]
    return b


def save_report(bl: list, out, title: str) -> dict:
    """``bl`` as ``out``/report.md and a self-contained ``out``/report.html; their paths."""
    out = Path(out)
    (out / "report.md").write_text(to_md(bl), encoding="utf-8")
    (out / "report.html").write_text(to_html(bl, title), encoding="utf-8")
    return {"md": str(out / "report.md"), "html": str(out / "report.html")}


def write_report(res: dict, out) -> dict:
    figs = figures(res, Path(out))
    paths = save_report(blocks(res, figs), out, f"kneuron reproduce — {res['meta']['model']['name']}")
    return {**paths, "figures": [p for p, _ in figs]}
