"""The explorer's JSON API: every number it returns is computed by the library (probe, lens, attribution,
intervene, paper); this module only checks the input, holds the model while it computes and shapes
the answer for the page.

Bad input raises a KneuronError (one line), which the page shows and the server logs as one line."""
from __future__ import annotations

import math
import re
from contextlib import ExitStack
from dataclasses import MISSING, fields
from pathlib import Path

from kneuron.attribution import Execution, attribute, check_settings
from kneuron.attribution.methods import METHODS as ATTRIBUTION
from kneuron.editing.registry import describe as edit_methods, method_class
from kneuron.editing.show import prepare
from kneuron.explore.bilingual import (LANGS, PER_RELATION, Compare, by_lang, compare, default_facts, known_marks,
                                       listing, offered)
from kneuron.explore.runs import RunView, run_dirs
from kneuron.explore.shape import attribution, name, prediction, rows, tokens
from kneuron.explore.state import Job, Jobs, Models
from kneuron.facts import Fact, load_facts
from kneuron.errors import ConfigError, KneuronError
from kneuron.facts.templates import QueryError
from kneuron.intervene import enhance, suppress
from kneuron.lens import ValueIndex, check_neuron, greedy_continuation, logit_lens, token_id, value_index, value_tokens
from kneuron.models.registry import CARDS
from kneuron.models.targets import encode
from kneuron.neurons import LocateConfig
from kneuron.organisms.known import known_facts
from kneuron.probe import answer_prob, predict

NEURON = re.compile(r"^\s*L(\d+)\s*N(\d+)\s*$", re.IGNORECASE)


def parse_neuron(text) -> tuple[int, int]:
    """'L3N17' -> (3, 17); a ConfigError that shows the form otherwise."""
    m = NEURON.match(str(text or ""))
    if not m:
        raise ConfigError(f"unknown neuron {str(text or '')!r}: write L{{layer}}N{{index}}, e.g. L3N17")
    return int(m.group(1)), int(m.group(2))


def _text(params: dict, key: str, required: bool = True) -> str:
    v = params.get(key)
    if v is not None and not isinstance(v, str):
        raise ConfigError(f"{key} must be text")
    if required and not (v or "").strip():
        raise QueryError(f"the {key} is empty")
    return v or ""


def _int(params: dict, key: str, default: int) -> int:
    try:
        return int(params.get(key, default))
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a whole number, not {params.get(key)!r}") from None


