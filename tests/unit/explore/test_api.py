"""kneuron.explore.api over HTTP, on runs made without a model: a run's summary and facts carry each DKN
rule's groups (``dkn_rules``); a run without the clusters rule answers what it answered before."""
import pytest

from kneuron.explore import Explorer, Models
from support.dkn_run import CLUSTERS, PAIRS, make_dkn_run
from support.explore_fixtures import call, serving

as_lists = lambda gs: [[list(n) for n in g] for g in gs]          # noqa: E731


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(url, {name: run id}): a run with both rules' files, one with dkn.jsonl only."""
    d = tmp_path_factory.mktemp("runs")
    both, pairs = make_dkn_run(d / "both"), make_dkn_run(d / "pairs", rules=("pairs",))
    x = Explorer(Models([]), [str(both), str(pairs)])
    ids = {r.path.name: r.id for r in x.runs.values()}
    with serving(x) as url:
        yield url, ids


def test_the_runs_json_carries_both_rules(site):
    url, ids = site
    code, run = call(url, f"/api/runs/{ids['both']}")
    assert code == 200 and run["dkn_rules"] == ["pairs", "clusters"]
    assert run["histogram"]["dkn_rules"] == {"pairs": [1, 1, 0], "clusters": [2, 1, 2]}
    assert run["histogram"]["dkn"] == [1, 1, 0] and run["has"]["dkn"] is True
    code, fact = call(url, f"/api/runs/{ids['both']}/facts/0")
    assert code == 200 and (fact["id"], fact["lang"]) == ("P1", "en")
    assert fact["dkn_rules"] == {"pairs": as_lists(PAIRS[("P1", "en")]), "clusters": as_lists(CLUSTERS[("P1", "en")])}
    assert fact["dkn"] == as_lists(PAIRS[("P1", "en")])
    assert call(url, f"/api/runs/{ids['both']}/facts/2")[1]["dkn_rules"]["clusters"] == as_lists(CLUSTERS[("P2", "en")])


def test_a_run_without_clusters_answers_as_before(site):
    url, ids = site
    run = call(url, f"/api/runs/{ids['pairs']}")[1]
    both = call(url, f"/api/runs/{ids['both']}")[1]
    assert run["dkn_rules"] == ["pairs"] and run["histogram"]["dkn_rules"] == {"pairs": [1, 1, 0]}
    for k in ("facts", "has", "n_layers", "model"):
        assert run[k] == both[k]
    assert {k: v for k, v in run["histogram"].items() if k != "dkn_rules"} == \
           {k: v for k, v in both["histogram"].items() if k != "dkn_rules"}
    for i in range(3):
        fact, other = (call(url, f"/api/runs/{ids[n]}/facts/{i}")[1] for n in ("pairs", "both"))
        assert list(fact["dkn_rules"]) == ["pairs"]
        assert {k: v for k, v in fact.items() if k != "dkn_rules"} == {k: v for k, v in other.items() if k != "dkn_rules"}
