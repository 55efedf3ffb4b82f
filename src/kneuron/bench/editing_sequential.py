"""The editing bench's sequential mode in results.json and the report: each checkpoint's model state (S
after k kept edits beside the unrelated-text NLL, ‖W − W₀‖/‖W₀‖ and GE), its table and the three-panel
figure ``fig-sequential.png``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from kneuron.editing.metrics import CHAIN_GE_PROMPTS
from kneuron.report.document import Document
from kneuron.report.table import Column, Table, fixed

F1, F2, F3 = fixed(1), fixed(2), fixed(3)


def value(p: dict, key: str, lang: str) -> float:
    """A checkpoint's ``key`` (``nll``: the edit language's), NaN where it has none."""
    v = (p.get("nll") or {}).get(lang) if key == "nll" else p.get(key)
    return np.nan if v is None else v


def chain_state(state: dict | None) -> dict:
    """A checkpoint's model state as results.json holds it (None each: a checkpoint stored before it)."""
    st = state or {}
    return {"nll": st.get("nll"), "weight_ratio": st.get("weight_ratio"), "GE": st.get("GE")}


def figure(res: dict, out: Path) -> str | None:
    seq = {m: c for m, c in res["sequential"].items() if c}
    if not seq:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [("S", "S over the edited records"), ("nll", "unrelated-text NLL (nats)"),
              ("weight_ratio", "‖W − W₀‖ / ‖W₀‖")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    ks = sorted({p["k"] for by_lang in seq.values() for pts in by_lang.values() for p in pts})
    for ax, (key, label) in zip(axes, panels):
        for m, by_lang in seq.items():
            for lang, pts in by_lang.items():
                ys = [value(p, key, lang) for p in pts]
                ax.plot([p["k"] for p in pts], ys, marker="o", label=f"{m} ({lang})")
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set_xlabel("edits kept")
        ax.set_ylabel(label)
    axes[0].set_ylim(0, 100)
    axes[0].axhline(res["unedited"][langs[0]]["S"] if (langs := list(res["unedited"])) else np.nan, color="grey",
                    lw=0.8, ls=":")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{res['model']}: sequential editing (dotted: unedited)", fontsize=9)
    fig.tight_layout()
    path = out / "fig-sequential.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def section(doc: Document, res: dict, fig: str | None) -> None:
    """The report's section on the sequential chains (``res["sequential"]``: method -> lang -> checkpoints)."""
    doc.heading(2, "Sequential editing: S over the edited records after k kept edits")
    doc.para("After k kept edits, every record edited so far is measured again. The model's state then: "
             "the unrelated-text NLL in the edit language (unedited: "
             + ", ".join(f"{lang} {F2(v)}" for lang, v in (res.get("unrelated") or {}).items())
             + " nats), ‖W − W₀‖/‖W₀‖ over every weight the chain wrote, and GE (x100) of "
             f"{CHAIN_GE_PROMPTS} texts sampled from the chain's first records' prompts, the same prompts at every k "
             "(n/a: a checkpoint stored before these were measured).")
    doc.table(Table(["method", "edit lang", "k", *(Column(k, F1) for k in ("S", "ES", "PS", "NS")),
                     Column("unrelated NLL", F2), Column("‖ΔW‖/‖W‖", F3), Column("GE", F1)],
                    [[m, lang, p["k"], p["S"], p["ES"], p["PS"], p["NS"], value(p, "nll", lang),
                      p.get("weight_ratio"), p.get("GE")]
                     for m, d in res["sequential"].items() for lang, pts in d.items() for p in pts]))
    if fig:
        doc.figure(fig, "S over the records edited so far, the unrelated-text NLL and how far the weights "
                   "moved, against the number of kept edits")


__all__ = ["chain_state", "figure", "section", "value"]
