"""kneuron.paper.factcheck.plan: the relation split is disjoint, seeded and complete, refuses to overlap,
and leaves no split (a note in the plan) when too few relations leave none to train on."""
import pytest

from kneuron.errors import ConfigError
from kneuron.paper.factcheck.plan import RelationSplit, plan_check, split_relations
from support.factcheck import synthetic_facts


def test_relation_split_is_disjoint_seeded_and_complete():
    fs = synthetic_facts(10, 2)
    sp = split_relations(fs, seed=42)
    tr, va, te = set(sp.train), set(sp.val), set(sp.test)
    assert len(te) == 2 and len(va) == 2 and len(tr) == 6
    assert not (tr & va or tr & te or va & te) and tr | va | te == {f.relation for f in fs}
    assert split_relations(fs, seed=42) == sp and split_relations(fs, seed=7) != sp
    parts = sp.facts(fs)
    assert {f.relation for f in parts.fit} == tr and {f.relation for f in parts.test} == te
    assert len(parts.fit) + len(parts.val) + len(parts.test) == len(fs)
    with pytest.raises(AssertionError, match="overlaps"):
        RelationSplit(("R1", "R2"), ("R2",), ("R3",))
    with pytest.raises(ConfigError, match="2 relations leave none to train on"):
        split_relations(synthetic_facts(2, 3))
    assert "no relations split" in plan_check(synthetic_facts(2, 3), {}, {}, {}).notes[0]
