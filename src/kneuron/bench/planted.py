"""Localization scored against a planted ground truth.

Counterfactual facts (``kneuron.plant.counterfactuals``) are planted as new neurons of one layer
(``kneuron.plant``); each attribution method then scores every neuron of every layer for each planted
fact, and we report the planted neuron's rank (1 = best), recall@1/@5 and the median rank.
"""
from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import asdict

import torch

from kneuron.attribution import attribute
from kneuron.attribution.local import Random
from kneuron.facts import Fact
from kneuron.models.load import ModelHandle
from kneuron.organisms import organism_facts

from kneuron.plant.counterfactuals import plant_counterfactuals, plant_fact_counterfactuals


# ---------------------------------------------------------------- the benchmark
def rank_of(scores: torch.Tensor, neuron: tuple[int, int]) -> int:
    """1 = best, among all neurons of all layers; ties count against the neuron."""
    return int((scores >= scores[neuron]).sum())


def _method_scores(handle: ModelHandle, prompt: str, target: str, method: str, steps: int | str,
                   seed: int) -> torch.Tensor:
    m = Random(seed=seed) if method == "random" else method        # the random baseline, seeded by the run
    return attribute(handle, prompt, target, method=m, steps=steps).scores


def _summary(ranks: list[int]) -> dict:
    n = len(ranks)
    return {"recall@1": sum(r <= 1 for r in ranks) / n, "recall@5": sum(r <= 5 for r in ranks) / n,
            "median_rank": statistics.median(ranks), "ranks": ranks}


def localization_bench(handle: ModelHandle, k: int = 5, layer: int | None = None, steps: int = 20,
                       methods: tuple[str, ...] = ("ig", "amig", "random"), seed: int = 0,
                       progress=None, facts: list[Fact] | None = None) -> dict:
    """Plant k counterfactual facts + a degenerate pair + a shared neuron, localize each with every
    method, and score the planted neurons' ranks. A fact's rank is its best neuron's on its prompt.

    ``facts``: facts the model knows; the planted facts, controls and background are drawn from them
    (default: the training facts of a bundled organism, else the built-in English prompts)."""
    t0 = time.perf_counter()
    if facts is None:
        facts = organism_facts(handle)
    cfs = None
    if facts is None:
        planted = plant_counterfactuals(handle, k, layer, seed=seed)
    else:
        planted, cfs, n_bg = plant_fact_counterfactuals(handle, facts, k, layer, seed=seed)
    h = planted.handle
    rows, pairs, shared, by_lang = [], [], [], defaultdict(lambda: defaultdict(list))
    for j, f in enumerate(planted.facts):
        cf = cfs[j] if cfs is not None else None
        prompts = (f.spec.prompt, *f.spec.extra_prompts)
        langs = [cf.fact.lang] + ([cf.extra.lang] if cf.extra is not None else []) if cf else None
        ranks, top = {}, {}
        for m in methods:
            per_prompt = []
            for p in prompts:
                s = _method_scores(h, p, f.spec.new_object, m, steps, seed)
                per_prompt.append([rank_of(s, n) for n in f.neurons])
                top.setdefault(m, []).append([(l, i) for l, i, _ in _top(s, 3)])
                if progress:
                    progress(f"{m}: {p!r} -> {per_prompt[-1]}")
            ranks[m] = per_prompt
            if langs:
                for lang, r in zip(langs, per_prompt):
                    by_lang[lang][m].append(min(r))
        row = {"prompt": f.spec.prompt, "new_object": f.spec.new_object, "kind": f.spec.kind,
               "neurons": f.neurons, "p_before": f.p_before, "p_after": f.p_after, "top1": f.top1,
               "rank": {m: min(r[0]) for m, r in ranks.items()}, "ranks": ranks, "top3": top}
        if cf:
            row.update({"fact_id": cf.fact.id, "relation": cf.fact.relation, "lang": cf.fact.lang,
                        "object": cf.fact.object, "wrong_object": cf.wrong_object, "first_token": cf.first_token})
        rows.append(row)
        if f.spec.kind == "pair":
            pairs.append({"prompt": f.spec.prompt, "p_alone": f.p_alone, "top1_alone": f.top1_alone,
                          "p_both_suppressed": f.p_both_suppressed, "top1_both_suppressed": f.top1_both_suppressed,
                          "ranks": {m: r[0] for m, r in ranks.items()},
                          "both_top5": {m: max(r[0]) <= 5 for m, r in ranks.items()}})
            if cf:
                pairs[-1]["lang"] = cf.fact.lang
        if f.spec.kind == "shared":
            shared.append({"prompts": list(prompts), "p_after": [c.p_after for c in f.prompts],
                           "top1": [c.is_top1 for c in f.prompts],
                           "ranks": {m: [r[0] for r in rs] for m, rs in ranks.items()},
                           "top1_in_all": {m: all(r[0] == 1 for r in rs) for m, rs in ranks.items()}})
            if cf:
                shared[-1].update({"langs": langs, "fact_id": cf.fact.id, "new_object": cf.new_object})
    out = {"model": handle.name, "layer": planted.layer, "n_planted": len(rows),
           "n_neurons_total": h.n_layers * h.n_neurons, "steps": steps, "seed": seed,
           "methods": {m: _summary([r["rank"][m] for r in rows]) for m in methods},
           "collateral": asdict(planted.collateral), "facts": rows, "pairs": pairs, "shared": shared,
           "paraphrases": [{"prompt": c.prompt, "new_object": f.spec.new_object, "p_before": c.p_before,
                            "p_after": c.p_after, "is_top1": c.is_top1} for f in planted.facts for c in f.paraphrases],
           "key_fit": planted.key_fit}
    if cfs is not None:
        # per language: the planted neuron's rank on every keyed prompt of that language
        # (singles and pair: their prompt; shared: each of its prompts)
        out["languages"] = ({lang: {"n": len(next(iter(d.values()))),
                                    **{m: {"recall@1": sum(r <= 1 for r in d[m]) / len(d[m]),
                                           "recall@5": sum(r <= 5 for r in d[m]) / len(d[m]),
                                           "median_rank": statistics.median(d[m])} for m in methods}}
                             for lang, d in sorted(by_lang.items())} if len(by_lang) > 1 else {})
        out["prompt_sets"] = {"known_facts": len(facts), "controls": planted.collateral.n_prompts, "background": n_bg,
                              "first_token_objects": sorted({c.fact.lang for c in cfs if c.first_token})}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _top(scores: torch.Tensor, k: int) -> list[tuple[int, int, float]]:
    v, i = scores.flatten().topk(k)
    n = scores.shape[1]
    return [(int(j) // n, int(j) % n, float(x)) for x, j in zip(v, i)]

