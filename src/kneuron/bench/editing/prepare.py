"""The stages before the methods run, each cached in the run directory: the unedited model's measurement
of every case and of the unrelated sentences (edit health), one localization for every KN method (with Dai
et al.'s common-neuron filter), and the layer sweeps (ROME's; ft-l's). Their results make the ``BenchContext``."""
from __future__ import annotations

import time

from kneuron.editing import EditError
from kneuron.editing.metrics import measure
from kneuron.editing.records import Case
from kneuron.editing.registry import method_class, method_for, option_names
from kneuron.facts import Fact

from kneuron.report.progress import progress

from .context import BenchContext
from .rows import CommonNeurons, FactNeurons, Measurement, Sweep, UneditedRow, Unrelated


def unedited(ctx: BenchContext, cases: list[Case]) -> dict[int, UneditedRow]:
    """Each case measured in every language by the unedited model (generation prompts included)."""
    out = {}
    with progress("unedited", len(cases), show=ctx.show) as step:
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


def unrelated(ctx: BenchContext) -> Unrelated:
    """The unedited model's NLL of the unrelated sentences (``editing.health``) in ``ctx.health_langs``,
    measured once per run (unrelated.json); one measured on other sentences or languages is measured again."""
    from kneuron.editing.health import unrelated_digest, unrelated_nll
    langs = ctx.health_langs
    row = ctx.disk.unrelated()
    if row is not None and row.current(langs):
        return row
    if row is not None:
        ctx.warn("unrelated.json was measured on other sentences or languages: measured again (the health of "
                 "rows stored before is against the earlier numbers)")
    row = Unrelated(langs, unrelated_nll(ctx.handle, langs), unrelated_digest())
    ctx.disk.put_unrelated(row)
    return row


def localize(ctx: BenchContext, cases: list[Case], pool: list[Fact]) -> tuple[dict, dict]:
    """Each record's knowledge neurons and its relation's common ones (``editing.localize``'s relation
    filter over ``cfg.common_count()`` facts of the relation, the records' own first; None: every one in
    ``pool``), each fact localized once on ``cfg.localize_prompts`` ("rewrite": a record's rewrite prompt,
    another fact its first usable one) and cached: ({(fact id, lang): FactNeurons}, {(relation, lang):
    CommonNeurons})."""
    import kneuron.editing.localize as loc
    cfg, h = ctx.cfg.resolved(), ctx.handle
    rewrite = cfg.localize_prompts == "rewrite"
    first: dict = {}                                  # (relation, lang) -> the records' facts, in case order
    for c in cases:
        for lang, r in c.records.items():
            first.setdefault((c.relation, lang), []).append(r.edit_fact if rewrite else r.fact)
    counted = {k: loc.relation_facts(fs, pool, cfg.common_count(), cfg.seed) for k, fs in first.items()}
    todo = {(f.id, f.lang): f for fs in counted.values() for f in fs}
    limit = loc.prompt_limit(cfg.localize_prompts)
    neurons: dict = {}
    with progress("localizing", len(todo), show=ctx.show) as step:
        for key in sorted(todo):
            row = ctx.disk.neurons(*key)
            if row is None:
                t0 = time.perf_counter()
                try:
                    ns = loc.fact_neurons(h, todo[key], max_prompts=limit)
                except EditError as e:
                    ctx.warn(f"no neurons for fact {key[0]} ({key[1]}): {e}")
                    ns = []
                row = FactNeurons.from_json({"neurons": [[int(a), int(b)] for a, b in ns],
                                             "seconds": time.perf_counter() - t0})
                ctx.disk.put_neurons(*key, row)
            neurons[key] = row
            step()
    common = {}
    for key, fs in counted.items():
        flt = loc.relation_filter(h, fs, [], None, cfg.seed, neurons_of=lambda f: neurons[(f.id, f.lang)].neurons)
        common[key] = CommonNeurons([f.id for f in flt.facts], flt.share, flt.common)
    ctx.disk.put_common({f"{rel}.{lang}": v for (rel, lang), v in common.items()})
    return neurons, common


def common_counts(common: dict) -> dict:
    """How many facts Dai's filter counted over, per "<relation>.<lang>" (run.json, the report)."""
    return {f"{rel}.{lang}": len(v.facts) for (rel, lang), v in sorted(common.items())}


def rome_layer(ctx: BenchContext) -> tuple[int, Sweep | None]:
    """The layer ROME edits: ``layer_sweep`` of "rome" (every swept layer's C computed first, in one pass)."""
    return layer_sweep(ctx, "rome")


