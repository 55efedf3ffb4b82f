"""The README's tables of a `kneuron bench editing` run: one per edit language, then the cross-lingual ES / PS.

    python scripts/summarize_editing.py runs/edit-organism-clm
"""
import json
import sys
from pathlib import Path

COLUMNS = [("S", "S"), ("ES", "ES"), ("PS", "PS"), ("NS", "NS"), ("GE", "GE"), ("reliability", "Rel"),
           ("generalization", "Gen"), ("locality", "Loc"), ("flip_rate", "flip"), ("seconds_per_edit", "s/edit"),
           ("params_changed", "weights")]


def cell(key, v):
    if v is None:
        return "n/a"
    if key == "params_changed":
        return f"{int(round(v)):,}"
    return f"{v:.2f}" if key == "seconds_per_edit" else f"{v:.1f}"


def main(run: str) -> None:
    res = json.loads((Path(run) / "results.json").read_text(encoding="utf-8"))
    for lang, base in res["unedited"].items():
        print(f"Edited and measured in {lang}:\n")
        print("| method | " + " | ".join(c for _, c in COLUMNS) + " |")
        print("|---|" + "---:|" * len(COLUMNS))
        print("| unedited | " + " | ".join(cell(k, base.get(k)) for k, _ in COLUMNS) + " |")
        for m, r in res["methods"].items():
            print(f"| {m} | " + " | ".join(cell(k, r[lang].get(k)) for k, _ in COLUMNS) + " |")
        print()
    crossed = {m: r["cross"] for m, r in res["methods"].items() if r.get("cross")}
    if crossed:
        pairs = sorted({p for c in crossed.values() for p in c})
        print("Cross-lingual (edit → measure, ES / PS):\n")
        print("| method | " + " | ".join(p.replace("->", " → ") for p in pairs) + " |")
        print("|---|" + "---|" * len(pairs))
        for m, c in crossed.items():
            print(f"| {m} | " + " | ".join(f"{c[p]['ES']:.1f} / {c[p]['PS']:.1f}" if p in c else "n/a"
                                           for p in pairs) + " |")
    nothing = [f"{m} {e['unchanged']} of {e['n']} ({lang})" for m, d in res.get("extras", {}).items()
               for lang, e in d.items() if e.get("unchanged")]
    print("\nEdits that changed nothing: " + ("; ".join(nothing) if nothing else "none"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/summarize_editing.py RUN_DIR")
    main(sys.argv[1])
