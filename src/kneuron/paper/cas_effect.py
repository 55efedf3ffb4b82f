"""Consistency-Aware KN selection (CAS) against the per-query sets and their union, on erasure and update
(Chen et al., ICLR 2025, "Knowledge Localization: Mission Not Accomplished? Enter Query Localization!").

    report = cas_effect_from_run(handle, run_dir, CasEffectConfig(method="kn-eai", n_unrelated=10))
    report.save(path); CasEffectReport.load(path); report.table()

The paper reports that a fact's CAS neurons erase and update it better (~8-9 %) than each query's own
neurons or the union of them. This module measures that on a ``locate`` run that keeps each query's own
neurons (queries.parquet), with the model, forward passes and weight edits only (no attribution).

The three sets of a fact with queries q_1..q_k (k >= 2; a fact with one query is skipped, said in
``skipped``):
  * per-query: N_i, query i's own neurons as the run stored them (above tau x its best score);
  * union:     N_1 | ... | N_k;
  * CAS:       ``kneuron.neurons.cas`` (LocateConfig select="cas": beta1 x mean - beta2 x population std
               of each neuron's per-query scores, above tau x the best, at most the run's top_k) on the
               run's stored per-query scores. A neuron that a query did not select scores 0 in that query
               (the run keeps only the selected ones): its true score is below tau x that query's best, so
               this lowers its mean and raises its spread a little -- CAS over the stored scores is at most
               as kind to an inconsistently found neuron as CAS over the full tables -- and CAS is a subset
               of the union. tau and top_k are the run's; beta1, beta2 the config's (default: the run's own
               when it was made with select="cas", else 1 and 1).

Two operations on each set S, each an ``Edit`` of the weights, applied for the measurement and undone
(bit for bit) after it:
  * erase:  kn-erase (S's value vectors set to 0);
  * update: a KN edit (``method``: kn-eai, EasyEdit's rule, by default, or kn, Dai et al.'s) through S toward
            a new object: the object of another fact of the same relation and language (else of any other
            fact of the language), drawn with ``seed``; a fact with no other object has no update row.

Scoring: P(o) of (prompt, object) teacher-forced, the geometric mean of its token probabilities, and its
token accuracy (``kneuron.editing.metrics.score``). For each query i, S_i is the set it is edited with
(N_i for per-query, the union or CAS for every i), and m_j(S_i) the metric on query j with S_i applied:
    Rel = mean_i m_i(S_i)                   (on the query itself)
    Gen = mean_i mean_{j != i} m_j(S_i)     (on the fact's other queries)
so that for the union and CAS, whose set is the same for every query, Rel = Gen = the mean over all queries
(one edit measures them); per-query needs k edits. A query with an empty own set counts (it is erased by
nothing: that is the per-query method's result), as does an empty CAS or union set.
    erase   m = the relative drop of P(object): (P0 - P) / P0                       (primary; higher: better)
            rel_alt / gen_alt = the drop of the object's token accuracy, acc0 - acc
    update  m = [P(new) > P(object)] after the edit (CounterFact's ES / PS)        (primary; higher: better)
            rel_alt / gen_alt = P(new) - P(object) after the edit (EM / PM)
    Loc     the share of ``n_unrelated`` facts of other relations (same language; the first ones of one
            fixed shuffled order, the same for every set of a fact) whose teacher-forced top-1 tokens over
            their object are unchanged (EasyEdit's locality; higher: better); loc_alt = their mean
            |delta log P(object)| (lower: better)
    dPPL    exp(NLL after) - exp(NLL before) on the bundled unrelated sentences of the fact's language
            (``kneuron.editing.health.unrelated_nll``, as the editing bench's health); None for a masked
            model or a language without sentences (lower: better)
For per-query, Loc, loc_alt and dPPL are the means over its k edits.

The summary: per operation, set and metric, the mean over facts with a 95 % percentile-bootstrap interval
(``kneuron.report.stats.ci``), and CAS minus each other set, per fact, with its interval. Resumable: each
fact's row is appended to <run>/cas_effect.jsonl as it is done (other settings are refused in one line).
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from math import exp, isfinite
from pathlib import Path
from statistics import mean
from typing import Sequence

import torch

from kneuron.errors import ConfigError
from kneuron.neurons import Neuron, cas, tau_for

SETS = ("query", "union", "cas")
OPS = ("erase", "update")
METRICS = ("rel", "gen", "loc", "dppl", "rel_alt", "gen_alt", "loc_alt")
UPDATE_METHODS = ("kn-eai", "kn")
ROWS_FILE, SUMMARY_FILE, KEY = "cas_effect.jsonl", "cas_effect.json", ("fact_id", "lang")
VERSION = 1                              # of the rows' definitions (kept in the rows file's settings)


# ----------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class CasEffectConfig:
    """What is measured: CAS's betas (None: the run's own when it was made with select="cas", else 1.0),
    the update method, how many unrelated facts Loc reads, the seed of the new objects and unrelated facts,
    the bootstrap resamples of the summary."""
    beta1: float | None = None
    beta2: float | None = None
    method: str = "kn-eai"
    n_unrelated: int = 10
    seed: int = 0
    n_boot: int = 1000

    def validate(self) -> None:
        """ConfigError (one line) on a bad setting, before any work."""
        if self.beta1 is not None and not self.beta1 > 0:
            raise ConfigError(f"beta1 must be > 0, got {self.beta1}")
        if self.beta2 is not None and not self.beta2 >= 0:
            raise ConfigError(f"beta2 must be >= 0, got {self.beta2}")
        if self.method not in UPDATE_METHODS:
            raise ConfigError(f"method must be one of {', '.join(UPDATE_METHODS)}, got {self.method!r}")
        if self.n_unrelated < 1:
            raise ConfigError(f"unrelated must be >= 1, got {self.n_unrelated}")
        if self.n_boot < 1:
            raise ConfigError(f"n-boot must be >= 1, got {self.n_boot}")

    def betas(self, meta: dict) -> tuple[float, float]:
        """(beta1, beta2): the config's, else the run's (a run made with select="cas"), else (1, 1)."""
        own = meta.get("select") == "cas"
        b1 = self.beta1 if self.beta1 is not None else float(meta.get("cas_beta1", 1.0)) if own else 1.0
        b2 = self.beta2 if self.beta2 is not None else float(meta.get("cas_beta2", 1.0)) if own else 1.0
        return b1, b2

    def record(self, meta: dict) -> dict:
        """The settings the rows depend on (the rows file keeps them; n_boot only changes the summary)."""
        b1, b2 = self.betas(meta)
        return {"beta1": b1, "beta2": b2, "method": self.method, "n_unrelated": self.n_unrelated,
                "seed": self.seed, "threshold": meta.get("threshold"), "top_k": meta.get("top_k"),
                "version": VERSION}


# ----------------------------------------------------------------------------- the three sets

@dataclass(frozen=True)
class FactSets:
    """A fact's three neuron sets: each query's own (in query order), their union, CAS's."""
    queries: tuple[tuple[Neuron, ...], ...]
    union: tuple[Neuron, ...]
    cas: tuple[Neuron, ...]

    def sizes(self) -> dict:
        return {"query": [len(s) for s in self.queries], "union": len(self.union), "cas": len(self.cas)}


