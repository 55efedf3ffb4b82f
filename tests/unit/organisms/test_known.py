"""known_facts: which facts a model knows (an organism: those it was trained on; any other model: all)."""
import json

import pytest

from kneuron.errors import ConfigError
from kneuron.facts import Fact, load_facts
from kneuron.models.registry import ORGANISMS_DIR
from kneuron.organisms import organism_facts
from kneuron.organisms.known import facts_for, known_facts, trained_on


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
