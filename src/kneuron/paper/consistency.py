"""Localization consistency (Chen et al., ICLR 2025, "Knowledge Localization: Mission Not Accomplished?
Enter Query Localization!"): is a fact localized to one set of knowledge neurons whatever query asks for
it (consistent knowledge, KC), or does each query bring its own set (inconsistent knowledge, KI)?

    report = consistency_from_runs([run_dir], ConsistencyConfig(metric="jaccard", static_threshold=0.1))
    report = consistency_from_runs([run_dir], handles=lambda run: open_model(run))   # + the query-neuron test
    report.save(path); ConsistencyReport.load(path); report.table()

Definitions. The paper's exact equations could not be read where this was written (only its abstract
and summaries were at hand): what follows is this module's own definition of what the paper describes,
every choice a setting of ``ConsistencyConfig``.
  * A fact's queries q_1..q_k (its templates, k >= 2) each have their own neurons N_i: those above
    tau x the query's best score (``kneuron.neurons.select``), before refine or CAS.
  * Consistency score, in [0, 1] (1: every query has the same set):
      "jaccard" (default):  |N_1 & ... & N_k| / |N_1 | ... | N_k|     (shared by every query)
      "pairwise":           the mean over pairs i < j of |N_i & N_j| / |N_i | N_j| (pairs of two
                            empty sets left out)
    None (not scored) for a fact with one query, or with no neuron in any of its queries.
  * KC / KI: a score >= the threshold is KC, below it KI, under two thresholds, both recorded: a static
    one (``static_threshold``, 0.1 by default) and Otsu's, per (model, method): the cut of the sorted
    scores that maximises the between-class variance w0 w1 (m0 - m1)^2, midway between the two scores it
    falls between (the first such cut on a tie; None with fewer than two distinct scores).
  * Shares of KI facts per model, method, language and relation, under each threshold.
  * Query-neuron test (the paper's "query-KN mapping"): for each query i and each query j of the same
    fact (both sets non-empty), the relative drop of p(answer | q_i) when N_j is suppressed (x0 at the
    answer positions, ``kneuron.intervene.suppress_each``): (p0 - p) / p0. A query's own set should cost
    it more than another query's: the pairs where drop(i, i) > drop(i, j), and the mean drops, overall
    and within KC and KI.

Where the per-query sets come from: the locate run keeps them (queries.parquet; ``kneuron.runs.store``).
``locate`` already computes them (each query is thresholded before refine), so storing them costs a few
rows per fact, while computing them here would repeat the whole attribution -- the run's dominant cost --
and could drift from the run's own settings. A run made before runs kept them is refused in one line that
says to re-run it. The query-neuron test needs the model (forward passes only); it is resumable: each
fact's row is appended to <run>/consistency.jsonl as it is done, and a rerun continues.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Callable, Sequence

from kneuron.errors import ConfigError
from kneuron.neurons import Neuron

METRICS = ("jaccard", "pairwise")
DIMENSIONS = ("model", "method", "lang", "relation")
SPLITS = ("static", "otsu")
ROWS_FILE, SUMMARY_FILE, KEY = "consistency.jsonl", "consistency.json", ("fact_id", "lang")
TEST_CONFIG = {"test": "query-neuron", "drop": "relative"}


# ----------------------------------------------------------------------------- one fact, many facts

def consistency_score(sets: Sequence[Sequence[Neuron]], metric: str = "jaccard") -> float | None:
    """How alike a fact's per-query neuron sets are (see the module doc); None when not defined."""
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    ss = [set(map(tuple, s)) for s in sets]
    if len(ss) < 2 or not set().union(*ss):
        return None
    if metric == "jaccard":
        return len(set.intersection(*ss)) / len(set.union(*ss))
    pairs = [len(a & b) / len(a | b) for a, b in combinations(ss, 2) if a | b]   # two empty sets: no pair
    return sum(pairs) / len(pairs)


def otsu_threshold(values: Sequence[float | None]) -> float | None:
    """Otsu's threshold of a list of scores (None entries ignored): the cut between two consecutive
    distinct sorted values that maximises w0 w1 (m0 - m1)^2, placed midway between them; the lowest
    such cut on a tie; None with fewer than two distinct values."""
    xs = sorted(float(v) for v in values if v is not None)
    n, total = len(xs), sum(xs)
    best, cut, left = -1.0, None, 0.0
    for i in range(1, n):
        left += xs[i - 1]
        if xs[i] == xs[i - 1]:
            continue
        w0, m0, m1 = i / n, left / i, (total - left) / (n - i)
        between = w0 * (1 - w0) * (m0 - m1) ** 2
        if between > best + 1e-15:
            best, cut = between, (xs[i - 1] + xs[i]) / 2
    return cut


