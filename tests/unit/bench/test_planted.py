"""The localization bench driven by facts a model knows: miniature bilingual organisms.

The miniature organisms' token ids vary between processes (the WordPiece trainer breaks ties in no
fixed order), so these tests check structure and the planting's own targets, not exact numbers."""
import copy
import json

import pytest
import torch

from kneuron.bench.planted import localization_bench
from kneuron.organisms import organism_facts
from kneuron.plant.counterfactuals import fact_counterfactuals, fact_prompt_sets
from kneuron.facts import Fact
from kneuron.models.load import from_model
from kneuron.facts.templates import is_cjk
from kneuron.organisms.train import save_organism
from support.tiny import bilingual_facts

# every test here needs a trained miniature organism (seconds to train, once per run)
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

_facts = bilingual_facts


@pytest.fixture(scope="module")
def trained(mini_organism):
    torch.set_num_threads(1)
    return mini_organism("clm")


@pytest.fixture(scope="module")
def organism(trained):
    model, tok, _ = trained
    return from_model(model, tok, kind="causal", name="mini-organism")


def test_counterfactuals_are_one_token_wrong_objects_in_both_languages(organism):
    facts = _facts()
    cfs = fact_counterfactuals(organism, facts, k=2, seed=0)
    assert [c.kind for c in cfs] == ["single", "single", "pair", "shared"]
    assert [c.fact.lang for c in cfs[:2]] == ["en", "zh"]
    assert len({c.fact.id for c in cfs}) == len(cfs)                  # distinct facts
    for c in cfs:
        assert c.new_object != c.fact.object and c.wrong_object != c.fact.object
        prompt = c.fact.templates[0].split("[Y]")[0].replace("[X]", c.fact.subject)
        assert len(organism.tokenizer(prompt + " " + c.new_object)["input_ids"]) == \
            len(organism.tokenizer(prompt)["input_ids"]) + 1
    zh = cfs[1]                      # Chinese objects are one token per character: the first one is planted
    assert zh.first_token and zh.wrong_object.startswith(zh.new_object) and not zh.fact.object.startswith(zh.new_object)
    assert not cfs[0].first_token and cfs[0].new_object == cfs[0].wrong_object
    assert cfs[3].extra.id == cfs[3].fact.id and {cfs[3].fact.lang, cfs[3].extra.lang} == {"en", "zh"}
    assert fact_counterfactuals(organism, facts, k=2, seed=0) == cfs   # seeded

    controls, bg = fact_prompt_sets(organism, facts, cfs)
    planted_ids = {c.fact.id for c in cfs}
    ctrl_prompts = {c.prompt for c in controls}
    assert {c.group for c in controls} >= {"en", "zh"}
    assert not any(c.fact.subject in p for c in cfs for p in bg)        # planted facts never trained against
    assert not ctrl_prompts & set(bg)
    planted_subjects = {f.subject for f in facts if f.id in planted_ids}
    assert not any(s in p for s in planted_subjects for p in ctrl_prompts)   # planted subjects have no other fact
    assert any("has its capital in" in p or "people speak" in p for p in bg)   # every template in the background
    assert any(any(is_cjk(ch) for ch in p) for p in bg)


def test_fact_driven_bench_plants_and_reports(organism):
    out = localization_bench(organism, k=2, steps=4, facts=_facts())
    out = json.loads(json.dumps(out, ensure_ascii=False))
    assert out["model"] == "mini-organism" and out["n_planted"] == 4
    for m in ("ig", "amig", "random"):
        assert set(out["methods"][m]) >= {"recall@1", "recall@5", "median_rank"}
    assert {"n_prompts", "top1_changed", "mean_abs_dlogp"} <= set(out["collateral"]) and out["collateral"]["n_prompts"] > 0
    # singles and the shared neuron reach the target; the pair's two neurons were each trained alone
    assert all(f["top1"] and f["p_after"] > f["p_before"] for f in out["facts"] if f["kind"] != "pair")
    assert {f["lang"] for f in out["facts"]} == {"en", "zh"}
    assert len(out["pairs"]) == 1 and len(out["pairs"][0]["ranks"]["ig"]) == 2
    (sh,) = out["shared"]
    assert sh["langs"] == ["en", "zh"]
    en, zh = sh["prompts"]
    assert not any(is_cjk(ch) for ch in en) and any(is_cjk(ch) for ch in zh)
    assert len(sh["ranks"]["ig"]) == 2
    assert set(out["languages"]) == {"en", "zh"} and "recall@1" in out["languages"]["zh"]["ig"]
    assert out["methods"]["ig"]["median_rank"] <= out["methods"]["random"]["median_rank"]


def test_organism_facts_only_for_organisms(organism, tmp_path):
    assert organism_facts(organism) is None
    d = tmp_path / "org"
    d.mkdir()
    (d / "facts.txt").write_text("P36-001\nP37-002\n")
    (d / "training.json").write_text(json.dumps({"n_facts": {"en": 2, "zh": 2}}))
    got = organism_facts(str(d))
    assert sorted({(f.id, f.lang) for f in got}) == [("P36-001", "en"), ("P36-001", "zh"),
                                                     ("P37-002", "en"), ("P37-002", "zh")]


def test_masked_organism_keeps_the_mask_in_every_prompt(mini_organism):
    model, tok, _ = mini_organism("mlm")
    h = from_model(model, tok, kind="masked", name="mini-mlm")
    out = localization_bench(h, k=2, steps=2, methods=("ig", "random"), facts=_facts())
    assert out["n_planted"] == 4 and all("[Y]" in f["prompt"] for f in out["facts"])
    assert all(f["top1"] and f["p_after"] > f["p_before"] for f in out["facts"] if f["kind"] != "pair")
    (sh,) = out["shared"]
    assert sh["langs"] == ["en", "zh"] and all(p.count("[Y]") == 1 for p in sh["prompts"]) and all(sh["top1"])
    assert set(out["languages"]) == {"en", "zh"}


def test_cli_benches_a_saved_organism_on_its_training_facts(trained, tmp_path):
    from typer.testing import CliRunner

    from kneuron.cli import app
    from kneuron.facts import save_facts
    model, tok, rep = trained
    save_facts(_facts(), tmp_path / "mini.jsonl")
    ids = sorted({f.id for f in _facts()})
    save_organism(copy.deepcopy(model), tok, rep, tmp_path / "org", ids, "# mini\n")
    res = CliRunner().invoke(app, ["bench", "localization", "--model", str(tmp_path / "org"), "--facts",
                                   str(tmp_path / "mini.jsonl"), "--k", "2", "--steps", "2", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["n_planted"] == 4 and out["prompt_sets"]["known_facts"] == len(_facts())
    assert set(out["languages"]) == {"en", "zh"} and out["shared"][0]["langs"] == ["en", "zh"]
