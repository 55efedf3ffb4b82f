"""The paper's Figures 3-5 for a `reproduce` result: where the knowledge neurons (KN, per method and
language), the language-independent ones (LIKN) and the degenerate ones (DKN, per language) sit over the
layers, as PNGs and as a table of counts; and how many LIKN each fact has.

What a histogram counts: one (fact, neuron) pair per entry. A neuron that is a KN of three facts counts
three times (as in the paper's code, count / total x 100 over facts); a DKN is counted once per fact
however many of that fact's groups it is in; a LIKN is a neuron in both languages' KN sets of one fact.
"""
from __future__ import annotations

from pathlib import Path

from kneuron.report.table import Table, number

TOP_COUNT = 10          # the LIKN-per-fact table lists 0 .. 9, then "10 or more" (the JSON keeps every count)
COUNTING = ("Each histogram counts (fact, neuron) pairs: a neuron that is a KN of several facts counts once per "
            "fact (the paper's code: count / total × 100); a DKN counts once per fact, however many of the fact's "
            "groups hold it; the LIKN are one series, shared by both languages by definition.")


def series(res: dict) -> list[tuple[str, str, list[int]]]:
    """(kind, label, per-layer counts) of every histogram: KN per method and language, LIKN, DKN per language."""
    lay = res["layers"]
    out = [("kn", f"KN {'AMIG' if m == 'amig' else 'B-KN'} {lang}", c) for m, d in lay["kn"].items()
           for lang, c in d.items()]
    if lay.get("likn"):
        langs = (res.get("table2") or {}).get("langs") or ["en", "zh"]
        out.append(("likn", f"LIKN ({' ∩ '.join(langs)})", lay["likn"]))
    return out + [("dkn", f"DKN {lang}", c) for lang, c in lay["dkn"].items()]


def likn_counts(res: dict) -> dict[int, int] | None:
    """Facts with 0, 1, 2, ... LIKN (None when the result has no Table 2 or predates the count)."""
    lk = (res.get("table2") or {}).get("likn") or {}
    by = lk.get("facts_by_count")
    return {int(k): v for k, v in by.items()} if by is not None else None


def _share(counts: list[int]) -> list[float]:
    t = sum(counts)
    return [100.0 * c / t if t else 0.0 for c in counts]


CAPTIONS = {"kn": "Figure 3: share of the KNs per layer, per method and language",
            "likn": "Figure 3: share of the LIKN per layer, and how many LIKN each fact has",
            "dkn": "Figure 4: share of the DKNs per layer, per language"}


def figures(res: dict, out: Path) -> list[tuple[str, str]]:
    """fig-kn.png, fig-likn.png, fig-dkn.png (those with data): (path, caption) per figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    model = res["meta"]["model"]["name"]
    figs = []
    for kind in ("kn", "likn", "dkn"):
        ps = [(label, c) for k, label, c in series(res) if k == kind]
        hist = likn_counts(res) if kind == "likn" else None
        if not ps:
            continue
        n = len(ps) + (hist is not None)
        fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 2.8), squeeze=False)
        for ax, (label, c) in zip(axes[0], ps):
            ax.bar(range(len(c)), _share(c), color="#4a7ab5")
            ax.set_title(f"{label}  (n = {sum(c)})", fontsize=9)
            ax.set_xlabel("layer")
            ax.set_ylabel("% of the pairs")
        if hist is not None:
            ax = axes[0][-1]
            ax.bar(list(hist), list(hist.values()), color="#b5834a")
            ax.set_title(f"LIKN per fact  ({sum(hist.values())} facts)", fontsize=9)
            ax.set_xlabel("LIKN of the fact")
            ax.set_ylabel("facts")
        fig.suptitle(f"{model}: {kind.upper()} per layer", fontsize=10)
        fig.tight_layout()
        path = out / f"fig-{kind}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        counted = ", ".join(f"{label} {sum(c)}" for label, c in ps)
        figs.append((str(path), f"{CAPTIONS[kind]} ({model}; (fact, neuron) pairs counted: {counted})"))
    return figs


def layer_table(res: dict) -> Table:
    """Counts (and % of the series) per layer, one column per histogram, the totals last."""
    ss = series(res)
    n_layers = res["meta"]["model"]["n_layers"]
    cell = lambda c, i: f"{c[i]} ({100 * c[i] / sum(c):.0f}%)" if sum(c) else "0"  # noqa: E731
    t = Table(["layer", *(label for _, label, _ in ss)], title="Per layer: (fact, neuron) pairs (share of the series)")
    for i in range(n_layers):
        t.add(str(i), *(cell(c, i) for _, _, c in ss))
    return t.add("all", *(str(sum(c)) for _, _, c in ss))


def likn_table(res: dict) -> Table | None:
    """How many facts have 0, 1, 2, ... LIKN, with the mean (None without Table 2's counts)."""
    hist = likn_counts(res)
    if hist is None:
        return None
    n = sum(hist.values())
    mean = sum(k * v for k, v in hist.items()) / n if n else None
    t = Table(["LIKN of a fact", "facts", "share"], title=f"LIKN per fact: {n} facts, mean {number(2)(mean)}")
    rows = [(str(k), v) for k, v in hist.items() if k < TOP_COUNT]
    if max(hist) >= TOP_COUNT:
        rows.append((f"{TOP_COUNT} or more", sum(v for k, v in hist.items() if k >= TOP_COUNT)))
    for k, v in rows:
        t.add(k, v, f"{v / n:.0%}" if n else "n/a")
    return t


__all__ = ["COUNTING", "figures", "layer_table", "likn_counts", "likn_table", "series"]
