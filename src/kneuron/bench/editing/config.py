"""The editing benchmark's settings, what each method is to the bench, and the run's run.json (the keys a
resumed run must keep)."""
from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field, replace

from kneuron.editing import METHODS, ROME
from kneuron.editing.registry import lookup, method_class, method_for, option_names
from kneuron.editing.records import PROTOCOLS, Case
from kneuron.errors import ConfigError
from kneuron.models.load import ModelHandle

DEFAULT_METHODS = ("kn", "kn-eai", "kn-opt", "likn", "rome", "ft-m", "ft-l")
MODES = ("single", "sequential", "batch")
CHECKPOINTS = (1, 10, 50, 100, 250, 500, 1000)
# sequential mode, an edit that breaks the health margin (``editing.health.DISABLING_MARGIN`` against the
# model before it): "undo" it bit for bit and go on, "stop" the chain there (undone too), or "keep" it
# (no guard: the chains of runs stored before the guard existed)
ON_COLLAPSE = ("undo", "stop", "keep")
# run.json keys a resumed run must keep
RESUME_KEYS = ("model", "n", "mode", "langs", "seed", "n_neighbours", "n_generation", "common_facts",
               "sweep_cases", "rome_layers", "cases_hash", "tune_records", "common_over", "common_max",
               "localize_prompts", "protocol")
# what a run stored before a resume key existed had: no held-out cases, Dai's filter over the first
# ``common_facts`` facts of a relation, every prompt localised, kneuron's records
STORED = {"tune_records": 0, "common_over": "cases", "common_max": None, "localize_prompts": "all",
          "protocol": "kneuron"}
# a new run's choice where the settings leave it open (None): the filter over every fact of the relation, the
# facts localised on their rewrite prompt (the paraphrases PS is measured on held out)
NEW = {"common_over": "relation", "localize_prompts": "rewrite"}
COMMON_OVER = ("relation", "cases")
# run.json keys of a run whose records come from a file (``--records``): absent from a fact set's run, and a
# resume must have the same (none, or the same file's format and content)
RECORDS_KEYS = ("records_format", "records_sha256")


# ----------------------------------------------------------------------------- what a method is to the bench
# (its class attributes in ``kneuron.editing.registry``, looked up when asked)

def uses_neurons(method: str) -> bool:
    """The method is given the bench's cached knowledge neurons (one localization for every KN method)."""
    return method_class(method).uses_neurons


def uses_common(method: str) -> bool:
    """The method is given its relation's common neurons to leave out (Dai et al.'s filter; not likn nor
    likn-transfer, whose neurons are those the fact shares with its other language)."""
    return uses_neurons(method) and method_class(method).common_filter


def uses_shared_neurons(method: str) -> bool:
    """The method writes the neurons the fact shares with its other language (likn, likn-transfer): it is
    given the intersection of the two records' cached neurons and the other record's fact."""
    return method_class(method).shared_neurons


def uses_other_language(method: str) -> bool:
    """The method edits the fact in two languages at once (likn: it is also given the other record's new
    object). Its cells in the other language are its own edit there, not transfer."""
    return method_class(method).languages > 1


def uses_rome_layer(method: str) -> bool:
    """The method edits a layer and has no sweep apart from ROME's (a ``layer`` option: rome, ft-m,
    memit ...): where the bench ran ROME's sweep, the layer it chose."""
    return "layer" in option_names(method) and not own_sweep(method)


def own_sweep(method: str) -> bool:
    """The bench sweeps the method's layer on its own, as ROME's (ft-l), unless its ``layer`` is given."""
    cls = method_class(method)
    return cls.sweeps_layer and not issubclass(cls, ROME)


def kn_methods() -> tuple[str, ...]:
    """The methods given the bench's neurons, by name."""
    return tuple(m for m in METHODS if uses_neurons(m))


# ----------------------------------------------------------------------------- the settings

