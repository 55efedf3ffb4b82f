"""The editing benchmark's run: open (or resume) the run directory, build the ``BenchContext`` once (the
records, the unedited measurements, the neurons, ROME's layer), then run each method in the mode asked,
and write results.json and the report. Each stage's time goes into timings.json."""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

from kneuron.editing import EditError
from kneuron.editing.protocol import with_model
from kneuron.editing.readers import RecordsFile, check_encodes
from kneuron.errors import ConfigError
from kneuron.editing.records import Case, build_cases
from kneuron.editing.registry import method_class
from kneuron.facts import Fact
from kneuron.models.load import ModelHandle

import kneuron.bench.editing.prepare as prepare
from .config import DEFAULT_METHODS, EditingConfig, own_sweep, resumed_meta, run_meta, uses_neurons
from .context import BenchContext, Budget
from .disk import BenchDir
from .modes import STRATEGIES, Sequential


class EditingBench:
    """One run of the benchmark into ``out`` (``resume``: an earlier run's directory, same settings).
    ``pool``: the facts neighbours and the common-neuron filter draw from (default ``facts``); ``limit``:
    stop after that many new edits, as if interrupted. ``records``: a records file read
    (``kneuron.editing.readers``): the run's records are its first ``n`` (its next ``tune_records`` held out),
    not drawn from ``facts``, and ``pool`` defaults to the file's own facts."""

    def __init__(self, handle: ModelHandle, facts: list[Fact], cfg: EditingConfig, out, *, pool=None,
                 resume: bool = False, show_progress: bool = True, log: Callable[[str], None] = lambda s: None,
                 facts_name: str | None = None, limit: int | None = None, records: RecordsFile | None = None):
        cfg.validate()
        if records is not None and cfg.protocol != "kneuron":
            raise ConfigError(f"--protocol {cfg.protocol} draws the records from a fact set; a records file's "
                              "records are its own (leave --protocol out with --records)")
        self.h, self.cfg, self.log, self.records = handle, cfg, log, records
        if pool is None and records is not None:
            pool = records.facts
        self.facts, self.pool = list(facts), list(pool if pool is not None else facts)
        self.resume, self.show, self.facts_name, self.limit = resume, show_progress, facts_name, limit
        self.disk = BenchDir(out, self.warn)

    def warn(self, s: str) -> None:
        self.log(f"warning: {s}")

    def _open(self) -> tuple[list[Case], list[Case], dict]:
        """The run's records, its held-out ones (``tune_records``) and run.json: read back (resumed, checked
        against these settings) or made. The held-out cases are the ones drawn after the reported ``n``, so
        the reported records are those a run without them has."""
        self.disk.check(self.resume)
        stored = self.disk.meta() if self.resume else None
        self.cfg = self.cfg.resolved(stored)           # the open settings: the run's own, or a new run's
        cases = self.disk.cases() if self.resume else None
        tune = (self.disk.cases("tune-cases.jsonl") or []) if self.resume else []
        if cases is None and self.records is not None:
            cases, tune = self._from_file()
        if cases is None:
            k = self.cfg.tune_records
            drawn = build_cases(self.facts, self.cfg.n + k, kind=self.h.kind, tokenizer=self.h.tokenizer,
                                langs=list(self.cfg.langs) if self.cfg.langs else None, seed=self.cfg.seed,
                                pool=self.pool, n_neighbours=self.cfg.n_neighbours, n_generation=self.cfg.n_generation,
                                protocol=self.cfg.protocol)
            if self.cfg.protocol == "counterfact":     # the model-written parts, by the unedited model, stored
                drawn = with_model(self.h, drawn, self.cfg.seed)
            if not drawn:
                raise EditError(f"no fact can be made an edit record for {self.h.name} (each needs a wrong object "
                                "the tokenizer encodes and a usable template in every language)")
            cases, tune = drawn[: self.cfg.n], drawn[self.cfg.n:]
            if k and not tune:
                raise EditError(f"no record is left for the {k} held-out tuning records: all {len(cases)} usable fact "
                                "ids are reported; lower --n or --tune-records")
            if len(cases) < self.cfg.n:
                self.warn(shortfall(len(cases), self.cfg.n, cases[0].langs))
            elif len(tune) < k:
                self.warn(f"{len(tune)} held-out tuning records of the {k} asked (no more usable fact ids)")
        meta = run_meta(self.cfg, self.h, cases, self.facts_name, tune)
        if self.records is not None:
            meta = {**meta, **self.records.meta()}
        if self.resume:
            meta = resumed_meta(stored, meta, self.cfg, self.disk.out)
        self.disk.commit(cases, meta, tune)
        return cases, tune, meta

    def _from_file(self) -> tuple[list[Case], list[Case]]:
        """The records file's first ``n`` cases and the ``tune_records`` after them, as this model is given
        them, each prompt checked against the tokenizer (one line naming the record) before any measuring."""
        f, k, n = self.records, self.cfg.tune_records, self.cfg.n
        langs = list(f.cases[0].langs)
        if self.cfg.langs and list(self.cfg.langs) != langs:
            raise EditError(f"{f.path}: its records are in {', '.join(langs)}, not {', '.join(self.cfg.langs)}")
        drawn = f.take(n + k, kind=self.h.kind, n_generation=self.cfg.n_generation)
        check_encodes(drawn, self.h.tokenizer, self.h.kind)
        cases, tune = drawn[:n], drawn[n:]
        if k and not tune:
            raise EditError(f"no record is left for the {k} held-out tuning records: {f.path} holds {len(cases)}; "
                            "lower --n or --tune-records")
        if len(cases) < n:
            self.warn(f"{len(cases)} records of the {n} asked: {f.path} holds only {len(cases)}")
        elif len(tune) < k:
            self.warn(f"{len(tune)} held-out tuning records of the {k} asked ({f.path} holds no more)")
        return cases, tune

    def context(self, cases: list[Case], t0: float, tune: list[Case] = ()) -> tuple[BenchContext, dict]:
        """The context every method edits with, each stage timed (``t0``: when the run began)."""
        ctx = BenchContext(self.h, self.cfg, cases, {}, self.disk, Budget(self.limit), show=self.show, warn=self.warn,
                           tune=list(tune))
        ctx = dataclasses.replace(ctx, before=prepare.unedited(ctx, [*cases, *tune]))
        ctx = dataclasses.replace(ctx, unrelated=prepare.unrelated(ctx))
        timings = self.disk.add_time("unedited", time.perf_counter() - t0)
        if any(uses_neurons(m) for m in self.cfg.methods):
            t = time.perf_counter()
            neurons, common = prepare.localize(ctx, cases, self.pool)
            ctx = dataclasses.replace(ctx, neurons=neurons, common=common)
            timings = self.disk.add_time("localize", time.perf_counter() - t)
        if "rome" in self.cfg.methods:
            t = time.perf_counter()
            layer, sweep = prepare.rome_layer(ctx)
            ctx = dataclasses.replace(ctx, rome_layer=layer, sweep=sweep, rome_stats=prepare.rome_stats(ctx, layer))
            timings = self.disk.add_time("rome_sweep", time.perf_counter() - t)
        for m in filter(own_sweep, self.cfg.methods):     # ft-l: its own layer, swept as ROME's
            t = time.perf_counter()
            layer, sweep = prepare.layer_sweep(ctx, m)
            ctx = dataclasses.replace(ctx, layers={**ctx.layers, m: layer},
                                      sweeps={**ctx.sweeps, **({m: sweep} if sweep else {})},
                                      bounds={**ctx.bounds, **({m: sweep.best_bound} if sweep and sweep.best_bound
                                                               is not None else {})})
            timings = self.disk.add_time(f"{m}_sweep", time.perf_counter() - t)
        layered = [m for m in self.cfg.methods if "moments" in method_class(m).context]
        if layered:                                    # memit, alphaedit: C0 of the unedited model, per layer
            t = time.perf_counter()
            ctx = dataclasses.replace(ctx, moments={m: prepare.moments(ctx, m) for m in layered})
            timings = self.disk.add_time("moments", time.perf_counter() - t)
        return ctx, timings

    def run(self) -> dict | None:
        """Every method in the mode asked; results.json's content (None: stopped by ``limit``)."""
        t0 = time.perf_counter()
        self.cfg.check_model(self.h)
        cases, tune, meta = self._open()
        held = f" (+{len(tune)} held out for the layer sweeps)" if tune else ""
        self.log(f"{len(cases)} cases{held} in {', '.join(cases[0].langs)}; methods {', '.join(self.cfg.methods)}; "
                 f"mode {self.cfg.mode}; {self.disk.out}")
        ctx, timings = self.context(cases, t0, tune)
        if ctx.common is not None:                     # how many facts Dai's filter counted, per relation
            meta = {**meta, "common_counts": prepare.common_counts(ctx.common)}
            self.disk.put_meta(meta)
        mode = STRATEGIES[self.cfg.mode]
        rows, curves = {}, {}
        for m in self.cfg.methods:
            t = time.perf_counter()
            rows[m] = {(r.case_id, r.edit_lang): r for r in mode.run(m, cases, ctx)}
            if isinstance(mode, Sequential):
                curves[m] = mode.curve(m, cases, ctx)
            timings = self.disk.add_time(m, time.perf_counter() - t)
        if not ctx.budget.left() and any(len(rows[m]) < sum(len(c.langs) for c in cases) for m in rows):
            self.log(f"stopped after {ctx.budget.spent} new edits (limit); resume to finish")
            return None
        from kneuron.bench.editing_report import results, write_report
        res = results(meta, cases, {c.case_id: ctx.before[c.case_id].raw for c in cases}, rows, curves,
                      ctx.sweep.to_json() if ctx.sweep else None, ctx.rome_layer, timings,
                      ctx.unrelated.nll if ctx.unrelated else None,
                      {m: {"layer": layer, "sweep": ctx.sweeps[m].to_json() if m in ctx.sweeps else None}
                       for m, layer in ctx.layers.items()})
        self.disk.put_results(res)
        write_report(res, self.disk.out)
        return res


