"""Module 3: degenerate knowledge neurons (DKN) — groups of knowledge neurons that each keep a fact
alive: switching off any proper part of a group costs little (<= T_low), switching off the whole
group costs much (> T_high). Paper Algorithm 1 (pairs) and its level-wise extension to larger groups.

The search (``find_dkn``), given a fact's knowledge neurons sorted by score:
  1. candidates = the top ``top_n`` neurons (the released code: 20);
  2. level 1: suppress each candidate alone; the "quiet" ones cost <= T_low (Algorithm 1, filter 1);
  3. level k >= 2: every k-set all of whose (k-1)-subsets are quiet (an Apriori join, so a set is
     tested only when every proper subset is quiet; no other subset is ever tested); those costing
     > T_high are DKN groups (filter 2), those costing <= T_low are quiet and grow at level k + 1.
With ``max_size=2`` this is exactly Algorithm 1. Costs are drops of p(gold answer) from the
unablated model: relative ((p0 - p) / p0, the released code's) or absolute (p0 - p, the paper's
text). Every ablation of one level runs in a few batched forward passes (one row per ablated set).

``DKNConfig(method="clusters")`` is the follow-up paper's rule instead (Chen et al., ACL 2025, "Cracking
Factual Knowledge"): groups of any size, found by their structure, then checked by their function:
  1. the same candidates; each a point, at the cosine distance of its connection weights from the others
     (``distance``: "value", the value vectors, what a neuron writes to the residual stream, the default;
     or "key", its rows of the MLP's input projections, what it reads);
  2. the clusters that persist (``kneuron.paper.persistence.cut``: the single-linkage merge tree cut in
     its widest gap of merge radii below ``horizon``);
  3. a cluster is kept when it alone expresses the fact: with every other candidate suppressed the drop
     is <= T_low; the fact has a DKN when two or more clusters are kept and suppressing all of them
     drops it by more than T_high. The DKN is one group (the kept clusters' neurons); its parts are the
     clusters. Two batched forward passes at most per fact (``check_clusters``).
"""
from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Callable, Sequence

import torch

from kneuron.intervene import answer_positions, suppress_each
from kneuron.models.load import ModelHandle
from kneuron.errors import ConfigError
from kneuron.models.sites import ARCHITECTURES, value_vectors
from kneuron.models.targets import encode
from kneuron.neurons import Neuron
from kneuron.paper.persistence import cosine_distances, cut
from kneuron.plant.surgery import key_rows
from kneuron.report.progress import track
from kneuron.runs.store import DKN_FILES, DKN_KEY
from kneuron.store.atomic import write_json
from kneuron.store.records import JsonLines

Group = tuple[Neuron, ...]
log = logging.getLogger("kneuron.paper")


@dataclass
class DKNConfig:
    top_n: int | None = 20           # candidates: the top-n knowledge neurons (None: all)
    t_low: float = 0.2               # a part may cost at most this much ...
    t_high: float = 0.25             # ... the whole group more than this
    relative: bool = True            # drops relative to p0 (released code) or absolute (paper text)
    max_size: int = 2                # 2: Algorithm 1 (pairs)
    max_evals: int = 5000            # ablations per fact at most (larger groups are cut, and flagged)
    batch_size: int = 64             # ablations per forward pass
    method: str = "pairs"            # "pairs": Algorithm 1 and its levels; "clusters": persistent clusters
    distance: str = "value"          # clusters: cosine distance of the value vectors, or of the key rows
    horizon: float = 1.0             # clusters: radii beyond this are unrelated (1: orthogonal weights)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.distance not in DISTANCES:
            raise ConfigError(f"distance must be one of {', '.join(DISTANCES)}, got {self.distance!r}")
        if not 0 < self.horizon <= 2:
            raise ConfigError(f"the horizon is a cosine distance and must be in (0, 2], got {self.horizon}")
        if self.top_n is not None and self.top_n < 2:
            raise ConfigError(f"top-n must be >= 2, got {self.top_n}")
        if not 0 <= self.t_low < self.t_high:
            raise ConfigError(f"need 0 <= t_low < t_high, got t_low={self.t_low}, t_high={self.t_high}")
        if self.relative and self.t_high > 1:
            raise ConfigError(f"a relative t_high is a share of p0 and must be <= 1, got {self.t_high}")
        if self.max_size < 2:
            raise ConfigError(f"max-size must be >= 2, got {self.max_size}")
        if self.max_evals < 1 or self.batch_size < 1:
            raise ConfigError("max-evals and batch-size must be >= 1")

    def record(self, speed: bool = False) -> dict:
        """The settings a rule's files record (a resume with others is refused): its own, without the
        batch size (speed only) unless ``speed``. The pairs rule's are what they were before the clusters
        rule existed, so its older files (and reproduce directories) resume; the clusters rule's name the
        method."""
        other = ("method", *CLUSTERS_ONLY) if self.method == "pairs" else PAIRS_ONLY
        return {k: v for k, v in asdict(self).items() if (speed or k != "batch_size") and k not in other}