@dataclass(frozen=True)
class EditingConfig:
    n: int = 100                                  # cases (fact ids), each rewritten in every language
    methods: tuple[str, ...] = DEFAULT_METHODS
    mode: str = "single"
    langs: tuple[str, ...] | None = None          # None: every language of the facts
    seed: int = 0
    n_neighbours: int = 10
    n_generation: int = 2                         # generation prompts per record (GE; 0: none)
    common_facts: int = 10                        # common_over="cases": facts per relation Dai's filter counts
    common_over: str | None = None                # "relation": every fact of the relation in the pool (at most
                                                  # common_max); "cases": the first common_facts, the records'
                                                  # own first; None: a resumed run's own, else NEW's
    common_max: int | None = None                 # "relation": at most this many facts per relation (None: all)
    localize_prompts: str | None = None           # the prompts each fact is localised on: "rewrite" or "all"
                                                  # (localize.PROMPTS); None: a resumed run's own, else NEW's
    sweep_cases: int = 4                          # the layer sweeps (rome, ft-l): cases (first language)
    tune_records: int = 0                         # held-out cases the sweeps run on instead (0: the first
                                                  # sweep_cases reported cases, which is selection on test records)
    rome_layers: tuple[int, ...] | None = None    # layers the sweeps try (None: every layer, at most 8)
    method_options: dict = field(default_factory=dict)    # method -> options for kneuron.editing.edit
    on_collapse: str = "undo"                     # sequential mode's guard (ON_COLLAPSE)
    protocol: str = "kneuron"                     # how the records are drawn (records.PROTOCOLS): kneuron's, or
                                                  # "counterfact" (CounterFact's construction, editing.protocol)

    def validate(self) -> None:
        if self.n < 1:
            raise ConfigError(f"n must be >= 1, got {self.n}")
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {self.protocol!r}")
        if self.on_collapse not in ON_COLLAPSE:
            raise ConfigError(f"on_collapse must be one of {', '.join(ON_COLLAPSE)}, not {self.on_collapse!r}")
        if not self.methods:
            raise ConfigError("no editing method given")
        for m in self.methods:
            if lookup(m) is None:
                raise ConfigError(f"unknown editing method {m!r} (expected one of {', '.join(METHODS)})")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"a method is named twice in {', '.join(self.methods)}")
        if self.mode == "batch":
            bad = [m for m in self.methods if method_class(m).batch_rule is None]
            if bad:
                with_batch = [m for m, cls in METHODS.items() if cls.batch_rule is not None]
                raise ConfigError(f"{', '.join(bad)} has no batch mode (methods with one: {', '.join(with_batch)}); "
                                  "leave it out or use --mode single or sequential")
        for m in self.methods:                            # memit, alphaedit: their options checked before any work
            if method_class(m).batch_rule == "joint":
                method_for(m, **self.options(m))
        for m, opts in self.method_options.items():       # the bench localises each fact once for every KN method
            local = sorted({"localize", "max_prompts", "prompts"} & set(opts)) if method_class(m).uses_neurons else []
            if local:
                raise ConfigError(f"{m}: {', '.join(local)} cannot be set in the bench, which localises every fact "
                                  "once for all KN methods (IG, 5 midpoint steps, the prompts --localize-prompts "
                                  "says); use kneuron edit for another localization")
        for k in ("n_neighbours", "n_generation", "common_facts", "sweep_cases", "tune_records"):
            if getattr(self, k) < 0:
                raise ConfigError(f"{k} must be >= 0, got {getattr(self, k)}")
        if self.common_over not in (None, *COMMON_OVER):
            raise ConfigError(f"common_over must be {' or '.join(COMMON_OVER)}, not {self.common_over!r}")
        if self.common_max is not None and self.common_max < 1:
            raise ConfigError(f"common_max must be >= 1 (or None: every fact of the relation), got {self.common_max}")
        if self.localize_prompts is not None:
            from kneuron.editing.localize import prompt_limit
            prompt_limit(self.localize_prompts)

    def resolved(self, stored: dict | None = None) -> "EditingConfig":
        """The settings with the open ones (None) chosen: a resumed run's (``stored``: its run.json; a
        key it lacks: STORED's, what the run was made with), else a new run's (NEW)."""
        was = NEW if stored is None else {**STORED, **stored}
        return replace(self, **{k: was[k] for k in NEW if getattr(self, k) is None})

    def common_count(self) -> int | None:
        """How many facts of a relation Dai's filter counts over (the records' own included; None: all)."""
        return self.common_facts if self.common_over == "cases" else self.common_max

    def check_model(self, handle: ModelHandle) -> None:
        """Refuse methods the model's kind cannot take (before any work)."""
        if handle.kind != "causal":
            bad = [m for m in self.methods if method_class(m).causal_only]
            if bad:
                raise ConfigError(f"{', '.join(bad)} supports causal models only; {handle.name} is a "
                                  f"{handle.kind} model: leave {', '.join(bad)} out of the methods")

    def options(self, method: str) -> dict:
        """The user's options for ``method`` (``--option METHOD.NAME=VALUE``)."""
        return self.method_options.get(method, {})


