"""What every mode of the editing benchmark edits with, built once before the first method runs: the
records, the unedited model's measurements, the cached neurons and the relations' common ones, ROME's
layer (and its second moment), and the run directory. Nothing is added to it while the methods run.

``BenchContext.edit`` computes one method's edit of one record with what the context holds (each method
is given only what its function names), ``BenchContext.row`` measures a case under an edit and
``BenchContext.health`` the edit's health (``kneuron.editing.health``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

from kneuron.editing import Edit, EditError, edit
from kneuron.editing.health import Health, continuation, health, unrelated_sentences
from kneuron.editing.registry import method_class, option_names
from kneuron.editing.metrics import Measured, measure, record_scores
from kneuron.editing.records import Case
from kneuron.facts.templates import QueryError
from kneuron.models.load import ModelHandle

from .config import (EditingConfig, own_sweep, uses_common, uses_neurons, uses_other_language, uses_rome_layer,
                     uses_shared_neurons)
from .disk import BenchDir
from .rows import CommonNeurons, EditRow, FactNeurons, Measurement, Sweep, UneditedRow, Unrelated


class Budget:
    """How many new edits this process may still compute (``limit``: a simulated interruption; None: no
    limit). The one counter of a run, made with it."""

    def __init__(self, limit: int | None):
        self.limit, self.spent = limit, 0

    def left(self) -> bool:
        return self.limit is None or self.spent < self.limit

    def spend(self) -> None:
        self.spent += 1


@dataclass(frozen=True)
class BenchContext:
    handle: ModelHandle
    cfg: EditingConfig
    cases: list[Case]
    before: dict[int, UneditedRow]                        # case id -> the unedited model's measurement
    disk: BenchDir
    budget: Budget
    neurons: dict[tuple[str, str], FactNeurons] | None = None     # (fact id, lang); None: no KN method
    common: dict[tuple[str, str], CommonNeurons] | None = None    # (relation, lang)
    rome_layer: int | None = None                         # the layer ROME (and FT-M) edit: the sweep's or the user's
    rome_stats: Any = None                                # the unedited model's C at that layer (stats="auto")
    moments: dict[str, dict] | None = None                # method -> the unedited model's C0 at each of its
                                                          # layers (memit, alphaedit: methods reading moments=)
    sweep: Sweep | None = None
    show: bool = False                                    # progress bars
    warn: Callable[[str], None] = lambda s: None
    tune: list[Case] = field(default_factory=list)        # held-out cases (the layer sweeps), never reported
    layers: dict[str, int] = field(default_factory=dict)  # method -> the layer its own sweep chose (ft-l), or its user's
    sweeps: dict[str, Sweep] = field(default_factory=dict)  # method -> that sweep (not ROME's: ``sweep``)
    bounds: dict[str, float] = field(default_factory=dict)  # method -> the L∞ bound its sweep chose (ft-l)
    unrelated: Unrelated | None = None                    # the unedited model's unrelated-text NLL (health)

    def unedited(self, case: Case) -> dict[str, Measured]:
        """The case's unedited raw measurement per language."""
        return self.before[case.case_id].raw

    @property
    def health_langs(self) -> list[str]:
        """The languages of the unrelated sentences an edit's health is measured in: the run's that the
        set has, else all of the set's."""
        sents = unrelated_sentences()
        return [g for g in self.cases[0].langs if g in sents] or list(sents)

    def health(self, e: Edit, case: Case, lang: str, before: dict[str, float] | None = None,
               shared: Health | None = None) -> Health:
        """The health of ``e`` with the model as it is now edited by it (``health.health``): its unrelated
        NLL against ``before`` (default the unedited model's), the greedy continuation of the case's
        ``lang`` rewrite prompt. ``shared``: a batch's health, measured for another member (only the
        continuation is this case's own)."""
        prompt = case.records[lang].prompt
        if shared is not None:
            return replace(shared, continuation=continuation(self.handle, prompt))
        if before is None:
            if self.unrelated is None:
                raise ValueError("the context has no unedited unrelated NLL (prepare.unrelated)")
            before = self.unrelated.nll
        return health(self.handle, e, prompt, before)

    # -- one edit -------------------------------------------------------------------

    def options(self, method: str, case: Case, lang: str, **extra) -> dict:
        """What the method is given (``kneuron.editing.edit``'s options): from the context, where the
        method reads it (its ``context``), the cached neurons (KN methods: the fact's, minus the relation's
        common ones; likn, likn-transfer: those the fact shares with its other language, unfiltered), the
        other record's fact (likn, likn-transfer) and its new object (likn only, which rewrites both
        languages), ROME's second moment and its progress bar; the layer: its own sweep's for a method
        that has one apart from ROME's (ft-l), else ROME's where the method has a ``layer`` option; then the
        user's options for the method, then ``extra``."""
        cls = method_class(method)
        r = case.records[lang]
        auto: dict = {}
        if uses_neurons(method) and self.neurons is not None:
            auto["neurons"] = list(self.neurons[(r.fact.id, lang)].neurons)
            if uses_common(method):
                auto["common"] = set(map(tuple, self.common[(case.relation, lang)].neurons))
        if uses_shared_neurons(method) or uses_other_language(method):
            other = next((o for o in case.langs if o != lang), None)
            if other is None:                 # one language: no shared neurons to give (the edit says why)
                auto.pop("neurons", None)
            else:
                o = case.records[other]
                auto["other"] = o.edit_fact
                if uses_other_language(method):
                    auto["other_new"] = o.new
                if uses_shared_neurons(method) and "neurons" in auto:
                    auto["neurons"] = sorted(set(auto["neurons"]) & set(self.neurons[(o.fact.id, other)].neurons))
        layer = self.layers.get(method) if own_sweep(method) else self.rome_layer if uses_rome_layer(method) else None
        if layer is not None:
            auto["layer"] = layer
        if method in self.bounds:
            auto["norm_bound"] = self.bounds[method]
        auto["progress"] = self.show
        if self.rome_stats is not None:
            auto["moment"] = self.rome_stats           # the unedited model's C, also under kept edits
        if self.moments is not None and self.moments.get(method) is not None:
            auto["moments"] = self.moments[method]     # the same for the multi-layer methods
        takes = set(option_names(cls)) | set(cls.context)
        return {**{k: v for k, v in auto.items() if k in takes}, **self.cfg.options(method), **extra}

    def local_seconds(self, method: str, case: Case, lang: str) -> float:
        """Localization time the method would have spent on its own (its neurons were cached)."""
        if not uses_neurons(method) or self.neurons is None:
            return 0.0
        langs = case.langs if uses_shared_neurons(method) or uses_other_language(method) else [lang]
        return sum(self.neurons[(case.records[g].fact.id, g)].seconds for g in langs)

    def edit(self, method: str, case: Case, lang: str, **extra) -> Edit:
        """The method's edit of the case's ``lang`` record (not applied); one it cannot make (an EditError or
        QueryError: no usable prompt, no shared neuron ...) is an edit that changes nothing, with the reason
        in its info (and a warning), so every method is measured on the same records."""
        r = case.records[lang]
        try:
            return edit(self.handle, r.edit_fact, r.new, method=method, **self.options(method, case, lang, **extra))
        except (EditError, QueryError) as err:
            self.warn(f"{method} cannot edit case {case.case_id} ({case.fact_id}, {lang}): {err}")
            return Edit(self.handle, method, None, [], info={"error": str(err)})

    def edit_batch(self, method: str, cases: list[Case], lang: str) -> Edit:
        """A joint method's one edit of every case's ``lang`` record (not applied; ``JointEdit.member(i)`` is
        case i's share). A record it cannot edit is left out of the batch (its member's info says why, and a
        warning); a batch it cannot make at all is an edit that changes nothing, with the reason."""
        from kneuron.editing import JointEdit, edit_batch
        recs = [c.records[lang] for c in cases]

        def said(i, rewrite, err):
            self.warn(f"{method} cannot edit case {cases[i].case_id} ({cases[i].fact_id}, {lang}): {err}")
        try:
            return edit_batch(self.handle, [(r.edit_fact, r.new) for r in recs], method=method, on_error=said,
                              **self.options(method, cases[0], lang))
        except (EditError, QueryError) as err:
            self.warn(f"{method} cannot edit the batch of {len(cases)} cases ({lang}): {err}")
            return JointEdit(self.handle, method, None, [], info={"error": str(err),
                                                                  "rewrites": [{"error": str(err)} for _ in cases]})

    def row(self, method: str, case: Case, lang: str, e: Edit, batch: int | None = None) -> EditRow:
        """The case measured in every language with the model as it is now (``e`` applied), against the
        unedited model; generation prompts in the edit language only."""
        recs = list(case.records.values())
        ms = measure(self.handle, recs, generation=[lang], seed=self.cfg.seed + case.case_id)
        before = self.unedited(case)
        return EditRow(method, case.case_id, case.fact_id, lang, case.records[lang].new, e.seconds,
                       self.local_seconds(method, case, lang), e.params_changed, e.info,
                       {r.lang: Measurement(m, record_scores(m, before[r.lang])) for r, m in zip(recs, ms)}, batch)


__all__ = ["BenchContext", "Budget"]
