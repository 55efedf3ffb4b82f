"""Testing located neurons: suppress or enhance them and measure the answer probability on the fact
itself (related) and on a fact of another relation (unrelated) — the paper's Table 1 metric."""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from kneuron.facts import Fact
from kneuron.intervene import enhance, suppress
from kneuron.paper.stats import Table1, relative_change, table1
from kneuron.models.load import ModelHandle
from kneuron.neurons import Neuron
from kneuron.probe import answer_prob
from kneuron.report.progress import track
from kneuron.store.atomic import write_json
from kneuron.store.parquet import write_table
from kneuron.runs.reopen import RunContents, check_model, load_run   # load_run and RunContents live in runs.reopen

OPS = {"suppress": lambda h, n: suppress(h, n), "enhance": lambda h, n: enhance(h, n, factor=2.0)}


def unrelated_partner(facts: list[Fact], seed: int = 42) -> tuple[list[int], int]:
    """For each fact, the index of a fact of another relation (same language), drawn with ``seed``.
    Falls back to any other fact where no other relation exists; returns how often that happened."""
    rng, out, fallback = random.Random(seed), [], 0
    for i, f in enumerate(facts):
        pool = [j for j, g in enumerate(facts) if g.lang == f.lang and g.relation != f.relation]
        if not pool:
            pool = [j for j, g in enumerate(facts) if j != i] or [i]
            fallback += 1
        out.append(rng.choice(pool))
    return out, fallback


def first_prompt(handle: ModelHandle, f: Fact) -> tuple[str, str]:
    """The (prompt, target) of a fact's first template usable by the model (``Fact.first_query``)."""
    q = f.first_query(handle.kind)
    return q.prompt, q.target


@dataclass(frozen=True)
class EditEffect:
    """One fact under one neuron set: p(answer) before and after each op (suppress: x0, enhance: x2, at
    the answer position), on the fact itself (related) and on a fact of another relation (unrelated)."""
    fact_id: str
    lang: str
    relation: str
    n_neurons: int                       # the size of the edited set
    unrelated_id: str
    unrelated_relation: str
    p_before: float
    p_before_unrelated: float
    p_suppress: float | None = None
    p_suppress_unrelated: float | None = None
    p_enhance: float | None = None
    p_enhance_unrelated: float | None = None
    condition: str | None = None         # Table 2: which set was edited (likn, own, other, both, random)

    def delta(self, op: str) -> float:
        """The relative change of p(answer) on the fact under ``op``."""
        return float(relative_change([self.p_before], [getattr(self, f"p_{op}")])[0])

    def row(self) -> dict:
        """A flat row (with the relative changes) for a data frame / Parquet file."""
        r = {k: v for k, v in asdict(self).items() if v is not None}
        for op in ("suppress", "enhance"):
            if getattr(self, f"p_{op}") is not None:
                r[f"delta_{op}"] = self.delta(op)
        return r


def edit_effect(handle: ModelHandle, f: Fact, g: Fact, neurons: list[Neuron], p_before: float,
            p_before_unrelated: float, ops=("suppress", "enhance"), condition: str | None = None) -> EditEffect:
    """The effect of each op on ``neurons`` on the fact ``f`` and the unrelated fact ``g``."""
    after = {}
    for op in ops:
        with OPS[op](handle, neurons):
            after[f"p_{op}"] = answer_prob(handle, *first_prompt(handle, f)).prob
            after[f"p_{op}_unrelated"] = answer_prob(handle, *first_prompt(handle, g)).prob
    return EditEffect(f.id, f.lang, f.relation, len(neurons), g.id, g.relation, p_before, p_before_unrelated,
                      condition=condition, **after)


def table1_of(effects: list[EditEffect], *, outlier_cut: bool = False, n_boot: int = 1000) -> Table1:
    """The paper's Table 1 metric over a list of effects (each with both ops)."""
    col = lambda k: [getattr(e, k) for e in effects]  # noqa: E731
    return table1(col("p_before"), col("p_suppress"), col("p_enhance"), col("p_before_unrelated"),
                  col("p_suppress_unrelated"), col("p_enhance_unrelated"), outlier_cut=outlier_cut, n_boot=n_boot)


def table1_cell(effects: list[EditEffect], n_boot: int = 1000) -> dict:
    """One cell of reproduce's Table 1 (``effects`` not empty): the metric, the mean size of the edited sets
    and the facts without knowledge neurons."""
    n = [e.n_neurons for e in effects]
    return {**table1_of(effects, n_boot=n_boot).to_json(), "mean_neurons": sum(n) / len(n),
            "facts_without_neurons": sum(k == 0 for k in n)}


