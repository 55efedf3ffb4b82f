"""What one language's check scores, fixed before any model call: the splits, the items and every
neuron set an item may be scored on (``plan_check`` -> ``Plan``).

Two splits of the same items:

  facts      Table 3's (``table3.split_facts``): per relation fit / val / test facts; neuron sets per
             relation, counted on its own training facts.
  relations  whole relations held out (``split_relations``, seeded): train / val / test relations;
             neuron sets pooled over the training relations (a held-out relation has no facts of its
             own to count a set on).

Each neuron set is counted twice, as Table 3's protocol asks: on the training part ("fit" sets, what t
and the thresholds are tuned with on validation) and on training + validation ("train" sets, what the
test is scored with). ``check_held_out`` is the guard the evaluation runs before fitting the probe: no
training item of a held-out fact or relation.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from typing import Callable

from kneuron.errors import ConfigError
from kneuron.facts import Fact
from kneuron.neurons import Neuron
from kneuron.paper.table3 import T_GRID, Item, Split, items_for, relation_dkns, split_facts

SPLITS = ("facts", "relations")
PARTS = ("train", "val", "test")
POOLED = "*"                       # the one scope of the relations split's neuron sets
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
