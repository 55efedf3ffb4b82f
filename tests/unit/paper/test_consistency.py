"""kneuron.paper.consistency: the consistency score on hand-made neuron sets, the static and Otsu splits,
KI shares per dimension, the report's round trip, the query-neuron test on a tiny model (against
suppress by hand), and over a locate run: scores from queries.parquet, the test resumable, an old run
refused in one line."""
import json

import pytest
import torch

from kneuron import LocateConfig, load_facts, locate
from kneuron.errors import ConfigError
from kneuron.intervene import suppress
from kneuron.paper.consistency import (ROWS_FILE, ConsistencyConfig, ConsistencyReport, FactConsistency, QueryTest,
                                       consistency_from_runs, consistency_of, consistency_score, is_consistent,
                                       otsu_threshold, query_neuron_test, query_test_run, run_consistency)
from kneuron.probe import answer_prob
from kneuron.runs.store import RunStoreError
from support.tiny import tiny_handle

A, B, C = [(0, 1), (0, 2), (1, 3)], [(0, 1), (0, 2)], [(0, 1), (2, 5)]


def test_jaccard_is_shared_by_every_query_over_the_union():
    assert consistency_score([A, B, C]) == pytest.approx(1 / 4)            # {(0,1)} of 4 neurons
    assert consistency_score([A, B]) == pytest.approx(2 / 3)
    assert consistency_score([A, A, A]) == 1.0
    assert consistency_score([[(0, 1)], [(1, 1)]]) == 0.0
    assert consistency_score([A, []]) == 0.0                               # a query with no neuron shares nothing
    assert consistency_score([A]) is None and consistency_score([[], []]) is None and consistency_score([]) is None
    assert consistency_score([C, B, A]) == consistency_score([A, B, C])    # the order of the queries does not matter


def test_pairwise_is_the_mean_jaccard_of_query_pairs():
    got = consistency_score([A, B, C], "pairwise")
    assert got == pytest.approx((2 / 3 + 1 / 4 + 1 / 3) / 3)
    assert got > consistency_score([A, B, C])                           # less strict than shared-by-all
    assert consistency_score([A, [], []], "pairwise") == 0.0              # the ([], []) pair is left out
    with pytest.raises(ConfigError, match="metric must be one of jaccard, pairwise"):
        consistency_score([A, B], "overlap")


def test_otsu_finds_the_gap_of_a_bimodal_list():
    low, high = [0.02, 0.05, 0.08, 0.1], [0.7, 0.75, 0.8, 0.9]
    t = otsu_threshold(high + low + [None])
    assert t == pytest.approx(0.4)                                        # midway in the gap (0.1, 0.7)
    assert all(not is_consistent(x, t) for x in low) and all(is_consistent(x, t) for x in high)
    # the cut maximises the between-class variance over every cut of the sorted list
    xs = sorted(low + high)

    def between(i):
        a, b = xs[:i], xs[i:]
        w = len(a) / len(xs)
        return w * (1 - w) * (sum(a) / len(a) - sum(b) / len(b)) ** 2
    best = max(range(1, len(xs)), key=between)
    assert t == pytest.approx((xs[best - 1] + xs[best]) / 2)
    assert otsu_threshold([0.3, 0.3, None]) is None and otsu_threshold([]) is None
    assert otsu_threshold([0.0, 1.0]) == 0.5


def _fact(i, score, model="m1", method="ig", lang="en", relation="P36"):
    return FactConsistency(f"f{i}", lang, relation, model, method, (2, 2), score)


def test_static_and_otsu_splits_are_both_recorded_with_the_shares():
    scores = [0.0, 0.05, 0.12, 0.15, 0.8, 0.9]       # static 0.1: two KI; Otsu (gap 0.15 - 0.8): four KI
    facts = [_fact(i, s, relation="P36" if i % 2 else "P37") for i, s in enumerate(scores)]
    facts += [_fact(10, None), _fact(11, 0.5, model="m2", lang="zh"), _fact(12, 0.02, model="m2", lang="zh")]
    rep = consistency_of(facts, ConsistencyConfig(static_threshold=0.1))
    m1 = next(s for s in rep.settings if s["model"] == "m1")
    assert 0.15 < m1["otsu_threshold"] < 0.8 and m1["otsu_threshold"] == rep.otsu("m1", "ig")
    assert m1["n_facts"] == 7 and m1["n_scored"] == 6
    assert m1["share_inconsistent_static"] == pytest.approx(2 / 6)
    assert m1["share_inconsistent_otsu"] == pytest.approx(4 / 6)
    assert rep.otsu("m2", "ig") == pytest.approx(0.26)                   # each (model, method) its own threshold
    assert rep.shares["static"]["model"]["m2"] == {"n": 2, "inconsistent": 1, "share": 0.5}
    assert rep.shares["static"]["lang"]["en"]["n"] == 6                   # the unscored fact is not counted
    assert rep.shares["otsu"]["relation"]["P37"] == {"n": 3, "inconsistent": 2, "share": 2 / 3}   # 0.0, 0.12 | 0.8
    assert rep.shares["static"]["all"] == {"n": 8, "inconsistent": 3, "share": 3 / 8}
    by_id = {f.fact_id: f for f in rep.facts}
    assert by_id["f2"].consistent_static is True and by_id["f2"].consistent_otsu is False
    assert by_id["f10"].consistent_static is None
    with pytest.raises(ConfigError, match="static-threshold"):
        consistency_of(facts, ConsistencyConfig(static_threshold=1.5))