METHODS, DISTANCES = ("pairs", "clusters"), ("value", "key")
PAIRS_ONLY, CLUSTERS_ONLY = ("max_size", "max_evals"), ("distance", "horizon")


@dataclass
class ClusterCheck:
    """The clusters rule on one fact: its persistent clusters (each sorted; in the order of their
    best-ranked candidate), the radii each lives between, and the functional check (``check_clusters``)."""
    clusters: list[Group]
    lifetimes: list[tuple[float, float]]     # (birth, death) radius of each (death inf: never merged)
    alone: list[float]                       # each: the drop with every other candidate suppressed
    kept: list[bool]                         # alone <= T_low: the cluster alone expresses the fact
    all_drop: float | None                   # the drop with every kept cluster suppressed (None: < 2 kept)
    p0: float
    n_evals: int                             # ablated sets evaluated
    n_forward: int                           # forward passes, the unablated one included

    def kept_clusters(self) -> list[Group]:
        return [c for c, k in zip(self.clusters, self.kept) if k]

    def degenerate(self, t_high: float) -> bool:
        """Two or more clusters each express the fact alone and suppressing them all costs > t_high."""
        return self.all_drop is not None and self.all_drop > t_high


@dataclass
class DKNResult:
    groups: list[Group]              # each sorted; in the order found (size, then candidate rank)
    drops: list[float]               # cost of switching off each whole group
    candidates: list[Neuron]
    quiet: list[Neuron]              # candidates passing filter 1 (clusters: the kept clusters' neurons)
    p0: float                        # p(gold) with nothing ablated
    n_evals: int                     # ablated sets evaluated
    n_forward: int                   # forward passes (batched), the unablated one included
    truncated: bool = False          # max_evals stopped the search before it was complete
    part_drops: list[float] = field(default_factory=list)   # per group: the largest cost of a proper part
    #                                 (clusters: the largest drop with one kept cluster alone left on)
    method: str = "pairs"
    seconds: float = 0.0             # wall time of the search
    clusters: ClusterCheck | None = None     # the clusters rule's clusters and check

    def neurons(self) -> list[Neuron]:
        return sorted({n for g in self.groups for n in g})


def drop(p0: float, p: float, relative: bool) -> float:
    if relative:
        return (p0 - p) / p0 if p0 > 0 else 0.0
    return p0 - p


def ablation_probs(handle: ModelHandle, prompt: str, target: str, sets: Sequence[Sequence[Neuron]],
                   batch_size: int = 64) -> tuple[list[float], int]:
    """p(target | prompt) with each set of neurons switched off (one row per set, at the answer
    positions), in ceil(len(sets) / batch_size) forward passes. Returns (probs, forward passes)."""
    enc = encode(handle.tokenizer, handle.kind, prompt, target)
    ids = torch.tensor([enc.input_ids], device=handle.device)
    tgt = torch.tensor(enc.target_ids, device=handle.device)
    out, n_fwd = [], 0
    for start in range(0, len(sets), batch_size):
        chunk = list(sets[start:start + batch_size])
        with answer_positions(enc.positions), suppress_each(handle, chunk), torch.no_grad():
            logits = handle.model(input_ids=ids.expand(len(chunk), -1)).logits[:, enc.positions].float()
        logp = torch.log_softmax(logits, -1).gather(-1, tgt.view(1, -1, 1).expand(len(chunk), -1, 1))
        out += logp.squeeze(-1).sum(-1).exp().tolist()
        n_fwd += 1
    return out, n_fwd


