"""paper.facts_used: the facts each step of reproduce uses, counted known / not known per language from the
knowledge records beside the run (known.json, organisms.known's format), and Table 1's effects split by them."""
import json

from kneuron.paper.facts_used import KNOWN_FILE, Known, facts_used, read_known, split_by_known
from kneuron.paper.table1 import EditEffect


def _known_json(tmp_path, known: dict):
    recs = [{"id": i, "lang": lang, "relation": "P1", "rank": 1 if k else 50, "p": 0.5 if k else 0.001, "known": k}
            for (i, lang), k in known.items()]
    (tmp_path / KNOWN_FILE).write_text(json.dumps({"rule": "rank", "k": 10, "model": "tiny", "summary": {},
                                                   "facts": recs}), encoding="utf-8")


def test_read_known_reads_the_records_beside_the_run(tmp_path):
    assert read_known(tmp_path) is None                                   # none: nothing is known
    _known_json(tmp_path, {("f1", "en"): True, ("f1", "zh"): False})
    k = read_known(tmp_path)
    assert k.by_fact == {("f1", "en"): True, ("f1", "zh"): False}
    assert "top 10" in k.rule
    assert k.count(["f1", "f2"], "zh") == {"facts": 2, "known": 0, "not_known": 1, "not_judged": 1}


def test_each_step_counts_its_own_facts(hand_result, hand_ids):
    # known: f1..f10 in English, the even ones in Chinese
    known = Known("rank", {**{(f"f{i}", "en"): i <= 10 for i in range(1, 21)},
                           **{(f"f{i}", "zh"): i % 2 == 0 for i in range(1, 21)}})
    used = facts_used(hand_result, hand_ids, known)
    steps = {r["step"]: r["per_lang"] for r in used["steps"]}
    assert "gold answer" in used["principle"] and used["rule"] == "rank"
    assert steps["Table 1 (Module 1: B-KN, AMIG)"]["en"] == {"facts": 20, "known": 10, "not_known": 10, "not_judged": 0}
    assert steps["Table 1 (Module 1: B-KN, AMIG)"]["zh"]["known"] == 10
    # Table 2: the ids with a LIKN (f1, f2, f3): en all known, zh only f2
    assert steps["Table 2"]["en"] == {"facts": 3, "known": 3, "not_known": 0, "not_judged": 0}
    assert steps["Table 2"]["zh"] == {"facts": 3, "known": 1, "not_known": 2, "not_judged": 0}
    assert steps["Module 2 (LIKN)"]["en"]["facts"] == 20
    # Table 3: test f1..f4, validation f5..f8, fitting the rest; the parts partition the language's facts
    assert steps["Table 3 (zh): test part"]["zh"] == {"facts": 4, "known": 2, "not_known": 2, "not_judged": 0}
    assert steps["Table 3 (en): validation part"]["en"]["known"] == 4
    assert steps["Table 3 (en): fitting part"]["en"] == {"facts": 12, "known": 2, "not_known": 10, "not_judged": 0}
    assert "top 20" in next(r["uses"] for r in used["steps"] if r["step"] == "Module 3 (DKN)")


def test_without_records_only_the_numbers_are_given(hand_result, hand_ids):
    used = facts_used(hand_result, hand_ids, None)
    assert used["rule"] is None
    steps = {r["step"]: r["per_lang"] for r in used["steps"]}
    assert steps["Table 2"]["en"] == {"facts": 3} and steps["Table 1 (Module 1: B-KN, AMIG)"]["zh"] == {"facts": 20}
    # a result made before the per-fact LIKN counts: Table 2's number from its summary, known not counted
    del hand_result["table2"]["likn"]["count_per_fact"]
    steps = {r["step"]: r for r in facts_used(hand_result, hand_ids, Known("rank", {}))["steps"]}
    assert steps["Table 2"]["per_lang"]["en"] == {"facts": 3} and "known not counted" in steps["Table 2"]["note"]
    del hand_result["table2"]
    steps = facts_used(hand_result, hand_ids, None)["steps"]
    assert not any(r["step"].startswith(("Table 2", "Module 2")) for r in steps)


def _effect(fid, lang):
    return EditEffect(fid, lang, "P1", 2, "g", "P2", 0.5, 0.5, 0.1, 0.5, 0.9, 0.5)


def test_split_by_known_keeps_the_judged_facts_apart():
    es = [_effect("a", "en"), _effect("b", "en"), _effect("a", "zh"), _effect("c", "en")]
    parts = split_by_known(es, Known("rank", {("a", "en"): True, ("b", "en"): False, ("a", "zh"): False}))
    assert [(e.fact_id, e.lang) for e in parts["known"]] == [("a", "en")]
    assert [(e.fact_id, e.lang) for e in parts["not_known"]] == [("b", "en"), ("a", "zh")]     # c: not judged
    assert split_by_known(es, None) == {}