def dense_scores(per_query: Sequence[Sequence[tuple[Neuron, float]]], n_layers: int,
                 n_neurons: int) -> list[torch.Tensor]:
    """Each query's [n_layers, n_neurons] score table from its stored (neuron, score) pairs, 0 elsewhere."""
    out = []
    for rows in per_query:
        t = torch.zeros(n_layers, n_neurons, dtype=torch.float64)
        for (layer, idx), s in rows:
            t[layer, idx] = s
        out.append(t)
    return out


def build_sets(per_query: Sequence[Sequence[tuple[Neuron, float]]], n_layers: int, n_neurons: int, tau: float,
               top_k: int | None = None, beta1: float = 1.0, beta2: float = 1.0) -> FactSets:
    """The three sets of one fact from its queries' stored (neuron, score) pairs, each query's by rank:
    the per-query sets as stored, their union (first-found order), and ``kneuron.neurons.cas`` on the
    score tables (``dense_scores``) with tau, top_k and the betas."""
    queries = tuple(tuple((int(l), int(i)) for (l, i), _ in rows) for rows in per_query)
    union = tuple(dict.fromkeys(n for s in queries for n in s))
    found = cas(dense_scores(per_query, n_layers, n_neurons), tau, top_k, beta1, beta2)
    return FactSets(queries, union, tuple(found.neurons))


