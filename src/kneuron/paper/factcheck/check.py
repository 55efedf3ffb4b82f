"""The whole check of one language: plan, score the items, read the hidden states, evaluate. In memory
(``fact_check_beside``: the model's scores passed in as functions) or over a `locate` run whose DKNs were
found (``factcheck_from_run``: its facts, its knowledge neurons, its model; the item scores kept in the
run as they are found). ``run_langs`` and ``load_dkn``: the run's languages and DKN rows, checked.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from kneuron.errors import ConfigError
from kneuron.facts import Fact
from kneuron.models.load import ModelHandle
from kneuron.paper.dkn import DKNRun
from kneuron.paper.factcheck.evaluation import evaluate
from kneuron.paper.factcheck.items import Rows, item_key, item_records, score_items
from kneuron.paper.factcheck.plan import Plan, plan_check
from kneuron.paper.factcheck.probe import L2, hidden_states
from kneuron.paper.factcheck.results import FactCheckBaselines, SplitResult, stem
from kneuron.paper.table3 import T_GRID, Item, model_scorers, wrong_objects
from kneuron.report.progress import progress


def fact_check_beside(facts: list[Fact], dkn_groups: dict, kn_groups: dict, wrong: dict, attr, prob,
                      features: Callable[[list[Item]], torch.Tensor], t_grid=T_GRID, seed: int = 42,
                      n_boot: int = 1000, l2: float = L2) -> tuple[Plan, dict[str, SplitResult | None]]:
    """The check of one language in memory (``attr``, ``prob``: ``table3.model_scorers``; ``features``:
    the items' [n, layers, d] hidden states). Returns the plan and each split's result."""
    plan = plan_check(facts, dkn_groups, kn_groups, wrong, t_grid, seed)
    rows = Rows()
    score_items(plan.scored(), attr, prob, plan.sets, rows)
    return plan, evaluate(plan, rows, features(plan.items), n_boot, seed, l2)


# ----------------------------------------------------------------------------- over a run

def run_langs(facts: list[Fact], langs: Sequence[str] | None, run_dir) -> list[str]:
    """``langs`` (default: the run's own, in run order), each checked to be in the run (ConfigError)."""
    have = list(dict.fromkeys(f.lang for f in facts))
    for lang in langs or ():
        if lang not in have:
            raise ConfigError(f"language {lang!r} is not in run {run_dir} (its languages: {', '.join(have)})")
    return list(langs) if langs else have


def _remembered(attr: Callable[[Item], torch.Tensor], memo: dict, settings: tuple) -> Callable[[Item], torch.Tensor]:
    """``attr`` with each item's result kept in ``memo`` under (``settings``, the item's key)."""
    def remembered(it: Item) -> torch.Tensor:
        key = (settings, item_key(it))
        if key not in memo:
            memo[key] = attr(it)
        return memo[key]
    return remembered


def load_dkn(run_dir, rule: str = "pairs") -> DKNRun:
    """The run's DKN rows of ``rule`` (``DKNRun.load``); a RunStoreError, one line, when that rule has not run
    on it."""
    from kneuron.paper.dkn import files
    from kneuron.runs.store import RunStoreError
    try:
        return DKNRun.load(run_dir, rule)
    except RunStoreError:
        flag = "" if rule == "pairs" else f" --method {rule}"
        raise RunStoreError(f"{run_dir}: no DKN rows ({files(rule)[1]}): find them first with `kneuron dkn --run "
                            f"{run_dir}{flag}`") from None


def factcheck_from_run(handle: ModelHandle, run_dir, lang: str, dkn: DKNRun | list[dict], method: str | None = None,
                       steps: int | None = None, method_options: dict | None = None, seed: int = 42,
                       n_boot: int = 1000, l2: float = L2, resume: bool = True,
                       show_progress: bool = False, memo: dict | None = None) -> FactCheckBaselines:
    """The check over one language of a `locate` run whose DKNs were found: its facts, its knowledge
    neurons, ``dkn`` (``dkn_from_run``'s result or its rows). ``method`` / ``steps``: the attribution
    (default: the run's, with its options). Item scores go to <run>/factcheck-<lang>.jsonl as they are found (``resume``:
    keep those there); the result is not written (``.save(directory)`` does that). ``memo``: a dict shared by
    the checks of one language by several DKN rules, so that an item is attributed once (the items are the
    same: the rules change only the neuron sets it is averaged over); it holds each item's scores and hidden
    states, keyed by the attribution's settings too."""
    from kneuron.runs.reopen import check_model, load_run
    from kneuron.runs.store import RunStoreError
    run = load_run(run_dir)
    check_model(handle, run)
    run_langs(run.facts, [lang], run_dir)
    rows = [r for r in (dkn.rows if isinstance(dkn, DKNRun) else dkn) if r["lang"] == lang]
    if not rows:
        raise RunStoreError(f"{run_dir}: no DKN rows for language {lang!r}: run `kneuron dkn --run {run_dir}`")
    rules = {r.get("method", "pairs") for r in rows}
    if len(rules) > 1:
        raise RunStoreError(f"{run_dir}: DKN rows of several rules ({', '.join(sorted(rules))}): pass one rule's rows")
    rule = rules.pop()
    meta = run.store.meta
    own = method is None or method == meta.get("method")          # the run's options fit the run's method only
    method, steps = method or meta.get("method", "amig"), steps or meta.get("steps", 20)
    opts = method_options if method_options is not None else (meta.get("method_options") or {} if own else {})
    facts = [f for f in run.facts if f.lang == lang]
    dkn_groups = {(r["fact_id"], r["lang"]): r["groups"] for r in rows}
    kn_groups = {f.key: [run.neurons.get(f.key, [])] for f in facts}
    plan = plan_check(facts, dkn_groups, kn_groups, wrong_objects(handle, facts, seed), seed=seed)
    conf = {"method": method, "steps": steps, "method_options": opts, "seed": seed, "plan": plan.fingerprint()}
    rec = item_records(Path(run_dir) / f"{stem(rule)}-{lang}.jsonl", conf, fresh=not resume)
    attr, prob = model_scorers(handle, method, steps, **opts)
    if memo is not None:
        attr = _remembered(attr, memo, ("attr", method, steps, repr(sorted(opts.items()))))
    todo = [it for it in plan.scored() if item_key(it) not in rec]
    with progress(f"fact-check scores ({lang})", len(todo), show=show_progress) as advance:
        score_items(todo, attr, prob, plan.sets, rec, advance)
    states = ("states", lang, tuple(item_key(it) for it in plan.items))
    feats = memo.get(states) if memo is not None else None
    if feats is None:
        with progress(f"hidden states ({lang})", len(plan.items), show=show_progress) as advance:
            feats = hidden_states(handle, plan.items, advance)
        if memo is not None:
            memo[states] = feats
    return FactCheckBaselines(lang, method, steps, seed, n_boot, evaluate(plan, rec, feats, n_boot, seed, l2),
                              plan.notes, rule)