def test_the_report_round_trips(tmp_path):
    facts = [_fact(i, s) for i, s in enumerate([0.0, 0.2, 0.9])]
    tests = [QueryTest("f0", "en", "m1", "ig", (2, 2), (0.5, 0.4), ((0.6, 0.1), (0.2, 0.3))),
             QueryTest("f2", "en", "m1", "ig", (1, 0), (0.5, 0.4), ((0.0, None), (None, None)))]
    rep = consistency_of(facts, ConsistencyConfig(metric="pairwise"), tests)
    assert rep.test_summary["all"] == {"n_facts": 2, "n_pairs": 2, "mean_own_drop": pytest.approx(0.45),
                                       "mean_other_drop": pytest.approx(0.15), "own_wins": 1.0, "ties": 0.0}
    assert rep.test_summary["static"]["inconsistent"]["n_facts"] == 1      # f0 (score 0.0) is KI
    rep.save(tmp_path / "c.json")
    back = ConsistencyReport.load(tmp_path / "c.json")
    assert back == rep and back.to_dict() == json.loads((tmp_path / "c.json").read_text())
    with pytest.raises(RunStoreError, match="not there"):
        ConsistencyReport.load(tmp_path / "none.json")


# ----------------------------------------------------------------------------- on a model

def test_query_neuron_test_matches_suppress_by_hand():
    torch.set_num_threads(1)
    h = tiny_handle("llama")
    queries = [("the capital of france is", "paris"), ("france capital city is", "paris"),
               ("the city of france is", "paris")]
    sets = [[(0, 1), (1, 2), (2, 7)], [(2, 3)], []]
    p0, drops = query_neuron_test(h, queries, sets)
    assert len(p0) == 3 and len(drops) == 3 and all(len(r) == 3 for r in drops)
    assert all(d is None for d in drops[2]) and drops[0][2] is None and drops[1][2] is None
    for i, (prompt, target) in enumerate(queries):
        assert p0[i] == pytest.approx(answer_prob(h, prompt, target).prob, rel=1e-6)
        for j in (0, 1):
            if i == 2:
                continue
            with suppress(h, sets[j]):
                p = answer_prob(h, prompt, target).prob
            assert drops[i][j] == pytest.approx((p0[i] - p) / p0[i], abs=1e-9)
    assert any(drops[0][j] != 0 for j in (0, 1))                          # suppressing changed something
    with pytest.raises(ConfigError, match="2 queries but 3 neuron sets"):
        query_neuron_test(h, queries[:2], sets)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A locate run of the tiny llama on three facts with three templates each."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("cons")
    p = d / "facts.jsonl"
    tpl = ["the capital of [X] is [Y] .", "[X] capital city is [Y] .", "the city of [X] is [Y] ."]
    p.write_text("".join(json.dumps({"id": i, "relation": "P36", "lang": "en", "subject": s, "object": o,
                                     "templates": tpl}) + "\n"
                         for i, s, o in [("c1", "france", "paris"), ("c2", "italy", "rome"),
                                         ("c3", "spain", "madrid")]))
    h = tiny_handle("llama")
    locate(h, load_facts(p), LocateConfig(steps=2, threshold=0.5), d / "run", show_progress=False)
    return h, d / "run"


def test_a_runs_scores_come_from_each_querys_own_neurons(run):
    h, path = run
    from kneuron.runs.store import open_run
    sets = open_run(path).query_neurons()
    got = run_consistency(path)
    assert [f.fact_id for f in got] == ["c1", "c2", "c3"] and all(f.n_queries == 3 for f in got)
    for f in got:
        assert f.sizes == tuple(map(len, sets[(f.fact_id, "en")])) and sum(f.sizes) > 0
        assert f.score == consistency_score(sets[(f.fact_id, "en")]) and f.model == "tiny-llama" and f.method == "ig"


def test_the_query_test_over_a_run_is_resumable(run, monkeypatch):
    h, path = run
    import kneuron.paper.consistency as cons
    real, calls = cons.query_neuron_test, []

    def dies_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(cons, "query_neuron_test", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        query_test_run(h, path, resume=False)
    monkeypatch.setattr(cons, "query_neuron_test", real)
    lines = (path / ROWS_FILE).read_text().splitlines()
    assert len(lines) == 2                                                # the settings line and the first fact
    monkeypatch.setattr(cons, "query_neuron_test", lambda *a, **k: calls.append(1) or real(*a, **k))
    calls.clear()
    tests = query_test_run(h, path)
    testable = [f for f in run_consistency(path) if sum(bool(n) for n in f.sizes) >= 2]
    assert len(calls) == len(testable) - 1 and [t.fact_id for t in tests] == [f.fact_id for f in testable]
    for t in tests:
        assert len(t.drops) == len(t.p0) == 3 and all(0 < p <= 1 for p in t.p0)
    rep = consistency_from_runs([path], handles=lambda _: h)
    assert [t.row() for t in rep.tests] == [t.row() for t in tests]       # nothing redone
    assert rep.test_summary["all"]["n_facts"] == len(tests)


def test_a_run_made_before_query_neurons_is_refused_in_one_line(run, tmp_path):
    import shutil
    h, path = run
    old = tmp_path / "old"
    shutil.copytree(path, old)
    meta = json.loads((old / "run.json").read_text())
    del meta["query_neurons"]
    (old / "run.json").write_text(json.dumps(meta))
    (old / "queries.parquet").unlink()
    with pytest.raises(RunStoreError) as e:
        run_consistency(old)
    msg = str(e.value)
    assert "\n" not in msg and str(old) in msg and "re-run it" in msg
