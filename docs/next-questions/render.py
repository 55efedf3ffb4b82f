"""The tables of docs/next-questions/report.md, read from the result files the commands wrote (nothing is typed
by hand). Run from the project root:
    python3 docs/next-questions/render.py RUN_DIR [RUN_DIR ...]   # print every table of these runs
    python3 docs/next-questions/render.py --fill                  # rewrite report.md's tables from results/
Each RUN_DIR is a `kneuron locate` run (its consistency.json, if any, one level up); results/ holds the small
result files of the report's runs (copied from them: summaries, not the per-item rows)."""
import json
import sys
from pathlib import Path


def load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def num(v, d=2):
    return "–" if v is None else f"{v:.{d}f}"


def iv(c, d=2):
    if not c or c.get("mean") is None:
        return "–"
    if c.get("low") is None:
        return num(c["mean"], d)
    return f"{num(c['mean'], d)} [{num(c['low'], d)}, {num(c['high'], d)}]"


def consistency(path: Path) -> list[str]:
    c = load(path)
    if c is None:
        return []
    out = ["| model | method | facts | scored (≥ 2 queries) | mean score | KI share, static (0.1) | Otsu threshold | KI share, Otsu |",
           "|---|---|---|---|---|---|---|---|"]
    for s in c["settings"]:
        out.append(f"| {s['model']} | {s['method']} | {s['n_facts']} | {s['n_scored']} | {num(s['mean_score'])} | "
                   f"{num(s['share_inconsistent_static'])} | {num(s['otsu_threshold'], 3)} | "
                   f"{num(s['share_inconsistent_otsu'])} |")
    cells: dict = {}
    for f in c["facts"]:
        if f["score"] is not None:
            cells.setdefault((f["model"], f["method"], f["lang"]), []).append(f)
    if len({k[2] for k in cells}) > 1:               # several languages: the shares per method and language
        out += ["", "Per method and language:", "",
                "| model | method | lang | facts scored | mean score | KI share, static | KI share, Otsu |",
                "|---|---|---|---|---|---|---|"]
        for (model, method, lang), fs in sorted(cells.items()):
            share = lambda k: sum(f[k] is False for f in fs) / len(fs)  # noqa: E731
            out.append(f"| {model} | {method} | {lang} | {len(fs)} | {num(sum(f['score'] for f in fs) / len(fs))} | "
                       f"{num(share('consistent_static'))} | {num(share('consistent_otsu'))} |")
    t = c.get("test_summary")
    if t:
        out += ["", "Query-neuron test (each query's own set against another query's set of the same fact, both "
                "suppressed on that query; ig and amig runs together):", "",
                "| facts | n facts | query pairs | p(answer) drop, own set | drop, another query's set | own > other |",
                "|---|---|---|---|---|---|"]
        groups = [("all", t["all"])] + [(f"{split} {k}", v) for split in ("static", "otsu")
                                        for k, v in t.get(split, {}).items()]
        for name, v in groups:
            out.append(f"| {name} | {v['n_facts']} | {v['n_pairs']} | {num(v['mean_own_drop'])} | "
                       f"{num(v['mean_other_drop'])} | {num(v['own_wins'])} |")
    return out


def cas(run: Path) -> list[str]:
    c = load(run / "cas_effect.json")
    if c is None:
        return []
    s = c["summary"]
    def median(op, name):
        xs = sorted(f["effects"][op][name]["dppl"] for f in c["facts"] if op in f["effects"]
                    and f["effects"][op][name]["dppl"] is not None)
        return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2 if xs else None

    def big(cell):                   # ΔPPL's mean runs to 1e20 when a few edits wreck the model
        if not cell or cell.get("mean") is None:
            return "–"
        g = lambda v: f"{v:.3g}"     # noqa: E731
        return g(cell["mean"]) if cell.get("low") is None else f"{g(cell['mean'])} [{g(cell['low'])}, {g(cell['high'])}]"
    out = [f"{s['n_facts']} facts ({len(c.get('skipped', []))} skipped)", "",
           "| operation | set | Rel | Gen | Loc (top-1 kept) | ΔPPL, mean | ΔPPL, median |", "|---|---|---|---|---|---|---|"]
    for op, sets in s["ops"].items():
        for name, v in sets.items():
            m = v["metrics"]
            out.append(f"| {op} | {name} | {iv(m['rel'])} | {iv(m['gen'])} | {iv(m['loc'])} | {big(m['dppl'])} | "
                       f"{num(median(op, name))} |")
    for op, d in s["cas_minus"].items():
        for k, m in d.items():
            out.append(f"| {op} | {k} (paired) | {iv(m['rel'])} | {iv(m['gen'])} | {iv(m['loc'])} | {big(m['dppl'])} | |")
    return out


def dkn(run: Path) -> list[str]:
    out = ["| rule | lang | facts with a DKN | groups per fact | sizes | layers | forward passes per fact | s per fact |",
           "|---|---|---|---|---|---|---|---|"]
    for rule, name in (("pairs", "dkn.json"), ("clusters", "dkn-clusters.json")):
        d = load(run / name)
        if d is None:
            continue
        for lang, v in d["langs"].items():
            out.append(f"| {rule} | {lang} | {v['n_with_dkn']} / {v['n_facts']} | {num(v['groups_per_fact'])} | "
                       f"{v['sizes'] or '–'} | {v['layers'] or '–'} | {num(v['forward_passes_per_fact'], 1)} | "
                       f"{num(v.get('seconds_per_fact'))} |")
    return out if len(out) > 2 else []


