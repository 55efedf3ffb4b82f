"""Model organisms: the corpus, the fact choice, and a miniature organism that really learns."""
import json

import pytest
import torch

from kneuron import attribute, load_model
from kneuron.facts import Fact
from kneuron.organisms import training_facts
from kneuron.organisms.corpus import statements
from kneuron.organisms.train import accuracy, model_card, save_organism
from support.tiny import LANGS, PAIRS, bilingual_facts

_facts = bilingual_facts


def test_statements_fill_templates_and_code_switch():
    sts = statements(_facts(), switch_share=1.0, seed=0)
    plain = [s for s in sts if not s.switched]
    assert len(plain) == 2 * 2 * (len(PAIRS) + len(LANGS))        # two templates per fact and language
    assert any(s.text == "the capital of france is paris." for s in plain)
    assert any(s.text == "法国的首都是巴黎。" for s in plain)
    switched = [s for s in sts if s.switched]
    assert len(switched) == len(_facts())
    # an English template naming the subject in Chinese, with the English answer, and vice versa
    assert any(s.lang == "en" and "法国" in s.prefix and s.answer == "paris" for s in switched)
    assert any(s.lang == "zh" and "france" in s.prefix and s.answer == "巴黎" for s in switched)


def test_training_facts_drop_ambiguous_and_unaligned_and_balance_relations():
    facts = _facts() + [Fact("c0b", "P36", "en", "france", "lyon", ("the capital of [X] is [Y].",)),
                        Fact("c0b", "P36", "zh", "法国", "里昂", ("[X]的首都是[Y]。",)),
                        Fact("x", "P36", "en", "peru2", "lima", ("the capital of [X] is [Y].",))]
    chosen = training_facts(facts, n_ids=None)
    ids = {f.id for f in chosen}
    assert "c0" not in ids and "c0b" not in ids       # france has two capitals: ambiguous
    assert "x" not in ids                              # no Chinese fact
    four = training_facts(_facts(), n_ids=4, seed=1)
    assert sorted({f.relation for f in four}) == ["P36", "P37"] and len({f.id for f in four}) == 4
    assert training_facts(_facts(), n_ids=4, seed=1) == four


@pytest.fixture(scope="module")
def mini(mini_organism):
    return mini_organism("clm")


@pytest.mark.slow
def test_miniature_causal_organism_learns_both_languages(mini):
    model, tok, rep = mini
    assert min(rep.accuracy.values()) >= 0.9, rep.accuracy
    assert rep.history[0]["loss"] > rep.history[-1]["loss"]
    # each Chinese character is its own token
    assert tok.tokenize("墨西哥") == ["墨", "西", "哥"]


@pytest.mark.slow
def test_miniature_organism_saves_loads_and_attributes(mini, tmp_path):
    model, tok, rep = mini
    save_organism(model, tok, rep, tmp_path / "org", ["c0", "c1"], model_card("organism-test", rep, "toy", "cmd"))
    h = load_model(str(tmp_path / "org"))
    assert h.kind == "causal" and h.n_neurons == 128 and h.dtype == torch.float32
    assert (tmp_path / "org" / "model.safetensors").stat().st_size < 2_000_000
    acc, _ = accuracy(h.model, h.tokenizer, _facts(), "clm")
    assert acc == pytest.approx(rep.accuracy, abs=0.1)          # fp16 storage keeps what it learned
    a = attribute(h, "法国的首都是", "巴黎", method="amig", steps=4)
    assert a.scores.shape == (2, 128) and a.prob > 0.2
    card = (tmp_path / "org" / "README.md").read_text()
    assert "| **all** |" in card and "P36" in card
    assert json.loads((tmp_path / "org" / "training.json").read_text())["accuracy"] == rep.accuracy


@pytest.mark.slow
def test_miniature_masked_organism_learns(mini_organism):
    model, tok, rep = mini_organism("mlm")
    assert min(rep.accuracy.values()) >= 0.8, rep.accuracy