def stored_scores(store) -> dict[tuple[str, str], list[list[tuple[Neuron, float]]]]:
    """Each finished fact's queries' own (neuron, score) pairs, by (fact id, lang), one list per query (a
    query with no neuron: empty), each by rank -- ``Run.query_neurons`` with the scores. RunStoreError (one
    line) for a run made before runs kept them."""
    rows = store.queries().select(["fact_id", "lang", "query", "layer", "neuron", "score"]).to_pylist()
    out = {(r["fact_id"], r["lang"]): [[] for _ in range(int(r["n_prompts"]))]
           for r in store.facts().select(["fact_id", "lang", "n_prompts"]).to_pylist()}
    for r in rows:
        out[(r["fact_id"], r["lang"])][r["query"]].append(((r["layer"], r["neuron"]), float(r["score"])))
    return out


# ----------------------------------------------------------------------------- one fact

@dataclass(frozen=True)
class Effect:
    """One set under one operation on one fact (the module doc defines each metric; None: not defined)."""
    rel: float
    gen: float
    loc: float
    dppl: float | None
    rel_alt: float
    gen_alt: float
    loc_alt: float


@dataclass(frozen=True)
class FactEffect:
    """One fact: its sets' sizes, the new object of its update (None: no update), the unrelated facts Loc
    read, and ``effects[op][set]``."""
    fact_id: str
    lang: str
    relation: str
    sizes: dict
    new: str | None
    unrelated: tuple[str, ...]
    effects: dict

    def row(self) -> dict:
        return {**asdict(self), "unrelated": list(self.unrelated),
                "effects": {op: {s: asdict(e) for s, e in d.items()} for op, d in self.effects.items()}}

    @classmethod
    def from_row(cls, r: dict) -> "FactEffect":
        return cls(r["fact_id"], r["lang"], r["relation"], r["sizes"], r["new"], tuple(r["unrelated"]),
                   {op: {s: Effect(**e) for s, e in d.items()} for op, d in r["effects"].items()})


@dataclass(frozen=True)
class Probe:
    """What a fact is measured on: its queries (prompt, object), the new object, the unrelated facts'
    (prompt, object), and the language of the unrelated sentences."""
    queries: tuple[tuple[str, str], ...]
    new: str | None
    unrelated: tuple[tuple[str, str], ...]
    lang: str

    def items(self) -> list[tuple[str, str]]:
        """Everything scored in one pass: queries with the object, then with the new object, then unrelated."""
        news = [(p, self.new) for p, _ in self.queries] if self.new is not None else []
        return [*self.queries, *news, *self.unrelated]


@dataclass(frozen=True)
class State:
    """The scores of a ``Probe`` under one model state, and the unrelated sentences' NLL (None: none)."""
    old: list
    new: list
    unrelated: list
    nll: float | None


def measure(handle, probe: Probe) -> State:
    """Score ``probe`` on the model as it is now (``editing.metrics.score``; the NLL of the unrelated
    sentences of its language, ``editing.health.unrelated_nll``)."""
    from kneuron.editing.health import unrelated_nll
    from kneuron.editing.metrics import score
    s = score(handle, probe.items())
    k, n_new = len(probe.queries), len(probe.queries) if probe.new is not None else 0
    nll = unrelated_nll(handle, [probe.lang]).get(probe.lang)
    return State(s[:k], s[k:k + n_new], s[k + n_new:], nll)