def _join(level: list[Group]) -> list[Group]:
    """Apriori: the (k+1)-sets all of whose k-subsets are in ``level`` (each a sorted tuple of
    candidate ranks), in lexicographic order."""
    have = set(level)
    out = []
    for i, a in enumerate(level):
        for b in level[i + 1:]:
            if a[:-1] != b[:-1]:
                continue
            c = a + (b[-1],) if a[-1] < b[-1] else b + (a[-1],)
            if all(c[:j] + c[j + 1:] in have for j in range(len(c))):
                out.append(c)
    return sorted(out)


def search(n_candidates: int, probs: Callable[[list[Group]], list[float]], p0: float,
           cfg: DKNConfig) -> tuple[list[Group], list[float], list[int], int, bool, list[float]]:
    """The level-wise search over candidate ranks 0..n-1; ``probs`` evaluates ablated sets.
    Returns (groups, their drops, quiet ranks, evaluations, truncated, largest part drop per group)."""
    singles = [(i,) for i in range(n_candidates)]
    budget = cfg.max_evals
    truncated = len(singles) > budget
    singles = singles[:budget]
    cost = {s: drop(p0, p, cfg.relative) for s, p in zip(singles, probs(singles))}
    n_evals = len(singles)
    level = [s for s in singles if cost[s] <= cfg.t_low]
    quiet = [s[0] for s in level]
    groups, drops = [], []
    k = 2
    while k <= cfg.max_size and level:
        cand = _join(level)
        if n_evals + len(cand) > budget:
            cand, truncated = cand[:budget - n_evals], True
        if not cand:
            break
        for c, p in zip(cand, probs(cand)):
            cost[c] = drop(p0, p, cfg.relative)
        n_evals += len(cand)
        groups += [c for c in cand if cost[c] > cfg.t_high]
        drops += [cost[c] for c in cand if cost[c] > cfg.t_high]
        level = [c for c in cand if cost[c] <= cfg.t_low]
        k += 1
    parts = [max(cost[p] for r in range(1, len(g)) for p in combinations(g, r)) for g in groups]
    return groups, drops, quiet, n_evals, truncated, parts


def find_dkn(handle: ModelHandle, prompt: str, target: str, neurons: Sequence[Neuron],
             cfg: DKNConfig | None = None) -> DKNResult:
    """Degenerate groups among a fact's knowledge neurons (``neurons``: highest score first), by the rule
    ``cfg.method`` names (the module doc)."""
    cfg = cfg or DKNConfig()
    cfg.validate()
    cands = [tuple(map(int, n)) for n in (neurons[:cfg.top_n] if cfg.top_n else neurons)]
    t0 = time.perf_counter()
    if cfg.method == "clusters":
        res = _find_clusters(handle, prompt, target, cands, cfg)
    else:
        res = _find_pairs(handle, prompt, target, cands, cfg)
    res.seconds = time.perf_counter() - t0
    return res


def _find_pairs(handle: ModelHandle, prompt: str, target: str, cands: list[Neuron], cfg: DKNConfig) -> DKNResult:
    n_fwd = 0

    def probs(sets: list[Group]) -> list[float]:
        nonlocal n_fwd
        p, f = ablation_probs(handle, prompt, target, [[cands[i] for i in s] for s in sets], cfg.batch_size)
        n_fwd += f
        return p

    p0 = probs([()])[0]
    groups, drops, quiet, n_evals, trunc, parts = search(len(cands), probs, p0, cfg)
    return DKNResult([tuple(sorted(cands[i] for i in g)) for g in groups], drops, cands, [cands[i] for i in quiet], p0,
                     n_evals, n_fwd, trunc, parts)


