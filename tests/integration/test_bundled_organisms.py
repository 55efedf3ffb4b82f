"""The shipped organisms load offline by name and really hold their training facts in both languages."""
import json
import random

import pytest

from kneuron import attribute, load_facts, load_model
from kneuron.organisms import BUNDLED_DIR
from kneuron.organisms.train import accuracy


@pytest.mark.slow
@pytest.mark.parametrize("name,kind", [("organism-clm", "causal"), ("organism-mlm", "masked")])
def test_bundled_organism_holds_its_facts(name, kind):
    h = load_model(name)
    assert h.kind == kind
    weights = BUNDLED_DIR / name / "model.safetensors"
    assert weights.stat().st_size <= 20_000_000
    ids = set((BUNDLED_DIR / name / "facts.txt").read_text().split())
    facts = [f for f in load_facts("en-zh") if f.id in ids]
    assert {f.lang for f in facts} == {"en", "zh"}
    sample = random.Random(0).sample(facts, 300)
    acc, _ = accuracy(h.model, h.tokenizer, sample, "clm" if kind == "causal" else "mlm")
    assert min(acc.values()) >= 0.85, acc                      # the card reports the full figure
    card = json.loads((BUNDLED_DIR / name / "training.json").read_text())
    assert min(card["accuracy"].values()) >= 0.9


def test_organism_attribution_runs_in_both_languages():
    h = load_model("organism-clm")
    f_en, f_zh = [f for f in load_facts("en-zh") if f.id == sorted(
        set((BUNDLED_DIR / "organism-clm" / "facts.txt").read_text().split()))[0]]
    for f in (f_en, f_zh):
        prompt = f.templates[0].replace("[X]", f.subject).split("[Y]")[0]
        a = attribute(h, prompt, f.object, method="amig", steps=4)
        assert a.scores.shape == (h.n_layers, h.n_neurons) and a.scores.max() > 0


@pytest.mark.slow
def test_cli_plants_counterfactual_versions_of_an_organisms_own_facts():
    from typer.testing import CliRunner

    from kneuron.cli import app
    res = CliRunner().invoke(app, ["plant", "--model", "organism-clm", "--k", "2", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    ids = set((BUNDLED_DIR / "organism-clm" / "facts.txt").read_text().split())
    en_zh = {(f.lang, f.templates[0].replace("[X]", f.subject).split("[Y]")[0].rstrip()): f.id
             for f in load_facts("en-zh") if f.id in ids}
    prompts = [p for fact in out["facts"] for p in fact["prompts"]]
    assert len(out["facts"]) == 2 and all(p["is_top1"] for p in prompts)
    assert all(p["prompt"].rstrip() in {q for _, q in en_zh} for p in prompts)    # the organism's own facts
    assert out["collateral"]["top1_changed"] <= 0.1


def test_cli_likn_on_an_organism(tmp_path):
    from typer.testing import CliRunner

    from kneuron.cli import app
    res = CliRunner().invoke(app, ["likn", "--model", "organism-clm", "--facts", "en-zh", "--limit", "3", "--steps", "3",
                                   "--skip-invalid-templates", "--out", str(tmp_path / "run"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["n_facts"] == 3 and out["langs"] == ["en", "zh"] and not out["missing"]
    import pyarrow.parquet as pq
    facts = pq.read_table(tmp_path / "run" / "facts.parquet").to_pylist()
    assert sorted(r["lang"] for r in facts) == ["en", "en", "en", "zh", "zh", "zh"]
    likn = pq.read_table(tmp_path / "run" / "likn.parquet").to_pylist()
    assert len(likn) == round(out["mean_likn_per_fact"] * 3)