def _query_metric(op: str, base: State, after: State, j: int) -> tuple[float, float]:
    """(primary, alt) of query j (the module doc): erase, the relative drop of P(object) and of its token
    accuracy; update, [P(new) > P(object)] and P(new) - P(object)."""
    if op == "erase":
        p0, p = base.old[j].p, after.old[j].p
        return ((p0 - p) / p0 if p0 > 0 else 0.0), base.old[j].acc - after.old[j].acc
    pn, po = after.new[j].p, after.old[j].p
    return float(pn > po), pn - po


def _side(base: State, after: State) -> tuple[float, float, float | None]:
    """Loc (unchanged top-1 share), loc_alt (mean |delta log P|) and dPPL of one edit."""
    pairs = list(zip(base.unrelated, after.unrelated))
    loc = mean(float(a.argmax == b.argmax) for a, b in pairs)
    loc_alt = mean(abs(a.nll - b.nll) for a, b in pairs)                # |delta log P|, P = exp(-nll)
    dppl = exp(after.nll) - exp(base.nll) if base.nll is not None and after.nll is not None else None
    return loc, loc_alt, dppl


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def set_effect(op: str, base: State, states: Sequence[State]) -> Effect:
    """The Effect of one set from the states it was measured in: ``states[i]`` with S_i applied (one state
    per query; the same object k times for a set that is the same for every query)."""
    k = len(base.old)
    rel, gen, side = [], [], []
    for i, st in enumerate(states):
        m = [_query_metric(op, base, st, j) for j in range(k)]
        rel.append(m[i])
        others = [m[j] for j in range(k) if j != i]
        gen.append((mean(a for a, _ in others), mean(b for _, b in others)))
        side.append(_side(base, st))
    return Effect(mean(a for a, _ in rel), mean(a for a, _ in gen), mean(s[0] for s in side),
                  _mean([s[2] for s in side]), mean(b for _, b in rel), mean(b for _, b in gen),
                  mean(s[1] for s in side))


def _edit(handle, fact, op: str, neurons: Sequence[Neuron], new: str | None, method: str):
    """The Edit (not applied) of ``op`` through ``neurons``: kn-erase, or ``method`` toward ``new``."""
    from kneuron.editing.registry import edit
    if op == "erase":
        return edit(handle, fact, None, method="kn-erase", neurons=list(neurons))
    return edit(handle, fact, new, method=method, neurons=list(neurons))


def edited_state(handle, fact, op: str, neurons: Sequence[Neuron], probe: Probe, method: str) -> State:
    """``probe`` measured with the edit of ``op`` through ``neurons`` applied; undone after (bit for bit)."""
    with _edit(handle, fact, op, neurons, probe.new, method):
        return measure(handle, probe)


def fact_effect(handle, fact, sets: FactSets, probe: Probe, method: str = "kn-eai",
                base: State | None = None) -> dict:
    """``effects[op][set]`` of one fact (``update`` left out when ``probe.new`` is None): each set edited,
    measured and undone (a set met twice -- two queries with the same own set, CAS = union -- is measured
    once); ``base``: the unedited state (measured here when not given)."""
    if len(sets.queries) != len(probe.queries):
        raise ConfigError(f"{len(probe.queries)} queries but {len(sets.queries)} per-query sets")
    base = base if base is not None else measure(handle, probe)
    k = len(probe.queries)
    out = {}
    for op in OPS:
        if op == "update" and probe.new is None:
            continue
        seen: dict = {}                  # an edit depends on its set only (not the order): each set once

        def st(ns):
            key = frozenset(ns)
            if key not in seen:
                seen[key] = edited_state(handle, fact, op, ns, probe, method)
            return seen[key]
        union, mine = st(sets.union), st(sets.cas)
        out[op] = {"query": set_effect(op, base, [st(s) for s in sets.queries]),
                   "union": set_effect(op, base, [union] * k), "cas": set_effect(op, base, [mine] * k)}
    return out


# ----------------------------------------------------------------------------- choosing the partners

