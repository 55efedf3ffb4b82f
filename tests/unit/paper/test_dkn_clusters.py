"""kneuron.paper.persistence and the clusters rule of kneuron.paper.dkn: the single-linkage merge tree and its
persistent cut on hand-made distance matrices (blobs recovered exactly, one blob one cluster, ties decided
the same way every time), the neurons' weight vectors, the functional check on a planted degenerate pair (a
cluster kept only when it alone keeps the fact, a DKN only when suppressing the kept removes it), the rule
end to end (a redundant copy is one cluster; the same pair made structurally distinct is a DKN), and a run's
two rules kept apart."""
import json
import math

import numpy as np
import pytest
import torch

from kneuron import LocateConfig, load_facts, locate
from kneuron.errors import ConfigError
from kneuron.facts import fact_file_hash
from kneuron.models import from_model
from kneuron.models.sites import value_vectors
from kneuron.models.targets import encode
from kneuron.paper.dkn import (DKNConfig, DKNRun, check_clusters, dkn_from_run, files, find_dkn, summarize,
                               weight_vectors)
from kneuron.paper.persistence import Cluster, cosine_distances, cut, merge_tree
from kneuron.plant import PlantSpec, plant
from kneuron.runs.store import RunStoreError
from support.tiny import tiny_handle


def blobs(sizes, intra, inter):
    """Points in blobs of ``sizes``: ``intra`` apart inside a blob, ``inter`` between blobs."""
    lab = np.repeat(np.arange(len(sizes)), sizes)
    d = np.where(lab[:, None] == lab[None, :], intra, inter).astype(float)
    np.fill_diagonal(d, 0.0)
    return d


def members(c):
    return [x.members for x in c.clusters]


# ----------------------------------------------------------------------------- persistence (no model)

def test_two_and_three_separated_blobs_are_recovered_exactly():
    two = cut(blobs([3, 3], 0.1, 0.9))
    assert members(two) == [(0, 1, 2), (3, 4, 5)] and two.gap == (0.1, 0.9)
    assert [(c.birth, c.death) for c in two.clusters] == [(0.1, 0.9), (0.1, 0.9)]
    assert two.clusters[0].persistence == pytest.approx(0.8)
    d = blobs([2, 3, 1], 0.05, 0.8)
    d[:2, 2:5] = d[2:5, :2] = 0.6                       # blobs 0 and 1 closer to each other than to blob 2
    three = cut(d)
    assert members(three) == [(0, 1), (2, 3, 4), (5,)] and three.gap == (0.05, 0.6)
    # a blob given in scattered order is found all the same
    perm = np.array([4, 0, 5, 2, 1, 3])
    assert members(cut(blobs([3, 3], 0.1, 0.9)[np.ix_(perm, perm)])) == [(0, 2, 5), (1, 3, 4)]


def test_a_single_blob_is_one_cluster_and_unrelated_points_are_one_each():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.05, 0.2, (6, 6))
    d = np.triu(x, 1) + np.triu(x, 1).T
    assert members(cut(d)) == [tuple(range(6))]
    line = np.abs(np.subtract.outer(np.arange(5.0), np.arange(5.0))) / 10       # a chain 0.1 apart
    assert members(cut(line)) == [tuple(range(5))]
    far = blobs([1, 1, 1, 1], 0.0, 1.2)                 # beyond the horizon: never related
    assert members(cut(far)) == [(0,), (1,), (2,), (3,)] and cut(far).radii == []
    assert members(cut(far, horizon=3.0)) == [(0, 1, 2, 3)]   # a wider horizon: 1.2 to 3 outlasts 0 to 1.2
    assert members(cut(np.zeros((1, 1)))) == [(0,)] and members(cut(np.zeros((0, 0)))) == []