def weight_vectors(handle: ModelHandle, neurons: Sequence[Neuron], distance: str = "value") -> torch.Tensor:
    """One row per neuron (float64, on the CPU): its value vector ("value": the output projection's column,
    what it writes to the residual stream) or its key rows ("key": its row of each MLP input projection,
    concatenated, what it reads from it; the families whose architecture-table line names them)."""
    if not neurons:
        return torch.zeros(0, 0, dtype=torch.float64)
    if distance == "value":
        rows = [value_vectors(handle.sites[l])[j] for l, j in neurons]
    else:
        mt = getattr(handle.model.config, "model_type", None)
        arch = ARCHITECTURES.get(mt)
        if arch is None or not arch.inputs or handle.site.proj_path != arch.proj:
            raise ConfigError(f"the key distance needs the MLP input projections of the model's family, not known "
                              f"for {handle.name} ({mt!r}): use the value distance")
        blocks = handle.model.get_submodule(handle.site.layers_path)
        rows = [torch.cat([key_rows(blocks[l].get_submodule(p))[j] for p in arch.inputs]) for l, j in neurons]
    return torch.stack([r.detach().double().cpu() for r in rows])


def check_clusters(handle: ModelHandle, prompt: str, target: str, candidates: Sequence[Neuron],
                   clusters: Sequence[Group], cfg: DKNConfig,
                   lifetimes: Sequence[tuple[float, float]] | None = None) -> ClusterCheck:
    """The functional check of the clusters rule: each cluster alone on (every other candidate suppressed)
    must keep the fact (drop <= T_low); the kept ones, when two or more, are suppressed together (a DKN
    when that drop is > T_high). The unablated pass and every "alone" set share one batched call, the
    suppression of the kept a second. ``lifetimes``: the clusters' radii, recorded as given."""
    clusters = [tuple(c) for c in clusters]
    others = [[n for n in candidates if n not in set(c)] for c in clusters]
    probs, n_fwd = ablation_probs(handle, prompt, target, [[], *others], cfg.batch_size)
    p0 = probs[0]
    alone = [drop(p0, p, cfg.relative) for p in probs[1:]]
    kept = [a <= cfg.t_low for a in alone]
    all_drop = None
    if sum(kept) >= 2:
        off = sorted({n for c, k in zip(clusters, kept) if k for n in c})
        (p,), f = ablation_probs(handle, prompt, target, [off], cfg.batch_size)
        all_drop, n_fwd = drop(p0, p, cfg.relative), n_fwd + f
    return ClusterCheck(clusters, list(lifetimes or []), alone, kept, all_drop, p0,
                        len(clusters) + (all_drop is not None), n_fwd)


def _find_clusters(handle: ModelHandle, prompt: str, target: str, cands: list[Neuron], cfg: DKNConfig) -> DKNResult:
    found = cut(cosine_distances(weight_vectors(handle, cands, cfg.distance).numpy()), cfg.horizon).clusters
    clusters = [tuple(sorted(cands[i] for i in c.members)) for c in found]
    check = check_clusters(handle, prompt, target, cands, clusters, cfg, [(c.birth, c.death) for c in found])
    res = DKNResult([], [], cands, sorted({n for c in check.kept_clusters() for n in c}), check.p0, check.n_evals,
                    check.n_forward, method="clusters", clusters=check)
    if check.degenerate(cfg.t_high):
        res.groups, res.drops = [tuple(res.quiet)], [check.all_drop]
        res.part_drops = [max(a for a, k in zip(check.alone, check.kept) if k)]
    return res


# ----------------------------------------------------------------------------- over a run

