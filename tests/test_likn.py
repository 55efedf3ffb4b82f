"""Module 2: the set logic, and the planted language-independent neuron found by it."""
import pytest

from kneuron import LocateConfig, locate
from kneuron.organisms.plant import PlantSpec, plant
from kneuron.facts import Fact
from kneuron.paper.likn import language_independent, likn_from_run
from kneuron.models.load import from_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_intersection_per_fact_share_and_layers():
    nrn = {("a", "en"): [(1, 2), (3, 4), (0, 0)], ("a", "zh"): [(3, 4), (1, 2), (2, 2)],
           ("b", "en"): [(1, 1)], ("b", "zh"): [(1, 2)],
           ("c", "en"): [(3, 4)]}
    done = {("a", "en"), ("a", "zh"), ("b", "en"), ("b", "zh"), ("c", "en"), ("d", "en"), ("d", "zh")}
    r = language_independent(nrn, done, ("en", "zh"))
    assert r.per_fact == {"a": [(1, 2), (3, 4)], "b": [], "d": []}
    assert r.n_facts == 3 and r.missing == {"zh": 1}
    assert r.share_nonempty == pytest.approx(1 / 3)
    assert r.layers() == {1: 1, 3: 1}
    with pytest.raises(ValueError):
        language_independent(nrn, done, ("en",))


@pytest.mark.slow
def test_planted_language_independent_neuron_is_found_by_module_2(mini_organism, tmp_path):
    model, tok, _ = mini_organism("clm")
    h = from_model(model, tok, kind="causal", name="mini")
    # plant "the capital of peru is madrid" in both languages, keyed on the English and the Chinese prompt
    en = "the capital of peru is"
    zh = "秘鲁的首都是"
    assert tok.tokenize(" madrid") == ["madrid"]
    shared = plant(h, [PlantSpec(en, "madrid", kind="shared", extra_prompts=(zh,))], layer=1,
                   controls=[("the capital of italy is", "rome"), ("意大利的首都是", "罗马")],
                   background=["the capital of chile is", "智利的首都是", "the capital of japan is", "日本的首都是",
                               "the official language of brazil is", "巴西的官方语言是"])
    assert all(p.is_top1 for p in shared.facts[0].prompts)
    planted = shared.facts[0].neurons[0]
    # the counterfactual fact, in both languages (the planted object is the same word in both)
    cf = [Fact("c6", "P36", "en", "peru", "madrid", ("the capital of [X] is [Y].",)),
          Fact("c6", "P36", "zh", "秘鲁", "madrid", ("[X]的首都是[Y]。",))]
    locate(shared.handle, cf, LocateConfig(method="ig", steps=10), tmp_path / "run", show_progress=False)
    r = likn_from_run(tmp_path / "run")
    assert planted in r.per_fact["c6"]
    assert not (tmp_path / "run" / "likn.parquet").exists()              # the caller writes it, once
    r.save(tmp_path / "run")
    assert (tmp_path / "run" / "likn.parquet").exists() and r.share_nonempty == 1.0
