"""kneuron.explore.runs: a run's DKN groups per rule (pairs: dkn.jsonl, clusters: dkn-clusters.jsonl), read
with the library's reader; a run without the clusters rule shows what it showed before that rule existed."""
from kneuron.explore.runs import RunView

from support.dkn_run import CLUSTERS, PAIRS, make_dkn_run

as_lists = lambda gs: [[list(n) for n in g] for g in gs]          # noqa: E731  (the JSON form of groups)
OLD = ("dkn", "has", "facts", "n_layers", "model", "method")     # the summary's fields from before the rules


def _old(summary: dict) -> dict:
    """A summary's fields as they were before the clusters rule (the histogram without ``dkn_rules``)."""
    return {**{k: summary[k] for k in OLD if k in summary},
            "histogram": {k: v for k, v in summary["histogram"].items() if k != "dkn_rules"}}


def test_a_run_with_both_rules_gives_each_rules_groups(tmp_path):
    v = RunView("1", make_dkn_run(tmp_path / "run"))
    assert list(v.dkn) == ["pairs", "clusters"]
    assert v.dkn["pairs"] == {k: [list(g) for g in gs] for k, gs in PAIRS.items()}
    assert v.dkn["clusters"] == {k: [list(g) for g in gs] for k, gs in CLUSTERS.items()}
    s = v.summary()
    assert s["dkn_rules"] == ["pairs", "clusters"]
    # neurons in DKN groups per layer (3 layers), each rule's; ``dkn`` stays the pairs rule's
    assert s["histogram"]["dkn_rules"] == {"pairs": [1, 1, 0], "clusters": [2, 1, 2]}
    assert s["histogram"]["dkn"] == [1, 1, 0] and s["has"]["dkn"] is True
    f = v.fact(0)                                                   # P1 (en)
    assert (f["id"], f["lang"]) == ("P1", "en")
    assert f["dkn_rules"] == {"pairs": as_lists(PAIRS[("P1", "en")]), "clusters": as_lists(CLUSTERS[("P1", "en")])}
    assert f["dkn"] == as_lists(PAIRS[("P1", "en")])
    # a fact the clusters rule has no row of: no groups of that rule (but the rule is named)
    assert v.fact(1)["dkn_rules"] == {"pairs": [], "clusters": []}
    assert v.fact(2)["dkn_rules"] == {"pairs": [], "clusters": as_lists(CLUSTERS[("P2", "en")])}


def test_which_rules_groups_hold_a_neuron(tmp_path):
    v = RunView("1", make_dkn_run(tmp_path / "run"))

    def where(layer, index):
        return {(r["id"], r["lang"]): (r["dkn"], r["dkn_rules"]) for r in v.containing(layer, index)}
    both, pairs, clusters, none = {"pairs": True, "clusters": True}, {"pairs": True, "clusters": False}, \
        {"pairs": False, "clusters": True}, {"pairs": False, "clusters": False}
    assert where(0, 1) == {("P1", "en"): (True, both), ("P1", "zh"): (False, none)}
    assert where(1, 2) == {("P1", "en"): (True, pairs)}
    assert where(1, 5) == {("P1", "en"): (False, clusters)}
    assert where(2, 3) == {("P1", "en"): (False, clusters), ("P2", "en"): (False, clusters)}
    assert where(2, 7) == {("P1", "en"): (False, none), ("P1", "zh"): (False, none), ("P2", "en"): (False, none)}


def test_a_run_with_only_dkn_jsonl_has_no_clusters_and_shows_what_it_showed(tmp_path):
    both = RunView("1", make_dkn_run(tmp_path / "both"))
    old = RunView("2", make_dkn_run(tmp_path / "pairs", rules=("pairs",)))
    assert list(old.dkn) == ["pairs"]
    s = old.summary()
    assert s["dkn_rules"] == ["pairs"] and s["histogram"]["dkn_rules"] == {"pairs": [1, 1, 0]}
    assert all("clusters" not in old.fact(i)["dkn_rules"] for i in range(3))
    assert all("clusters" not in r["dkn_rules"] for r in old.containing(2, 3))
    # the fields from before the clusters rule: as they were, and the clusters rows leave them alone
    assert s["histogram"]["dkn"] == [1, 1, 0] and s["has"]["dkn"] is True
    assert old.fact(0)["dkn"] == [[[0, 1], [1, 2]]] and [r["dkn"] for r in old.containing(1, 2)] == [True]
    assert _old(s) == _old(both.summary())
    for i in range(3):
        assert {k: x for k, x in old.fact(i).items() if k != "dkn_rules"} == \
               {k: x for k, x in both.fact(i).items() if k != "dkn_rules"}


def test_a_run_with_only_the_clusters_rule_or_none(tmp_path):
    v = RunView("1", make_dkn_run(tmp_path / "clusters", rules=("clusters",)))
    s = v.summary()
    assert s["dkn_rules"] == ["clusters"] and s["has"]["dkn"] is False and s["histogram"]["dkn"] == [0, 0, 0]
    assert v.fact(0)["dkn"] == [] and v.fact(0)["dkn_rules"] == {"clusters": as_lists(CLUSTERS[("P1", "en")])}
    bare = RunView("2", make_dkn_run(tmp_path / "bare", rules=()))
    s = bare.summary()
    assert s["dkn_rules"] == [] and s["has"]["dkn"] is False
    assert s["histogram"]["dkn"] == [0, 0, 0] and s["histogram"]["dkn_rules"] == {}
    assert bare.fact(0)["dkn"] == [] and bare.fact(0)["dkn_rules"] == {}
