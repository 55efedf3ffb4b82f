"""The stages before the methods run, each cached in the run directory: the unedited model's measurement
of every case, one localization for every KN method (with Dai et al.'s common-neuron filter), and ROME's
layer sweep. Their results make the ``BenchContext``."""
from __future__ import annotations

import random
import time

from kneuron.editing import EditError
from kneuron.editing.metrics import measure, record_scores, summarize
from kneuron.editing.records import Case
from kneuron.facts import Fact

from .context import BenchContext
from .progress import Progress
from .rows import CommonNeurons, FactNeurons, Measurement, Sweep, UneditedRow


def es_ps_ns(scores: list[dict]) -> dict:
    """ES, PS, NS, S and EM of a list of record scores."""
    s = summarize(scores)
    return {k: s[k] for k in ("ES", "PS", "NS", "S", "EM")}


def unedited(ctx: BenchContext, cases: list[Case]) -> dict[int, UneditedRow]:
    """Each case measured in every language by the unedited model (generation prompts included)."""
    out = {}
    with Progress(ctx.show, "unedited", len(cases)) as step:
        for c in cases:
            row = ctx.disk.unedited(c.case_id)
            if row is None:
                recs = list(c.records.values())
                ms = measure(ctx.handle, recs, generation=True, seed=ctx.cfg.seed + c.case_id)
                row = UneditedRow(c.case_id, {r.lang: Measurement(m) for r, m in zip(recs, ms)})
                ctx.disk.put_unedited(row)
            out[c.case_id] = row
            step()
    return out


def localize(ctx: BenchContext, cases: list[Case], pool: list[Fact]) -> tuple[dict, dict]:
    """Each record's knowledge neurons and its relation's common neurons (Dai et al.'s filter: found for
    more than 10 % of ``common_facts`` facts of the relation, the records' own first; with fewer than 10
    facts, for more than one): ({(fact id, lang): FactNeurons}, {(relation, lang): CommonNeurons})."""
    from kneuron.editing.localize import common_neurons, fact_neurons
    cfg, h = ctx.cfg, ctx.handle
    by_key = {(f.id, f.lang): f for f in pool}
    for c in cases:
        for r in c.records.values():
            by_key[(r.fact.id, r.lang)] = r.fact
    rel_facts: dict = {}
    for c in cases:
        for lang, r in c.records.items():
            rel_facts.setdefault((c.relation, lang), [])
            if r.fact.id not in rel_facts[(c.relation, lang)]:
                rel_facts[(c.relation, lang)].append(r.fact.id)
    for (rel, lang), ids in rel_facts.items():
        more = sorted(f.id for f in pool if f.relation == rel and f.lang == lang and f.id not in ids)
        random.Random(f"{cfg.seed}:{rel}:common").shuffle(more)
        ids += more[: max(0, cfg.common_facts - len(ids))]
    todo = {(fid, lang) for (rel, lang), ids in rel_facts.items() for fid in ids}
    neurons: dict = {}
    with Progress(ctx.show, "localizing", len(todo)) as step:
        for fid, lang in sorted(todo):
            row = ctx.disk.neurons(fid, lang)
            if row is None:
                t0 = time.perf_counter()
                try:
                    ns = fact_neurons(h, by_key[(fid, lang)])
                except EditError as e:
                    ctx.warn(f"no neurons for fact {fid} ({lang}): {e}")
                    ns = []
                row = FactNeurons.from_json({"neurons": [[int(a), int(b)] for a, b in ns],
                                             "seconds": time.perf_counter() - t0})
                ctx.disk.put_neurons(fid, lang, row)
            neurons[(fid, lang)] = row
            step()
    common = {}
    for (rel, lang), ids in rel_facts.items():
        sets = [neurons[(fid, lang)].neurons for fid in ids]
        share = max(0.1, 1 / len(sets))       # fewer than 10 facts: a neuron of one fact alone is not common
        common[(rel, lang)] = CommonNeurons(ids, share, sorted(common_neurons(sets, share=share)))
    ctx.disk.put_common({f"{rel}.{lang}": v for (rel, lang), v in common.items()})
    return neurons, common


def rome_layer(ctx: BenchContext) -> tuple[int, Sweep | None]:
    """The layer ROME edits: the user's (``rome.layer``), else the best S of a sweep over at most 8 layers
    spread over the depth and ROME's default, on the first ``sweep_cases`` cases in the first language."""
    cfg, h, cases = ctx.cfg, ctx.handle, ctx.cases
    opts = cfg.options("rome")
    if "layer" in opts:
        return int(opts["layer"]), None
    sweep = ctx.disk.sweep()
    if sweep is not None:
        return sweep.best, sweep
    n = h.n_layers
    if cfg.rome_layers:
        layers = list(cfg.rome_layers)
    else:
        from kneuron.editing.rome import default_layer
        layers = sorted({round(i * (n - 1) / 7) for i in range(8)} | {default_layer(h)})
    lang, sub = cases[0].langs[0], cases[: max(1, cfg.sweep_cases)]
    rows = []
    t0 = time.perf_counter()
    if opts.get("stats", "auto") == "auto":                # every layer's C in one pass, cached on disk
        from kneuron.editing.stats import second_moments
        second_moments(h, layers, corpus=opts.get("corpus"), progress=ctx.show)
    with Progress(ctx.show, "ROME layer sweep", len(layers) * len(sub)) as step:
        for layer in layers:
            scores = []
            for c in sub:
                e = ctx.edit("rome", c, lang, layer=layer)
                with e:
                    m = measure(h, [c.records[lang]], generation=False)[0]
                scores.append(record_scores(m, ctx.unedited(c)[lang]))
                step()
            rows.append({"layer": layer, **es_ps_ns(scores)})
    rank = lambda x: tuple(-1e9 if x.get(k) is None else x[k] for k in ("S", "ES", "PS", "EM"))  # noqa: E731
    best = max(rows, key=rank)["layer"]
    sweep = Sweep(lang, [c.case_id for c in sub], rows, best, time.perf_counter() - t0)
    ctx.disk.put_sweep(sweep)
    return best, sweep


def rome_stats(ctx: BenchContext, layer: int):
    """The unedited model's second moment C at ROME's layer (``stats="auto"``), else None (ROME's own)."""
    opts = ctx.cfg.options("rome")
    if opts.get("stats", "auto") != "auto":
        return None
    from kneuron.editing.stats import second_moment
    return second_moment(ctx.handle, layer, corpus=opts.get("corpus"), progress=ctx.show)


__all__ = ["es_ps_ns", "localize", "rome_layer", "rome_stats", "unedited"]
