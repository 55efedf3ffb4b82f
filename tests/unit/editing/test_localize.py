"""kneuron.editing.localize: Dai et al.'s relation filter (one definition for ``kneuron edit``, the explorer
and the editing bench) and relation erasure's neurons."""
from __future__ import annotations

import random

import pytest

from kneuron.editing.localize import (common_neurons, common_share, fact_neurons, prompt_limit, relation_facts,
                                      relation_filter, relation_top_neurons)
from kneuron.facts import Fact, queries_for
from support.tiny import tiny_handle

POOL = [Fact(f"P36-{i:03d}", "P36", lang, f"s{i}", f"o{i}", ("the capital of [X] is [Y]",))
        for i in range(1, 31) for lang in ("en", "zh")]
POOL += [Fact(f"P37-{i:03d}", "P37", "en", f"s{i}", f"o{i}", ("[X] speaks [Y]",)) for i in range(1, 6)]


def bench_ids(first_ids: list[str], rel: str, lang: str, n: int, seed: int) -> list[str]:
    """The editing bench's draw as it was written before relation_facts (benchmarks/editing.py)."""
    ids = list(dict.fromkeys(first_ids))
    more = sorted(f.id for f in POOL if f.relation == rel and f.lang == lang and f.id not in ids)
    random.Random(f"{seed}:{rel}:common").shuffle(more)
    return ids + more[: max(0, n - len(ids))]


def show_ids(fact: Fact, n: int) -> list[str]:
    """``kneuron edit``'s draw as it was written before (editing/show.py, seed "0:")."""
    others = sorted((f for f in POOL if f.relation == fact.relation and f.lang == fact.lang and f.id != fact.id),
                    key=lambda f: f.id)
    random.Random(f"0:{fact.relation}:common").shuffle(others)
    return [fact.id] + [f.id for f in others[: n - 1]]


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("n", [1, 4, 10, 50])
def test_relation_facts_is_the_benchs_draw(seed, n):
    en = {f.id: f for f in POOL if f.lang == "en"}
    first = [en["P36-007"], en["P36-002"], en["P36-007"], en["P36-019"]]      # the edited facts, one repeated
    got = relation_facts(first, POOL, n, seed)
    assert [f.id for f in got] == bench_ids([f.id for f in first], "P36", "en", n, seed)
    assert all(f.relation == "P36" and f.lang == "en" for f in got) and got[:3] == [first[0], first[1], first[3]]


@pytest.mark.parametrize("n", [1, 2, 10, 40])
def test_one_fact_with_seed_0_is_kneuron_edits_old_draw(n):
    fact = next(f for f in POOL if f.id == "P36-011" and f.lang == "zh")
    assert [f.id for f in relation_facts([fact], POOL, n, 0)] == show_ids(fact, n)
    assert relation_facts([fact], POOL, n, 0) != relation_facts([fact], POOL, n, 1) or n <= 2


def test_common_share_and_the_filter():
    assert common_share(10) == common_share(30) == 0.1 and common_share(4) == 0.25
    fact = next(f for f in POOL if f.id == "P36-001" and f.lang == "en")
    shared, own = (9, 9), {}

    def neurons_of(f):                           # every fact has (9, 9); each has one of its own
        own[f.id] = (1, int(f.id[-3:]))
        return [own[f.id], shared]
    rf = relation_filter(None, fact, POOL, 5, seed=2, neurons_of=neurons_of)
    assert [f.id for f in rf.facts] == bench_ids([fact.id], "P36", "en", 5, 2) and rf.facts[0] is fact
    assert rf.sets == [[own[f.id], shared] for f in rf.facts] and len(rf.seconds) == 5
    assert rf.share == 0.2 and rf.common == [shared]               # (1, k) is one fact's: not common
    assert rf.common == sorted(common_neurons(rf.sets, share=rf.share))


def test_common_and_top_neurons_count_a_fact_once():
    sets = [[(0, 1), (0, 1), (2, 3)], [(0, 1)], [(2, 3), (5, 5)]]
    assert common_neurons(sets, share=0.5) == {(0, 1), (2, 3)}
    assert relation_top_neurons(sets, k=2) == [(0, 1), (2, 3)] and relation_top_neurons(sets, k=9)[-1] == (5, 5)


FACT = Fact("c0", "P36", "en", "france", "paris", ("the capital of [X] is [Y]", "[X] capital city is [Y]"))


def test_fact_neurons_match_a_locate_run():
    from kneuron.runs.locate import LocateConfig, locate_fact
    h = tiny_handle("llama")
    qs = queries_for(FACT, "causal")
    mine = fact_neurons(h, FACT, LocateConfig(steps=3))
    theirs = locate_fact(h, FACT, qs, LocateConfig(steps=3)).neurons.neurons
    assert mine and mine == theirs and all(isinstance(n, tuple) and len(n) == 2 for n in mine)
    default = locate_fact(h, FACT, qs, LocateConfig(steps=5, rule="midpoint")).neurons.neurons
    assert fact_neurons(h, FACT) == default


# ----------------------------------------------------------------------------- the relation's facts, the prompts

def test_none_counts_every_fact_of_the_relation():
    """n=None: every fact of the relation and language in the pool, the edited ones first; a neuron of 5 of
    the 30 facts is common over all of them (5 > 3) and not over the first 10 when none of them has it."""
    en = [f for f in POOL if f.lang == "en" and f.relation == "P36"]
    first = [en[4], en[0]]
    got = relation_facts(first, POOL, None, seed=1)
    assert got[:2] == first and sorted(f.id for f in got) == sorted(f.id for f in en)
    ten = {f.id for f in relation_facts(first, POOL, 10, seed=1)}
    rare = [f.id for f in got if f.id not in ten][:5]               # found only outside the first 10
    neurons_of = lambda f: [(0, 0), *([(4, 4)] if f.id in rare else [])]   # noqa: E731
    assert relation_filter(None, first, POOL, 10, seed=1, neurons_of=neurons_of).common == [(0, 0)]
    every = relation_filter(None, first, POOL, None, seed=1, neurons_of=neurons_of)
    assert len(every.facts) == 30 and every.common == [(0, 0), (4, 4)]


def test_rewrite_prompts_attribute_each_facts_first_prompt_only(attributed_prompts):
    """prompts="rewrite": attribution sees each fact's first usable prompt and nothing else; "all": all of
    them. The default neurons_of is fact_neurons with that limit."""
    seen = attributed_prompts
    h = tiny_handle("llama")
    two = [Fact(f"c{i}", "P36", "en", s, o, ("the capital of [X] is [Y]", "[X] capital city is [Y]"))
           for i, (s, o) in enumerate([("france", "paris"), ("italy", "rome")])]
    relation_filter(h, two[0], two, None, prompts="rewrite")
    assert seen == [["the capital of france is"], ["the capital of italy is"]]
    seen.clear()
    relation_filter(h, two[0], two, None, prompts="all")
    assert seen == [["the capital of france is", "france capital city is"],
                    ["the capital of italy is", "italy capital city is"]]
    assert prompt_limit("rewrite") == 1 and prompt_limit("all") is None


def test_bad_prompts_are_a_one_line_config_error():
    from kneuron.errors import ConfigError
    for call in (lambda: prompt_limit("paraphrases"), lambda: relation_filter(None, POOL[0], POOL, 3, prompts="x")):
        with pytest.raises(ConfigError, match="must be rewrite or all") as err:
            call()
        assert "\n" not in str(err.value)
