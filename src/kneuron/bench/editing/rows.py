"""The editing benchmark's typed rows: what one edit, one unedited case, the unedited unrelated-text NLL,
one localized fact, ROME's layer sweep and one sequential checkpoint write into the run directory.

Each ``to_json()`` gives the dict the run directory has always held (same keys, same order), and
``from_json()`` reads one back, so run directories written before these types existed still resume and
results.json / the per-edit files of a run are unchanged. A row read back that lacks a key it needs raises
``KeyError`` / ``TypeError`` / ``ValueError``: the caller treats the file as damaged and redoes it.

The raw measurement of a record is ``kneuron.editing.metrics.Measured`` (per prompt kind and target, nll /
acc / argmax / target; its ``to_json()`` is the nested dict the files hold); a ``Measurement`` pairs it with
the record's scores against the unedited model (``record_scores``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kneuron.editing.health import Health, unrelated_digest
from kneuron.editing.metrics import Measured


@dataclass(frozen=True)
class Measurement:
    """One record (one language) measured: the raw scores and, for an edited model, the metrics against
    the unedited model (None for the unedited model itself)."""
    raw: Measured
    scores: dict | None = None


def _split(by_lang: dict[str, Measurement]) -> tuple[dict, dict]:
    return ({lang: m.raw.to_json() for lang, m in by_lang.items()}, {lang: m.scores for lang, m in by_lang.items()})


def _join(raw: dict, scores: dict | None = None) -> dict[str, Measurement]:
    return {lang: Measurement(Measured.from_json(m), None if scores is None else scores[lang])
            for lang, m in raw.items()}


@dataclass(frozen=True)
class UneditedRow:
    """unedited/<case>.json: the unedited model's measurement of a case in every language."""
    case_id: int
    measured: dict[str, Measurement]

    @property
    def raw(self) -> dict[str, Measured]:
        return {lang: m.raw for lang, m in self.measured.items()}

    def to_json(self) -> dict:
        return {"case_id": self.case_id, "measure": {lang: m.to_json() for lang, m in self.raw.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "UneditedRow":
        return cls(int(d["case_id"]), _join(dict(d["measure"])))


@dataclass(frozen=True)
class EditRow:
    """edits/<method>/<case>-<lang>.json: one edit of one case's ``edit_lang`` record, with its cost and the
    case measured in every language under it (``batch``: the batch size, batch mode only). ``health``: the
    edit's (``kneuron.editing.health``; None in rows stored before it existed). ``guarded``: sequential
    mode's guard undid this disabling edit before the case was measured ("undo": the chain went on without
    it, "stop": the chain stopped there). Both keys are written only when set, after the older ones."""
    method: str
    case_id: int
    fact_id: str
    edit_lang: str
    new: str
    edit_seconds: float
    localize_seconds: float
    params_changed: int
    info: dict
    measured: dict[str, Measurement]
    batch: int | None = None
    health: Health | None = None
    guarded: str | None = None

    @property
    def seconds(self) -> float:
        """What the edit cost: computing it, and localizing the neurons it was given."""
        return self.edit_seconds + self.localize_seconds

    @property
    def error(self) -> str | None:
        return self.info.get("error")

    @property
    def scores(self) -> dict[str, dict]:
        return {lang: m.scores for lang, m in self.measured.items()}

    def to_json(self) -> dict:
        raw, scores = _split(self.measured)
        d = {"method": self.method, "case_id": self.case_id, "fact_id": self.fact_id, "edit_lang": self.edit_lang,
             "new": self.new, "edit_seconds": self.edit_seconds, "localize_seconds": self.localize_seconds,
             "seconds": self.seconds, "params_changed": self.params_changed, "info": self.info,
             "error": self.error, "measure": raw, "scores": scores}
        if self.batch is not None:
            d["batch"] = self.batch
        if self.health is not None:
            d["health"] = self.health.to_json()
        if self.guarded is not None:
            d["guarded"] = self.guarded
        return d

    @classmethod
    def from_json(cls, d: dict) -> "EditRow":
        health = d.get("health")
        return cls(d["method"], d["case_id"], d["fact_id"], d["edit_lang"], d["new"], d["edit_seconds"],
                   d["localize_seconds"], d["params_changed"], dict(d["info"]), _join(d["measure"], d["scores"]),
                   d.get("batch"), None if health is None else Health.from_json(health), d.get("guarded"))


@dataclass(frozen=True)
class Unrelated:
    """unrelated.json: the unedited model's mean token NLL of the unrelated sentences of ``langs``
    (``editing.health.unrelated_nll``; {} for a masked model), measured once per run; ``digest`` names the
    sentences it was measured on (other sentences or languages: measured again)."""
    langs: list[str]
    nll: dict[str, float]
    digest: str

    def to_json(self) -> dict:
        return {"langs": self.langs, "nll": self.nll, "digest": self.digest}

    @classmethod
    def from_json(cls, d: dict) -> "Unrelated":
        return cls(list(d["langs"]), {k: float(v) for k, v in d["nll"].items()}, str(d["digest"]))

    def current(self, langs) -> bool:
        """Measured on the bundled sentences as they are now, in ``langs``."""
        return self.digest == unrelated_digest() and self.langs == list(langs)


@dataclass(frozen=True)
class FactNeurons:
    """neurons/<fact>.<lang>.json: a fact's knowledge neurons and the seconds localizing them took."""
    neurons: tuple[tuple[int, int], ...]
    seconds: float

    def to_json(self) -> dict:
        return {"neurons": [[int(a), int(b)] for a, b in self.neurons], "seconds": self.seconds}

    @classmethod
    def from_json(cls, d: dict) -> "FactNeurons":
        return cls(tuple(map(tuple, d["neurons"])), float(d["seconds"]))


@dataclass(frozen=True)
class CommonNeurons:
    """One (relation, language)'s entry of neurons/common.json: the facts counted, the share a neuron must
    reach, and the neurons common to the relation (Dai et al.'s filter)."""
    facts: list[str]
    share: float
    neurons: list[tuple[int, int]]

    def to_json(self) -> dict:
        return {"facts": self.facts, "share": self.share, "neurons": self.neurons}


@dataclass(frozen=True)
class Sweep:
    """rome-sweep.json (ft-l-sweep.json): ROME's (ft-l's) layer sweep (ES/PS/NS/S/EM per layer, first language)
    and the layer it chose; ``held_out``: swept on the run's held-out cases (else on its first reported ones).
    ``bounds`` / ``best_bound``: ft-l's sweep of its L∞ bound before its layers (one row per bound, at
    ``bound_layer``), None for a method without one."""
    lang: str
    cases: list[int]
    layers: list[dict]
    best: int
    seconds: float
    held_out: bool = False
    bounds: list[dict] | None = None
    best_bound: float | None = None
    bound_layer: int | None = None

    def to_json(self) -> dict:
        return {"lang": self.lang, "cases": self.cases, "layers": self.layers, "best": self.best,
                "seconds": self.seconds, **({"held_out": True} if self.held_out else {}),
                **({"bounds": self.bounds, "best_bound": self.best_bound, "bound_layer": self.bound_layer}
                   if self.bounds is not None else {})}

    @classmethod
    def from_json(cls, d: dict) -> "Sweep":
        bb = d.get("best_bound")
        return cls(d.get("lang"), d.get("cases"), d["layers"], int(d["best"]), d.get("seconds"),
                   bool(d.get("held_out", False)), d.get("bounds"), None if bb is None else float(bb),
                   d.get("bound_layer"))


@dataclass(frozen=True)
class Checkpoint:
    """sequential/<method>-<lang>-k<k>.json: every record edited so far, measured after ``k`` kept edits.
    ``state``: the model's own state then (None in checkpoints stored before it existed): ``nll`` the
    unrelated-text NLL per language, ``weight_ratio`` ‖W − W₀‖/‖W₀‖ of every weight the chain wrote
    (``health.drift``), ``GE`` the n-gram entropy (x100) of texts sampled from the chain's fixed generation
    prompts, ``texts`` those texts."""
    k: int
    lang: str
    scores: list[dict]
    summary: dict[str, Any]                        # ES, PS, NS, S, EM
    state: dict[str, Any] | None = None

    def to_json(self) -> dict:
        return {"k": self.k, "lang": self.lang, "scores": self.scores, **self.summary,
                **({"state": self.state} if self.state is not None else {})}

    @classmethod
    def from_json(cls, d: dict) -> "Checkpoint":
        rest = {k: v for k, v in d.items() if k not in ("k", "lang", "scores", "state")}
        return cls(int(d["k"]), d.get("lang"), list(d["scores"]), rest, d.get("state"))


__all__ = ["Checkpoint", "CommonNeurons", "EditRow", "FactNeurons", "Measurement", "Sweep", "UneditedRow", "Unrelated"]
