"""The README's tables of a `kneuron bench editing` run: one per edit language, then the cross-lingual ES / PS.

    python scripts/summarize_editing.py runs/edit-organism-clm
"""
import json
import sys
from pathlib import Path

from kneuron.bench.editing_report import scores_table
from kneuron.report.render import markdown
from kneuron.report.table import Column, Table

SHOWN = ("S", "ES", "PS", "NS", "GE", "reliability", "generalization", "locality", "flip_rate", "seconds_per_edit",
         "params_changed")


def main(run: str) -> None:
    res = json.loads((Path(run) / "results.json").read_text(encoding="utf-8"))
    for lang in res["unedited"]:
        print(f"Edited and measured in {lang}:\n")
        print(markdown(scores_table(res, lang, SHOWN, intervals=False, head={"params_changed": "weights"})))
    crossed = {m: r["cross"] for m, r in res["methods"].items() if r.get("cross")}
    if crossed:
        pairs = sorted({p for c in crossed.values() for p in c})
        print("Cross-lingual (edit → measure, ES / PS):\n")
        es_ps = lambda d: f"{d['ES']:.1f} / {d['PS']:.1f}"  # noqa: E731
        print(markdown(Table(["method", *(Column(p.replace("->", " → "), es_ps) for p in pairs)],
                             [[m, *(c.get(p) for p in pairs)] for m, c in crossed.items()])), end="")
    nothing = [f"{m} {e['unchanged']} of {e['n']} ({lang})" for m, d in res.get("extras", {}).items()
               for lang, e in d.items() if e.get("unchanged")]
    print("\nEdits that changed nothing: " + ("; ".join(nothing) if nothing else "none"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/summarize_editing.py RUN_DIR")
    main(sys.argv[1])