@dataclass(frozen=True)
class DKNRun:
    """Module 3 over a run: each fact's row as dkn.jsonl holds it (its ``groups``, their ``drops``, the
    largest ``part_drops``, p0, ablations, forward passes, seconds, the rule's ``method``), in the run's fact
    order, and the summary per language (``summarize``: dkn.json, and ``to_json()``). The clusters rule's
    are kept apart, in dkn-clusters.jsonl and dkn-clusters.json (``files``), so a run holds both rules'."""
    rows: list[dict]
    summary: dict

    @property
    def config(self) -> dict:
        """The DKN settings the rows were found with (``DKNConfig`` without its batch size)."""
        return self.summary["config"]

    @property
    def method(self) -> str:
        """The rule the rows were found by ("pairs" where the settings name none: files made before)."""
        return self.config.get("method", "pairs")

    def groups(self) -> dict[tuple[str, str], list[Group]]:
        """(fact id, lang) -> its degenerate groups, each a tuple of neurons."""
        return {(r["fact_id"], r["lang"]): [tuple(tuple(n) for n in g) for g in r["groups"]] for r in self.rows}

    def to_json(self) -> dict:
        return self.summary

    def save(self, run_dir) -> None:
        """dkn.jsonl (the rows it does not hold yet: ``dkn_from_run`` commits each as it is found) and
        dkn.json, in ``run_dir`` (the clusters rule: its own ``files``); a rows file made with other
        settings is refused (RunStoreError)."""
        rec = dkn_records(Path(run_dir) / files(self.method)[0], self.config)
        for r in self.rows:
            if (r["fact_id"], r["lang"]) not in rec:
                rec.put(r)
        self._save_summary(run_dir)

    def _save_summary(self, run_dir) -> None:
        write_json(Path(run_dir) / files(self.method)[1], self.summary, indent=2, sort_keys=True)

    @classmethod
    def load(cls, run_dir, method: str = "pairs") -> "DKNRun":
        """What ``save`` (or ``dkn_from_run``) wrote for the rule ``method``; the rows in the rows file's
        order (the run's, unless the search was resumed), its damaged lines skipped. A RunStoreError, one
        line, when the summary (dkn.json, or dkn-clusters.json) is not there or damaged."""
        from kneuron.paper.table1 import _saved_json
        rows_file, summary_file = files(method)
        summary = _saved_json(Path(run_dir) / summary_file)
        path = Path(run_dir) / rows_file
        rows = JsonLines(path, key=KEY, need=ROW_KEYS[2:], readonly=True).rows if path.is_file() else {}
        return cls(list(rows.values()), summary)


(ROWS_FILE, SUMMARY_FILE), KEY = DKN_FILES["pairs"], DKN_KEY


def files(method: str = "pairs") -> tuple[str, str]:
    """The rows file and the summary of a rule in a run directory: the pairs rule's dkn.jsonl and dkn.json
    (as before the clusters rule), the clusters rule's dkn-clusters.jsonl and dkn-clusters.json, so the two
    rules' results never mix (and each resumes on its own). The names live in ``kneuron.runs.store.DKN_FILES``,
    where ``Run.dkn`` (the explorer's reader) finds them too."""
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return DKN_FILES[method]


def dkn_from_run(handle: ModelHandle, run_dir, cfg: DKNConfig | None = None, facts_path=None,
                 resume: bool = True, show_progress: bool = False) -> DKNRun:
    """Module 3 for every fact of a `locate` run, on its first prompt, by the rule ``cfg.method``.
    Resumable: each finished fact is appended to the rule's rows file (``files``: dkn.jsonl for pairs) at
    once (a rerun continues where it stopped); the summary (dkn.json) is written at the end (the result is
    saved: ``DKNRun.load(run_dir, cfg.method)`` reads it back). Each row names its rule (``method``) and
    its forward passes; the clusters rule's also its seconds and every persistent cluster (``row``)."""
    from kneuron.paper.table1 import first_prompt
    from kneuron.runs.reopen import check_model, load_run
    cfg = cfg or DKNConfig()
    cfg.validate()
    run = load_run(run_dir, facts_path)
    check_model(handle, run)
    conf = cfg.record()
    rec = dkn_records(Path(run_dir) / files(cfg.method)[0], conf, fresh=not resume)
    todo = [f for f in run.facts if f.key not in rec]
    for f in track(todo, "degenerate neurons", show=show_progress):
        r = find_dkn(handle, *first_prompt(handle, f), run.neurons.get(f.key, []), cfg)
        rec.put({"fact_id": f.id, "lang": f.lang, "relation": f.relation, "n_kn": len(run.neurons.get(f.key, [])),
                 **row(r)})
    out = [rec.get(f.key) for f in run.facts]
    res = DKNRun(out, summarize(out, conf))
    res._save_summary(run_dir)
    return res


