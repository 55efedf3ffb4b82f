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
