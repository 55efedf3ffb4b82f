"""kneuron.paper.dkn: DKNRun (Module 3 over a run) — to_json is dkn.json, save / load round-trip, what
dkn_from_run returns is what a later load reads."""
import json
from itertools import combinations

import pytest
import torch

from kneuron import LocateConfig, load_facts, locate, suppress
from kneuron.facts import fact_file_hash
from kneuron.intervene import suppress_each
from kneuron.plant import PlantSpec, plant
from kneuron.paper.dkn import DKNConfig, DKNRun, _join, ablation_probs, dkn_from_run, drop, find_dkn, search, summarize
from kneuron.probe import answer_prob
from kneuron.runs.store import RunStoreError
from support.tiny import tiny_handle

CONF = {"top_n": 4, "t_low": 0.2, "t_high": 0.25, "relative": True, "max_size": 2, "max_evals": 5000}


def _row(fid, lang, groups, drops):
    return {"fact_id": fid, "lang": lang, "relation": "r", "n_kn": 3, "groups": groups, "drops": drops,
            "part_drops": [d / 10 for d in drops], "n_candidates": 3, "n_quiet": 2, "p0": 0.5, "n_evals": 4,
            "n_forward": 2, "truncated": False}


ROWS = [_row("a", "en", [[[0, 1], [1, 2]]], [0.9]), _row("b", "en", [], []),
        _row("a", "zh", [[[0, 1], [2, 3]], [[1, 1], [1, 2]]], [0.5, 0.75])]


