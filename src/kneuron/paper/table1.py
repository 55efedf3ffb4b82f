"""Testing located neurons: suppress or enhance them and measure the answer probability on the fact
itself (related) and on a fact of another relation (unrelated) — the paper's Table 1 metric."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from kneuron.facts import Fact
from kneuron.intervene import enhance, suppress
from kneuron.metrics import Table1, relative_change, table1
from kneuron.models.load import ModelHandle
from kneuron.facts.templates import queries_for
from kneuron.probe import answer_prob
from kneuron.runs.reopen import RunContents, check_model, load_run   # load_run and RunContents live in runs.reopen

OPS = {"suppress": lambda h, n: suppress(h, n), "enhance": lambda h, n: enhance(h, n, factor=2.0)}


def unrelated_partner(facts: list[Fact], seed: int = 42) -> tuple[list[int], int]:
    """For each fact, the index of a fact of another relation (same language), drawn with ``seed``.
    Falls back to any other fact where no other relation exists; returns how often that happened."""
    rng, out, fallback = random.Random(seed), [], 0
    for i, f in enumerate(facts):
        pool = [j for j, g in enumerate(facts) if g.lang == f.lang and g.relation != f.relation]
        if not pool:
            pool = [j for j, g in enumerate(facts) if j != i] or [i]
            fallback += 1
        out.append(rng.choice(pool))
    return out, fallback


def first_prompt(handle: ModelHandle, f: Fact) -> tuple[str, str]:
    """The (prompt, target) of a fact's first template usable by the model."""
    q = queries_for(f, handle.kind, skip_invalid=True)[0]
    return q.prompt, q.target


def edit_effects(handle: ModelHandle, run: RunContents, ops=("suppress", "enhance"), seed: int = 42,
                 show_progress: bool = False) -> list[dict]:
    """Per fact: answer probability before/after each op, on the fact and on its unrelated partner."""
    check_model(handle, run)
    partner, _ = unrelated_partner(run.facts, seed)
    rows = []
    base = [answer_prob(handle, *first_prompt(handle, f)).prob for f in run.facts]
    iterator = range(len(run.facts))
    if show_progress:
        from rich.progress import track
        iterator = track(iterator, description="evaluating")
    for i in iterator:
        f, g = run.facts[i], run.facts[partner[i]]
        nrn = run.neurons.get(f.key, [])
        row = {"fact_id": f.id, "lang": f.lang, "relation": f.relation, "n_neurons": len(nrn),
               "unrelated_id": g.id, "unrelated_relation": g.relation, "p_before": base[i],
               "p_before_unrelated": base[partner[i]]}
        for op in ops:
            with OPS[op](handle, nrn):
                row[f"p_{op}"] = answer_prob(handle, *first_prompt(handle, f)).prob
                row[f"p_{op}_unrelated"] = answer_prob(handle, *first_prompt(handle, g)).prob
            row[f"delta_{op}"] = float(relative_change([row["p_before"]], [row[f"p_{op}"]])[0])
        rows.append(row)
    return rows


def evaluate(handle: ModelHandle, run_dir, facts_path=None, seed: int = 42, outlier_cut: bool = False,
             n_boot: int = 1000, show_progress: bool = False) -> tuple[Table1, dict]:
    """Table 1 for a run; writes evaluation.parquet (per fact) and evaluation.json into the run."""
    run = load_run(run_dir, facts_path)
    rows = edit_effects(handle, run, seed=seed, show_progress=show_progress)
    col = {k: [r[k] for r in rows] for k in rows[0]}
    t = table1(col["p_before"], col["p_suppress"], col["p_enhance"], col["p_before_unrelated"],
               col["p_suppress_unrelated"], col["p_enhance_unrelated"], outlier_cut=outlier_cut, n_boot=n_boot)
    _, fallback = unrelated_partner(run.facts, seed)
    extra = {"seed": seed, "outlier_cut": outlier_cut, "unrelated_same_relation": fallback,
             "facts_without_neurons": sum(r["n_neurons"] == 0 for r in rows)}
    pq.write_table(pa.Table.from_pylist(rows), Path(run_dir) / "evaluation.parquet")
    (Path(run_dir) / "evaluation.json").write_text(json.dumps({**t.to_json(), **extra}, indent=2, sort_keys=True))
    return t, extra
