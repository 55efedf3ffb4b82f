"""kneuron.paper.likn: LIKNResult.save / load round-trip, facts without shared neurons included."""
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kneuron import LocateConfig, locate
from kneuron.facts import Fact
from kneuron.models.load import from_model
from kneuron.plant import PlantSpec, plant
from kneuron.paper.likn import LIKNResult, language_independent, likn_from_run

NEURONS = {("a", "en"): [(0, 1), (1, 2)], ("a", "zh"): [(0, 1)], ("b", "en"): [(2, 3)], ("b", "zh"): [(1, 1)],
           ("c", "en"): [(0, 0)]}
DONE = {("a", "en"), ("a", "zh"), ("b", "en"), ("b", "zh"), ("c", "en")}


def test_a_likn_result_round_trips_beside_its_run(tmp_path):
    res = language_independent(NEURONS, DONE)
    assert res.per_fact == {"a": [(0, 1)], "b": []} and res.missing == {"zh": 1}
    pq.write_table(pa.table({"fact_id": [k[0] for k in sorted(DONE)], "lang": [k[1] for k in sorted(DONE)]}),
                   tmp_path / "facts.parquet")                    # the run it was made from
    res.save(tmp_path)
    again = LIKNResult.load(tmp_path)
    assert again == res and again.to_json() == res.to_json()


def test_away_from_its_run_only_facts_with_shared_neurons_are_known(tmp_path):
    res = language_independent(NEURONS, DONE)
    res.save(tmp_path)
    again = LIKNResult.load(tmp_path)
    assert again.per_fact == {"a": [(0, 1)]} and again.n_facts == 2 and again.langs == ("en", "zh")


@pytest.mark.usefixtures("one_thread")
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


@pytest.mark.usefixtures("one_thread")
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


def test_how_many_likn_each_fact_has_beside_and_away_from_its_run(tmp_path):
    nrn = {("a", "en"): [(0, 1), (1, 2), (2, 2)], ("a", "zh"): [(0, 1), (1, 2), (2, 2)], ("b", "en"): [(0, 0)],
           ("b", "zh"): [(0, 0)], ("c", "en"): [(1, 1)], ("c", "zh"): [(2, 1)], ("d", "en"): [], ("d", "zh"): []}
    r = language_independent(nrn, set(nrn))
    assert r.per_fact_counts() == {0: 2, 1: 1, 2: 0, 3: 1}                # every count up to the largest
    j = r.to_json()
    assert j["facts_by_count"] == {"0": 2, "1": 1, "2": 0, "3": 1} and j["count_per_fact"] == {"a": 3, "b": 1, "c": 0,
                                                                                               "d": 0}
    assert sum(k * v for k, v in r.per_fact_counts().items()) / r.n_facts == j["mean_likn_per_fact"]
    r.save(tmp_path)                                                     # away from its run: the facts with none
    assert LIKNResult.load(tmp_path).per_fact_counts() == r.per_fact_counts()   # are still counted
    empty = language_independent({}, set(), ("en", "zh"))
    assert empty.per_fact_counts() == {0: 0}
