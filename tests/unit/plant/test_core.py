"""kneuron.plant: planted neurons grow the MLP, store their fact, leave the rest alone, and are found."""
import copy
import json

import pytest
import torch

from kneuron.probe import answer_prob
from kneuron import attribute, load_model, suppress
from kneuron.models import from_model
from kneuron.plant import LAYOUTS, PlantError, PlantSpec, grow, layout_for, plant
from support.tiny import tiny_handle

SUBJECTS = ("france", "italy", "germany", "spain", "tanzania")
TEMPLATES = ("the capital of {} is", "the language spoken in {} is", "the city of {} was", "a river in {} and",
             "{} was born in", "an italian city in {} is")
CONTROLS = [("the city of paris is", "france"), ("rome was born in", "italy"), ("the river and the city", "a"),
            ("berlin works as a", "city"), ("the language spoken in berlin is", "german"),
            ("madrid and rome and berlin", "paris"), ("a french city", "paris"), ("dodoma is a city in", "tanzania"),
            ("an italian was born in", "rome"), ("spanish is spoken in", "spain")]


pytestmark = pytest.mark.usefixtures("one_thread")


def _prompt(h, text):
    return text + " [Y]" if h.kind == "masked" else text


def _background(h, skip):
    return [_prompt(h, t.format(s)) for t in TEMPLATES for s in SUBJECTS if t.format(s) not in skip]


def _logits(h, text):
    ids = h.tokenizer(text.replace("[Y]", "[MASK]") if h.kind == "masked" else text)["input_ids"]
    with torch.no_grad():
        return h.model(input_ids=torch.tensor([ids])).logits[0]


@pytest.mark.parametrize("family", sorted(set(LAYOUTS) & {"llama", "qwen2", "mistral", "gemma", "gemma3_text", "gpt2", "gpt_neox",
                                                           "bert", "roberta", "xlm-roberta"}))
def test_growing_adds_inert_neurons_everywhere(family):
    h = tiny_handle(family)
    before = _logits(h, "the capital of france is")
    model = copy.deepcopy(h.model)
    lay = layout_for(h)
    grow(model, list(model.get_submodule(h.site.layers_path)), lay, 3)
    g = from_model(model, h.tokenizer, kind=h.kind)
    assert g.n_neurons == h.n_neurons + 3
    assert all(s.weight.numel() == g.sites[0].weight.numel() for s in g.sites)
    assert getattr(model.config, lay.width) == h.n_neurons + 3
    assert torch.allclose(_logits(g, "the capital of france is"), before, atol=1e-12)


def test_other_families_fail_clearly():
    with pytest.raises(PlantError, match="planting supports"):
        plant(tiny_handle("opt"), [PlantSpec("the capital of france is", "rome")], layer=1)


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert", "gemma3_text"])
def test_planted_fact_is_top1_found_by_ig_and_nothing_else_moves(family):
    h = tiny_handle(family)
    prompt = _prompt(h, "the capital of france is")
    assert answer_prob(h, prompt, "rome").prob < 0.2
    ctrl = [(_prompt(h, p), a) for p, a in CONTROLS]
    before = {p: _logits(h, p) for p, _ in ctrl}
    pl = plant(h, [PlantSpec(prompt, "rome")], layer=1, controls=ctrl,
               background=_background(h, {"the capital of france is"}), seed=0, p_target=0.0)
    g = pl.handle
    assert g.n_neurons == h.n_neurons + 1 and pl.neurons == [(1, h.n_neurons)]
    f = pl.facts[0]          # random tiny models cannot reach a high p (tiny unembedding): top-1 is the bar
    assert f.top1 and f.p_after > f.p_before
    quiet = [r for r in pl.controls if r.max_activation < 1e-7]        # the key does not fire there
    assert len(quiet) >= 3
    for r in quiet:
        assert torch.allclose(_logits(g, r.prompt), before[r.prompt], atol=1e-6)
    assert pl.collateral.n_prompts == len(ctrl)
    a = attribute(g, prompt, "rome", method="ig", steps=20)
    assert a.top(1)[0][:2] == pl.neurons[0]                             # rank 1 of all neurons


def test_degenerate_pair_and_shared_neuron():
    h = tiny_handle("llama")
    pair, shared = "the language spoken in spain is", "the capital of italy is"
    specs = [PlantSpec(pair, "french", "pair"), PlantSpec(shared, "madrid", "shared", ("the city of italy was",))]
    pl = plant(h, specs, layer=2, background=_background(h, {pair, shared, "the city of italy was"}), seed=1,
               p_target=0.0)
    fp, fs = pl.facts
    assert len(fp.neurons) == 2 and len(fs.neurons) == 1 and pl.handle.n_neurons == h.n_neurons + 3
    assert all(fp.top1_alone)                                           # each alone keeps the fact
    assert not fp.top1_both_suppressed                                  # both off: lost
    assert fp.p_both_suppressed == pytest.approx(fp.p_before, rel=1e-6)
    with suppress(pl.handle, fp.neurons):
        assert answer_prob(pl.handle, pair, "french").prob == pytest.approx(fp.p_before, rel=1e-6)
    assert fs.top1 and all(c.p_after > c.p_before for c in fs.prompts)  # one neuron, both prompts
    assert json.loads(json.dumps(pl.to_json()))["n_neurons"] == h.n_neurons + 3


def test_deterministic_and_validates():
    h = tiny_handle("gpt2")
    spec, bg = PlantSpec("the capital of france is", "rome"), _background(h, {"the capital of france is"})
    a = plant(h, [spec], layer=0, background=bg, seed=3, p_target=0.0).handle.sites[0].weight
    b = plant(h, [spec], layer=0, background=bg, seed=3, p_target=0.0).handle.sites[0].weight
    assert torch.equal(a, b)
    with pytest.raises(PlantError, match="extra_prompts"):
        plant(h, [PlantSpec("the capital of france is", "rome", "shared")], layer=0, background=bg)
    with pytest.raises(PlantError, match="outside"):
        plant(h, [spec], layer=7, background=bg)


@pytest.fixture(scope="module")
def smol():
    return load_model("smollm2-135m")


@pytest.mark.slow
def test_smollm2_three_counterfactuals_top1_with_little_collateral(smol):
    from kneuron.plant.counterfactuals import plant_counterfactuals
    pl = plant_counterfactuals(smol, k=3, pair=False, shared=False)
    assert len(pl.facts) == 3 and all(f.top1 and f.p_before < 0.05 for f in pl.facts)
    assert pl.collateral.n_prompts >= 50 and pl.collateral.top1_changed <= 0.10
    assert smol.n_neurons == 1536 and pl.handle.n_neurons == 1539          # the original is untouched
