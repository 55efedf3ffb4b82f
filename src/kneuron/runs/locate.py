"""Localize the knowledge neurons of many facts into a resumable run directory."""
from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

from kneuron.attribution import attribute_many
from kneuron.facts import Fact
from kneuron.models.load import ModelHandle
from kneuron.facts.templates import Query, QueryError, queries_for
from kneuron.models.targets import encode
from kneuron.neurons import REFINE_P, NeuronSet, refine, select, tau_for
from kneuron.runs.store import RunStore


@dataclass
class LocateConfig:
    method: str = "ig"
    steps: int = 20
    threshold: float | None = None       # None: tau per language (en 0.3, zh 0.2, else 0.3)
    top_k: int | None = None
    refine_p: float = REFINE_P
    objective: str = "prob"
    rule: str = "left"
    method_options: dict = field(default_factory=dict)
    batch_size: int | None = None        # rows per batch (speed only; results equal to float rounding)
    prompts_per_batch: int = 1           # prompts (of one or several facts) sharing batches (speed only: GPUs)
    precision: str = "fp32"              # fp32, or bf16 / fp16 autocast (GPU speed; changes results slightly)

    def validate(self) -> None:
        """Raise ValueError (one line) on a bad setting, before any work is done or written."""
        from kneuron.attribution import make_method, nodes
        make_method(self.method, **self.method_options)
        nodes(self.rule, self.steps)
        if self.objective not in ("prob", "logprob"):
            raise ValueError(f"objective must be 'prob' or 'logprob', not {self.objective!r}")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 0 <= self.refine_p < 1:
            raise ValueError(f"refine-p must be in [0, 1), got {self.refine_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top-k must be >= 1, got {self.top_k}")
        from kneuron.attribution import PRECISIONS
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch-size must be >= 1, got {self.batch_size}")
        if self.prompts_per_batch < 1:
            raise ValueError(f"prompts-per-batch must be >= 1, got {self.prompts_per_batch}")


@dataclass
class FactResult:
    fact: Fact
    queries: list[Query]
    neurons: NeuronSet
    p_target: float                      # on the first prompt
    prediction: tuple[str, float]        # the model's top next token / mask filler on the first prompt


def check_facts(handle: ModelHandle, facts: Iterable[Fact], skip_invalid_templates: bool = False) -> list[list[Query]]:
    """Build and encode every query before any work starts; bad input fails here, in one line."""
    out = []
    for f in facts:
        try:
            qs = queries_for(f, handle.kind, skip_invalid=skip_invalid_templates)
        except QueryError as e:
            raise QueryError(f"{f.where('templates')}{e} (or pass --skip-invalid-templates)") from None
        if not qs:
            raise QueryError(f"{f.where('templates')}no template usable by a {handle.kind} model")
        for q in qs:
            try:
                encode(handle.tokenizer, handle.kind, q.prompt, q.target)
            except QueryError as e:
                raise QueryError(f"{f.where('object')}{e}") from None
        out.append(qs)
    return out


def locate_fact(handle: ModelHandle, fact: Fact, queries: list[Query], cfg: LocateConfig,
                progress: Callable[[int], None] | None = None) -> FactResult:
    return locate_facts(handle, [(fact, queries)], cfg, progress)[0]


def locate_facts(handle: ModelHandle, work: list[tuple[Fact, list[Query]]], cfg: LocateConfig,
                 progress: Callable[[int], None] | None = None) -> list[FactResult]:
    """Every prompt of every fact in ``work`` attributed in shared batches, then each fact's neurons
    selected per prompt and refined over its prompts."""
    prompts = [(q.prompt, q.target) for _, qs in work for q in qs]
    scores = attribute_many(handle, prompts, method=cfg.method, steps=cfg.steps, objective=cfg.objective,
                            rule=cfg.rule, batch_size=cfg.batch_size, progress=progress, precision=cfg.precision,
                            **cfg.method_options)
    out, i = [], 0
    for fact, qs in work:
        mine, i = scores[i:i + len(qs)], i + len(qs)
        tau = tau_for(fact.lang, cfg.threshold)
        sets = [select(a.scores, tau, cfg.top_k) for a in mine]
        out.append(FactResult(fact, qs, refine(sets, cfg.refine_p), mine[0].prob, mine[0].prediction))
    return out


def _groups(todo: list, per: int):
    """Consecutive facts whose prompts add up to about ``per`` (at least one fact per group)."""
    group, n = [], 0
    for item in todo:
        group.append(item)
        n += len(item[2])
        if n >= per:
            yield group
            group, n = [], 0
    if group:
        yield group


def run_meta(handle: ModelHandle, cfg: LocateConfig, facts_path: str | None, facts_hash: str | None,
             lang: str | None, limit: int | None) -> dict:
    import torch
    import transformers

    from kneuron._version import __version__
    meta = {k: v for k, v in asdict(cfg).items() if k not in ("batch_size", "prompts_per_batch")}
    return {**meta, "model": handle.name, "kind": handle.kind, "n_layers": handle.n_layers,
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


def locate(handle: ModelHandle, facts: list[Fact], cfg: LocateConfig, out, resume: bool = False,
           facts_path: str | None = None, facts_hash: str | None = None, lang: str | None = None,
           limit: int | None = None, skip_invalid_templates: bool = False, show_progress: bool = True) -> RunStore:
    """Localize each fact's knowledge neurons; each finished fact is committed to ``out`` at once,
    so an interrupted run loses nothing and continues with ``resume=True``."""
    cfg.validate()
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    facts = facts[:limit] if limit else facts
    queries = check_facts(handle, facts, skip_invalid_templates)
    store = RunStore(out, meta=run_meta(handle, cfg, facts_path, facts_hash, lang, limit), resume=resume)
    done = store.done()
    todo = [(i, f, q) for i, (f, q) in enumerate(zip(facts, queries)) if (f.id, f.lang) not in done]
    t0 = time.perf_counter()
    with _progress(show_progress, len(facts), len(facts) - len(todo)) as advance:
        for group in _groups(todo, cfg.prompts_per_batch):
            results = locate_facts(handle, [(fact, qs) for _, fact, qs in group], cfg)
            for (order, _, _), r in zip(group, results):
                store.add(fact_row(order, r), neuron_rows(r))
                advance()
    store.finalize()
    store.seconds = time.perf_counter() - t0
    store.n_new = len(todo)
    return store


class _progress:
    """A rich progress bar over facts (a no-op when disabled)."""

    def __init__(self, show: bool, total: int, completed: int):
        self.show, self.total, self.completed = show, total, completed

    def __enter__(self):
        if not self.show:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        self.bar = Progress(TextColumn("locating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            transient=False)
        self.bar.start()
        task = self.bar.add_task("facts", total=self.total, completed=self.completed)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc):
        if self.show:
            self.bar.stop()
