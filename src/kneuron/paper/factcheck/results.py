"""The result of a check, typed: ``ScorerResult`` (one scorer on one split's test items), ``SplitResult``
(every scorer on one split), ``FactCheckBaselines`` (both splits of one language: factcheck-<lang>.json,
its ``.save`` / ``.load``, and its table), and ``stem``, the check's file names for a DKN rule.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from kneuron.paper.table1 import _saved_json
from kneuron.report.table import Column, Table, interval, number
from kneuron.store import write_json


def stem(dkn: str) -> str:
    """The files' stem for a DKN rule: the pairs rule (the paper's) keeps Table 3's plain name."""
    return "factcheck" if dkn == "pairs" else f"factcheck-{dkn}"


@dataclass(frozen=True)
class ScorerResult:
    """One scorer on one split's test items: AUROC with its 95 % bootstrap interval over facts, and the
    verdicts "true when score > threshold" (the threshold tuned on validation). ``tuned``: what else
    validation chose (dkn / kn: t; probe: the layer and every layer's validation AUROC)."""
    auroc: float | None
    auroc_low: float | None
    auroc_high: float | None
    threshold: float
    precision: float | None
    recall: float | None
    f1: float | None
    accuracy: float | None
    val_auroc: float | None
    val_f1: float
    n_test_items: int
    tuned: dict = field(default_factory=dict)
    items_without_set: int = 0          # dkn / kn: test items whose scope has no neuron set (score -inf)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, j: dict) -> "ScorerResult":
        return cls(**j)


@dataclass(frozen=True)
class SplitResult:
    """One split of one language: its relations and fact ids per part, item counts, and each scorer's
    result (None, with a note, where it cannot be tuned: no validation or no training item)."""
    split: str
    relations: dict[str, list[str]]
    ids: dict[str, list[str]]
    n_items: dict[str, int]
    scorers: dict[str, ScorerResult | None]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"split": self.split, "relations": self.relations, "ids": self.ids, "n_items": self.n_items,
                "scorers": {k: v.to_json() if v else None for k, v in self.scorers.items()}, "notes": self.notes}

    @classmethod
    def from_json(cls, j: dict) -> "SplitResult":
        sc = {k: ScorerResult.from_json(v) if v else None for k, v in j["scorers"].items()}
        return cls(j["split"], j["relations"], j["ids"], j["n_items"], sc, list(j["notes"]))


@dataclass(frozen=True)
class FactCheckBaselines:
    """The check of one language of a run: per split ("facts", "relations"; None where the run has too
    few relations, see ``notes``) each scorer's result; ``to_json()`` is factcheck-<lang>.json."""
    lang: str
    method: str
    steps: int
    seed: int
    n_boot: int
    splits: dict[str, SplitResult | None]
    notes: list[str] = field(default_factory=list)
    dkn: str = "pairs"                  # the DKN rule of the "dkn" scorer (paper.dkn: pairs or clusters)

    def to_json(self) -> dict:
        return {"lang": self.lang, "method": self.method, "steps": self.steps, "seed": self.seed,
                "n_boot": self.n_boot, "notes": self.notes, "dkn": self.dkn,
                "splits": {k: v.to_json() if v else None for k, v in self.splits.items()}}

    @classmethod
    def from_json(cls, j: dict) -> "FactCheckBaselines":
        sp = {k: SplitResult.from_json(v) if v else None for k, v in j["splits"].items()}
        return cls(j["lang"], j["method"], j["steps"], j["seed"], j["n_boot"], sp, list(j["notes"]),
                   j.get("dkn", "pairs"))

    def save(self, directory) -> Path:
        """factcheck-<lang>.json (factcheck-clusters-<lang>.json for the clusters rule) in ``directory``,
        atomically."""
        return write_json(self.path(directory, self.lang, self.dkn), self.to_json(), indent=2, sort_keys=True,
                          ensure_ascii=False, default=str)

    @classmethod
    def load(cls, directory, lang: str, dkn: str = "pairs") -> "FactCheckBaselines":
        """What ``save`` wrote for ``lang`` and the rule ``dkn`` (a RunStoreError, one line, when it is not there
        or damaged)."""
        return cls.from_json(_saved_json(cls.path(directory, lang, dkn)))

    @staticmethod
    def path(directory, lang: str, dkn: str = "pairs") -> Path:
        return Path(directory) / f"{stem(dkn)}-{lang}.json"

    def table(self) -> Table:
        """A row per split and scorer: test AUROC [95 % CI], F1, precision, recall, what was tuned."""
        num = number(3)
        t = Table(["split", "scorer", Column("AUROC [95% CI]", interval(num)), Column("F1", num),
                   Column("P", num), Column("R", num), "tuned on validation", "test items"],
                  title=f"fact-checking beside baselines ({self.lang}, {self.method})", notes=list(self.notes))
        for name, sp in self.splits.items():
            for scorer, r in (sp.scorers.items() if sp else ()):
                if r is None:
                    t.add(name, scorer, (None, None, None), None, None, None, "-", 0)
                    continue
                tuned = ", ".join(f"{k} {v}" for k, v in r.tuned.items() if k != "val_auroc_by_layer")
                t.add(name, scorer, (r.auroc, r.auroc_low, r.auroc_high), r.f1, r.precision, r.recall,
                      f"{tuned + ', ' if tuned else ''}threshold {num(r.threshold)}", r.n_test_items)
                if scorer in ("dkn", "kn") and r.items_without_set:
                    t.notes.append(f"{name} / {scorer}: {r.items_without_set} of {r.n_test_items} test items have "
                                   f"no neuron set to score on (scored -inf)")
            t.notes += [f"{name}: {n}" for n in (sp.notes if sp else ())]
        return t
