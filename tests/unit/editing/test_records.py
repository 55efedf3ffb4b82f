"""Edit records (CounterFact's shape) from fact sets: paraphrases never the edited template, neighbours of the
same relation, new objects aligned across languages, symmetry prompts, JSON round trips."""
from __future__ import annotations

import pytest

from kneuron.editing import EditError
from kneuron.editing.records import Case, build_cases, case_for
from kneuron.facts import Fact, load_facts, y_ends_template
from support.tiny import word_tokenizer


@pytest.fixture(scope="module")
def en_zh():
    return load_facts("en-zh")


@pytest.fixture(scope="module")
def cases(en_zh):
    return build_cases(en_zh, 60, kind="causal", seed=3)


def test_paraphrases_are_never_the_edited_template(cases):
    assert len(cases) == 60
    n_para = 0
    for c in cases:
        for r in c.records.values():
            assert r.prompt == r.fact.templates[r.template].split("[Y]")[0].replace("[X]", r.fact.subject).rstrip()
            for p in r.paraphrases:
                n_para += 1
                assert p.template != r.template and p.text != r.prompt
                assert y_ends_template(r.fact.templates[p.template])
            assert len({p.text for p in r.paraphrases}) == len(r.paraphrases)
    assert n_para > 60


def test_a_template_that_gives_the_same_causal_prompt_is_no_paraphrase():
    f = Fact("g1", "P136", "en", "Miles Davis", "jazz",
             ("[X] plays [Y].", "[X] plays [Y] music.", "The genre of [X] is [Y]."), wrong_objects=("rock",))
    for seed in range(6):
        (c,) = build_cases([f], kind="causal", seed=seed)
        r = c.records["en"]
        assert r.prompt not in [p.text for p in r.paraphrases]
        assert len(r.paraphrases) == 1              # "Miles Davis plays" counts once, and never when edited


def test_neighbours_are_other_subjects_of_the_same_relation(cases, en_zh):
    by_key = {(f.id, f.lang): f for f in en_zh}
    same = 0
    for c in cases:
        for lang, r in c.records.items():
            assert 0 < len(r.neighbours) <= 10
            for nb in r.neighbours:
                g = by_key[(nb.fact_id, lang)]
                assert g.relation == r.fact.relation and g.id != r.fact.id and g.subject != r.fact.subject
                assert nb.target == g.object and nb.target != r.new and nb.subject == g.subject
                assert nb.same_object == (g.object == r.old)
                same += nb.same_object
            flags = [nb.same_object for nb in r.neighbours]
            assert flags == sorted(flags, reverse=True)         # same true object first
    assert same > 0


def test_new_objects_are_aligned_across_languages(cases):
    for c in cases:
        en, zh = c.records["en"], c.records["zh"]
        assert en.fact.id == zh.fact.id == c.fact_id and c.relation == en.fact.relation
        assert en.new_index == zh.new_index is not None
        assert en.new == en.fact.wrong_objects[en.new_index] and zh.new == zh.fact.wrong_objects[zh.new_index]
        assert [nb.fact_id for nb in en.neighbours][:3] == [nb.fact_id for nb in zh.neighbours][:3]


def test_cases_spread_over_relations_and_are_seeded(en_zh, cases):
    assert len({c.relation for c in cases}) == 24
    again = build_cases(en_zh, 60, kind="causal", seed=3)
    assert [c.to_json() for c in again] == [c.to_json() for c in cases]
    other = build_cases(en_zh, 60, kind="causal", seed=4)
    assert [c.fact_id for c in other] != [c.fact_id for c in cases]


def test_symmetry_prompts_for_capitals(cases):
    sym = [r for c in cases for r in c.records.values() if r.fact.relation in ("P36", "P1376")]
    assert sym
    for r in sym:
        assert r.symmetry is not None and r.symmetry.target == r.fact.subject
        assert r.new in r.symmetry.prompt and r.symmetry.relation == {"P36": "P1376", "P1376": "P36"}[r.fact.relation]
    assert all(r.symmetry is None for c in cases for r in c.records.values()
               if r.fact.relation not in ("P36", "P1376"))


def test_generation_prompts_name_the_subject(cases):
    for c in cases:
        for r in c.records.values():
            assert 1 <= len(r.generation) <= 2
            assert all(r.fact.subject in g for g in r.generation)


def test_json_round_trip(cases):
    for c in cases[:10]:
        assert Case.from_json(c.to_json()) == c


def test_masked_records_keep_the_answer_slot(en_zh):
    for c in build_cases(en_zh, 10, kind="masked"):
        for r in c.records.values():
            assert "[Y]" in r.prompt and r.generation == ()
            assert all("[Y]" in p.text for p in r.paraphrases) and all("[Y]" in nb.prompt for nb in r.neighbours)


def test_a_tokenizer_drops_objects_it_cannot_encode():
    tok = word_tokenizer("causal")
    t = ("the capital of [X] is [Y] .", "[X] capital city is [Y] .")
    facts = [Fact("a", "P36", "en", "france", "paris", t, wrong_objects=("zanzibar", "rome", "quux")),
             Fact("b", "P36", "en", "italy", "rome", t, wrong_objects=("quux", "nowhere")),
             Fact("c", "P36", "en", "spain", "madrid", t, wrong_objects=("berlin",))]
    cs = build_cases(facts, kind="causal", tokenizer=tok)
    assert {c.fact_id: c.records["en"].new for c in cs} == {"a": "rome", "c": "berlin"}   # b: none encodes
    a = next(c for c in cs if c.fact_id == "a").records["en"]
    assert [nb.subject for nb in a.neighbours] == ["spain"]          # italy's object is the new object


def test_case_for_one_fact(en_zh):
    en = next(f for f in en_zh if f.id == "P36-001" and f.lang == "en")
    c = case_for(en_zh, "P36-001", en.wrong_objects[2], kind="causal")
    assert set(c.records) == {"en", "zh"} and c.records["zh"].new_index == 2
    hand = case_for(en_zh, "P36-001", "Rome", kind="causal")
    assert set(hand.records) == {"en"} and hand.records["en"].new_index is None
    with pytest.raises(EditError, match="no fact with id 'nope'"):
        case_for(en_zh, "nope", "Rome")
    with pytest.raises(EditError, match="own object"):
        case_for(en_zh, "P36-001", "Copenhagen")
    with pytest.raises(EditError, match="no 'fr' version"):
        case_for(en_zh, "P36-001", "Rome", lang="fr")


def test_the_edited_fact_leads_with_the_rewrite_template(cases):
    from kneuron.facts import queries_for
    for c in cases[:20]:
        for r in c.records.values():
            f = r.edit_fact
            assert f.key == r.fact.key and sorted(f.templates) == sorted(r.fact.templates)
            assert queries_for(f, "causal", skip_invalid=True)[0].prompt == r.prompt