class Explorer:
    """The server's state and the API's operations, one method per route."""

    def __init__(self, models: Models, runs: list[str] = ()):
        self.models, self.jobs = models, Jobs()
        self.runs: dict[str, RunView] = {}
        self.indexes: dict[str, ValueIndex] = {}
        self.index_jobs: dict[str, Job] = {}
        self.fact_sets: dict[str, list[Fact]] = {}
        self.known: dict[tuple, dict] = {}        # (model, fact set, per relation, edit) -> id -> lang -> known
        self.known_jobs: dict[tuple, Job] = {}
        self.edits: dict[str, dict] = {}          # model -> {"edit": the applied Edit, "report": what the page shows}
        for path in runs:
            self.open_run({"path": path})

    # -- prompt view ----------------------------------------------------------------------------
    def predict(self, p: dict) -> dict:
        model, prompt, answer = _text(p, "model"), _text(p, "prompt"), _text(p, "answer", required=False)
        with self.models.use(model) as h:
            return prediction(h, model, prompt, answer, _int(p, "k", 10))

    def attribute(self, p: dict) -> dict:
        """Start an attribution job (the page polls /api/jobs/ID); the answer defaults to the top prediction."""
        model, prompt, answer = _text(p, "model"), _text(p, "prompt"), _text(p, "answer", required=False)
        method, steps = p.get("method", "ig"), _int(p, "steps", 20)
        check_settings(method, steps)
        h = self.models.handle(model)
        if answer.strip():
            encode(h.tokenizer, h.kind, prompt, answer)           # a bad answer fails here, at once

        def work(job: Job):
            with self.models.use(model) as h:
                target = answer if answer.strip() else predict(h, prompt, 1)[0][0]
                job.total = rows(h, prompt, target, steps)
                a = attribute(h, prompt, target, method=method, steps=steps, execution=Execution(progress=job.advance))
            return attribution(a, model, prompt, target, steps)
        return self.jobs.start(f"{method} on {model}", work).to_json()

    def job(self, job_id: str) -> dict:
        return self.jobs.get(job_id).to_json()

    def cancel(self, job_id: str) -> dict:
        job = self.jobs.get(job_id)
        job.cancel.set()
        return job.to_json()

    # -- languages side by side ----------------------------------------------------------------
    def fact_set(self, name: str) -> list[Fact]:
        if name not in self.fact_sets:
            self.fact_sets[name] = load_facts(name)
        return self.fact_sets[name]

    def facts(self, p: dict) -> dict:
        """The facts the side-by-side view offers (``bilingual.offered``: ``per_relation`` ids of each
        relation, default 10; 0: all) and, once computed, which of them the model knows in each language
        (``organisms.known``): the first call on a model starts that job ({"building": job}; the page
        polls it, then asks again). An applied edit gets marks of its own."""
        model = _text(p, "model")
        name = _text(p, "facts", required=False).strip() or default_facts(model)
        per_relation = _int(p, "per_relation", PER_RELATION) or None
        listed = offered(self.fact_set(name), per_relation)
        key = (model, name, per_relation, (self.edits.get(model) or {}).get("label"))
        out = {"model": model, "facts": name, "langs": sorted({f.lang for f in listed})}
        if key in self.known:
            return {**out, "known_computed": True, "list": listing(listed, self.known[key])}
        self.models.handle(model)
        job = self.known_jobs.get(key)
        if job is None or job.state in ("error", "cancelled"):
            def work(job: Job):
                with self.models.use(model) as h:
                    self.known[key] = known_marks(h, listed)
                return {"model": model, "facts": name}
            job = self.known_jobs[key] = self.jobs.start(f"which facts {model} knows", work)
        return {**out, "known_computed": False, "list": listing(listed, None), "building": job.to_json()}

    def bilingual(self, p: dict) -> dict:
        """Start the side-by-side job (``bilingual.compare``; the page polls /api/jobs/ID): the fact
        ``fact`` of ``facts`` (default: the model's fact set) in ``langs`` (default en, zh), attributed and
        localised with ``method`` / ``steps`` over the first ``prompts`` queries per language (default all)."""
        model, fact = _text(p, "model"), _text(p, "fact").strip()
        name = _text(p, "facts", required=False).strip() or default_facts(model)
        langs = p.get("langs") or list(LANGS)
        if isinstance(langs, str):
            langs = [x.strip() for x in langs.split(",") if x.strip()]
        if not isinstance(langs, list) or not all(isinstance(x, str) for x in langs):
            raise ConfigError("langs must be a list of language codes, e.g. [\"en\", \"zh\"]")
        prompts = None if p.get("prompts") in (None, "") else _int(p, "prompts", 0)
        c = Compare(model, fact, name, tuple(langs), LocateConfig(method=p.get("method", "ig"),
                                                                  steps=_int(p, "steps", 20)), prompts, _int(p, "k", 10))
        facts = self.fact_set(name)
        by_lang(facts, fact, name)                       # an unknown id fails here, at once
        self.models.handle(model)

        def work(job: Job):
            with self.models.use(model) as h:
                return compare(h, c, facts, job)
        return self.jobs.start(f"{fact} in {', '.join(c.langs)} on {model}", work).to_json()

    # -- neuron view ----------------------------------------------------------------------------
    def neuron(self, p: dict) -> dict:
        model, prompt = _text(p, "model"), _text(p, "prompt", required=False)
        layer, index = parse_neuron(p.get("neuron"))
        with self.models.use(model) as h:
            check_neuron(h, layer, index)
            promoted, suppressed = value_tokens(h, layer, index, k=12)
            activation = float(logit_lens(h, prompt, k=1).activations[layer, index]) if prompt.strip() else None
        facts = [f for r in self.runs.values() if r.spec.name == model for f in r.containing(layer, index)]
        return {"model": model, "neuron": name(layer, index), "layer": layer, "index": index,
                "promoted": tokens(promoted), "suppressed": tokens(suppressed), "activation": activation,
                "facts": facts}

    def intervene(self, p: dict) -> dict:
        """The prediction, p(answer) and a greedy continuation, before and with the changes: each
        {"neuron": "L3N17", "factor": f} multiplies that neuron by f at the answer position (0: off,
        exactly kneuron.intervene.suppress; else enhance with that factor)."""
        model, prompt, answer = _text(p, "model"), _text(p, "prompt"), _text(p, "answer", required=False)
        changes = p.get("changes") or []
        if not isinstance(changes, list) or not changes:
            raise ConfigError("choose at least one neuron to change")
        groups: dict[float, list[tuple[int, int]]] = {}
        for c in changes:
            try:
                factor = float(c.get("factor"))
            except (TypeError, ValueError, AttributeError):
                raise ConfigError(f"the factor of {c!r} is not a number") from None
            if not math.isfinite(factor):
                raise ConfigError(f"the factor {factor} is not finite")
            groups.setdefault(factor, []).append(parse_neuron(c.get("neuron")))
        with self.models.use(model) as h:
            for ns in groups.values():
                for l, i in ns:
                    check_neuron(h, l, i)

            def measure():
                gold = answer_prob(h, prompt, answer) if answer.strip() else None
                return {"top": tokens(predict(h, prompt, 5)), "answer": gold and {"text": answer, "p": gold.prob},
                        "continuation": greedy_continuation(h, prompt, _int(p, "n_tokens", 12))}
            before = measure()
            with ExitStack() as stack:
                for factor, ns in groups.items():
                    stack.enter_context(suppress(h, ns) if factor == 0 else enhance(h, ns, factor))
                after = measure()
        return {"model": model, "prompt": prompt, "before": before, "after": after,
                "changes": [{"neuron": name(l, i), "factor": f} for f, ns in groups.items() for l, i in ns]}

    # -- value search ---------------------------------------------------------------------------
    def search(self, p: dict) -> dict:
        """The neurons whose value vectors rank the token highest; the first search on a model builds
        its index (a job, with progress), later ones read it."""
        model, text = _text(p, "model"), p.get("token") or ""
        h = self.models.handle(model)
        tid = token_id(h, text)
        index = self.indexes.get(model)
        if index is None:
            job = self.index_jobs.get(model)
            if job is None or job.state in ("error", "cancelled"):
                job = self.index_jobs[model] = self.jobs.start(f"value index of {model}", self._build(model),
                                                               total=h.n_layers)
            if job.state != "done":
                return {"building": job.to_json()}
            index = self.indexes[model]
        return {"model": model, "token": text, "token_id": tid, "index": str(index.path),
                "neurons": [{"neuron": name(l, i), "layer": l, "index": i, "rank": r, "logit": s}
                            for l, i, r, s in index.search(tid, _int(p, "limit", 30))]}

    def _build(self, model: str):
        def work(job: Job):
            def progress(done: int, total: int):
                job.advance(done - job.done)
            with self.models.use(model) as h:
                self.indexes[model] = value_index(h, progress=progress)
            return {"model": model, "path": str(self.indexes[model].path)}
        return work

    # -- what the page offers -------------------------------------------------------------------
    def meta(self) -> dict:
        """The attribution and editing methods, with their options (and the editing methods' one-line help
        and capabilities), and the bundled models (``kneuron.models.registry.CARDS``: kind and languages):
        the page builds its method lists from this (``/api/meta``)."""
        attribution = [{"name": name, "options": [{"name": f.name, "default": f.default} for f in fields(cls)
                                                  if f.default is not MISSING]}
                       for name, cls in ATTRIBUTION.items()]
        models = [{"name": c.name, "kind": c.kind, "languages": list(c.languages)} for c in CARDS.values()]
        return {"attribution": attribution, "editing": edit_methods(), "models": models}

    # -- edit view ------------------------------------------------------------------------------
    def edit_facts(self, p: dict) -> dict:
        """The fact ids the Edit view offers: the model's organism facts, else the bundled en-zh facts."""
        model = _text(p, "model")
        return {"model": model, "ids": sorted({f.id for f in _edit_facts(self.models.handle(model))[1]})}

    def active_edits(self) -> dict:
        return {m: {"label": e["label"], "report": e["report"]} for m, e in self.edits.items()}

    def edit(self, p: dict) -> dict:
        """Apply an edit (kneuron.editing.show, as `kneuron edit`) and keep it applied: every view then
        computes on the edited model until /api/edit/undo. A model's earlier edit is undone first."""
        model, fact_id, new = _text(p, "model"), _text(p, "fact").strip(), _text(p, "new")
        method, lang = _text(p, "method", required=False) or "kn", _text(p, "lang", required=False) or "en"
        method_class(method)                                 # an unknown one: ConfigError, before the model
        with self.models.use(model) as h:
            every, pool = _edit_facts(h)
            old = self.edits.pop(model, None)
            if old:
                old["edit"].undo()
            shown = None
            try:
                shown = prepare(h, every, pool, fact_id, new, method=method, lang=lang,
                                common_facts=_int(p, "common_facts", 10))
                shown.edit.apply()
                report = {"model": model, **shown.report(shown.measure())}
            except BaseException:
                if shown is not None and shown.edit is not None and shown.edit.applied:
                    shown.edit.undo()
                if old:                                  # the failed edit leaves the earlier one in place
                    old["edit"].apply()
                    self.edits[model] = old
                raise
        label = f"{method} {fact_id} ({lang}): {report['old']} → {new}"
        self.edits[model] = {"edit": shown.edit, "report": report, "label": label}
        return {**report, "label": label}

    def undo(self, p: dict) -> dict:
        model = _text(p, "model")
        with self.models.use(model):
            e = self.edits.pop(model, None)
            if e is None:
                raise KneuronError(f"{model} has no edit applied")
            e["edit"].undo()
        return {"model": model, "undone": e["label"]}

    # -- runs -----------------------------------------------------------------------------------
    def open_run(self, p: dict) -> dict:
        path = _text(p, "path")
        opened = []
        for d in run_dirs(path):
            known = next((r for r in self.runs.values() if r.path.resolve() == d.resolve()), None)
            view = known or RunView(str(len(self.runs) + 1), d)
            self.runs[view.id] = view
            if view.spec.name:
                self.models.add(view.spec.name)
            opened.append(view.summary())
        return {"runs": opened}

    def list_runs(self) -> dict:
        return {"runs": [{"id": r.id, "path": str(r.path), "model": r.spec.name, "n_facts": len(r.rows)}
                         for r in self.runs.values()]}

    def _run(self, run_id: str) -> RunView:
        if run_id not in self.runs:
            raise KneuronError(f"no open run {run_id!r}")
        return self.runs[run_id]

    def _fact_index(self, run: RunView, i) -> int:
        try:
            i = int(i)
        except (TypeError, ValueError):
            raise ConfigError(f"fact index {i!r} is not a number") from None
        if not 0 <= i < len(run.rows):
            raise ConfigError(f"the run has facts 0-{len(run.rows) - 1}, not {i}")
        return i

    def run(self, run_id: str) -> dict:
        """The run's facts and per-layer counts (``RunView.summary``; ``dkn_rules``: the DKN rules it has)."""
        return self._run(run_id).summary()

    def fact(self, run_id: str, i) -> dict:
        """Fact i's neurons, LIKN, DKN groups (``dkn``: the pairs rule's, as before the clusters rule;
        ``dkn_rules``: each rule's the run has, by name) and effects (``RunView.fact``)."""
        run = self._run(run_id)
        return run.fact(self._fact_index(run, i))

    def measure(self, run_id: str, i) -> dict:
        run = self._run(run_id)
        i = self._fact_index(run, i)
        with self.models.use(run.spec.name) as h:
            return run.measure(h, i)

    def report(self, run_id: str) -> Path:
        run = self._run(run_id)
        if run.report is None:
            raise KneuronError(f"run {run.path} has no report.html (`kneuron reproduce` writes one)")
        return run.report


def _edit_facts(h) -> tuple[list, list]:
    """The facts an edit's id is looked up in and the facts its neighbours come from (`kneuron edit`'s)."""
    every = load_facts("en-zh")
    return every, known_facts(h, every) or every
