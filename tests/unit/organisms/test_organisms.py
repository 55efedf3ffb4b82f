"""kneuron.organisms: the fact choice (ambiguous and unaligned facts dropped, relations balanced, seeded)."""
from kneuron.facts import Fact
from kneuron.organisms import training_facts
from support.tiny import bilingual_facts

_facts = bilingual_facts


def test_training_facts_drop_ambiguous_and_unaligned_and_balance_relations():
    facts = _facts() + [Fact("c0b", "P36", "en", "france", "lyon", ("the capital of [X] is [Y].",)),
                        Fact("c0b", "P36", "zh", "法国", "里昂", ("[X]的首都是[Y]。",)),
                        Fact("x", "P36", "en", "peru2", "lima", ("the capital of [X] is [Y].",))]
    chosen = training_facts(facts, n_ids=None)
    ids = {f.id for f in chosen}
    assert "c0" not in ids and "c0b" not in ids       # france has two capitals: ambiguous
    assert "x" not in ids                              # no Chinese fact
    four = training_facts(_facts(), n_ids=4, seed=1)
    assert sorted({f.relation for f in four}) == ["P36", "P37"] and len({f.id for f in four}) == 4
    assert training_facts(_facts(), n_ids=4, seed=1) == four