# ----------------------------------------------------------------------------- run.json

def plain(x):
    """JSON's fallback for what the bench's rows may hold: tensors and tuples/sets as lists, else text."""
    import torch
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, (set, tuple)):
        return list(x)
    return str(x)


def run_meta(cfg: EditingConfig, handle: ModelHandle, cases: list[Case], facts_name: str | None,
             tune: list[Case] = ()) -> dict:
    """run.json's content for this run: the settings, the model, the records' hash (the held-out ``tune``
    cases' too, where there are any) and the versions; protocol "counterfact": the paraphrase prefixes'
    seed and how many records have fewer neighbours than asked (``editing.protocol``)."""
    import torch
    import transformers

    from kneuron._version import __version__
    text = "\n".join(json.dumps(c.to_json(), ensure_ascii=False, sort_keys=True) for c in [*cases, *tune])
    d = asdict(cfg)
    d["methods"], d["langs"] = list(cfg.methods), cases[0].langs
    d["rome_layers"] = list(cfg.rome_layers) if cfg.rome_layers else None
    return {**d, "model": handle.name, "kind": handle.kind, "n_layers": handle.n_layers,
            "n_neurons": handle.n_neurons, "facts": facts_name, "n_cases": len(cases),
            **({"tune_cases": [c.case_id for c in tune]} if tune else {}),
            **(_counterfact(cfg, handle, cases) if cfg.protocol == "counterfact" else {}),
            "cases_hash": hashlib.sha256(text.encode()).hexdigest(),
            "versions": {"kneuron": __version__, "torch": torch.__version__,
                         "transformers": transformers.__version__, "python": platform.python_version()}}


def _counterfact(cfg: EditingConfig, handle: ModelHandle, cases: list[Case]) -> dict:
    from kneuron.editing.protocol import neighbour_shortfall, prefix_seed
    return {"paraphrase_prefix_seed": prefix_seed(cfg.seed) if handle.kind == "causal" else None,
            "neighbour_shortfall": neighbour_shortfall(cases, cfg.n_neighbours)}


def resumed_meta(had: dict, meta: dict, cfg: EditingConfig, where) -> dict:
    """``meta`` for a run resumed from one whose run.json is ``had``: refused (RunStoreError, one line)
    where a setting in RESUME_KEYS, the records file (RECORDS_KEYS), a method's options or (sequential mode)
    the guard differ (a run stored before the guard existed had none: "keep"); the methods
    and options of both, merged."""
    from kneuron.runs.store import RunStoreError
    from kneuron.store import check_resume
    from kneuron.store.manifest import jsonable
    had = {**STORED, **had}                   # a run stored before a key existed: what it was made with
    check_resume(where, had, meta, RESUME_KEYS, error=RunStoreError)
    check_resume(where, {k: had.get(k) for k in RECORDS_KEYS}, {k: meta.get(k) for k in RECORDS_KEYS},
                 error=RunStoreError, hint="--records names the run's records file, unchanged (or none)")
    if cfg.mode == "sequential" and had.get("on_collapse", "keep") != cfg.on_collapse:   # no guard before it existed
        raise RunStoreError(f"cannot resume {where}: on_collapse differs (run has {had.get('on_collapse', 'keep')!r}, "
                            f"now {cfg.on_collapse!r}); its chains go on with the guard they began with: pass "
                            f"--on-collapse {had.get('on_collapse', 'keep')}")
    opts = had.get("method_options") or {}
    for m in cfg.methods:
        if m in opts and jsonable(opts[m]) != jsonable(meta["method_options"].get(m)):
            raise RunStoreError(f"cannot resume {where}: the options of {m} differ")
    return {**meta, "methods": list(dict.fromkeys(list(had.get("methods", [])) + list(cfg.methods))),
            "method_options": {**opts, **meta["method_options"]}}


__all__ = ["CHECKPOINTS", "COMMON_OVER", "DEFAULT_METHODS", "EditingConfig", "MODES", "NEW", "ON_COLLAPSE",
           "RECORDS_KEYS", "RESUME_KEYS", "STORED", "kn_methods", "own_sweep", "plain", "resumed_meta", "run_meta",
           "uses_common", "uses_neurons", "uses_other_language", "uses_rome_layer", "uses_shared_neurons"]