def test_the_merge_tree_lists_every_cluster_with_its_lifetime():
    tree = merge_tree(blobs([2, 2], 0.2, 0.7))
    assert tree == [Cluster((0,), 0.0, 0.2), Cluster((1,), 0.0, 0.2), Cluster((2,), 0.0, 0.2),
                    Cluster((3,), 0.0, 0.2), Cluster((0, 1), 0.2, 0.7), Cluster((2, 3), 0.2, 0.7),
                    Cluster((0, 1, 2, 3), 0.7, math.inf)]
    assert [c.persistence for c in tree[4:6]] == pytest.approx([0.5, 0.5])


def test_ties_are_decided_the_same_way_every_time():
    eq = blobs([4], 0.3, 0.0)                            # every distance equal: merged in index order
    assert [c.members for c in merge_tree(eq)[4:]] == [(0, 1), (0, 1, 2), (0, 1, 2, 3)]
    assert [(c.birth, c.death) for c in merge_tree(eq)[4:]] == [(0.3, 0.3), (0.3, 0.3), (0.3, math.inf)]
    assert merge_tree(eq) == merge_tree(eq.copy())
    # two gaps equally wide (0 to 0.5, 0.5 to the horizon): the larger radius, i.e. fewer clusters
    assert members(cut(np.array([[0.0, 0.5], [0.5, 0.0]]))) == [(0, 1)]
    assert members(cut(np.array([[0.0, 0.6], [0.6, 0.0]]))) == [(0,), (1,)]
    # gaps equal but for float rounding count as equal: 0.3 - 0.1 is a hair wider than 0.7 - 0.5
    d = np.zeros((5, 5))
    for k, r in enumerate((0.1, 0.3, 0.4, 0.5), start=1):     # point k joins the points before it at r
        d[k, :k] = d[:k, k] = r
    assert members(cut(d, horizon=0.7)) == [(0, 1, 2, 3, 4)]


def test_a_bad_matrix_or_horizon_is_one_line():
    for bad, needle in ((np.zeros((2, 3)), "square"), (np.array([[0, np.nan], [np.nan, 0]]), "finite"),
                        (np.array([[0, 1.0], [0.5, 0]]), "symmetric"), (np.array([[0, -1.0], [-1, 0]]), "negative"),
                        (np.eye(2), "diagonal")):
        with pytest.raises(ConfigError) as e:
            cut(bad)
        assert "\n" not in str(e.value) and needle in str(e.value)
    with pytest.raises(ConfigError, match="horizon"):
        cut(np.zeros((2, 2)), horizon=0)


def test_cosine_distances():
    d = cosine_distances([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [0.0, 0.0]])
    assert d[0, 1] == pytest.approx(0.0) and d[0, 2] == pytest.approx(1.0) and d[0, 3] == pytest.approx(2.0)
    assert d[4, 0] == d[0, 4] == 1.0 and np.allclose(np.diag(d), 0.0) and np.allclose(d, d.T)


# ----------------------------------------------------------------------------- the neurons' weights

@pytest.mark.usefixtures("one_thread")
def test_weight_vectors_are_value_vectors_or_key_rows():
    h = tiny_handle("llama")
    ns = [(0, 3), (2, 7)]
    v = weight_vectors(h, ns, "value")
    assert torch.equal(v[1], value_vectors(h.sites[2])[7].detach().double())
    k = weight_vectors(h, ns, "key")
    mlp = h.model.model.layers[2].mlp
    assert torch.equal(k[1], torch.cat([mlp.gate_proj.weight[7], mlp.up_proj.weight[7]]).detach().double())
    g = tiny_handle("gpt2")                                          # Conv1D: the key is a column of c_fc
    assert torch.equal(weight_vectors(g, [(1, 5)], "key")[0], g.model.transformer.h[1].mlp.c_fc.weight[:, 5].double())
    with pytest.raises(ConfigError) as e:
        weight_vectors(tiny_handle("phi3"), ns, "key")             # its table line names no input projection
    assert "\n" not in str(e.value) and "value distance" in str(e.value)


# ----------------------------------------------------------------------------- the check, on a planted pair

