"""The ground-truth benchmark run (``kneuron bench localization --truth injected``): every method on every
difficulty's truths (``kneuron.bench.ground_truth``) for each seed, resumable, with the learned mask's L1
chosen on seeds of its own and the table that says which methods the truth tells apart.

* **Resumable.** One row per (seed, difficulty, fact, method) in ``out``/rows.jsonl, committed as it is
  scored; a resumed run re-injects a (seed, difficulty) only while one of its rows is missing (the
  injection is seeded, so it draws the same facts and sets) and scores only what is missing. A (seed,
  difficulty) with no truth to score (no fact learnt) is written to skipped.json with the reason and not
  injected again. The settings are the file's first line: a run with others is refused in one line.
* **Held-out tuning.** The mask's L1 is picked from ``MASK_L1_GRID`` by mean recall at the middle budget on
  the "injected" truths of ``tune_seeds`` (disjoint from the reported seeds; refused otherwise), its rows
  in tune.jsonl, the choice in the summary; no other method has a tuned setting.
* **Steps.** A method named ``ig@auto`` / ``amig@auto`` runs with ``steps="auto"`` (nodes added until the
  completeness residual is under its tolerance) beside the fixed ``steps`` of plain ``ig`` / ``amig``.
* **Separation.** Per difficulty, the pairs of methods whose recall intervals at the largest budget do not
  overlap, and AMIG minus IG on the same facts with a paired 95 % interval (the paper's claim is that
  AMIG localises better).
"""
from __future__ import annotations

import math
import statistics
import tempfile
from itertools import combinations
from pathlib import Path

import numpy as np

from kneuron.attribution.mask import LearnedMask
from kneuron.attribution.methods import make_method
from kneuron.bench.ground_truth import BUDGETS, DIFFICULTIES, METHODS, score_method, truths
from kneuron.errors import ConfigError
from kneuron.facts import Fact
from kneuron.models.load import ModelHandle
from kneuron.report.stats import ci
from kneuron.store.atomic import read_json, write_json, write_text
from kneuron.store.records import JsonLines

MASK_L1_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
MIN_CI_N = 3                     # fewer facts than this: a mean without an interval (and never "separated")
KEY = ("seed", "difficulty", "fact_id", "method")
SCORES = ("seconds", "median_rank", "fact_drop", "control_change", "kn_f1", "likn_f1", "dkn_f1", "dkn_spans",
          "dkn_clusters_f1", "dkn_clusters_spans")