def row(r: DKNResult) -> dict:
    """One fact's result as its rows-file row holds it (JSON): the groups and their costs, the rule, the
    forward passes; for the clusters rule also its ``seconds`` and every persistent cluster (``clusters``,
    their ``lifetimes`` as [birth, death] radii, death null when never merged, the ``alone`` drops, which
    were ``kept``, and ``all_drop``, the drop with the kept suppressed together). The pairs rule's rows are
    as they were before the clusters rule (but for ``method``): no wall time, so a fact redone after damage
    gives the same row."""
    out = {"groups": [list(map(list, g)) for g in r.groups], "drops": r.drops, "part_drops": r.part_drops,
           "n_candidates": len(r.candidates), "n_quiet": len(r.quiet), "p0": r.p0, "n_evals": r.n_evals,
           "n_forward": r.n_forward, "truncated": r.truncated, "method": r.method}
    c = r.clusters
    if c is not None:
        out.update(seconds=r.seconds, clusters=[list(map(list, g)) for g in c.clusters], alone=c.alone, kept=c.kept,
                   all_drop=c.all_drop, lifetimes=[[b, d if math.isfinite(d) else None] for b, d in c.lifetimes])
    return out


# what a dkn.jsonl row must hold to be used (summarize reads these)
ROW_KEYS = ("fact_id", "lang", "groups", "drops", "part_drops", "n_forward", "n_evals", "truncated")


def dkn_records(path, conf: dict | None, fresh: bool = False) -> JsonLines:
    """dkn.jsonl as keyed records (``kneuron.store.records.JsonLines``): a settings line, then one row per
    finished (fact, lang), fsync'ed as it is written. A damaged file (a torn last line, a line that is
    not a fact row, a torn or empty header) is kept as damaged/dkn.jsonl and rewritten with its good
    rows, one warning line says so, and the facts of its bad lines are redone; other settings are
    refused in one line (``conf`` None: read whatever settings it has, e.g. for the explorer)."""
    from kneuron.runs.store import RunStoreError
    return JsonLines(path, key=KEY, need=ROW_KEYS[2:], config=conf, fresh=fresh, warn=log.warning,
                     noun="fact", error=RunStoreError, hint="made with other DKN settings: delete it or use the same "
                                                            "settings")


def summarize(rows: list[dict], conf: dict) -> dict:
    """Per language: share of facts with a DKN group, groups per fact, sizes, layers, cost."""
    out = {"config": conf, "langs": {}}
    for lang in sorted({r["lang"] for r in rows}):
        rs = [r for r in rows if r["lang"] == lang]
        n = len(rs)
        groups = [g for r in rs for g in r["groups"]]
        layers = Counter(l for r in rs for l in {tuple(x)[0] for g in r["groups"] for x in map(tuple, g)})
        neuron_layers = Counter(x[0] for r in rs for x in {tuple(x) for g in r["groups"] for x in g})
        out["langs"][lang] = {
            "n_facts": n, "n_with_dkn": sum(bool(r["groups"]) for r in rs),
            "share_with_dkn": sum(bool(r["groups"]) for r in rs) / n if n else 0.0,
            "groups_per_fact": len(groups) / n if n else 0.0,
            "sizes": dict(sorted(Counter(str(len(g)) for g in groups).items())),
            "layers": {str(k): v for k, v in sorted(neuron_layers.items())},
            "facts_with_dkn_in_layer": {str(k): v for k, v in sorted(layers.items())},
            "mean_group_drop": _mean([d for r in rs for d in r["drops"]]),
            "mean_max_part_drop": _mean([d for r in rs for d in r["part_drops"]]),
            "forward_passes_per_fact": _mean([r["n_forward"] for r in rs]),
            "ablations_per_fact": _mean([r["n_evals"] for r in rs]),
            "truncated": sum(r["truncated"] for r in rs),
        }
        if conf.get("method") == "clusters":
            out["langs"][lang].update(_cluster_summary(rs))
    return out


def _cluster_summary(rows: list[dict]) -> dict:
    """The clusters rule's cost (seconds per fact) and structure: persistent clusters per fact and their
    sizes, and how many kept."""
    cs = [c for r in rows for c in r.get("clusters", [])]
    return {"seconds_per_fact": _mean([r["seconds"] for r in rows if "seconds" in r]),
            "clusters_per_fact": _mean([len(r.get("clusters", [])) for r in rows]),
            "cluster_sizes": dict(sorted(Counter(str(len(c)) for c in cs).items(), key=lambda kv: int(kv[0]))),
            "kept_clusters_per_fact": _mean([sum(r.get("kept", [])) for r in rows])}


def _mean(xs):
    return sum(xs) / len(xs) if xs else None
