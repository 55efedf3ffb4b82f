"""Condensed Markdown tables (Tables 1-3, DKN) from several `kneuron reproduce` directories, side by side.

    python scripts/summarize_reproduce.py runs/organism-mlm runs/organism-clm runs/smollm2-en
"""
import json
import sys
from pathlib import Path


def f(v, d=3):
    if v is None:
        return "n/a"
    return f"{v:.{d}f}" if abs(v) < 1e4 else f"{v:.3g}"


def ci(x):
    return "n/a" if not x else f"{f(x['value'], 1)} [{f(x['low'], 1)}, {f(x['high'], 1)}]"


def main(dirs):
    res = [(Path(d), json.loads((Path(d) / "results.json").read_text())) for d in dirs]
    print("Table 1 (SR [95% CI]; mean suppress Δ related / unrelated)\n")
    print("| model | lang | facts | B-KN (ig) SR | AMIG SR | ig suppress rel / unrel | amig suppress rel / unrel |")
    print("|---|---|---|---|---|---|---|")
    for d, r in res:
        for lang in r["meta"]["langs_used"]:
            a, b = r["table1"]["ig"][lang], r["table1"]["amig"][lang]
            print(f"| {r['meta']['model']['name']} | {lang} | {a['n_facts']} | {ci(a['sr_interval'])} | {ci(b['sr_interval'])} "
                  f"| {f(a['suppress']['related'])} / {f(a['suppress']['unrelated'])} "
                  f"| {f(b['suppress']['related'])} / {f(b['suppress']['unrelated'])} |")
    print("\nTable 2 (SR [95% CI]; suppress Δ on the fact)\n")
    print("| model | measured | facts with LIKN | LIKN | own | other language | both at once | random |")
    print("|---|---|---|---|---|---|---|---|")
    for d, r in res:
        t2 = r.get("table2")
        if not t2:
            continue
        for lang in t2["langs"]:
            cells = [f"{ci(t2['table'][c][lang]['sr_interval'])}; {f(t2['table'][c][lang]['suppress_related'])}"
                     for c in ("likn", "own", "other", "both", "random")]
            lk = t2["likn"]
            print(f"| {r['meta']['model']['name']} | {lang} | {lk['n_with_likn']} of {lk['n_facts']} | " + " | ".join(cells) + " |")
    print("\nModule 3 (Algorithm 1, top 20, relative 0.2 / 0.25)\n")
    print("| model | lang | facts with DKN | groups per fact | forward passes per fact | ablations per fact |")
    print("|---|---|---|---|---|---|")
    for d, r in res:
        for lang, x in r["dkn"]["langs"].items():
            print(f"| {r['meta']['model']['name']} | {lang} | {x['n_with_dkn']} of {x['n_facts']} | {f(x['groups_per_fact'], 2)} "
                  f"| {f(x['forward_passes_per_fact'], 2)} | {f(x['ablations_per_fact'], 1)} |")
    print("\nTable 3 (test part: F1 / AUROC)\n")
    print("| model | lang | test items | DKN tuned | DKN paper (t 0.7, λ 1e-6) | direct (paper's baseline) | compare |")
    print("|---|---|---|---|---|---|---|")
    for d, r in res:
        for lang, t in r["table3"].items():
            cell = lambda k: "n/a" if k not in t else f"{f(t[k]['f1'])} / {f(t[k]['auroc'])}"  # noqa: E731
            print(f"| {r['meta']['model']['name']} | {lang} | {t['n_test_items']} | {cell('dkn')} | {cell('dkn_paper')} "
                  f"| {cell('direct')} | {cell('compare')} |")


if __name__ == "__main__":
    main(sys.argv[1:])