def test_a_dkn_result_round_trips(tmp_path):
    res = DKNRun(ROWS, summarize(ROWS, CONF))
    assert res.config == CONF and res.to_json() is res.summary
    assert res.groups()[("a", "zh")] == [((0, 1), (2, 3)), ((1, 1), (1, 2))] and res.groups()[("b", "en")] == []
    res.save(tmp_path)
    again = DKNRun.load(tmp_path)
    assert again == res and again.to_json() == res.to_json()
    assert (tmp_path / "dkn.json").read_text() == json.dumps(res.summary, indent=2, sort_keys=True)
    lines = (tmp_path / "dkn.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"config": CONF} and [json.loads(x) for x in lines[1:]] == ROWS
    res.save(tmp_path)                       # rows the file holds already are not written again
    assert (tmp_path / "dkn.jsonl").read_text().splitlines() == lines


def test_saving_beside_rows_of_other_settings_or_loading_nothing_is_one_line(tmp_path):
    DKNRun(ROWS, summarize(ROWS, CONF)).save(tmp_path)
    other = {**CONF, "t_low": 0.1}
    with pytest.raises(RunStoreError) as e:
        DKNRun(ROWS, summarize(ROWS, other)).save(tmp_path)
    assert "\n" not in str(e.value) and "t_low" in str(e.value)
    with pytest.raises(RunStoreError) as e:
        DKNRun.load(tmp_path / "nothing")
    assert "\n" not in str(e.value) and "dkn.json" in str(e.value)


def test_what_dkn_from_run_returns_is_what_load_reads(fact_file, tmp_path, one_thread):
    h = tiny_handle("gpt2")
    run = tmp_path / "run"
    locate(h, load_facts(fact_file), LocateConfig(steps=2), run, facts_path=str(fact_file),
           facts_hash=fact_file_hash(fact_file), show_progress=False)
    res = dkn_from_run(h, run, DKNConfig(top_n=4))
    assert isinstance(res, DKNRun) and len(res.rows) == 5
    assert [(r["fact_id"], r["lang"]) for r in res.rows] == [f.key for f in load_facts(fact_file)]
    assert res.summary == summarize(res.rows, res.config) and res.config["top_n"] == 4
    assert DKNRun.load(run) == res
    assert json.loads((run / "dkn.json").read_text()) == res.to_json()


def _redundant(groups, n_other_cost=0.0):
    """p(gold) of a fact kept alive by any member of each group: lost only when some group is all off."""
    def probs(sets):
        out = []
        for s in sets:
            off = set(s)
            p = 1.0
            if any(set(g) <= off for g in groups):
                p = 0.1
            p -= n_other_cost * len(off - {i for g in groups for i in g})
            out.append(p)
        return out
    return probs


@pytest.mark.usefixtures("one_thread")
def test_algorithm_1_finds_exactly_the_degenerate_pairs():
    calls = []

    def probs(sets):
        calls.append(list(sets))
        return _redundant([(0, 3), (2, 5)], n_other_cost=0.5)(sets)
    groups, drops, quiet, n, trunc, parts = search(8, probs, 1.0, DKNConfig())
    assert groups == [(0, 3), (2, 5)] and drops == pytest.approx([0.9, 0.9])
    # neurons 1, 4, 6, 7 cost 0.5 alone (> T_low): not candidates for pairs
    assert quiet == [0, 2, 3, 5] and parts == [0.0, 0.0]
    assert n == 8 + 6 and not trunc                      # 8 singles, then only the C(4, 2) quiet pairs
    assert [len(c) for c in calls] == [8, 6]


@pytest.mark.usefixtures("one_thread")
def test_larger_groups_without_testing_every_subset():
    triple = (1, 4, 6)
    probs = _redundant([triple])
    g2, *_ = search(10, probs, 1.0, DKNConfig(max_size=2))
    assert g2 == []                                           # every pair of the triple is quiet
    g3, d3, quiet, n3, trunc, parts = search(10, probs, 1.0, DKNConfig(max_size=3))
    assert g3 == [triple] and not trunc
    # all 10 singles and 45 pairs are quiet, so C(10, 3) triples are tested: no level-4 sets since the
    # triple itself is not quiet; a group's parts are all quiet
    assert n3 == 10 + 45 + 120 and parts == [0.0]
    g4, *_ , n4, _, _ = search(10, probs, 1.0, DKNConfig(max_size=4))
    assert g4 == [triple]
    n_all = sum(len(list(combinations(range(10), k))) for k in range(1, 5))
    assert n4 < n_all                                         # supersets of the group are never tested


@pytest.mark.usefixtures("one_thread")
def test_join_needs_every_subset():
    assert _join([(0, 1), (0, 2), (1, 2), (0, 3)]) == [(0, 1, 2)]
    assert _join([(0,), (2,), (5,)]) == [(0, 2), (0, 5), (2, 5)]


@pytest.mark.usefixtures("one_thread")
def test_budget_truncates_and_says_so():
    groups, _, _, n, trunc, _ = search(10, _redundant([(8, 9)]), 1.0, DKNConfig(max_evals=20))
    assert trunc and n == 20 and groups == []               # the pair (8, 9) is last in the join order


@pytest.mark.usefixtures("one_thread")
def test_drop_and_validation():
    assert drop(0.5, 0.4, True) == pytest.approx(0.2) and drop(0.5, 0.4, False) == pytest.approx(0.1)
    assert drop(0.0, 0.0, True) == 0.0
    for bad in (DKNConfig(t_low=0.3, t_high=0.2), DKNConfig(max_size=1), DKNConfig(top_n=1),
                DKNConfig(t_high=2.0)):
        with pytest.raises(ValueError):
            bad.validate()
    DKNConfig(t_high=2.0, t_low=0.1, relative=False).validate()


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("family", ["llama", "bert"])
def test_batched_ablations_equal_one_at_a_time(family):
    h = tiny_handle(family)
    prompt = "the capital of france is" + (" [Y]" if h.kind == "masked" else "")
    sets = [[], [(0, 1)], [(1, 2), (0, 3)], [(1, 5), (1, 6), (0, 0)]]
    batched, n_fwd = ablation_probs(h, prompt, "rome city", sets, batch_size=3)
    assert n_fwd == 2
    for s, p in zip(sets, batched):
        with suppress(h, s):
            assert p == pytest.approx(answer_prob(h, prompt, "rome city").prob, rel=1e-5)
    with pytest.raises(ValueError, match="neuron sets"):
        with suppress_each(h, sets[:2]), torch.no_grad():
            h.model(input_ids=torch.tensor([[1, 2, 3]] * 3))


@pytest.mark.usefixtures("one_thread")
def test_planted_degenerate_pair_is_found_among_knowledge_neurons():
    h = tiny_handle("llama")
    prompt = "the language spoken in spain is"
    bg = [f"{t} {s}" for t in ("the capital of", "a river in", "the city of", "the language spoken in")
          for s in ("france", "italy", "germany", "tanzania")]
    pl = plant(h, [PlantSpec(prompt, "french", "pair")], layer=2, background=bg, seed=1, p_target=0.0)
    pair = pl.facts[0].neurons
    g = pl.handle
    # the knowledge neurons as attribution would rank them: the planted pair among other top neurons
    from kneuron import attribute
    kn = [(l, j) for l, j, _ in attribute(g, prompt, "french", method="ig", steps=10).top(12)]
    assert set(pair) <= set(kn)
    r = find_dkn(g, prompt, "french", kn)                 # the released code's defaults: 0.2 / 0.25 relative
    assert r.groups == [tuple(sorted(pair))]              # the planted pair, and nothing else
    assert r.part_drops[0] <= 0.2 < 0.25 < r.drops[0]
    assert r.n_forward <= 1 + 1 + 2                       # unablated, singles, pairs (batch 64)
    assert r.n_evals == len(kn) + len(r.quiet) * (len(r.quiet) - 1) // 2
