"""known_facts: which facts a model knows (an organism: those it was trained on; by the rank rule: those whose
gold answer's first token is in the model's top K; any other model: all), the rank rule's cache and summary."""
import json
import warnings

import pytest
import torch

from kneuron.errors import ConfigError
from kneuron.facts import Fact, load_facts
from kneuron.models import registry
from kneuron.models.registry import ORGANISMS_DIR
from kneuron.organisms import organism_facts
from kneuron.organisms.known import (K, Knowledge, facts_for, known_facts, known_report, known_table, paper_rule,
                                     rule_of, summary, trained_on)
from support.rigged import p_of, rigged


@pytest.fixture(scope="module")
def en_zh():
    return load_facts("en-zh")


def old_filter(folder, facts):
    """The organism filter as the five call sites wrote it before (ids in facts.txt, training languages)."""
    ids = set((folder / "facts.txt").read_text(encoding="utf-8").split())
    langs = set(json.loads((folder / "training.json").read_text(encoding="utf-8")).get("n_facts") or ())
    return [f for f in facts if f.id in ids and (not langs or f.lang in langs)]


@pytest.mark.parametrize("name", ["organism-clm", "organism-mlm"])
def test_an_organism_knows_the_facts_it_was_trained_on(name, en_zh):
    got = known_facts(name, en_zh)
    assert got == old_filter(ORGANISMS_DIR / name, en_zh)
    assert 0 < len(got) < len(en_zh) and {f.lang for f in got} == {"en", "zh"}
    ids, langs = trained_on(name)
    assert {f.id for f in got} == ids and langs == {"en", "zh"}
    assert organism_facts(name) == got == organism_facts(name, "en-zh")


def test_a_model_that_is_not_an_organism_knows_every_fact(en_zh):
    from support.tiny import tiny_handle
    h = tiny_handle("gpt2")
    assert trained_on(h) is None and trained_on("smollm2-135m") is None and trained_on("owner/some:model") is None
    some = en_zh[:7]
    got = known_facts(h, iter(some))
    assert got == some and got is not some
    assert known_facts("smollm2-135m", some) == some
    assert organism_facts(h) is None


