"""The "counterfact" protocol's records: same-object neighbours only, attribute prompts about the new object, at
least five generation prompts, paraphrases behind prefixes the model wrote with a seed that is not the edit's,
essence texts, all seeded; and the "kneuron" protocol's records unchanged, bit for bit."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import pytest
import torch

from kneuron.editing import EditError
from kneuron.editing import protocol as P
from kneuron.editing.objective import prefixes
from kneuron.editing.counterfact import N_CF_GENERATION
from kneuron.editing.records import Case, build_cases, case_for
from kneuron.facts import Fact, load_facts
from support.tiny import tiny_handle

# sha256 of the cases (JSON lines, sorted keys) of the en-zh set that the code before the protocol option drew
OLD = {("causal", 3): "56d8b04818b5e406081b607f15d9c8b028b6ac96f91eae2504f460a7cb226707",
       ("masked", 1): "5c90a25642852d926e42e57a60ca734f9a3ce7a9630db8b13e1d491b5b376703"}


def sha(cases) -> str:
    text = "\n".join(json.dumps(c.to_json(), ensure_ascii=False, sort_keys=True) for c in cases)
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def en_zh():
    return load_facts("en-zh")


@pytest.fixture(scope="module")
def cf(en_zh):
    return build_cases(en_zh, 60, kind="causal", seed=3, protocol="counterfact")


@pytest.mark.parametrize("kind, seed", list(OLD))
def test_kneuron_records_are_the_old_codes_bit_for_bit(en_zh, kind, seed):
    assert sha(build_cases(en_zh, 60, kind=kind, seed=seed)) == OLD[(kind, seed)]
    assert sha(build_cases(en_zh, 60, kind=kind, seed=seed, protocol="kneuron")) == OLD[(kind, seed)]


def test_counterfact_neighbours_share_the_true_object_and_relation(cf, en_zh):
    by_key = {(f.id, f.lang): f for f in en_zh}
    n = 0
    for c in cf:
        for lang, r in c.records.items():
            assert len(r.neighbours) <= 10
            for nb in r.neighbours:
                g = by_key[(nb.fact_id, lang)]
                assert g.relation == r.fact.relation and g.object == r.old == nb.target and nb.same_object
                assert g.subject != r.fact.subject and g.id != r.fact.id
                n += 1
    assert n > 60 and any(len(r.neighbours) == 10 for c in cf for r in c.records.values())
    kn = build_cases(en_zh, 60, kind="causal", seed=3)                 # the same records draw others there
    assert any(not nb.same_object for c in kn for r in c.records.values() for nb in r.neighbours)


def test_counterfact_generation_and_attribute_prompts(cf, en_zh):
    for c in cf:
        for lang, r in c.records.items():
            assert len(set(r.generation)) == len(r.generation) >= N_CF_GENERATION
            assert all(r.fact.subject in g for g in r.generation)
            about_new = {q.prompt for g in en_zh if g.lang == lang and g.relation == r.fact.relation
                         and g.object == r.new and g.subject != r.fact.subject
                         for q in g.queries("causal", skip_invalid=True)}
            assert len(r.probes) <= 10
            for p in r.probes:
                assert p.kind == "attribute" and p.target == r.new and p.prompt in about_new
    assert sum(len(r.probes) for c in cf for r in c.records.values()) > 30
    zh = cf[0].records["zh"]
    assert zh.fact.subject in zh.generation[:2] and f"{zh.fact.subject}是" in zh.generation


def test_counterfact_records_are_seeded(en_zh, cf):
    assert sha(build_cases(en_zh, 60, kind="causal", seed=3, protocol="counterfact")) == sha(cf)
    assert sha(build_cases(en_zh, 60, kind="causal", seed=4, protocol="counterfact")) != sha(cf)
    assert [Case.from_json(c.to_json()) for c in cf[:10]] == cf[:10]
    with pytest.raises(EditError, match="protocol must be one of"):
        build_cases(en_zh, 2, protocol="nope")
    assert case_for(en_zh, "P36-001", "Rome", protocol="counterfact").records["en"].probes


def _toy_cases(seed=0):
    """Three capitals in words the tiny models' tokenizer knows, two templates each (one paraphrase)."""
    t = ("the capital of [X] is [Y] .", "[X] capital city is [Y] .")
    pairs = [("france", "paris"), ("italy", "rome"), ("spain", "madrid")]
    facts = [Fact(f"c{i}", "P36", "en", s, o, t, wrong_objects=tuple(x for _, x in pairs if x != o))
             for i, (s, o) in enumerate(pairs)]
    return build_cases(facts, 3, kind="causal", seed=seed, protocol="counterfact")


def test_paraphrases_stand_behind_prefixes_of_a_seed_not_the_edits(one_thread):
    h = tiny_handle("gpt2", dtype=torch.float32)
    bare = _toy_cases()
    got = P.with_model(h, bare, seed=0)
    mine, edits = prefixes(h, P.prefix_seed(0)), set(prefixes(h, 0))        # the edit methods' seed: 0
    n = 0
    for b, c in zip(bare, got):
        for lang, r in c.records.items():
            for p, q in zip(b.records[lang].paraphrases, r.paraphrases):
                prefix, _, rest = q.text.rpartition(". ")
                assert rest == p.text and q.template == p.template and prefix in mine and prefix not in edits
                n += 1
            assert len(r.essence) == P.ESSENCE_TEXTS and all(t.startswith(r.fact.subject) for t in r.essence)
            assert replace(r, paraphrases=b.records[lang].paraphrases, essence=()) == b.records[lang]
    assert n >= 3
    assert sha(P.with_model(h, bare, seed=0)) == sha(got)                # bit for bit from the seed
    assert sha(P.with_model(h, bare, seed=1)) != sha(got)
    masked = tiny_handle("bert", dtype=torch.float32)
    assert P.with_model(masked, bare, seed=0) == bare                     # no prefixes, no essence: bare


def test_neighbour_shortfall_counts_records():
    cases = _toy_cases()
    got = P.neighbour_shortfall(cases, 10)
    assert got == {"records": len(cases), "n_neighbours": 10, "fewer": len(cases),
                   "none": sum(not c.records["en"].neighbours for c in cases)}
    assert P.neighbour_shortfall(cases, 0)["fewer"] == 0