def _interval(xs: list) -> dict:
    xs = [float(x) for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return {"mean": None, "ci": None}
    iv = ci(np.array(xs, dtype=float)) if len(xs) >= MIN_CI_N else None   # a resample of 1-2 facts is no interval
    return {"mean": float(np.mean(xs)), "ci": None if iv is None else [float(iv[0]), float(iv[1])]}


def _score_all(rec: JsonLines, handle, facts, seed: int, difficulty: str, methods: dict, opts: dict,
               progress) -> dict | None:
    """Score every method on the (seed, difficulty) truths not yet in ``rec``; None when none suits."""
    done = {(r["fact_id"], r["method"]) for r in rec.rows.values() if r["seed"] == seed and r["difficulty"] == difficulty}
    facts_done = {f for f, _ in done}
    if facts_done and all((f, m) in done for f in facts_done for m in methods):
        return None                                               # complete: no need to inject again
    try:
        ts = truths(handle, facts, difficulty, opts["k"], seed, per_set=opts["per_set"], **opts["inject"])
    except ValueError as e:
        return {"skipped": str(e)}
    for t in ts:
        for name, method in methods.items():
            if (t.fact_id, name) in done:
                continue
            row = {"seed": seed, "difficulty": difficulty, "fact_id": t.fact_id, "method": name,
                   "truth": [list(n) for n in t.neurons], **score_method(t, *method, opts["budgets"])}
            rec.put(row)
            if progress:
                b = opts["budgets"][-1]
                progress(f"seed {seed} {difficulty} {t.fact_id} {name}: recall@{b:g} {row[f'recall@{b:g}']:.2f}")
    return None


def _tune_mask(handle, facts, out: Path, tune_seeds, opts: dict, fresh: bool, progress) -> tuple[float, dict]:
    """The mask's L1 with the best mean recall at the middle budget on the tune seeds' "injected" truths."""
    rec = JsonLines(out / "tune.jsonl", key=KEY, need=("recall@" + f"{opts['budgets'][len(opts['budgets']) // 2]:g}",),
                    config={**_config(opts), "grid": list(MASK_L1_GRID), "tune_seeds": list(tune_seeds)}, fresh=fresh,
                    noun="tuning row", hint="start over with --fresh, or use another --out")
    grid = {f"mask-l1={l1:g}": (LearnedMask(l1=l1), opts["steps"]) for l1 in MASK_L1_GRID}
    for seed in tune_seeds:
        _score_all(rec, handle, facts, seed, "injected", grid, opts, progress)
    b = f"recall@{opts['budgets'][len(opts['budgets']) // 2]:g}"
    by = {l1: [r[b] for r in rec.rows.values() if r["method"] == f"mask-l1={l1:g}"] for l1 in MASK_L1_GRID}
    mean = {l1: statistics.mean(v) if v else -1.0 for l1, v in by.items()}
    best = max(MASK_L1_GRID, key=lambda l1: (mean[l1], -l1))
    return best, {"by": b, "seeds": list(tune_seeds), "mean": {f"{k:g}": v for k, v in mean.items()}, "l1": best}


def resolve(name: str, steps: int | str, chosen: dict):
    """A method name of the run -> (what ``attribute`` takes as method, its steps): "ig@auto" is ig with
    steps="auto"; a tuned method its tuned object."""
    base, _, at = name.partition("@")
    if at and (at != "auto" or base not in ("ig", "amig")):
        raise ConfigError(f"unknown method {name!r}: only ig@auto and amig@auto take a steps suffix")
    return chosen.get(base, base), ("auto" if at else steps)


def _config(opts: dict) -> dict:
    return {"model": opts["model"], "k": opts["k"], "per_set": opts["per_set"], "steps": opts["steps"],
            "budgets": list(opts["budgets"]), "inject": opts["inject"]}


def summarize(rows: list[dict], difficulties, methods, budgets) -> dict:
    """Per difficulty and method: n and every score's mean with its 95 % interval."""
    keys = [*SCORES, *(f"{w}@{b:g}" for b in budgets for w in ("recall", "precision", "mass"))]
    out: dict = {}
    for d in difficulties:
        for m in methods:
            mine = [r for r in rows if r["difficulty"] == d and r["method"] == m]
            if mine:
                out.setdefault(d, {})[m] = {"n": len(mine), **{x: _interval([r.get(x) for r in mine]) for x in keys}}
    return out


def separation(rows: list[dict], summary: dict, budget: float) -> dict:
    """Per difficulty: the method pairs whose recall@budget intervals do not overlap (better first), and
    AMIG - IG on the same facts (paired bootstrap interval), where both ran."""
    key, out = f"recall@{budget:g}", {}
    for d, by in summary.items():
        pairs = []
        for a, b in combinations(by, 2):
            ia, ib = by[a][key]["ci"], by[b][key]["ci"]
            if ia and ib and (ia[0] > ib[1] or ib[0] > ia[1]):
                pairs.append([a, b] if ia[0] > ib[1] else [b, a])
        entry: dict = {"separated": pairs}
        got = {(r["seed"], r["fact_id"], r["method"]): r[key] for r in rows if r["difficulty"] == d}
        both = [(got[s, f, "amig"], got[s, f, "ig"]) for (s, f, m) in got if m == "ig" and (s, f, "amig") in got]
        if both:
            x, y = (np.array(v, dtype=float) for v in zip(*both))
            iv = ci((x, y), lambda p, q, axis=-1: np.mean(p - q, axis=axis)) if len(both) >= MIN_CI_N else None
            entry["amig_minus_ig"] = {"n": len(both), "mean": float(np.mean(x - y)), "ci": list(iv) if iv else None}
        out[d] = entry
    return out


def _cell(v: dict | None) -> str:
    if not v or v["mean"] is None:
        return "–"
    return f"{v['mean']:.2f}" + (f" [{v['ci'][0]:.2f}, {v['ci'][1]:.2f}]" if v["ci"] else "")


def report_md(res: dict) -> str:
    """The table method x difficulty (recall at each budget, Module 1-3 recovery, deletion damage, s/fact,
    means with 95 % intervals over the facts), the separated pairs and AMIG - IG, as markdown."""
    b = res["budgets"]
    cols = [*(f"recall@{x:g}" for x in b), f"mass@{b[-1]:g}", "median_rank", "kn_f1", "likn_f1", "dkn_f1", "dkn_spans",
            "dkn_clusters_f1", "dkn_clusters_spans", "fact_drop", "control_change", "seconds"]
    tuned = res["mask_tuning"]
    lines = [f"# Ground truth: {res['model']}", "",
             f"{res['k']} facts a difficulty and seed, {res['per_set']} neurons a trained set, of "
             f"{res['n_neurons_total']:,} neurons; seeds {', '.join(map(str, res['seeds']))}; {res['steps']} steps "
             "(ig, amig); recall at a budget = share of the truth among the top budget x all neurons; mass = the "
             "share-weighted recall (of the log p the truth's neurons each carry, the part found); dkn_* = Module 3 by "
             "the pairs rule, dkn_clusters_* by the clusters rule, on a degenerate fact's two sets. "
             + (f"The mask's L1 = {tuned['l1']:g}, chosen on seeds {', '.join(map(str, tuned['seeds']))} by mean "
                f"{tuned['by']} ({', '.join(f'{k}: {v:.2f}' for k, v in tuned['mean'].items())})."
                if tuned else "The mask's L1 is its default (not tuned)."), "",
             "| difficulty | method | n | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 3)]
    for d, by in res["summary"].items():
        for m, v in by.items():
            lines.append(f"| {d} | {m} | {v['n']} | " + " | ".join(_cell(v.get(c)) for c in cols) + " |")
    lines += ["", f"## Which methods the truth tells apart (recall@{b[-1]:g}, intervals disjoint)", ""]
    for d, e in res["separation"].items():
        pairs = ", ".join(f"{a} > {c}" for a, c in e["separated"]) or "none"
        amig = e.get("amig_minus_ig")
        extra = (f"; AMIG - IG {amig['mean']:+.2f}" + (f" [{amig['ci'][0]:+.2f}, {amig['ci'][1]:+.2f}]" if amig["ci"]
                                                         else "") + f" over {amig['n']} facts") if amig else ""
        lines.append(f"- {d}: {pairs}{extra}")
    for d, why in res["skipped"].items():
        lines.append(f"- {d}: skipped ({why})")
    return "\n".join(lines) + "\n"


def ground_truth_bench(handle: ModelHandle, facts: list[Fact], *, difficulties=DIFFICULTIES, methods=METHODS,
                       seeds=(0,), tune_seeds=(), k: int = 4, per_set: int = 8, steps: int | str = 20,
                       budgets=BUDGETS, out=None, fresh: bool = False, progress=None, **inject_options) -> dict:
    """Every method on every difficulty's truths for each seed (see the module doc); with ``out``, resumable
    and written there (rows.jsonl, tune.jsonl, summary.json). The mask runs with L1 tuned on
    ``tune_seeds`` when given, else its default."""
    if set(seeds) & set(tune_seeds):
        raise ConfigError(f"the tune seeds ({', '.join(map(str, sorted(set(seeds) & set(tune_seeds))))}) are also "
                          "reported seeds: tune on seeds of their own")
    for m in methods:
        make_method(resolve(m, steps, {})[0])                     # an unknown name: one line, before any work
    tmp = tempfile.TemporaryDirectory() if out is None else None
    where = Path(tmp.name if tmp else out)
    where.mkdir(parents=True, exist_ok=True)
    opts = {"model": handle.name, "k": k, "per_set": per_set, "steps": steps, "budgets": list(budgets),
            "inject": dict(inject_options)}
    try:
        chosen, tuning = {}, None
        if "mask" in methods and tune_seeds:
            l1, tuning = _tune_mask(handle, facts, where, tune_seeds, opts, fresh, progress)
            chosen["mask"] = LearnedMask(l1=l1)
        rec = JsonLines(where / "rows.jsonl", key=KEY, need=tuple(f"recall@{b:g}" for b in budgets),
                        config={**_config(opts), "methods": list(methods), "mask_l1": tuning and tuning["l1"]},
                        fresh=fresh, noun="row", hint="start over with --fresh, or use another --out")
        marks = where / "skipped.json"         # (seed, difficulty)s without a truth: not injected again
        if fresh:
            marks.unlink(missing_ok=True)
        skipped = read_json(marks, then="its draws are injected again") or {}
        for seed in seeds:
            for d in difficulties:
                label = f"{d} (seed {seed})"
                if label in skipped:
                    continue
                got = _score_all(rec, handle, facts, seed, d, {m: resolve(m, steps, chosen) for m in methods}, opts,
                                 progress)
                if got:
                    skipped[label] = got["skipped"]
                    write_json(marks, skipped, indent=1)
        skipped = {x: why for x, why in skipped.items() if any(x == f"{d} (seed {s})" for d in difficulties
                                                               for s in seeds)}
        rows = [r for r in rec.rows.values() if r["seed"] in seeds]
        summary = summarize(rows, difficulties, methods, budgets)
        res = {"model": handle.name, "n_neurons_total": handle.n_layers * handle.n_neurons, "seeds": list(seeds),
               "tune_seeds": list(tune_seeds), "mask_tuning": tuning, "k": k, "per_set": per_set, "steps": steps,
               "budgets": list(budgets), "methods": list(methods), "summary": summary,
               "separation": separation(rows, summary, budgets[-1]), "rows": rows, "skipped": skipped}
        if out is not None:
            write_json(where / "summary.json", {x: v for x, v in res.items() if x != "rows"}, indent=1)
            write_text(where / "report.md", report_md(res))
        return res
    finally:
        if tmp:
            tmp.cleanup()


__all__ = ["MASK_L1_GRID", "ground_truth_bench", "report_md", "resolve", "separation", "summarize"]