def _organism_dir(tmp_path, ids, n_facts):
    (tmp_path / "facts.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    (tmp_path / "training.json").write_text(json.dumps({"n_facts": n_facts}), encoding="utf-8")
    return str(tmp_path)


FACTS = [Fact(i, "P36", lang, s, o, ("the capital of [X] is [Y] .",))
         for i, s, o in (("a", "x", "y"), ("b", "u", "v"), ("c", "p", "q")) for lang in ("en", "zh", "fr")]


def test_an_organism_directory_is_recognised_by_its_files(tmp_path):
    d = _organism_dir(tmp_path, ["a", "c"], {"en": 2, "zh": 2})
    assert [f.key for f in known_facts(d, FACTS)] == [("a", "en"), ("a", "zh"), ("c", "en"), ("c", "zh")]
    (tmp_path / "training.json").write_text("{}", encoding="utf-8")      # no languages named: all of them
    assert [f.key for f in known_facts(d, FACTS)] == [(i, l) for i in "ac" for l in ("en", "zh", "fr")]
    (tmp_path / "facts.txt").unlink()
    assert trained_on(d) is None and known_facts(d, FACTS) == FACTS


def test_facts_for_takes_languages_then_known_facts_then_the_first_ids(tmp_path):
    d = _organism_dir(tmp_path, ["b", "c"], {"en": 2, "zh": 2})
    got = facts_for(d, FACTS, langs=("zh", "fr"), limit=1)
    assert [f.key for f in got] == [("b", "zh")]
    assert [f.key for f in facts_for("smollm2-135m", FACTS, langs=("fr",), limit=2)] == [("a", "fr"), ("b", "fr")]
    assert facts_for("smollm2-135m", FACTS) == FACTS


def test_facts_for_is_what_likn_selected_before(en_zh):
    """cli/paper.py's likn: languages, the organism's ids, the first ``limit`` ids."""
    fs = [f for f in en_zh if f.lang in ("en", "zh")]
    ids = {f.id for f in organism_facts("organism-clm")}
    fs = [f for f in fs if f.id in ids]
    keep = set(list(dict.fromkeys(f.id for f in fs))[:6])
    old = [f for f in fs if f.id in keep]
    assert facts_for("organism-clm", "en-zh", ("en", "zh"), 6) == old
    assert facts_for("organism-clm", en_zh, ("en", "zh"), 6, name="en-zh") == old


def test_no_fact_left_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as e:
        facts_for("smollm2-135m", FACTS, langs=("de",), name="three.jsonl")
    assert str(e.value) == "three.jsonl: no facts in de"
    d = _organism_dir(tmp_path, ["zz"], {"en": 1})
    with pytest.raises(ConfigError) as e:
        facts_for(d, FACTS, langs=("en",))
    assert str(e.value) == f"the facts: no facts in en that {d} was trained on"


# ----------------------------------------------------------------------------- the rank rule

RANKED = [Fact("a", "P36", "en", "france", "paris", ("the capital of [X] is [Y] .",)),
          Fact("b", "P36", "en", "italy", "rome", ("the capital of [X] is [Y] .",)),
          Fact("c", "P36", "en", "spain", "madrid", ("the capital of [X] is [Y] .",)),
          Fact("d", "P37", "en", "germany", "german", ("the language spoken in [X] is [Y] .",)),
          Fact("e", "P37", "en", "italy", "zzz", ("the language spoken in [X] is [Y] .",))]   # unspellable
WANT = {"paris": 1, "rome": 10, "madrid": 11, "german": 3}


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "known"


def forwards(h):
    """A counter of h.model's forward passes (and of the rows they ran)."""
    seen = {"calls": 0, "rows": 0}

    def count(mod, args, kwargs):
        seen["calls"] += 1
        seen["rows"] += kwargs["input_ids"].shape[0]
    h.model.register_forward_pre_hook(count, with_kwargs=True)
    return seen


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_the_rank_rule_knows_a_fact_whose_gold_token_is_in_the_top_k(family, own_cache):
    h = rigged(family, WANT)
    V = h.model.get_output_embeddings().weight.shape[0]
    got = known_table(h, RANKED)
    assert [(r.id, r.rank, r.known) for r in got] == [("a", 1, True), ("b", 10, True), ("c", 11, False),
                                                      ("d", 3, True), ("e", None, False)]
    assert all(r.p == pytest.approx(p_of(WANT[f.object], V)) for f, r in zip(RANKED[:4], got))
    assert got[4].p is None and (got[0].lang, got[3].relation) == ("en", "P37")
    assert [f.id for f in known_facts(h, RANKED, rule="rank")] == ["a", "b", "d"]
    assert [r.known for r in known_table(h, RANKED, k=1)] == [True, False, False, False, False]
    assert [r.known for r in known_table(h, RANKED, k=11)] == [True, True, True, True, False]
    assert known_facts(h, RANKED) == RANKED                     # its own rule: no card, no organism -> "all"


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama"])
def test_the_rank_is_the_one_probe_predict_gives_even_in_a_padded_batch(family, own_cache):
    """Random weights (the position matters); prompts of different lengths share one right-padded batch."""
    from support.tiny import tiny_handle

    from kneuron.probe import predict
    h = tiny_handle(family)
    facts = [Fact("a", "P36", "en", "france", "paris", ("the capital of [X] is [Y] .",)),
             Fact("b", "P36", "en", "the city of italy and spain", "rome", ("the capital of [X] is [Y] .",)),
             Fact("c", "P37", "en", "germany", "german", ("[X] people speak [Y] .", "x [Y] .")),
             Fact("d", "P37", "en", "spain", "spanish", ("in [X] the language is [Y] and italian",))]
    if h.kind == "causal":
        facts = facts[:3]          # d's [Y] is not last: no causal query
    got = known_table(h, facts)
    for f, r in zip(facts, got):
        q = f.first_query(h.kind)
        top = [t.strip() for t, _ in predict(h, q.prompt, k=10 ** 6)]
        assert r.rank == top.index(f.object) + 1, (f.id, r.rank)
        assert r.known == (r.rank <= K)


def test_ranks_are_cached_per_weights_and_a_damaged_entry_is_computed_again(own_cache):
    h = rigged("gpt2", WANT)
    seen = forwards(h)
    first = known_table(h, RANKED[:2])
    assert seen == {"calls": 1, "rows": 2}
    both = known_table(h, RANKED)                         # a, b read back: only c and d asked (e: no query)
    assert seen == {"calls": 2, "rows": 4} and both[:2] == first
    again = known_table(h, list(reversed(RANKED)), k=3)   # every one cached, whatever the order and k
    assert seen["calls"] == 2 and [r.rank for r in again] == [None, 3, 11, 10, 1]
    [entry] = own_cache.iterdir()
    entry.write_text("{not json", encoding="utf-8")
    with pytest.warns(UserWarning, match="damaged or stale known-facts ranks"):
        assert known_table(h, RANKED) == both
    assert seen == {"calls": 3, "rows": 8}
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # the rewritten entry reads back without a warning
        assert known_table(h, RANKED) == both and seen["calls"] == 3
    stale = json.loads(entry.read_text(encoding="utf-8"))
    stale["ranks"][next(iter(stale["ranks"]))] = [0, 0.5]  # JSON, but no rank: not what its name says
    entry.write_text(json.dumps(stale), encoding="utf-8")
    with pytest.warns(UserWarning, match="not what its name says"):
        assert known_table(h, RANKED) == both
    assert seen == {"calls": 4, "rows": 12}
    with torch.no_grad():                                # new weights: a new entry, never the stale one
        h.model.get_output_embeddings().bias[h.tokenizer.get_vocab()["madrid"]] += 100.0
    assert [r.rank for r in known_table(h, RANKED)] == [2, 11, 1, 4, None] and seen["calls"] == 5
    assert len(list(own_cache.iterdir())) == 2


def test_the_rank_rule_needs_a_loaded_model(own_cache, monkeypatch):
    card = registry.ModelCard("tiny-gpt2", lambda: ("nowhere", {}), "causal", ("en",), known="rank")
    monkeypatch.setitem(registry.CARDS, "tiny-gpt2", card)
    assert rule_of("tiny-gpt2") == "rank" and paper_rule("tiny-gpt2") == "all"
    for call in (lambda: known_facts("tiny-gpt2", RANKED), lambda: known_facts("/some/dir", RANKED, rule="rank"),
                 lambda: facts_for("tiny-gpt2", RANKED)):
        with pytest.raises(ConfigError) as e:
            call()
        assert "pass a loaded model" in str(e.value) and "\n" not in str(e.value)
    h = rigged("gpt2", WANT)                              # named tiny-gpt2: the card's rule applies
    assert [f.id for f in known_facts(h, RANKED)] == ["a", "b", "d"]
    assert [f.key for f in facts_for(h, RANKED, limit=2)] == [("a", "en"), ("b", "en")]
    assert facts_for(h, RANKED, rule="all") == RANKED
    with pytest.raises(ConfigError) as e:
        facts_for(h, RANKED[2:3], name="one.jsonl")
    assert str(e.value) == "one.jsonl: no facts that tiny-gpt2 knows (gold answer in its top 10)"
    with pytest.raises(ConfigError, match="unknown knowledge rule 'best'"):
        known_facts(h, RANKED, rule="best")


def test_the_existing_models_keep_their_rules():
    assert rule_of("smollm2-135m") == "all" and paper_rule("smollm2-135m") == "all"
    assert rule_of("organism-clm") == "trained" == paper_rule("organism-mlm")
    assert rule_of("owner/some:model") == "all"


def test_summary_counts_per_relation_and_language():
    rs = [Knowledge("a", "en", "P36", 1, 0.5, True), Knowledge("a", "zh", "P36", 4, 0.1, True),
          Knowledge("b", "en", "P36", 12, 0.01, False), Knowledge("b", "zh", "P36", 2, 0.2, True),
          Knowledge("c", "en", "P1376", 3, 0.2, True), Knowledge("c", "zh", "P1376", None, None, False),
          Knowledge("d", "en", "P101", 1, 0.9, True)]
    s = summary(rs)
    assert list(s["relations"]) == ["P36", "P101", "P1376"]             # natural order
    assert s["relations"]["P36"] == {"en": {"facts": 2, "known": 1, "top1": 1, "median_rank": 6.5},
                                     "zh": {"facts": 2, "known": 2, "top1": 0, "median_rank": 3}}
    assert s["relations"]["P1376"]["zh"] == {"facts": 1, "known": 0, "top1": 0, "median_rank": None}
    assert s["languages"] == {"en": {"facts": 4, "known": 3, "top1": 2, "median_rank": 2},
                              "zh": {"facts": 3, "known": 2, "top1": 0, "median_rank": 3}}
    assert (s["ids"], s["known_in_all_languages"], s["k"]) == (4, 2, 10)   # a and d
    assert [Knowledge.from_json(r.to_json()) for r in rs] == rs


def test_known_report_is_the_records_and_their_summary(own_cache):
    h = rigged("bert", WANT)
    rep = known_report(h, RANKED, k=3)
    assert (rep["rule"], rep["k"], rep["model"]) == ("rank", 3, "tiny-bert")
    assert [Knowledge.from_json(d) for d in rep["facts"]] == known_table(h, RANKED, k=3)
    assert rep["summary"]["languages"]["en"] == {"facts": 5, "known": 2, "top1": 1, "median_rank": 6.5}
    json.dumps(rep)
