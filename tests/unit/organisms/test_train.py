"""kneuron.organisms.train: a miniature organism really learns both languages (causal and masked), saves,
loads and attributes."""
import json

import pytest
import torch

from kneuron import attribute, load_model
from kneuron.organisms.train import accuracy, model_card, save_organism
from support.tiny import bilingual_facts

_facts = bilingual_facts


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