def new_object(fact, facts: Sequence, seed: int = 0) -> str | None:
    """The update's new object: another fact's object of the same relation and language (else of any
    fact of the language), differing from the fact's, drawn with ``seed`` (the same on every rerun)."""
    lang = [g for g in facts if g.lang == fact.lang and g.object.strip() != fact.object.strip()]
    same = sorted({g.object for g in lang if g.relation == fact.relation}) or sorted({g.object for g in lang})
    return random.Random(f"{seed}:{fact.id}:{fact.lang}").choice(same) if same else None


def unrelated_facts(fact, facts: Sequence, n: int, seed: int = 0) -> list:
    """The first ``n`` facts of the language, in one fixed order shuffled with ``seed``, of another relation
    than ``fact``'s (else any other fact of the language when there are too few)."""
    order = [g for g in facts if g.lang == fact.lang and g.key != fact.key]
    random.Random(seed).shuffle(order)
    other = [g for g in order if g.relation != fact.relation]
    return (other + [g for g in order if g.relation == fact.relation])[:n]


# ----------------------------------------------------------------------------- over a run

@dataclass
class CasEffectReport:
    """Every measured fact's row, the facts skipped (with why), the settings and the summary."""
    config: dict
    facts: list[FactEffect]
    skipped: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"config": self.config, "facts": [f.row() for f in self.facts], "skipped": self.skipped,
                "summary": self.summary}

    @classmethod
    def from_json(cls, d: dict) -> "CasEffectReport":
        return cls(d["config"], [FactEffect.from_row(r) for r in d["facts"]], d.get("skipped", []), d["summary"])

    def save(self, path) -> None:
        from kneuron.store.atomic import write_json
        write_json(Path(path), self.to_json(), indent=2, sort_keys=True, ensure_ascii=False, newline=True)

    @classmethod
    def load(cls, path) -> "CasEffectReport":
        """What ``save`` wrote; a RunStoreError (one line) when it is not there or damaged."""
        from kneuron.paper.table1 import _saved_json
        try:
            return cls.from_json(_saved_json(Path(path)))
        except (KeyError, TypeError) as e:
            from kneuron.runs.store import RunStoreError
            raise RunStoreError(f"{path}: not a CAS effect report ({type(e).__name__}: {e})") from None

    def table(self, title: str = "CAS vs per-query and union sets"):
        """One row per (operation, set): facts and each primary metric's mean with its interval."""
        from kneuron.report.table import Table
        t = Table(["op", "set", "facts", "Rel", "Gen", "Loc", "dPPL"], title=title)
        cell = lambda c: "n/a" if c is None or c["mean"] is None else (  # noqa: E731
            f"{c['mean']:.3f}" + (f" [{c['low']:.3f}, {c['high']:.3f}]" if c.get("low") is not None else ""))
        for op, by_set in self.summary.get("ops", {}).items():
            for s, d in by_set.items():
                t.add(op, s, d["n"], *(cell(d["metrics"].get(m)) for m in ("rel", "gen", "loc", "dppl")))
        t.notes.append("erase Rel/Gen: relative drop of P(object); update: share with P(new) > P(object); Loc: "
                       "share of unrelated facts with the same top-1; dPPL: perplexity change on unrelated text; "
                       "95 % bootstrap intervals over facts")
        if self.skipped:
            t.notes.append(f"{len(self.skipped)} facts skipped (e.g. {self.skipped[0]['reason']})")
        return t