def layer_sweep(ctx: BenchContext, method: str) -> tuple[int, Sweep | None]:
    """The layer a method that sweeps its own (rome, ft-l) edits: the user's (``METHOD.layer``), else the
    best S of its sweep (``rome.choose_layer``) over at most 8 layers spread over the depth and ROME's
    default (or ``rome_layers``), in the first language, on the run's held-out cases where it has them
    (``tune_records``), else on the first ``sweep_cases`` reported cases; each edit made as the bench makes
    it. A method with ``swept_bounds`` (ft-l) and no user's ``norm_bound`` first has its L∞ bound chosen the
    same way at its default layer (ROME set ε per model), then its layers swept at that bound. Kept in the run
    directory (rome-sweep.json, ft-l-sweep.json), each of its edits' scores as it is measured (rome-sweep/,
    ft-l-sweep/, ft-l-bound-sweep/), so that an interrupted sweep resumes."""
    from kneuron.editing.methods.rome import candidate_layers, choose_layer
    cfg, h, cases = ctx.cfg, ctx.handle, ctx.cases
    opts = cfg.options(method)
    if "layer" in opts:
        return int(opts["layer"]), None
    sweep = ctx.disk.sweep(method)
    if sweep is not None:
        return sweep.best, sweep
    layers = list(cfg.rome_layers) if cfg.rome_layers else candidate_layers(h)
    held_out = bool(ctx.tune)
    lang, sub = cases[0].langs[0], (ctx.tune if held_out else cases[: max(1, cfg.sweep_cases)])
    before = [ctx.unedited(c)[lang] for c in sub]
    t0 = time.perf_counter()
    if method == "rome" and opts.get("stats", "auto") == "auto":     # every layer's C in one pass, cached on disk
        from kneuron.editing.stats import second_moments
        second_moments(h, layers, corpus=opts.get("corpus"), progress=ctx.show)
    fixed, bound_rows, bound, at = {}, None, None, None
    tried = method_class(method).swept_bounds
    if tried and "norm_bound" not in opts:            # ft-l: its L∞ bound first, at its own default layer
        at = method_for(method, **{k: v for k, v in opts.items() if k in option_names(method)}).layer
        with progress(f"{method} bound sweep", len(tried) * len(sub), show=ctx.show) as step:
            i, rows = choose_layer(h, sub, range(len(tried)), before, lang=lang, step=step,
                                   edit_at=lambda c, i: ctx.edit(method, c, lang, layer=at, norm_bound=tried[i]),
                                   known=lambda c, i: ctx.disk.sweep_part(method, tried[i], c.case_id, "bound"),
                                   keep=lambda c, i, s: ctx.disk.put_sweep_part(method, tried[i], c.case_id, s,
                                                                                "bound"))
        bound = tried[i]
        bound_rows = [{"norm_bound": tried[r.pop("layer")], **r} for r in rows]
        fixed = {"norm_bound": bound}
    with progress(f"{method} layer sweep", len(layers) * len(sub), show=ctx.show) as step:
        best, rows = choose_layer(h, sub, layers, before, lang=lang,
                                  edit_at=lambda c, layer: ctx.edit(method, c, lang, layer=layer, **fixed), step=step,
                                  known=lambda c, layer: ctx.disk.sweep_part(method, layer, c.case_id),
                                  keep=lambda c, layer, s: ctx.disk.put_sweep_part(method, layer, c.case_id, s))
    sweep = Sweep(lang, [c.case_id for c in sub], rows, best, time.perf_counter() - t0, held_out, bound_rows,
                  bound, at)
    ctx.disk.put_sweep(sweep, method)
    return best, sweep


def rome_stats(ctx: BenchContext, layer: int):
    """The unedited model's second moment C at ROME's layer (``stats="auto"``), else None (ROME's own)."""
    opts = ctx.cfg.options("rome")
    if opts.get("stats", "auto") != "auto":
        return None
    from kneuron.editing.stats import second_moment
    return second_moment(ctx.handle, layer, corpus=opts.get("corpus"), progress=ctx.show)


def moments(ctx: BenchContext, method: str):
    """The unedited model's C0 at each layer a multi-layer method (memit, alphaedit) edits, with its own
    stats options and ROME's layer where the bench has one (as its edits get it); None: stats="identity"."""
    from kneuron.editing.registry import method_for, option_names
    opts = {k: v for k, v in ctx.cfg.options(method).items() if k in option_names(method)}
    if "layer" not in opts and ctx.rome_layer is not None and "layer" in option_names(method):
        opts["layer"] = ctx.rome_layer
    return method_for(method, **opts).moments(ctx.handle, progress=ctx.show)


__all__ = ["common_counts", "layer_sweep", "localize", "moments", "rome_layer", "rome_stats", "unedited",
           "unrelated"]
