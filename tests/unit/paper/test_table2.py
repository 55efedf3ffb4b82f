"""kneuron.paper.table2: CrossLingual.save / load round-trip."""
import random

from kneuron.paper.table1 import EditEffect
from kneuron.paper.table2 import CONDITIONS, CrossLingual, edit_sets, random_like, table2


def test_a_crosslingual_result_round_trips(tmp_path):
    effects = [EditEffect(f"P{i}", lang, "r", 2, "Q", "s", 0.2 + i / 50, 0.3, p_suppress=0.1, p_suppress_unrelated=0.29,
                          p_enhance=0.4, p_enhance_unrelated=0.31, condition=cond)
               for i in range(4) for lang in ("en", "zh") for cond in CONDITIONS]
    res = CrossLingual(("en", "zh"), 42, 4, 3, table2(effects, n_boot=10), effects)
    res.save(tmp_path)
    again = CrossLingual.load(tmp_path)
    assert again == res and again.to_json() == res.to_json()
    empty = CrossLingual(("en", "zh"), 1, 0, 0, {}, [])
    empty.save(tmp_path / "e")
    assert CrossLingual.load(tmp_path / "e") == empty


def test_conditions_edit_the_right_sets():
    nrn = {("a", "en"): [(1, 2), (3, 4)], ("a", "zh"): [(3, 4), (0, 7)]}
    s = edit_sets(nrn, {"a": [(3, 4)]}, ["a"], ("en", "zh"), n_neurons=16)
    assert s["a", "likn", "en"] == s["a", "likn", "zh"] == [(3, 4)]
    assert s["a", "own", "en"] == [(1, 2), (3, 4)] and s["a", "own", "zh"] == [(3, 4), (0, 7)]
    assert s["a", "other", "en"] == [(3, 4), (0, 7)]            # zh -> en
    assert s["a", "other", "zh"] == [(1, 2), (3, 4)]            # en -> zh
    assert s["a", "both", "en"] == s["a", "both", "zh"] == [(0, 7), (1, 2), (3, 4)]   # at once, not one after the other
    r = s["a", "random", "en"]
    assert r == s["a", "random", "zh"] and len(r) == 1 and r[0][0] == 3 and r[0] not in {(1, 2), (3, 4), (0, 7)}
    assert {k[1] for k in s} == set(CONDITIONS)
    assert edit_sets(nrn, {"a": [(3, 4)]}, ["a"], ("en", "zh"), 16) == s          # seeded


def test_random_like_matches_layers_and_avoids_knowledge_neurons():
    tpl = [(0, 1), (0, 2), (2, 5)]
    ex = {(0, j) for j in range(10)}
    r = random_like(tpl, ex, 12, random.Random(0))
    assert sorted(l for l, _ in r) == [0, 0, 2] and not set(r) & ex and len(set(r)) == 3


def test_table2_by_known_splits_by_the_facts_known_in_both_languages():
    from kneuron.paper.facts_used import Known
    from kneuron.paper.table2 import table2_by_known
    effects = [EditEffect(f"P{i}", lang, "r", 2, "Q", "s", 0.2 + i / 50, 0.3, p_suppress=0.1 * i,
                          p_suppress_unrelated=0.29, p_enhance=0.4, p_enhance_unrelated=0.31, condition=cond)
               for i in range(4) for lang in ("en", "zh") for cond in CONDITIONS]
    # P0 known in both, P1 only in en, P2 in neither, P3 not judged in zh
    known = Known("rank", {("P0", "en"): True, ("P0", "zh"): True, ("P1", "en"): True, ("P1", "zh"): False,
                           ("P2", "en"): False, ("P2", "zh"): False, ("P3", "en"): True})
    parts = table2_by_known(effects, known, n_boot=10)
    assert set(parts) == {"known_in_both", "not_known_in_both"}
    assert parts["known_in_both"] == table2([e for e in effects if e.fact_id == "P0"], n_boot=10)
    assert parts["not_known_in_both"] == table2([e for e in effects if e.fact_id in ("P1", "P2")], n_boot=10)
    assert parts["not_known_in_both"]["likn"]["en"]["n_facts"] == 2
    assert table2_by_known(effects, None) == {}
    only = Known("rank", {("P0", "en"): True, ("P0", "zh"): True})
    assert set(table2_by_known(effects, only, n_boot=10)) == {"known_in_both"}           # an empty part: left out