def is_consistent(score: float | None, threshold: float | None) -> bool | None:
    """KC (True) when the score reaches the threshold, KI (False) below it; None when either is None."""
    return None if score is None or threshold is None else score >= threshold


@dataclass(frozen=True)
class ConsistencyConfig:
    metric: str = "jaccard"              # METRICS
    static_threshold: float = 0.1        # KC: score >= this (my own default; the paper's is not known here)

    def validate(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if not 0 <= self.static_threshold <= 1:
            raise ConfigError(f"static-threshold must be in [0, 1], got {self.static_threshold}")


@dataclass(frozen=True)
class FactConsistency:
    """One fact of one run: its per-query set sizes, its score and its class under each threshold."""
    fact_id: str
    lang: str
    relation: str
    model: str
    method: str
    sizes: tuple[int, ...]               # each query's own set size, in query order
    score: float | None
    consistent_static: bool | None = None
    consistent_otsu: bool | None = None

    @property
    def n_queries(self) -> int:
        return len(self.sizes)

    def consistent(self, split: str) -> bool | None:
        return self.consistent_static if split == "static" else self.consistent_otsu


@dataclass(frozen=True)
class QueryTest:
    """The query-neuron test of one fact: ``drops[i][j]`` = the relative drop of p(answer | query i)
    with query j's own set suppressed (None where set i or j is empty); ``p0[i]`` unablated."""
    fact_id: str
    lang: str
    model: str
    method: str
    sizes: tuple[int, ...]
    p0: tuple[float, ...]
    drops: tuple[tuple[float | None, ...], ...]

    def pairs(self) -> list[tuple[float, float]]:
        """(own drop, other drop) for each ordered pair i != j of queries with non-empty sets."""
        k = len(self.sizes)
        return [(self.drops[i][i], self.drops[i][j]) for i in range(k) for j in range(k)
                if i != j and self.drops[i][i] is not None and self.drops[i][j] is not None]

    def row(self) -> dict:
        return {**asdict(self), "sizes": list(self.sizes), "p0": list(self.p0), "drops": [list(r) for r in self.drops]}

    @classmethod
    def from_row(cls, r: dict) -> "QueryTest":
        return cls(r["fact_id"], r["lang"], r.get("model", ""), r.get("method", ""), tuple(r["sizes"]),
                   tuple(r["p0"]), tuple(tuple(x) for x in r["drops"]))


def _share(classes: list[bool | None]) -> dict:
    known = [c for c in classes if c is not None]
    ki = sum(not c for c in known)
    return {"n": len(known), "inconsistent": ki, "share": ki / len(known) if known else None}


def _test_summary(tests: list[QueryTest]) -> dict:
    pairs = [p for t in tests for p in t.pairs()]
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {"n_facts": len(tests), "n_pairs": len(pairs), "mean_own_drop": mean([a for a, _ in pairs]),
            "mean_other_drop": mean([b for _, b in pairs]),
            "own_wins": mean([float(a > b) for a, b in pairs]), "ties": mean([float(a == b) for a, b in pairs])}


@dataclass
class ConsistencyReport:
    """Consistency over many facts (``consistency_of``): each fact's row, each (model, method)'s Otsu
    threshold and KI shares, the KI shares per dimension and threshold, and the query-neuron test."""
    config: ConsistencyConfig
    facts: list[FactConsistency]
    settings: list[dict]                 # per (model, method): n_facts, n_scored, mean_score, thresholds, shares
    shares: dict                         # shares[split]["all" | dim][value] = {"n", "inconsistent", "share"}
    tests: list[QueryTest] = field(default_factory=list)
    test_summary: dict | None = None     # {"all": ..., split: {"consistent": ..., "inconsistent": ...}}

    def otsu(self, model: str, method: str) -> float | None:
        return next((s["otsu_threshold"] for s in self.settings if (s["model"], s["method"]) == (model, method)), None)

    def to_dict(self) -> dict:
        return {"config": asdict(self.config), "settings": self.settings, "shares": self.shares,
                "facts": [{**asdict(f), "sizes": list(f.sizes)} for f in self.facts],
                "tests": [t.row() for t in self.tests], "test_summary": self.test_summary}

    @classmethod
    def from_dict(cls, d: dict) -> "ConsistencyReport":
        facts = [FactConsistency(**{**f, "sizes": tuple(f["sizes"])}) for f in d["facts"]]
        return cls(ConsistencyConfig(**d["config"]), facts, d["settings"], d["shares"],
                   [QueryTest.from_row(r) for r in d.get("tests") or []], d.get("test_summary"))

    def save(self, path) -> None:
        from kneuron.store.atomic import write_json
        write_json(Path(path), self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False, newline=True)

    @classmethod
    def load(cls, path) -> "ConsistencyReport":
        """What ``save`` wrote; a RunStoreError (one line) when it is not there or damaged."""
        from kneuron.paper.table1 import _saved_json
        try:
            return cls.from_dict(_saved_json(Path(path)))
        except (KeyError, TypeError) as e:
            from kneuron.runs.store import RunStoreError
            raise RunStoreError(f"{path}: not a consistency report ({type(e).__name__}: {e})") from None

    def table(self, title: str = "localization consistency"):
        """One row per (model, method): facts, scored, mean score, each threshold and its KI share (a model
        given as a path shows its last part)."""
        from kneuron.report.table import Column, Table
        pct = lambda v: f"{v:.1%}"  # noqa: E731
        t = Table(["model", "method", "facts", "scored", Column("mean score", ".3f"), Column("static", ".3g"),
                   Column("KI static", pct), Column("Otsu", ".3g"), Column("KI Otsu", pct)], title=title)
        for s in self.settings:
            t.add(Path(s["model"]).name or s["model"], s["method"], s["n_facts"], s["n_scored"], s["mean_score"],
                  self.config.static_threshold, s["share_inconsistent_static"], s["otsu_threshold"],
                  s["share_inconsistent_otsu"])
        t.notes.append(f"score: {self.config.metric} of each fact's per-query neuron sets; KI: score below the "
                       "threshold (Otsu's per model and method)")
        if self.test_summary and self.test_summary["all"]["n_pairs"]:
            a = self.test_summary["all"]
            t.notes.append(f"query-neuron test: a query's own set lowers its p(answer) by {a['mean_own_drop']:.1%} "
                           f"on average, another query's by {a['mean_other_drop']:.1%}; own > other in "
                           f"{a['own_wins']:.1%} of {a['n_pairs']} pairs ({a['n_facts']} facts)")
        return t


def consistency_of(facts: list[FactConsistency], cfg: ConsistencyConfig | None = None,
                   tests: list[QueryTest] = ()) -> ConsistencyReport:
    """Score classes and shares over ``facts`` (their ``score`` set; their classes are set here): the
    static split, Otsu's threshold and split per (model, method), the KI shares per dimension and the
    query-neuron test's summary (``tests``), overall and within KC and KI."""
    cfg = cfg or ConsistencyConfig()
    cfg.validate()
    by_setting: dict = defaultdict(list)
    for f in facts:
        by_setting[(f.model, f.method)].append(f)
    otsu = {k: otsu_threshold([f.score for f in fs]) for k, fs in by_setting.items()}
    out = [FactConsistency(**{**asdict(f), "sizes": tuple(f.sizes),
                              "consistent_static": is_consistent(f.score, cfg.static_threshold),
                              "consistent_otsu": is_consistent(f.score, otsu[(f.model, f.method)])}) for f in facts]
    settings = []
    for (model, method), fs in by_setting.items():
        mine = [f for f in out if (f.model, f.method) == (model, method)]
        scored = [f.score for f in mine if f.score is not None]
        settings.append({"model": model, "method": method, "n_facts": len(mine), "n_scored": len(scored),
                         "mean_score": sum(scored) / len(scored) if scored else None,
                         "static_threshold": cfg.static_threshold, "otsu_threshold": otsu[(model, method)],
                         "share_inconsistent_static": _share([f.consistent_static for f in mine])["share"],
                         "share_inconsistent_otsu": _share([f.consistent_otsu for f in mine])["share"]})
    shares = {}
    for split in SPLITS:
        shares[split] = {"all": _share([f.consistent(split) for f in out])}
        for dim in DIMENSIONS:
            groups: dict = defaultdict(list)
            for f in out:
                groups[getattr(f, dim)].append(f.consistent(split))
            shares[split][dim] = {str(k): _share(v) for k, v in sorted(groups.items())}
    tests = list(tests)
    summary = None
    if tests:
        cls = {(f.model, f.method, f.fact_id, f.lang): f for f in out}
        summary = {"all": _test_summary(tests)}
        for split in SPLITS:
            got = {c: [t for t in tests if (f := cls.get((t.model, t.method, t.fact_id, t.lang))) is not None
                       and f.consistent(split) is c] for c in (True, False)}
            summary[split] = {"consistent": _test_summary(got[True]), "inconsistent": _test_summary(got[False])}
    return ConsistencyReport(cfg, out, settings, shares, tests, summary)


# ----------------------------------------------------------------------------- the query-neuron test

def query_neuron_test(handle, queries: Sequence[tuple[str, str]], sets: Sequence[Sequence[Neuron]],
                      batch_size: int = 64) -> tuple[list[float], list[list[float | None]]]:
    """For each query (prompt, target): p(target) unablated and its relative drop with each query's own
    set suppressed (None where either set is empty), in one batched pass per query. Returns (p0, drops)."""
    from kneuron.paper.dkn import ablation_probs, drop
    if len(queries) != len(sets):
        raise ConfigError(f"{len(queries)} queries but {len(sets)} neuron sets")
    full = [j for j, s in enumerate(sets) if len(s)]
    p0s, drops = [], []
    for i, (prompt, target) in enumerate(queries):
        probs, _ = ablation_probs(handle, prompt, target, [[]] + [list(map(tuple, sets[j])) for j in full], batch_size)
        p0, after = probs[0], dict(zip(full, probs[1:]))
        p0s.append(p0)
        drops.append([drop(p0, after[j], True) if len(sets[i]) and j in after else None for j in range(len(sets))])
    return p0s, drops


def _testable(sets: Sequence[Sequence[Neuron]]) -> bool:
    return sum(bool(len(s)) for s in sets) >= 2


def query_test_run(handle, run_dir, facts_path=None, resume: bool = True, batch_size: int = 64,
                   show_progress: bool = False) -> list[QueryTest]:
    """The query-neuron test for every fact of a run with at least two non-empty query sets, on the
    run's own queries (rebuilt as ``locate`` built them and checked against the stored counts).
    Resumable: each fact's row is appended to <run>/consistency.jsonl as it is done."""
    from kneuron.report.progress import track
    from kneuron.runs.locate import check_fact
    from kneuron.runs.reopen import check_model, load_run
    from kneuron.runs.store import RunStoreError
    from kneuron.store.records import JsonLines
    run = load_run(run_dir, facts_path)
    check_model(handle, run)
    sets = run.store.query_neurons()
    meta = run.store.meta
    model, method = str(meta.get("model")), str(meta.get("method"))
    rec = JsonLines(Path(run_dir) / ROWS_FILE, key=KEY, need=("sizes", "p0", "drops"), config=TEST_CONFIG,
                    fresh=not resume, noun="fact", error=RunStoreError, hint="delete it to start the test again")
    todo = [f for f in run.facts if _testable(sets.get(f.key, [])) and f.key not in rec]
    for f in track(todo, "query-neuron test", show=show_progress):
        qs = check_fact(handle, f, bool(meta.get("skip_invalid")))
        mine = sets[f.key]
        if len(qs) != len(mine):
            raise RunStoreError(f"{run_dir}: fact {f.id!r} ({f.lang}) has {len(qs)} queries now but {len(mine)} "
                                "in the run (other templates or another tokenizer)")
        p0, drops = query_neuron_test(handle, [(q.prompt, q.target) for q in qs], mine, batch_size)
        rec.put(QueryTest(f.id, f.lang, model, method, tuple(map(len, mine)), tuple(p0),
                          tuple(map(tuple, drops))).row())
    return [QueryTest.from_row(rec.get(f.key)) for f in run.facts if rec.get(f.key) is not None]


# ----------------------------------------------------------------------------- over runs

def run_consistency(run_dir, cfg: ConsistencyConfig | None = None) -> list[FactConsistency]:
    """Each finished fact of a run with its per-query set sizes and score (classes unset: ``consistency_of``
    sets them). RunStoreError (one line) for a run without per-query neurons or without finished facts."""
    from kneuron.runs.store import RunStoreError, open_run
    cfg = cfg or ConsistencyConfig()
    cfg.validate()
    run = open_run(run_dir)
    sets = run.query_neurons()
    facts = run.facts().select(["fact_id", "lang", "relation"]).to_pylist()
    if not facts:
        raise RunStoreError(f"{run_dir}: the run has no finished facts")
    model, method = str(run.meta.get("model")), str(run.meta.get("method"))
    return [FactConsistency(r["fact_id"], r["lang"], str(r["relation"]), model, method,
                            tuple(map(len, sets[(r["fact_id"], r["lang"])])),
                            consistency_score(sets[(r["fact_id"], r["lang"])], cfg.metric)) for r in facts]


def consistency_from_runs(runs: Sequence, cfg: ConsistencyConfig | None = None,
                          handles: Callable[[Path], object] | None = None, facts_path=None, resume: bool = True,
                          show_progress: bool = False) -> ConsistencyReport:
    """Consistency over the facts of one or more locate runs (``run_consistency``, then ``consistency_of``);
    ``handles(run_dir)``: the model to run the query-neuron test with (``query_test_run``), None: no test."""
    cfg = cfg or ConsistencyConfig()
    cfg.validate()
    if not runs:
        raise ConfigError("consistency needs at least one run")
    facts, tests = [], []
    for r in runs:
        facts += run_consistency(r, cfg)
        if handles is not None:
            tests += query_test_run(handles(Path(r)), r, facts_path, resume=resume, show_progress=show_progress)
    return consistency_of(facts, cfg, tests)