@pytest.fixture(scope="module")
def planted():
    """A degenerate pair planted in the tiny Llama's last layer (each neuron alone keeps "french"), and the
    knowledge neurons as attribution ranks them (the pair among ten others)."""
    torch.set_num_threads(1)
    from kneuron import attribute
    h = tiny_handle("llama")
    prompt = "the language spoken in spain is"
    bg = [f"{t} {s}" for t in ("the capital of", "a river in", "the city of", "the language spoken in")
          for s in ("france", "italy", "germany", "tanzania")]
    pl = plant(h, [PlantSpec(prompt, "french", "pair")], layer=2, background=bg, seed=1, p_target=0.0)
    kn = [(l, j) for l, j, _ in attribute(pl.handle, prompt, "french", method="ig", steps=10).top(12)]
    assert set(pl.facts[0].neurons) <= set(kn)
    return pl.handle, prompt, kn, tuple(sorted(pl.facts[0].neurons))


@pytest.mark.usefixtures("one_thread")
def test_a_cluster_is_kept_only_when_it_alone_keeps_the_fact(planted):
    h, prompt, kn, (a, b) = planted
    rest = tuple(n for n in kn if n not in (a, b))
    c = check_clusters(h, prompt, "french", kn, [(a,), (b,), rest], DKNConfig())
    assert c.kept == [True, True, False]                    # each planted neuron alone; the others not
    assert c.alone[0] <= 0.2 and c.alone[1] <= 0.2 < c.alone[2]
    assert c.all_drop > 0.25 and c.degenerate(0.25) and c.kept_clusters() == [(a,), (b,)]
    assert (c.n_evals, c.n_forward) == (3 + 1, 2)          # p0 and the three alone in one pass, then the kept
    one = check_clusters(h, prompt, "french", kn, [(a, b), rest], DKNConfig())
    assert one.kept == [True, False] and one.all_drop is None and not one.degenerate(0.25)   # one is no DKN
    assert one.n_forward == 1
    # both kept, but suppressing them costs less than a (high) T_high: no DKN
    strict = check_clusters(h, prompt, "french", kn, [(a,), (b,), rest], DKNConfig(t_high=0.9))
    assert strict.kept == [True, True, False] and strict.all_drop < 0.9 and not strict.degenerate(0.9)


def _distinct_keys(h, prompt, neuron):
    """Rotate ``neuron``'s gate row away from every other by a direction orthogonal to its input at the
    answer position: its function there (the last layer: nothing after it) is unchanged, its weights not."""
    mlp = h.model.model.layers[neuron[0]].mlp
    seen = {}
    hook = mlp.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0][0, -1].detach().clone()))
    with torch.no_grad():
        h.model(input_ids=torch.tensor([encode(h.tokenizer, h.kind, prompt, "french").input_ids]))
    hook.remove()
    x = seen["x"]
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    z -= (z @ x) / (x @ x) * x
    with torch.no_grad():
        w = mlp.gate_proj.weight
        w[neuron[1]] += 5 * z / z.norm() * torch.cat([w[neuron[1]], mlp.up_proj.weight[neuron[1]]]).norm()


@pytest.mark.usefixtures("one_thread")
def test_the_rule_end_to_end_a_copy_is_one_cluster_a_distinct_pair_a_dkn(planted):
    import copy
    h, prompt, kn, pair = planted
    for distance in ("value", "key"):                        # the planted pair: two copies of one neuron
        r = find_dkn(h, prompt, "french", kn, DKNConfig(method="clusters", distance=distance))
        assert r.method == "clusters" and r.groups == [] and r.clusters.kept_clusters() == [pair]
        assert pair in r.clusters.clusters and r.n_forward == 1 and r.seconds > 0
    assert find_dkn(h, prompt, "french", kn).groups == [pair]          # the pairs rule: a DKN
    g = from_model(copy.deepcopy(h.model), h.tokenizer, kind=h.kind, name="tiny-llama+distinct")
    _distinct_keys(g, prompt, pair[1])
    r = find_dkn(g, prompt, "french", kn, DKNConfig(method="clusters", distance="key"))
    assert sorted(r.clusters.kept_clusters()) == [(pair[0],), (pair[1],)]      # two clusters, one neuron each
    assert r.groups == [pair] and r.drops[0] > 0.25 and r.part_drops[0] <= 0.2 and r.n_forward == 2
    assert find_dkn(g, prompt, "french", kn).groups == [pair]          # its function is unchanged