def table1_cells(effects: list[EditEffect], langs, n_boot: int = 1000, known=None) -> dict:
    """Per language, Table 1 over its facts; with ``known`` (``paper.facts_used.Known``) also over the facts
    the model knows and those it does not, as "known" / "not_known" inside the language's cell."""
    from kneuron.paper.facts_used import split_by_known
    out = {}
    for lang in langs:
        es = [e for e in effects if e.lang == lang]
        out[lang] = table1_cell(es, n_boot)
        for part, xs in split_by_known(es, known).items():
            if xs:
                out[lang][part] = table1_cell(xs, n_boot)
    return out


def edit_effects(handle: ModelHandle, run: RunContents, ops=("suppress", "enhance"), seed: int = 42,
                 show_progress: bool = False) -> list[EditEffect]:
    """Per fact of a run: its own knowledge neurons edited, on the fact and on its unrelated partner."""
    check_model(handle, run)
    partner, _ = unrelated_partner(run.facts, seed)
    base = [answer_prob(handle, *first_prompt(handle, f)).prob for f in run.facts]
    fs = run.facts
    return [edit_effect(handle, fs[i], fs[partner[i]], run.neurons.get(fs[i].key, []), base[i], base[partner[i]], ops)
            for i in track(range(len(fs)), "evaluating", show=show_progress)]


@dataclass
class Evaluation:
    """Table 1 of a run, with the per-fact effects it was computed from; ``save`` writes both."""
    table: Table1
    effects: list[EditEffect]
    seed: int
    outlier_cut: bool
    unrelated_same_relation: int         # facts whose unrelated partner had to come from their own relation

    def to_json(self) -> dict:
        return {**self.table.to_json(), "seed": self.seed, "outlier_cut": self.outlier_cut,
                "unrelated_same_relation": self.unrelated_same_relation,
                "facts_without_neurons": sum(e.n_neurons == 0 for e in self.effects)}

    def save(self, run_dir) -> None:
        """evaluation.parquet (per fact) and evaluation.json, in the run directory, each atomically."""
        write_table(Path(run_dir) / "evaluation.parquet", pa.Table.from_pylist([e.row() for e in self.effects]))
        write_json(Path(run_dir) / "evaluation.json", self.to_json(), indent=2, sort_keys=True)

    @classmethod
    def load(cls, run_dir) -> "Evaluation":
        """What ``save`` wrote (a RunStoreError, one line, when it is not there or damaged)."""
        j = _saved_json(Path(run_dir) / "evaluation.json")
        return cls(table1_from_json(j), read_effects(Path(run_dir) / "evaluation.parquet"), j["seed"],
                   j["outlier_cut"], j["unrelated_same_relation"])


def _saved_json(path: Path) -> dict:
    from kneuron.runs.store import RunStoreError
    from kneuron.store.atomic import StoreError, read_json
    try:
        j = read_json(path, readonly=True)
    except StoreError as e:
        raise RunStoreError(str(e)) from None
    if j is None:
        raise RunStoreError(f"{path}: not there (nothing saved yet)")
    return j


def read_effects(path: Path) -> list[EditEffect]:
    """The effects a result saved as Parquet (``EditEffect.row`` per row), [] when there is none."""
    if not path.is_file():
        return []
    names = set(EditEffect.__dataclass_fields__)
    return [EditEffect(**{k: v for k, v in r.items() if k in names and v is not None})
            for r in pq.read_table(path).to_pylist()]


def table1_from_json(j: dict) -> Table1:
    """A Table1 from its ``to_json`` (undefined values, written as null, read back as None)."""
    from kneuron.paper.stats import Interval, OpSummary

    def op(d: dict) -> OpSummary:
        iv = {k: Interval(**v) for k, v in d.items() if isinstance(v, dict)}
        return OpSummary(**{**d, **iv})
    return Table1(j["n_facts"], op(j["suppress"]), op(j["enhance"]), j["sr"], j["dropped"], j["outlier_cut"],
                  Interval(**j["sr_interval"]) if j.get("sr_interval") else None)


def table1_from_run(handle: ModelHandle, run_dir, facts_path=None, seed: int = 42, outlier_cut: bool = False,
                    n_boot: int = 1000, show_progress: bool = False) -> Evaluation:
    """Table 1 for a run (nothing is written: ``.save(run_dir)`` does that)."""
    run = load_run(run_dir, facts_path)
    effects = edit_effects(handle, run, seed=seed, show_progress=show_progress)
    return Evaluation(table1_of(effects, outlier_cut=outlier_cut, n_boot=n_boot), effects, seed, outlier_cut,
                      unrelated_partner(run.facts, seed)[1])

