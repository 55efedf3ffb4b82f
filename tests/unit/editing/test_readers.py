"""Records files (ROME's CounterFact, EasyEdit's zsRE, KnowEdit) read into Cases: every field as the small
hand-written files in data/records say, the format told from the content, and a bad record one line naming
the file, the record and the field."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from kneuron.editing.readers import RecordsError, check_encodes, detect, read_records
from kneuron.editing.records import Case, Probe, Prompt, build_cases
from kneuron.facts import Fact
from support.tiny import word_tokenizer

DATA = Path(__file__).parent / "data" / "records"


def load(name: str) -> list:
    return json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))


def one(path) -> list[Case]:
    return list(read_records(path).cases)


# ----------------------------------------------------------------------------- what is read

def test_counterfact_fields_are_the_files():
    f = read_records(DATA / "counterfact.json")
    raw = load("counterfact")
    assert f.format == "counterfact" and f.skipped == 0 and len(f.cases) == 3
    assert [c.case_id for c in f.cases] == [0, 1, 2]
    assert [c.fact_id for c in f.cases] == ["counterfact-17", "counterfact-4", "counterfact-9"]
    assert [c.relation for c in f.cases] == ["P17", "P36", "P17"]
    c = f.cases[0]
    assert c.langs == ["en"]
    r, d = c.records["en"], raw[0]
    rw = d["requested_rewrite"]
    assert r.fact.subject == rw["subject"] and r.old == rw["target_true"]["str"] and r.new == rw["target_new"]["str"]
    assert r.prompt == rw["prompt"].format(rw["subject"]) == "Masovian Voivodeship, which is located in"
    assert r.fact.templates == ("[X], which is located in [Y]",) and r.template == 0 and r.new_index is None
    assert r.fact.first_query("causal").prompt == r.prompt and r.edit_fact == r.fact
    assert [p.text for p in r.paraphrases] == d["paraphrase_prompts"]
    assert all(p.template == -1 for p in r.paraphrases)
    # CounterFact's neighbours share the *true* object: each one's answer is target_true
    assert [(nb.prompt, nb.target, nb.same_object) for nb in r.neighbours] == \
        [(p, "Poland", True) for p in d["neighborhood_prompts"]]
    assert r.generation == tuple(d["generation_prompts"])
    assert r.probes == (Probe("attribute", "Brittany is located in", "France"),)
    # a {prompt, target} neighbour keeps its own answer
    nb = f.cases[1].records["en"].neighbours
    assert [(n.prompt, n.target, n.same_object) for n in nb] == [("The capital of Scotland is", "Edinburgh", False)]
    assert r.fact.source.endswith("counterfact.json: record 0 (case_id 17)")


def test_zsre_fields_are_the_files():
    f = read_records(DATA / "zsre.json")
    raw = load("zsre")
    assert f.format == "zsre" and f.skipped == 1                         # record 1's alt is empty
    assert [c.fact_id for c in f.cases] == ["zsre-0", "zsre-2"] and [c.case_id for c in f.cases] == [0, 1]
    r = f.cases[0].records["en"]
    assert r.prompt == raw[0]["src"] and r.new == raw[0]["alt"] and r.old == raw[0]["answers"][0]
    assert r.fact.templates == ("What is the native language of [X]? [Y]",) and r.fact.subject == "Christiane Cohendy"
    assert [p.text for p in r.paraphrases] == [raw[0]["rephrase"]]
    assert [(n.prompt, n.target, n.same_object) for n in r.neighbours] == [(raw[0]["loc"], raw[0]["loc_ans"], False)]
    assert r.generation == () and r.probes == () and f.cases[0].relation == "zsre"
    r2 = f.cases[1].records["en"]
    assert r2.fact.subject == "rio tinto"                 # the prompt's own spelling of "Rio Tinto"
    assert r2.old == "Spain" and r2.fact.first_query("causal").prompt == raw[2]["src"]
    assert r2.probes == (Probe("portability.New Question", raw[2]["portability"]["New Question"], "Spanish"),)


def test_knowedit_fields_are_the_files():
    f = read_records(DATA / "knowedit.json")
    raw = load("knowedit")
    assert f.format == "knowedit" and [c.fact_id for c in f.cases] == ["knowedit-0", "knowedit-1"]
    r = f.cases[0].records["en"]
    assert r.prompt == raw[0]["prompt"] and r.new == "Archbishop of León, Mexico" and r.old == "mayor of Vienna"
    assert r.paraphrases == ()
    assert [(n.prompt, n.target, n.same_object) for n in r.neighbours] == [
        ("The gender of Frederic Piesch is", "male", False),
        (raw[0]["locality"]["Forgetfulness"][0]["prompt"], "mayor of Vienna", True)]
    assert r.probes == (Probe("portability.Subject_Aliasing", raw[0]["portability"]["Subject_Aliasing"][0]["prompt"],
                              "Archbishop of León, Mexico"),)
    r = f.cases[1].records["en"]
    assert r.old == "Aspidoceratidae" and r.paraphrases == (Prompt("What family are Epaspidoceras?", -1),)
    # a prompt given as a list, an answer as a list of alias lists: the first
    assert [(n.prompt, n.target) for n in r.neighbours] == [("The taxon rank of Epaspidoceras is", "genus"),
                                                            ("Epaspidoceras taxon rank", "genus")]
    assert r.probes[0].kind == "portability.Reasoning" and r.probes[0].target == "Owlet moths"


def test_the_format_is_told_from_the_content_or_named(tmp_path):
    for name in ("counterfact", "zsre", "knowedit"):
        assert detect(load(name)) == name
        p = tmp_path / "records.json"                          # the file's name says nothing
        p.write_text(json.dumps(load(name)))
        assert read_records(p).format == name
    with pytest.raises(RecordsError, match=r"record 0 \(case_id 17\): src missing"):
        read_records(DATA / "counterfact.json", "zsre")
    (tmp_path / "odd.json").write_text(json.dumps([{"question": "x"}]))
    with pytest.raises(RecordsError, match=r"odd.json: cannot tell the format .*question.*--records-format"):
        read_records(tmp_path / "odd.json")
    with pytest.raises(RecordsError, match="unknown records format 'cf'"):
        read_records(DATA / "counterfact.json", "cf")


def test_take_gives_the_first_n_as_the_model_kind_needs_them():
    f = read_records(DATA / "counterfact.json")
    two = f.take(2, n_generation=2)
    assert [c.fact_id for c in two] == ["counterfact-17", "counterfact-4"]
    assert two[0].records["en"].generation == tuple(load("counterfact")[0]["generation_prompts"][:2])
    assert f.take(1, n_generation=0)[0].records["en"].generation == ()
    assert len(f.cases[0].records["en"].generation) == 3                  # the file's record is untouched
    m = f.take(1, kind="masked")[0].records["en"]
    assert m.prompt == "Masovian Voivodeship, which is located in [Y]" == m.fact.first_query("masked").prompt
    assert all(p.text.endswith(" [Y]") for p in m.paraphrases) and all(n.prompt.endswith(" [Y]") for n in m.neighbours)
    assert m.generation == ()


def test_cases_read_back_from_json_with_their_probes_and_drawn_records_have_none():
    for name in ("counterfact", "zsre", "knowedit"):
        for c in read_records(DATA / f"{name}.json").cases:
            assert Case.from_json(json.loads(json.dumps(c.to_json()))).to_json() == c.to_json()
    f = Fact("g1", "P17", "en", "Maharashtra", "India", ("[X] is located in [Y].",), wrong_objects=("Ireland",))
    g = Fact("g2", "P17", "en", "Kerala", "India", ("[X] is located in [Y].",), wrong_objects=("Peru",))
    drawn = build_cases([f, g], kind="causal")
    # a record drawn from a fact set is written as before (the run's cases hash does not change)
    assert set(drawn[0].records["en"].to_json()) == {"fact", "new", "new_index", "template", "prompt", "paraphrases",
                                                     "neighbours", "generation", "symmetry"}


# ----------------------------------------------------------------------------- one line per problem

def _del(path):
    def f(d):
        for k in path[:-1]:
            d = d[k]
        del d[path[-1]]
    return f


def _set(path, value):
    def f(d):
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return f


BAD = [
    ("counterfact", 1, _del(["requested_rewrite", "target_new", "str"]),
     "record 1 (case_id 4): requested_rewrite.target_new.str missing"),
    ("counterfact", 0, _del(["requested_rewrite", "subject"]),
     "record 0 (case_id 17): requested_rewrite.subject missing"),
    ("counterfact", 2, _set(["requested_rewrite", "prompt"], "Maharashtra is located in"),
     "record 2 (case_id 9): requested_rewrite.prompt needs one {} for the subject"),
    ("counterfact", 0, _set(["neighborhood_prompts", 1], 3),
     "record 0 (case_id 17): neighborhood_prompts[1] is not a string (got int)"),
    ("counterfact", 1, _set(["neighborhood_prompts", 0], {"prompt": "The capital of Scotland is"}),
     "record 1 (case_id 4): neighborhood_prompts[0].target missing"),
    ("counterfact", 0, _set(["paraphrase_prompts"], {"a": 1}),
     "record 0 (case_id 17): paraphrase_prompts is not a list of prompts (got dict)"),
    ("counterfact", 2, _set(["requested_rewrite", "target_new", "str"], "India"),
     "record 2 (case_id 9): the new object 'India' is the true object"),
    ("counterfact", 1, _set(["case_id"], 17), "record 1 (case_id 17): case_id is also record 0's"),
    ("counterfact", 1, _set(["case_id"], "4"), "record 1 (case_id 4): case_id is not an integer (got str)"),
    ("zsre", 2, _set(["answers"], []), "record 2: answers[0] missing"),
    ("zsre", 0, _del(["src"]), "record 0: src missing"),
    ("zsre", 0, _set(["subject"], "Marie Curie"), "record 0: subject 'Marie Curie' is not in src"),
    ("zsre", 2, _del(["loc_ans"]), "record 2: loc_ans missing"),
    ("zsre", 2, _set(["lang"], "zh"), "record 2: lang is 'zh', the file's first record's 'en'"),
    ("knowedit", 1, _del(["locality", "Relation_Specificity", 0, "ground_truth"]),
     "record 1: locality.Relation_Specificity[0].ground_truth missing"),
    ("knowedit", 0, _set(["target_new"], ["Archbishop"]), "record 0: target_new is not a string (got list)"),
    ("knowedit", 0, _del(["ground_truth"]), "record 0: ground_truth missing"),
    ("knowedit", 1, _set(["portability", "Reasoning", 0, "prompt"], 7),
     "record 1: portability.Reasoning[0].prompt is not a string (got int)"),
    ("knowedit", 1, _set(["locality"], ["x"]), "record 1: locality is not an object (got list)"),
]


@pytest.mark.parametrize("name, index, change, said", BAD, ids=[b[3] for b in BAD])
def test_a_bad_record_is_one_line_naming_the_file_the_record_and_the_field(tmp_path, name, index, change, said):
    data = copy.deepcopy(load(name))
    change(data[index])
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(RecordsError) as e:
        read_records(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: {said}") and "\n" not in msg, msg


@pytest.mark.parametrize("text, said", [("[", "not a JSON file"), ('{"a": 1}', "not a list of records"),
                                        ("[]", "holds no records"), ("[3]", "record 0: not an object (got int)")])
def test_a_bad_file_is_one_line(tmp_path, text, said):
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(RecordsError, match="^" + re.escape(f"{path}: {said}")):
        read_records(path, "counterfact")
    with pytest.raises(RecordsError, match="cannot read the records file"):
        read_records(tmp_path / "none.json")


def test_the_hash_is_the_files_bytes(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(load("zsre")))
    b.write_text(json.dumps(load("zsre"), indent=1))
    ra, rb = read_records(a), read_records(b)
    assert [c.to_json() for c in ra.cases] == [c.to_json() for c in rb.cases] and ra.sha256 != rb.sha256
    assert ra.meta() == {"records_format": "zsre", "records_sha256": ra.sha256}


def test_a_prompt_the_tokenizer_cannot_encode_names_its_record():
    tok = word_tokenizer("causal")
    cases = read_records(DATA / "counterfact.json").take()
    with pytest.raises(RecordsError, match=r"counterfact.json: record 0 \(case_id 17\): the rewrite prompt .*'France'"):
        check_encodes(cases, tok, "causal")