# ----------------------------------------------------------------------------- settings and runs

def test_settings_validate_and_record_the_rule():
    for bad, needle in ((DKNConfig(method="triples"), "method"), (DKNConfig(distance="l2"), "distance"),
                        (DKNConfig(horizon=0.0), "horizon"), (DKNConfig(horizon=3.0), "horizon")):
        with pytest.raises(ConfigError) as e:
            bad.validate()
        assert "\n" not in str(e.value) and needle in str(e.value)
    assert DKNConfig().record() == {"top_n": 20, "t_low": 0.2, "t_high": 0.25, "relative": True, "max_size": 2,
                                    "max_evals": 5000}          # the pairs rule's settings as before
    from kneuron.paper.reproduce import ReproduceConfig           # so reproduce directories resume as before
    assert ReproduceConfig(model="m", facts="f").to_json()["dkn"] == {**DKNConfig().record(), "batch_size": 64}
    assert DKNConfig(method="clusters", horizon=0.8).record() == {
        "top_n": 20, "t_low": 0.2, "t_high": 0.25, "relative": True, "method": "clusters", "distance": "value",
        "horizon": 0.8}
    assert files() == ("dkn.jsonl", "dkn.json") and files("clusters") == ("dkn-clusters.jsonl", "dkn-clusters.json")


def test_a_run_keeps_the_two_rules_apart(fact_file, tmp_path, one_thread):
    h = tiny_handle("gpt2")
    run = tmp_path / "run"
    locate(h, load_facts(fact_file), LocateConfig(steps=2), run, facts_path=str(fact_file),
           facts_hash=fact_file_hash(fact_file), show_progress=False)
    pairs = dkn_from_run(h, run, DKNConfig(top_n=4))
    lines = (run / "dkn.jsonl").read_text()
    clus = dkn_from_run(h, run, DKNConfig(top_n=4, method="clusters"))
    assert (run / "dkn.jsonl").read_text() == lines                      # the pairs rows untouched
    assert DKNRun.load(run) == pairs and DKNRun.load(run, "clusters") == clus
    assert pairs.method == "pairs" and clus.method == "clusters" and "method" not in pairs.config
    assert {r["method"] for r in pairs.rows} == {"pairs"} and {r["method"] for r in clus.rows} == {"clusters"}
    # the pairs rule's rows and summary as before the clusters rule, but for the rule's name
    assert {k for r in pairs.rows for k in r} == {
        "fact_id", "lang", "relation", "n_kn", "groups", "drops", "part_drops", "n_candidates", "n_quiet", "p0",
        "n_evals", "n_forward", "truncated", "method"}
    assert not {"seconds_per_fact", "clusters_per_fact"} & set(pairs.summary["langs"]["en"])
    head = json.loads((run / "dkn-clusters.jsonl").read_text().splitlines()[0])
    assert head == {"config": DKNConfig(top_n=4, method="clusters").record()}
    for r in clus.rows:
        assert len(r["clusters"]) == len(r["alone"]) == len(r["kept"]) == len(r["lifetimes"]) >= 1
        assert sorted(n for c in r["clusters"] for n in map(tuple, c)) == sorted(
            {n for c in r["clusters"] for n in map(tuple, c)})             # a partition of the candidates
        assert r["n_forward"] in (1, 2) and r["seconds"] > 0
        assert all(b <= d for b, d in r["lifetimes"] if d is not None)
    lang = clus.summary["langs"]["en"]
    assert lang["clusters_per_fact"] >= 1 and "cluster_sizes" in lang and lang["seconds_per_fact"] > 0
    assert clus.summary == summarize(clus.rows, clus.config)
    with pytest.raises(RunStoreError) as e:                               # resuming with other settings
        dkn_from_run(h, run, DKNConfig(top_n=4, method="clusters", horizon=0.5))
    assert "\n" not in str(e.value) and "horizon" in str(e.value)