def factcheck(run: Path) -> list[str]:
    out = ["| DKN rule | lang | split | scorer | AUROC [95 % CI] | F1 | P | R | test items | tuned on validation |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for f in sorted(run.glob("factcheck*-*.json")):
        j = load(f)
        for split, sp in j["splits"].items():
            if sp is None:
                continue
            for scorer, r in sp["scorers"].items():
                if r is None:
                    continue
                tuned = ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k}" for k, v in
                                  (r.get("tuned") or {}).items() if not isinstance(v, list))
                out.append(f"| {j.get('dkn', 'pairs')} | {j['lang']} | {split} | {scorer} | {num(r['auroc'])} "
                           f"[{num(r['auroc_low'])}, {num(r['auroc_high'])}] | {num(r['f1'])} | {num(r['precision'])} | "
                           f"{num(r['recall'])} | {r['n_test_items']} | {tuned or '–'} |")
    return out if len(out) > 2 else []


def truth_dkn(path: Path) -> list[str]:
    """Recovery of planted degenerate facts (two disjoint trained sets, each sufficient alone) by both DKN rules,
    from a `kneuron bench localization --truth injected --difficulties injected-degenerate` summary.json."""
    s = load(path)
    if s is None:
        return []
    out = [f"**{s['model']}** ({s['k']} facts a seed, seeds {', '.join(map(str, s['seeds']))}, {s['per_set']} neurons a set)", "",
           "| method | facts | pairs: F1 of the sets' neurons | pairs: a group spans both sets | clusters: F1 | clusters: spans both |",
           "|---|---|---|---|---|---|"]
    for method, v in s["summary"].get("injected-degenerate", {}).items():
        c = lambda k: iv({"mean": v[k]["mean"], "low": (v[k]["ci"] or [None, None])[0],  # noqa: E731
                          "high": (v[k]["ci"] or [None, None])[1]}) if k in v else "–"
        out.append(f"| {method} | {v['n']} | {c('dkn_f1')} | {c('dkn_spans')} | {c('dkn_clusters_f1')} | "
                   f"{c('dkn_clusters_spans')} |")
    return out


HERE = Path(__file__).parent
RESULTS = HERE / "results"
SMOL, CLM = RESULTS / "smollm2-135m", RESULTS / "organism-clm"
SMOL_REP = RESULTS / "smollm2-135m-reproduce"      # make demo's smollm2 reproduce run (20 facts, 5 relations)
GEMMA = RESULTS / "gemma3-270m"                    # locate runs of facts-en-zh-multi.jsonl (en + zh, every template)
GEMMA_REP = RESULTS / "gemma3-270m-reproduce"      # `reproduce --next-questions` on gemma3-270m (200 ids, en + zh)


def runs(title_of, parts) -> list[str]:
    out = []
    for run, make in parts:
        lines = make(run)
        if lines:
            out += [f"**{title_of(run)}**", "", *lines, ""]
    return out


def sections() -> dict[str, list[str]]:
    name = lambda r: f"{r.parent.name}, {r.name.removeprefix('locate-').upper()}"  # noqa: E731
    return {
        "CONSISTENCY": consistency(SMOL / "consistency.json") + [""] + consistency(GEMMA / "consistency.json"),
        "CAS": runs(name, [(SMOL / "locate-ig", cas), (SMOL / "locate-amig", cas), (GEMMA / "locate-ig", cas),
                           (GEMMA / "locate-amig", cas)]),
        "DKN": runs(name, [(GEMMA_REP / "locate-amig", dkn), (CLM / "locate-amig", dkn), (CLM / "locate-ig", dkn),
                           (SMOL / "locate-ig", dkn), (SMOL / "locate-amig", dkn)]),
        "TRUTH": truth_dkn(HERE.parent / "ground-truth" / "organism-clm-dkn" / "summary.json") + [""]
                 + truth_dkn(HERE.parent / "ground-truth" / "organism-mlm-dkn" / "summary.json"),
        "FACTCHECK": runs(name, [(GEMMA_REP / "locate-amig", factcheck), (CLM / "locate-amig", factcheck),
                                 (CLM / "locate-ig", factcheck), (SMOL_REP / "locate-amig", factcheck)]),
    }


def fill(report: Path) -> None:
    """Between <!-- NAME --> and <!-- /NAME --> in ``report``: that section's tables, rendered again."""
    text = report.read_text()
    for key, lines in sections().items():
        start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
        a, b = text.index(start) + len(start), text.index(end)
        text = text[:a] + "\n" + "\n".join(lines or ["(not run yet)"]).rstrip() + "\n" + text[b:]
    report.write_text(text)


if __name__ == "__main__":
    if sys.argv[1:] == ["--fill"]:
        fill(HERE / "report.md")
        sys.exit()
    for arg in sys.argv[1:]:
        run = Path(arg)
        print(f"## {run}\n")
        for title, lines in (("consistency", consistency(run.parent / "consistency.json")), ("CAS", cas(run)),
                             ("DKN", dkn(run)), ("fact-checking", factcheck(run))):
            if lines:
                print(f"### {title}\n")
                print("\n".join(lines) + "\n")
