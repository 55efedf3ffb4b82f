"""Localize the knowledge neurons of many facts into a resumable run directory: one driver, run in
this process (``LocalExecutor``) or sharded over Ray workers (``kneuron.runs.ray.RayExecutor``).

    locate(model, facts, cfg, out, *, execution=Execution(), executor=LocalExecutor(), resume=False, ...)

``cfg`` (LocateConfig) is what is computed and is recorded in run.json (a resumed run must match);
``execution`` (Execution) is how, and is not (except its precision, which changes the numbers); the
executor only decides where the facts are attributed. The driver does the rest once: it checks every
fact before any work, opens (or resumes) the run, hands out the unfinished facts in groups of about
``execution.prompts_per_batch`` prompts, shows the progress and compacts the run at the end.

Checking a fact: each usable template becomes a prompt, the answer must be encodable by the tokenizer
and the model input (prompt and answer) must fit the model's context. By default the first fact that
fails stops the run in one line before anything is written; with ``skip_invalid=True`` (the CLI's
``--skip-invalid``) templates a causal model cannot use are dropped, and a fact that still fails is
skipped: its one-line reason goes into run.json's ``skipped`` list and ``store.skipped``.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Protocol

from kneuron.attribution import Execution, attribute_many
from kneuron.facts import Fact
from kneuron.errors import ConfigError
from kneuron.models.load import ModelHandle
from kneuron.facts.templates import Query, QueryError
from kneuron.models.targets import check_context, encode
from kneuron.neurons import LocateConfig, NeuronSet, neurons_of, query_sets
from kneuron.runs.store import QUERY_NEURONS, RunStore, check_out
from kneuron.report.progress import progress

_DEFAULT = Execution()


@dataclass
class FactResult:
    fact: Fact
    queries: list[Query]
    neurons: NeuronSet
    p_target: float                      # on the first prompt
    prediction: tuple[str, float]        # the model's top next token / mask filler on the first prompt
    query_neurons: list[NeuronSet] = field(default_factory=list)   # each query's own set (before refine / CAS)


def check_fact(handle: ModelHandle, fact: Fact, skip_invalid: bool = False) -> list[Query]:
    """A fact's queries, each encoded and within the model's context, before any model work; QueryError
    (one line naming the fact's file, line and field) if it cannot be used. ``skip_invalid``: drop the
    templates a causal model cannot use (the fact fails only when none is left)."""
    qs = fact.queries(handle.kind, skip_invalid)
    limit = handle.max_positions
    for q in qs:
        try:
            enc = encode(handle.tokenizer, handle.kind, q.prompt, q.target)
        except QueryError as e:
            raise QueryError(f"{fact.where('object')}{e}") from None
        try:
            check_context(enc, limit)
        except QueryError as e:
            template = fact.templates[q.template_index]
            name = "subject" if len(fact.subject) >= len(template) else "templates"
            raise QueryError(f"{fact.where(name)}template {q.template_index}: {e}") from None
    return qs


@dataclass
class Checked:
    """check_facts' answer: the facts kept (in order) with their queries, and those skipped."""
    facts: list[Fact]
    queries: list[list[Query]]
    skipped: list[dict]                  # {"fact_id", "lang", "reason"}: one line, as the error would be

    @property
    def n_prompts(self) -> list[int]:
        return [len(q) for q in self.queries]


def check_facts(handle: ModelHandle, facts: Iterable[Fact], skip_invalid: bool = False) -> Checked:
    """Build and encode every query of every fact before any work starts (check_fact). By default the
    first fact that fails raises its one-line QueryError; with ``skip_invalid`` templates a causal model
    cannot use are dropped and each fact that still fails is skipped, with its reason."""
    kept, queries, skipped = [], [], []
    for f in facts:
        try:
            qs = check_fact(handle, f, skip_invalid)
        except QueryError as e:
            if not skip_invalid:
                raise QueryError(f"{e} (or pass --skip-invalid)") from None
            skipped.append({"fact_id": f.id, "lang": f.lang, "reason": str(e)})
            continue
        kept.append(f)
        queries.append(qs)
    return Checked(kept, queries, skipped)


def locate_fact(handle: ModelHandle, fact: Fact, queries: list[Query], cfg: LocateConfig,
                execution: Execution = _DEFAULT) -> FactResult:
    """One fact's FactResult from its checked ``queries`` (``check_fact``); its ``neurons`` equal
    ``kneuron.neurons.localize(handle, fact, cfg)``'s (which builds the queries itself)."""
    return locate_facts(handle, [(fact, queries)], cfg, execution)[0]


def locate_facts(handle: ModelHandle, work: list[tuple[Fact, list[Query]]], cfg: LocateConfig,
                 execution: Execution = _DEFAULT) -> list[FactResult]:
    """Every prompt of every fact in ``work`` attributed in shared batches, then each fact's neurons
    selected per prompt (kept as ``query_neurons``) and combined over its prompts (``neurons_of``)."""
    prompts = [(q.prompt, q.target) for _, qs in work for q in qs]
    scores = attribute_many(handle, prompts, method=cfg.method_object, steps=cfg.steps, objective=cfg.objective,
                            rule=cfg.rule, execution=execution)
    out, i = [], 0
    for fact, qs in work:
        mine, i = scores[i:i + len(qs)], i + len(qs)
        out.append(FactResult(fact, qs, neurons_of(mine, fact.lang, cfg), mine[0].prob, mine[0].prediction,
                              query_sets(mine, fact.lang, cfg)))
    return out


def _groups(todo: list[tuple[int, Fact]], n_prompts: list[int], per: int) -> list[list[tuple[int, Fact]]]:
    """Consecutive facts whose prompts add up to about ``per`` (at least one fact per group)."""
    out, group, n = [], [], 0
    for order, fact in todo:
        group.append((order, fact))
        n += n_prompts[order]
        if n >= per:
            out.append(group)
            group, n = [], 0
    if group:
        out.append(group)
    return out


def run_meta(handle: ModelHandle, cfg: LocateConfig, facts_path: str | None, facts_hash: str | None,
             lang: str | None, limit: int | None) -> dict:
    import torch
    import transformers

    from kneuron._version import __version__
    meta = {k: v for k, v in cfg.record().items() if k not in ("batch_size", "prompts_per_batch")}
    # enough to load exactly this model and site again: load_model(name, kind=, site=, layers=)
    spec = {"name": handle.name, "kind": handle.kind, "site": handle.site.proj_path,
            "layers": handle.site.layers_path, "n_layers": handle.n_layers, "n_neurons": handle.n_neurons,
            "dtype": str(handle.dtype)}
    return {**meta, "model": handle.name, "model_spec": spec, "kind": handle.kind, "n_layers": handle.n_layers,
            "n_neurons": handle.n_neurons, "site": f"{handle.site.layers_path}[i].{handle.site.proj_path}",
            "dtype": str(handle.dtype), "facts": facts_path, "facts_hash": facts_hash, "lang": lang,
            "limit": limit, "versions": {"kneuron": __version__, "torch": torch.__version__,
                                         "transformers": transformers.__version__,
                                         "python": platform.python_version()}}


def fact_row(order: int, r: FactResult) -> dict:
    q = r.queries[0]
    return {"order": order, "fact_id": r.fact.id, "lang": r.fact.lang, "relation": r.fact.relation,
            "subject": r.fact.subject, "prompt": q.prompt, "target": q.target, "p_target": r.p_target,
            "top_token": r.prediction[0], "top_p": r.prediction[1], "n_prompts": len(r.queries),
            "n_neurons": len(r.neurons)}


def neuron_rows(r: FactResult) -> list[dict]:
    return [{"layer": l, "neuron": j, "score": s, "rank": i}
            for i, ((l, j), s) in enumerate(zip(r.neurons.neurons, r.neurons.scores))]


def query_rows(r: FactResult) -> list[dict]:
    """Each query's own neurons (``query`` = its index in the fact's queries; the template is in
    ``r.queries[query].template_index``), highest score first within a query."""
    return [{"query": q, "layer": l, "neuron": j, "score": s, "rank": i}
            for q, ns in enumerate(r.query_neurons)
            for i, ((l, j), s) in enumerate(zip(ns.neurons, ns.scores))]


# ----------------------------------------------------------------------------- executors

class Session(Protocol):
    """An executor's model(s), opened for one run (a context manager)."""

    def check(self, facts: list[Fact], skip_invalid: bool) -> Checked:
        """check_facts on the executor's model: the facts kept, their queries, the facts skipped
        (QueryError, one line, on the first bad fact unless ``skip_invalid``). The facts kept are the
        run's facts: ``order`` in ``run`` indexes them."""

    def meta(self, facts_path: str | None, facts_hash: str | None, lang: str | None, limit: int | None) -> dict:
        """The run's run.json (run_meta, plus how the executor runs, where that is worth keeping)."""

    def run(self, groups: list[list[tuple[int, Fact]]], store: RunStore) -> Iterator[int]:
        """Attribute each group of (order, fact) and write each finished fact into the run as its own
        part; yield the number of facts finished, as they finish."""


class Executor(Protocol):
    def open(self, model: ModelHandle | str, cfg: LocateConfig, execution: Execution, out, load: dict) -> Session:
        ...


def load_by_name(name: str, load: dict) -> ModelHandle:
    """load_model(name, **load), on cuda when there is one and neither a device nor a device map is given."""
    from kneuron.models.load import load_model
    load = dict(load)
    if load.get("device") is None and load.get("device_map") is None:
        import torch
        load["device"] = "cuda" if torch.cuda.is_available() else None
    return load_model(name, **load)


class LocalExecutor:
    """Attribute the facts in this process, with the model given (or loaded here by name)."""

    def open(self, model: ModelHandle | str, cfg: LocateConfig, execution: Execution, out, load: dict) -> "_Local":
        if isinstance(model, ModelHandle):
            if load:
                raise ConfigError(f"load options ({', '.join(load)}) apply to a model name, not a loaded model")
            return _Local(model, cfg, execution)
        return _Local(load_by_name(model, load), cfg, execution)

    def __repr__(self) -> str:
        return "LocalExecutor()"


class _Local:
    def __init__(self, handle: ModelHandle, cfg: LocateConfig, execution: Execution):
        self.h, self.cfg, self.execution = handle, cfg, execution
        self.queries: list[list[Query]] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def check(self, facts, skip_invalid):
        checked = check_facts(self.h, facts, skip_invalid)
        self.queries = checked.queries
        return checked

    def meta(self, facts_path, facts_hash, lang, limit):
        return run_meta(self.h, self.cfg, facts_path, facts_hash, lang, limit)

    def run(self, groups, store):
        for group in groups:
            # looked up at call time (tests interrupt a run by replacing it)
            results = locate_facts(self.h, [(fact, self.queries[order]) for order, fact in group], self.cfg,
                                   self.execution)
            for (order, _), r in zip(group, results):
                store.add(fact_row(order, r), neuron_rows(r), query_rows(r))
                yield 1


# ----------------------------------------------------------------------------- the driver

def locate(model: ModelHandle | str, facts: list[Fact], cfg: LocateConfig, out, *,
           execution: Execution = _DEFAULT, executor: Executor | None = None, resume: bool = False,
           limit: int | None = None, skip_invalid: bool = False, facts_path: str | None = None,
           facts_hash: str | None = None, lang: str | None = None, show_progress: bool = True,
           load: dict | None = None) -> RunStore:
    """Localize each fact's knowledge neurons into the run directory ``out``; each finished fact is
    committed at once, so an interrupted run loses nothing and continues with ``resume=True``.

    ``model``: a loaded ModelHandle, or a name the executor loads (``load``: load_model's options:
    site, layers, dtype, device, offline, device_map). ``cfg``: what is computed (recorded);
    ``execution``: how (batch size, prompts per batch, precision, ...); ``executor``: where
    (``LocalExecutor()``, default, or ``RayExecutor(workers=N)``). ``limit``: the first N facts only.
    ``skip_invalid``: instead of stopping at the first fact that cannot be used (a template a causal
    model cannot use, an answer the tokenizer cannot encode, a prompt longer than the model's context),
    drop such templates and skip such facts; each skipped fact is listed with its reason in run.json
    (``skipped``) and the run holds the others, as a run of only those would. ``facts_path``,
    ``facts_hash``, ``lang``: provenance recorded in run.json. Returns the run's RunStore, with
    ``n_new`` (facts done now), ``seconds`` and ``skipped`` (``[{"fact_id", "lang", "reason"}]``)."""
    if not isinstance(cfg, LocateConfig):
        raise ConfigError(f"cfg must be a LocateConfig, not {type(cfg).__name__}")
    if not isinstance(execution, Execution):
        raise ConfigError(f"execution must be an Execution, not {type(execution).__name__}")
    cfg.validate()
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    facts = list(facts[:limit] if limit else facts)
    check_out(out, resume=resume)                                   # before a model is loaded
    executor = executor if executor is not None else LocalExecutor()
    with executor.open(model, cfg, execution, out, dict(load or {})) as session:
        checked = session.check(facts, skip_invalid)                  # bad input fails before anything is written
        if checked.skipped and not checked.facts:
            raise QueryError(f"all {len(facts)} facts were skipped; the first: {checked.skipped[0]['reason']}")
        facts, n_prompts = checked.facts, checked.n_prompts
        meta = session.meta(facts_path, facts_hash, lang, limit)
        meta["precision"] = execution.precision                        # the one execution setting that changes numbers
        meta["skip_invalid"] = bool(skip_invalid)
        meta["skipped"] = checked.skipped
        meta[QUERY_NEURONS] = True           # a new run keeps each query's neurons (a resumed one: as it was made)
        store = RunStore(out, meta=meta, resume=resume, facts=facts)
        if resume:
            _record_skipped(store, checked)
        done = store.done()
        todo = [(i, f) for i, f in enumerate(facts) if f.key not in done]
        t0 = time.perf_counter()
        with progress("locating", len(facts), completed=len(facts) - len(todo), show=show_progress) as advance:
            for n in session.run(_groups(todo, n_prompts, execution.prompts_per_batch), store):
                advance(n)
    store = RunStore(out, meta=meta, resume=True)         # every part written, in this process or elsewhere
    store.finalize()
    store.seconds = time.perf_counter() - t0
    store.n_new = len(todo)
    store.skipped = list(store.meta.get("skipped") or [])
    return store


def _record_skipped(store: RunStore, checked: Checked) -> None:
    """A resumed run: run.json's ``skipped`` becomes the facts skipped now, plus those recorded before
    that were not checked now (beyond a smaller --limit)."""
    now = {(f.id, f.lang) for f in checked.facts} | {(s["fact_id"], s["lang"]) for s in checked.skipped}
    old = [s for s in store.meta.get("skipped") or [] if (s.get("fact_id"), s.get("lang")) not in now]
    skipped = checked.skipped + old
    if store.meta.get("skipped") == skipped:
        return
    store.meta["skipped"] = skipped
    store.save_meta()
