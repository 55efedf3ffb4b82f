"""The known-facts rule where it is used, on a model judged by the rank rule: reproduce keeps every fact (the
paper localises with the gold answer) and writes known.json; the editing bench / `kneuron edit` and the
explorer draw only from the facts the model knows; a model with no rank card is untouched."""
import json

import pytest

from kneuron.facts import Fact, save_facts
from kneuron.models import registry
from kneuron.organisms.known import known_table
from support.rigged import rigged

T36, T37 = "the capital of [X] is [Y] .", "the language spoken in [X] is [Y] ."
FACTS = [Fact(i, rel, lg, s, o, (t,)) for i, rel, s, o, t in
         (("a", "P36", "france", "paris", T36), ("b", "P36", "italy", "rome", T36),
          ("c", "P37", "spain", "spanish", T37), ("d", "P37", "germany", "german", T37))
         for lg in ("en", "zh")]                      # "zh": the same English words (what the tiny tokenizer spells)
RANKS = {"paris": 1, "rome": 4, "spanish": 25, "german": 2}    # known: a, b, d in both languages; c in neither


@pytest.fixture
def rank_model(tmp_path, monkeypatch):
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(registry.CARDS, "tiny-gpt2", registry.ModelCard(
        "tiny-gpt2", lambda: ("nowhere", {}), "causal", ("en", "zh"), known="rank"))
    return rigged("gpt2", RANKS)


@pytest.fixture
def fact_path(tmp_path):
    p = tmp_path / "facts.jsonl"
    save_facts(FACTS, p)
    return str(p)


class Stop(Exception):
    pass


def _reproduction(h, facts, out, monkeypatch):
    from kneuron.paper.reproduce import ReproduceConfig, Reproduction

    def stop(self, method):
        raise Stop
    monkeypatch.setattr(Reproduction, "locate", stop)           # the steps after the first are not this test's
    return Reproduction(h, ReproduceConfig(model=h.name, facts=facts, langs=("en", "zh"), steps=2, n_boot=10), out,
                        show_progress=False, log=lambda s: None)


def test_reproduce_keeps_every_fact_and_writes_which_the_model_knows(rank_model, fact_path, tmp_path, monkeypatch):
    rep = _reproduction(rank_model, fact_path, tmp_path / "out", monkeypatch)
    assert sorted(f.key for f in rep.facts) == sorted(f.key for f in FACTS)          # c kept, though not known
    assert any("every fact is used, known or not" in n for n in rep.notes)
    with pytest.raises(Stop):
        rep.run()                                               # the known-facts step runs before Module 1
    j = json.loads((tmp_path / "out" / "known.json").read_text(encoding="utf-8"))
    assert (j["rule"], j["k"]) == ("rank", 10)
    assert {(d["id"], d["lang"]): (d["rank"], d["known"]) for d in j["facts"]} == {
        f.key: (RANKS[f.object], f.id != "c") for f in FACTS}
    assert j["summary"]["known_in_all_languages"] == 3
    assert [r.to_json() for r in known_table(rank_model, rep.facts)] == j["facts"]


def test_reproduce_on_a_model_without_the_rank_rule_writes_no_known_file(fact_path, tmp_path, monkeypatch):
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))
    h = rigged("gpt2", RANKS)                                   # no card: rule "all", as smollm2's
    rep = _reproduction(h, fact_path, tmp_path / "out", monkeypatch)
    with pytest.raises(Stop):
        rep.run()
    assert not (tmp_path / "out" / "known.json").exists() and not (tmp_path / "cache").exists()
    assert sorted(f.key for f in rep.facts) == sorted(f.key for f in FACTS)


def test_the_editing_bench_and_the_explorer_use_only_known_facts(rank_model, fact_path, monkeypatch):
    from kneuron.cli.edit import _facts_and_pool
    from kneuron.explore import api
    every, pool = _facts_and_pool(rank_model, fact_path)
    assert every == FACTS and [f.key for f in pool] == [f.key for f in FACTS if f.id != "c"]
    monkeypatch.setattr(api, "load_facts", lambda name: FACTS if name == "en-zh" else None)
    assert api._edit_facts(rank_model) == (FACTS, pool)
    h = rigged("gpt2", RANKS)
    h.name = "other"                                           # no card: every fact, as before
    assert _facts_and_pool(h, fact_path)[1] == FACTS