def summarize(facts: Sequence[FactEffect], n_boot: int = 1000, seed: int = 0) -> dict:
    """Per operation and set, each metric's mean over facts with its 95 % bootstrap interval, and per
    operation CAS minus each other set (paired per fact) for the primary metrics."""
    from kneuron.report.stats import ci

    def cell(xs):
        xs = [x for x in xs if x is not None and isfinite(x)]
        if not xs:
            return {"mean": None, "low": None, "high": None, "n": 0}
        lo_hi = ci(xs, n_boot=n_boot, seed=seed) if len(xs) > 1 else None
        return {"mean": sum(xs) / len(xs), "low": lo_hi[0] if lo_hi else None,
                "high": lo_hi[1] if lo_hi else None, "n": len(xs)}
    ops, diffs = {}, {}
    for op in OPS:
        mine = [f for f in facts if op in f.effects]
        if not mine:
            continue
        ops[op] = {s: {"n": len(mine), "metrics": {m: cell([getattr(f.effects[op][s], m) for f in mine])
                                                    for m in METRICS}} for s in SETS}
        diffs[op] = {f"cas-{s}": {m: cell([_sub(getattr(f.effects[op]["cas"], m), getattr(f.effects[op][s], m))
                                           for f in mine]) for m in ("rel", "gen", "loc", "dppl")}
                     for s in ("query", "union")}
    return {"n_facts": len(facts), "ops": ops, "cas_minus": diffs}


def _sub(a, b):
    return None if a is None or b is None else a - b


def cas_effect_from_run(handle, run_dir, cfg: CasEffectConfig | None = None, facts_path=None, resume: bool = True,
                   show_progress: bool = False) -> CasEffectReport:
    """CAS against the per-query and union sets on every fact of a run with at least two queries (the
    module doc). Resumable: each fact's row is appended to <run>/cas_effect.jsonl as it is done; a fact
    with one query is skipped (listed in ``skipped``). RunStoreError (one line) for a run without per-query
    neurons, a model that is not the run's, or a rows file made with other settings."""
    from kneuron.paper.table1 import first_prompt
    from kneuron.report.progress import track
    from kneuron.runs.locate import check_fact
    from kneuron.runs.reopen import check_model, load_run
    from kneuron.runs.store import RunStoreError
    from kneuron.store.records import JsonLines
    cfg = cfg or CasEffectConfig()
    cfg.validate()
    run = load_run(run_dir, facts_path)
    check_model(handle, run)
    meta = run.store.meta
    scores = stored_scores(run.store)
    conf = cfg.record(meta)
    rec = JsonLines(Path(run_dir) / ROWS_FILE, key=KEY, need=("sizes", "effects", "unrelated"), config=conf,
                    fresh=not resume, noun="fact", error=RunStoreError,
                    hint="made with other CAS effect settings: delete it or use the same settings")
    skipped = [{"fact_id": f.id, "lang": f.lang, "reason": f"fact {f.id!r} ({f.lang}) has one query: no "
                f"per-query sets to compare"} for f in run.facts if len(scores.get(f.key, [])) < 2]
    todo = [f for f in run.facts if len(scores.get(f.key, [])) >= 2 and f.key not in rec]
    skip_invalid = bool(meta.get("skip_invalid"))
    with torch.no_grad():
        for f in track(todo, "CAS effect", show=show_progress):
            qs = check_fact(handle, f, skip_invalid)
            if len(qs) != len(scores[f.key]):
                raise RunStoreError(f"{run_dir}: fact {f.id!r} ({f.lang}) has {len(qs)} queries now but "
                                    f"{len(scores[f.key])} in the run (other templates or another tokenizer)")
            sets = build_sets(scores[f.key], handle.n_layers, handle.n_neurons, tau_for(f.lang, meta.get("threshold")),
                              meta.get("top_k"), conf["beta1"], conf["beta2"])
            others = unrelated_facts(f, run.facts, cfg.n_unrelated, cfg.seed)
            probe = Probe(tuple((q.prompt, q.target) for q in qs), new_object(f, run.facts, cfg.seed),
                          tuple(first_prompt(handle, g) for g in others), f.lang)
            effects = fact_effect(handle, f, sets, probe, cfg.method)
            rec.put(FactEffect(f.id, f.lang, f.relation, sets.sizes(), probe.new, tuple(g.id for g in others),
                               effects).row())
    rows = [FactEffect.from_row(rec.get(f.key)) for f in run.facts if rec.get(f.key) is not None]
    return CasEffectReport({**conf, "n_boot": cfg.n_boot, "run": str(run_dir), "model": str(meta.get("model")),
                            "locate_method": str(meta.get("method"))}, rows, skipped,
                           summarize(rows, cfg.n_boot, cfg.seed))