def run_editing_bench(handle: ModelHandle, facts: list[Fact], *, out, n: int = 100,
                      methods=DEFAULT_METHODS, mode: str = "single", langs=None, seed: int = 0, resume: bool = False,
                      pool: list[Fact] | None = None, show_progress: bool = True, log=lambda s: None,
                      facts_name: str | None = None, limit: int | None = None, records: RecordsFile | None = None,
                      **config) -> dict | None:
    """Run (or resume) the editing benchmark into ``out``; returns results.json's content (None when stopped
    by ``limit``: that many new edits were computed, as if interrupted). ``facts``: the facts to draw cases
    from; ``pool``: the facts neighbours come from (default ``facts``; for an organism, the facts it was
    trained on). ``records``: a records file read (``kneuron.editing.readers.read_records``) the records come
    from instead of ``facts``. ``config``: the other EditingConfig fields (n_neighbours, n_generation,
    common_facts, sweep_cases, tune_records, rome_layers, method_options, on_collapse, protocol)."""
    cfg = EditingConfig(n=n, methods=tuple(methods), mode=mode, langs=tuple(langs) if langs else None, seed=seed,
                        **config)
    return EditingBench(handle, facts, cfg, out, pool=pool, resume=resume, show_progress=show_progress, log=log,
                        facts_name=facts_name, limit=limit, records=records).run()


def shortfall(got: int, asked: int, langs: list[str]) -> str:
    """Why a run has fewer records than asked: only ``got`` fact ids of the facts given can be made a record
    in every language (the command gives the facts the model knows, ``kneuron.organisms.known``)."""
    return (f"{got} records of the {asked} asked: only {got} fact ids of the facts given have a usable record in "
            f"every language ({', '.join(langs)}); for a model with a known-facts rule those are the ids it knows "
            "in each language (`kneuron facts known` counts them)")


def summary(res: dict) -> dict:
    """What ``kneuron bench editing --json`` prints: model, n_records, unedited, methods."""
    return {k: res[k] for k in ("model", "n_records", "unedited", "methods")}


__all__ = ["EditingBench", "run_editing_bench", "shortfall", "summary"]
