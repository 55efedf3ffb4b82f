"""Fact-checking beside real baselines (issue 23): Table 3's true / false items scored four ways, each
evaluated on held-out facts and on held-out relations, per language.

An item is Table 3's (``table3.items_for``): a fact's first prompt with its true object (label 1) or one
wrong object of its relation (label 0, ``table3.wrong_object``). Its scores:

  dkn    the mean attribution (the run's locate method) of p(candidate) over the DKN set: Table 3's score
  kn     the same over the knowledge-neuron set: the refined neurons of the training facts, kept by
         Table 3's count rule (found more than int(t x the most frequent one's count) times)
  logp   the model's own log p(candidate | prompt)
  probe  a logistic regression on the hidden state (a block's output) at the statement's last token,
         one probe per layer fit on the training items, the layer of the best validation AUROC kept

Why the statement's last token: a causal model's state at the last prompt token is the same for a
fact's true and wrong item (the candidate comes after it), so a probe reading it could not tell them
apart; the probes of the hallucination-detection literature read the statement once the candidate is in
it. Masked models: the candidate filled in for the mask, read at its last token.

Two splits of the same items:

  facts      Table 3's (``table3.split_facts``): per relation fit / val / test facts; neuron sets per
             relation, counted on its own training facts.
  relations  whole relations held out (``split_relations``, seeded): train / val / test relations;
             neuron sets pooled over the training relations (a held-out relation has no facts of its
             own to count a set on).

The protocol is Table 3's: t (the neuron scorers), each threshold and the probe's layer are tuned on
validation only, with neuron sets counted on the training part; the test part is scored with the sets
counted on training + validation (on the facts split, dkn is Table 3's "dkn" row). The probe is fit on
the training part only (features standardised with its statistics; ``check_held_out`` refuses a
training item of a held-out fact or relation). On the test items: AUROC with a 95 % percentile-bootstrap
interval over facts (a fact's two items resampled together, fixed seed), and precision, recall, F1 and
accuracy of "true when score > the validation threshold".

Model scores (attribution, log p) are the long step: ``factcheck_from_run`` appends each item's to
``<run>/factcheck-<lang>.jsonl`` as it is found, so an interrupted check continues where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from kneuron.errors import ConfigError
from kneuron.facts import Fact
from kneuron.models import hooks
from kneuron.models.load import ModelHandle
from kneuron.models.targets import encode
from kneuron.neurons import Neuron
from kneuron.paper.dkn import DKNRun
from kneuron.paper.stats import auroc, best_threshold, binary_metrics
from kneuron.paper.table1 import _saved_json, first_prompt
from kneuron.paper.table3 import (T_GRID, Item, Split, _mean_score, items_for, model_scorers, relation_dkns,
                                  split_facts, wrong_objects)
from kneuron.report.progress import progress
from kneuron.report.stats import ci, paired_auroc
from kneuron.report.table import Column, Table, interval, number
from kneuron.store import JsonLines, write_json

SCORERS = ("dkn", "kn", "logp", "probe")
SPLITS = ("facts", "relations")
PARTS = ("train", "val", "test")
POOLED = "*"                       # the one scope of the relations split's neuron sets
L2 = 1e-2                          # the probe's ridge penalty (on standardised features)
REL_VAL, REL_TEST = 0.2, 0.2       # shares of the relations held out for validation and test


# ----------------------------------------------------------------------------- the relation split

@dataclass(frozen=True)
class RelationSplit:
    """Relation names held apart: the probe trains on ``train``, thresholds are tuned on ``val``,
    ``test`` is scored once."""
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    def __post_init__(self):
        check_disjoint(self)

    def facts(self, facts: list[Fact]) -> Split:
        """The facts of each part, as a Table 3 ``Split`` (fit = the training relations' facts)."""
        part = lambda rels: [f for f in facts if f.relation in rels]  # noqa: E731
        return Split(part(self.train), part(self.val), part(self.test))


def check_disjoint(sp: RelationSplit) -> None:
    """AssertionError (a bug, never bad input) when a relation is in two parts."""
    tr, va, te = set(sp.train), set(sp.val), set(sp.test)
    if tr & va or tr & te or va & te:
        raise AssertionError(f"relation split overlaps: train & val {sorted(tr & va)}, train & test "
                             f"{sorted(tr & te)}, val & test {sorted(va & te)}")


def split_relations(facts: list[Fact], val_size: float = REL_VAL, test_size: float = REL_TEST,
                    seed: int = 42) -> RelationSplit:
    """The relations shuffled by ``random.Random(f"{seed}:relations")``: test = ceil(test_size x n), then
    val = ceil(val_size x n), at least one each; the rest trains. ConfigError when fewer than three
    relations (or the shares) leave no training relation."""
    rels = sorted({f.relation for f in facts})
    n = len(rels)
    n_test, n_val = max(1, math.ceil(test_size * n)), max(1, math.ceil(val_size * n))
    if n_test + n_val >= n:
        raise ConfigError(f"holding out relations needs a training, a validation and a test relation: "
                          f"{n} relation{'s' if n != 1 else ''} leave{'s' if n == 1 else ''} none to train on")
    random.Random(f"{seed}:relations").shuffle(rels)
    return RelationSplit(tuple(sorted(rels[n_test + n_val:])), tuple(sorted(rels[n_test:n_test + n_val])),
                         tuple(sorted(rels[:n_test])))


def check_held_out(split: str, sp: Split, train: list[Item]) -> None:
    """AssertionError when a training item is of a validation or test fact or, on the relations split,
    of a validation or test relation: what the probe is fit on must never reach what it is judged on."""
    held = sp.val + sp.test
    keys = {f.key for f in held}
    rels = {f.relation for f in held} if split == "relations" else set()
    bad = [it for it in train if it.fact.key in keys or it.fact.relation in rels]
    if bad:
        f = bad[0].fact
        raise AssertionError(f"{split} split: {len(bad)} training items are held out, e.g. {f.id} ({f.relation})")


# ----------------------------------------------------------------------------- the plan: splits, items, sets

def scope(split: str) -> Callable[[Fact], str]:
    """What a fact's neuron set is counted under: its relation (facts split) or one pool (relations)."""
    return (lambda f: f.relation) if split == "facts" else (lambda f: POOLED)


def set_name(split: str, scorer: str, part: str, t: float) -> str:
    """The key of one neuron-set family in an item's ``means``: e.g. "facts|dkn|fit|0.7"."""
    return f"{split}|{scorer}|{part}|{t:g}"


@dataclass
class Plan:
    """What a check scores, fixed before any model call: each split, every item (facts with a wrong
    object, in fact order), and every neuron set an item may be scored on (``set_name`` -> scope ->
    neurons; "fit" sets tune on validation, "train" sets score the test)."""
    splits: dict[str, Split]
    relations: RelationSplit | None
    items: list[Item]
    sets: dict[str, dict[str, list[Neuron]]]
    t_grid: tuple[float, ...]
    notes: list[str] = field(default_factory=list)

    def scored(self) -> list[Item]:
        """The items that need the model's scores: those of a validation or test fact of any split."""
        keys = {f.key for sp in self.splits.values() for f in sp.val + sp.test}
        return [it for it in self.items if it.fact.key in keys]

    def fingerprint(self) -> str:
        """A hash of the splits and sets: item scores saved under another plan are not reused."""
        ids = {n: [[f.id for f in p] for p in (sp.fit, sp.val, sp.test)] for n, sp in self.splits.items()}
        text = json.dumps({"splits": ids, "sets": self.sets}, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_check(facts: list[Fact], dkn_groups: dict, kn_groups: dict, wrong: dict, t_grid=T_GRID, seed: int = 42,
               rel_sizes: tuple[float, float] = (REL_VAL, REL_TEST)) -> Plan:
    """The plan of one language's check. ``dkn_groups``: fact key -> its DKN groups; ``kn_groups``: fact
    key -> [its knowledge neurons] (one group); ``wrong``: fact key -> its wrong object."""
    splits, notes, rel = {"facts": split_facts(facts, seed=seed)}, [], None
    try:
        rel = split_relations(facts, *rel_sizes, seed=seed)
        splits["relations"] = rel.facts(facts)
    except ConfigError as e:
        notes.append(f"no relations split: {e}")
    sets = {}
    for name, sp in splits.items():
        for scorer, groups in (("dkn", dkn_groups), ("kn", kn_groups)):
            for part, fs in (("fit", sp.fit), ("train", sp.train)):
                for t in t_grid:
                    sets[set_name(name, scorer, part, t)] = relation_dkns(groups, fs, t, by=scope(name))
    return Plan(splits, rel, items_for(facts, wrong), sets, tuple(t_grid), notes)


# ----------------------------------------------------------------------------- scoring items

def item_key(it: Item) -> tuple[str, str, str]:
    return it.fact.id, it.fact.lang, it.candidate


def item_means(scores: torch.Tensor, fact: Fact, sets: dict) -> dict[str, float | None]:
    """An item's mean attribution over each of its neuron sets (None: its scope has no set)."""
    out = {}
    for name, by_scope in sets.items():
        v = _mean_score(scores, by_scope.get(scope(name.split("|")[0])(fact), []))
        out[name] = None if math.isinf(v) else v
    return out


def score_items(items: list[Item], attr, prob, sets: dict, rows, step: Callable = lambda: None) -> None:
    """Each item not in ``rows`` yet, scored by the model (``attr``, ``prob``: ``table3.model_scorers``)
    and put there at once (``rows``: a ``JsonLines`` or ``Rows``)."""
    for it in items:
        if item_key(it) not in rows:
            rows.put({"fact_id": it.fact.id, "lang": it.fact.lang, "candidate": it.candidate, "label": it.label,
                      "logp": prob(it)[0], "means": item_means(attr(it), it.fact, sets)})
        step()


class Rows(dict):
    """Item rows in memory, with ``JsonLines``' ``put`` (for checks that keep nothing on disk)."""

    def put(self, row: dict) -> None:
        self[(row["fact_id"], row["lang"], row["candidate"])] = row


ROW_KEY, ROW_NEED = ("fact_id", "lang", "candidate"), ("label", "logp", "means")


def item_records(path, config: dict, fresh: bool = False) -> JsonLines:
    """factcheck-<lang>.jsonl: a settings line, then one row per scored item, fsync'ed as written; rows
    made under other settings (method, steps, seed, the plan's fingerprint) are refused in one line."""
    from kneuron.runs.store import RunStoreError
    return JsonLines(path, key=ROW_KEY, need=ROW_NEED, config=config, fresh=fresh, noun="item", error=RunStoreError,
                     hint="made with other fact-check settings or DKN rows: use the same ones or --restart")


def statement_state(handle: ModelHandle, item: Item) -> torch.Tensor:
    """Every block's output at the statement's last token ([n_layers, hidden], float32, CPU): causal,
    the prompt followed by the candidate; masked, the candidate in place of the mask. One forward pass
    through the project's capture hook, stopped after the last block."""
    enc = encode(handle.tokenizer, handle.kind, first_prompt(handle, item.fact)[0], item.candidate)
    ids = list(enc.input_ids)
    if handle.kind == "causal":
        ids.append(enc.target_ids[-1])
        pos = len(ids) - 1
    else:
        for p, t in zip(enc.positions, enc.target_ids):
            ids[p] = t
        pos = enc.positions[-1]
    with torch.no_grad(), hooks.capture(handle, outputs={"h": handle.layers}, at=[pos],
                                        stop_after=handle.layers[-1]) as got:
        hooks.forward(handle, torch.tensor([ids], device=handle.device))
    return torch.stack([h.reshape(-1) for h in got["h"]]).float().cpu()


def hidden_states(handle: ModelHandle, items: list[Item], step: Callable = lambda: None) -> torch.Tensor:
    """``statement_state`` of each item, stacked: [n_items, n_layers, hidden]."""
    out = []
    for it in items:
        out.append(statement_state(handle, it))
        step()
    return torch.stack(out) if out else torch.zeros(0, handle.n_layers, 0)


# ----------------------------------------------------------------------------- the probe

@dataclass(frozen=True, eq=False)
class Probe:
    """A logistic regression on one layer's standardised features: ``score(x)`` is its logit."""
    layer: int
    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: float

    def score(self, x: torch.Tensor) -> np.ndarray:
        z = (x.double() - self.mean) / self.std
        return (z @ self.weight + self.bias).numpy()


def fit_probe(x: torch.Tensor, labels: Sequence[int], layer: int, l2: float = L2, max_iter: int = 200) -> Probe:
    """Logistic regression on ``x`` [n, d] (one layer's training features): standardised with the
    training mean and standard deviation only (a constant feature is left as it is), mean log-loss +
    l2 / 2 x |w|^2, full-batch L-BFGS in float64 from zero weights. No random draw: the same training
    items give the same probe, bit for bit."""
    x64 = x.double()
    mean, std = x64.mean(0), x64.std(0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    z, y = (x64 - mean) / std, torch.as_tensor(labels, dtype=torch.float64)
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        v = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 / 2 * (w * w).sum()
        v.backward()
        return v
    with torch.enable_grad():
        opt.step(loss)
    return Probe(layer, mean, std, w.detach(), float(b.detach()))


def choose_layer(feats: torch.Tensor, y: list[int], train: list[int], val: list[int],
                 l2: float = L2) -> tuple[Probe, list[float | None]]:
    """One probe per layer fit on the ``train`` rows of ``feats`` [n, layers, d]; the one with the best
    AUROC on the ``val`` rows (ties: the lowest layer) and every layer's validation AUROC. The test rows
    are never read here."""
    yt, yv = [y[i] for i in train], [y[i] for i in val]
    rank = lambda a: -1.0 if a is None else a  # noqa: E731
    best, aucs = None, []
    for layer in range(feats.shape[1]):
        p = fit_probe(feats[train, layer], yt, layer, l2)
        aucs.append(auroc(yv, p.score(feats[val, layer])))
        if best is None or rank(aucs[-1]) > rank(aucs[best.layer]):
            best = p
    return best, aucs


# ----------------------------------------------------------------------------- results

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


# ----------------------------------------------------------------------------- evaluation

def _parts(sp: Split, items: list[Item]) -> dict[str, list[int]]:
    """Indices into ``items`` of each part's items."""
    keys = {"train": {f.key for f in sp.fit}, "val": {f.key for f in sp.val}, "test": {f.key for f in sp.test}}
    return {p: [i for i, it in enumerate(items) if it.fact.key in keys[p]] for p in PARTS}


def auroc_interval(items: list[Item], scores, n_boot: int, seed: int) -> tuple[float, float] | None:
    """95 % percentile-bootstrap interval of the AUROC over facts: each fact's (true, wrong) scores
    are one resampled unit (``report.stats.ci`` with ``paired_auroc``)."""
    pair: dict = {}
    for it, s in zip(items, scores):
        pair.setdefault(it.fact.key, {})[it.label] = s
    both = [p for p in pair.values() if len(p) == 2]
    if not both:
        return None
    return ci((np.array([p[1] for p in both]), np.array([p[0] for p in both])), paired_auroc, n_boot=n_boot,
              seed=seed)


def result(items: list[Item], val: list[int], test: list[int], scores: Callable[[str, list[int]], list[float]],
           n_boot: int, seed: int, tuned: dict | None = None) -> ScorerResult:
    """A scorer's result: its threshold tuned on the ``val`` items (``best_threshold``), then AUROC, its
    interval and the verdicts on the ``test`` items. ``scores(part, indices)``: the scores to use."""
    yv, yt = [items[i].label for i in val], [items[i].label for i in test]
    sv, st = scores("val", val), scores("test", test)
    lam, val_f1 = best_threshold(yv, sv)
    b = binary_metrics(yt, [s > lam for s in st])
    iv = auroc_interval([items[i] for i in test], st, n_boot, seed) or (None, None)
    return ScorerResult(auroc(yt, st), *iv, lam, b.precision, b.recall, b.f1, b.accuracy, auroc(yv, sv), val_f1,
                        len(test), tuned or {}, sum(math.isinf(s) for s in st))


def _neuron_scorer(split: str, scorer: str, items, rows, parts, t_grid, n_boot, seed) -> ScorerResult:
    """dkn / kn: t and lambda tuned on validation (sets from the training part), as Table 3; the test
    scored with the sets counted on training + validation."""
    def means(part: str, t: float, idx: list[int]) -> list[float]:
        name = set_name(split, scorer, part, t)
        vals = [rows.get(item_key(items[i]))["means"][name] for i in idx]
        return [-math.inf if v is None else v for v in vals]
    best_t, best_f1 = None, None
    for t in t_grid:
        f1 = best_threshold([items[i].label for i in parts["val"]], means("fit", t, parts["val"]))[1]
        if best_f1 is None or f1 > best_f1:
            best_t, best_f1 = t, f1
    pick = lambda part, idx: means("fit" if part == "val" else "train", best_t, idx)  # noqa: E731
    return result(items, parts["val"], parts["test"], pick, n_boot, seed, {"t": best_t})


def _probe_scorer(items, feats: torch.Tensor, parts, n_boot, seed, l2) -> ScorerResult:
    """The probe: fit on the training items only, its layer and threshold chosen on validation."""
    y = [it.label for it in items]
    probe, aucs = choose_layer(feats, y, parts["train"], parts["val"], l2)
    sc = lambda part, idx: probe.score(feats[idx, probe.layer]).tolist()  # noqa: E731
    return result(items, parts["val"], parts["test"], sc, n_boot, seed,
                  {"layer": probe.layer, "val_auroc_by_layer": aucs})


def evaluate_split(name: str, sp: Split, items: list[Item], rows, feats: torch.Tensor, t_grid=T_GRID,
                   n_boot: int = 1000, seed: int = 42, l2: float = L2,
                   relations: RelationSplit | None = None) -> SplitResult:
    """Every scorer on one split (``rows``: the scored items' rows; ``feats``: ``hidden_states`` of
    ``items``, row for row)."""
    parts = _parts(sp, items)
    check_held_out(name, sp, [items[i] for i in parts["train"]])
    rels = ({"train": list(relations.train), "val": list(relations.val), "test": list(relations.test)} if relations
            else {p: sorted({f.relation for f in fs}) for p, fs in zip(PARTS, (sp.fit, sp.val, sp.test))})
    res = SplitResult(name, rels, {p: sorted(f.id for f in fs) for p, fs in zip(PARTS, (sp.fit, sp.val, sp.test))},
                      {p: len(v) for p, v in parts.items()}, dict.fromkeys(SCORERS))
    if not parts["val"] or not parts["test"]:
        res.notes.append(f"no {'validation' if not parts['val'] else 'test'} items: nothing is tuned or scored")
        return res
    for scorer in ("dkn", "kn"):
        res.scorers[scorer] = _neuron_scorer(name, scorer, items, rows, parts, t_grid, n_boot, seed)
    res.scorers["logp"] = result(items, parts["val"], parts["test"],
                                 lambda _, idx: [rows.get(item_key(items[i]))["logp"] for i in idx], n_boot, seed)
    if parts["train"]:
        res.scorers["probe"] = _probe_scorer(items, feats, parts, n_boot, seed, l2)
    else:
        res.notes.append("no training items: no probe")
    return res


def evaluate(plan: Plan, rows, feats: torch.Tensor, n_boot: int = 1000, seed: int = 42,
             l2: float = L2) -> dict[str, SplitResult | None]:
    """``evaluate_split`` over each split of the plan (None for a split the plan has not)."""
    return {name: (evaluate_split(name, plan.splits[name], plan.items, rows, feats, plan.t_grid, n_boot, seed, l2,
                                  plan.relations if name == "relations" else None)
                   if name in plan.splits else None) for name in SPLITS}


def fact_check_beside(facts: list[Fact], dkn_groups: dict, kn_groups: dict, wrong: dict, attr, prob,
                      features: Callable[[list[Item]], torch.Tensor], t_grid=T_GRID, seed: int = 42,
                      n_boot: int = 1000, l2: float = L2) -> tuple[Plan, dict[str, SplitResult | None]]:
    """The check of one language in memory (``attr``, ``prob``: ``table3.model_scorers``; ``features``:
    the items' [n, layers, d] hidden states). Returns the plan and each split's result."""
    plan = plan_check(facts, dkn_groups, kn_groups, wrong, t_grid, seed)
    rows = Rows()
    score_items(plan.scored(), attr, prob, plan.sets, rows)
    return plan, evaluate(plan, rows, features(plan.items), n_boot, seed, l2)


# ----------------------------------------------------------------------------- over a run

def run_langs(facts: list[Fact], langs: Sequence[str] | None, run_dir) -> list[str]:
    """``langs`` (default: the run's own, in run order), each checked to be in the run (ConfigError)."""
    have = list(dict.fromkeys(f.lang for f in facts))
    for lang in langs or ():
        if lang not in have:
            raise ConfigError(f"language {lang!r} is not in run {run_dir} (its languages: {', '.join(have)})")
    return list(langs) if langs else have


def stem(dkn: str) -> str:
    """The files' stem for a DKN rule: the pairs rule (the paper's) keeps Table 3's plain name."""
    return "factcheck" if dkn == "pairs" else f"factcheck-{dkn}"


def load_dkn(run_dir, rule: str = "pairs") -> DKNRun:
    """The run's DKN rows of ``rule`` (``DKNRun.load``); a RunStoreError, one line, when that rule has not run
    on it."""
    from kneuron.paper.dkn import files
    from kneuron.runs.store import RunStoreError
    try:
        return DKNRun.load(run_dir, rule)
    except RunStoreError:
        flag = "" if rule == "pairs" else f" --method {rule}"
        raise RunStoreError(f"{run_dir}: no DKN rows ({files(rule)[1]}): find them first with `kneuron dkn --run "
                            f"{run_dir}{flag}`") from None


def factcheck_from_run(handle: ModelHandle, run_dir, lang: str, dkn: DKNRun | list[dict], method: str | None = None,
                       steps: int | None = None, method_options: dict | None = None, seed: int = 42,
                       n_boot: int = 1000, l2: float = L2, resume: bool = True,
                       show_progress: bool = False) -> FactCheckBaselines:
    """The check over one language of a `locate` run whose DKNs were found: its facts, its knowledge
    neurons, ``dkn`` (``dkn_from_run``'s result or its rows). ``method`` / ``steps``: the attribution
    (default: the run's, with its options). Item scores go to <run>/factcheck-<lang>.jsonl as they are found (``resume``:
    keep those there); the result is not written (``.save(directory)`` does that)."""
    from kneuron.runs.reopen import check_model, load_run
    from kneuron.runs.store import RunStoreError
    run = load_run(run_dir)
    check_model(handle, run)
    run_langs(run.facts, [lang], run_dir)
    rows = [r for r in (dkn.rows if isinstance(dkn, DKNRun) else dkn) if r["lang"] == lang]
    if not rows:
        raise RunStoreError(f"{run_dir}: no DKN rows for language {lang!r}: run `kneuron dkn --run {run_dir}`")
    rules = {r.get("method", "pairs") for r in rows}
    if len(rules) > 1:
        raise RunStoreError(f"{run_dir}: DKN rows of several rules ({', '.join(sorted(rules))}): pass one rule's rows")
    rule = rules.pop()
    meta = run.store.meta
    own = method is None or method == meta.get("method")          # the run's options fit the run's method only
    method, steps = method or meta.get("method", "amig"), steps or meta.get("steps", 20)
    opts = method_options if method_options is not None else (meta.get("method_options") or {} if own else {})
    facts = [f for f in run.facts if f.lang == lang]
    dkn_groups = {(r["fact_id"], r["lang"]): r["groups"] for r in rows}
    kn_groups = {f.key: [run.neurons.get(f.key, [])] for f in facts}
    plan = plan_check(facts, dkn_groups, kn_groups, wrong_objects(handle, facts, seed), seed=seed)
    conf = {"method": method, "steps": steps, "method_options": opts, "seed": seed, "plan": plan.fingerprint()}
    rec = item_records(Path(run_dir) / f"{stem(rule)}-{lang}.jsonl", conf, fresh=not resume)
    attr, prob = model_scorers(handle, method, steps, **opts)
    todo = [it for it in plan.scored() if item_key(it) not in rec]
    with progress(f"fact-check scores ({lang})", len(todo), show=show_progress) as advance:
        score_items(todo, attr, prob, plan.sets, rec, advance)
    with progress(f"hidden states ({lang})", len(plan.items), show=show_progress) as advance:
        feats = hidden_states(handle, plan.items, advance)
    return FactCheckBaselines(lang, method, steps, seed, n_boot, evaluate(plan, rec, feats, n_boot, seed, l2),
                              plan.notes, rule)


__all__ = ["FactCheckBaselines", "Plan", "Probe", "RelationSplit", "Rows", "ScorerResult", "SplitResult",
           "check_disjoint", "check_held_out", "choose_layer", "evaluate", "evaluate_split", "fact_check_beside",
           "factcheck_from_run", "fit_probe", "hidden_states", "load_dkn", "plan_check", "run_langs",
           "split_relations", "statement_state"]
