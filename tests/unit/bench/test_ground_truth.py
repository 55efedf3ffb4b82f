"""kneuron.bench.ground_truth and ground_truth_run: the injected-facts benchmark on a tiny model -- recall /
precision at a budget and ranks on hand-made score tables, the facts each difficulty draws, the deletion damage
of the truth itself, what Modules 1-3 recover of exact scores, the whole bench separating a learned mask from
random scores, a stopped run resumed to the same rows, and tuning kept off the reported seeds."""
from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest
import torch

from kneuron.bench import ground_truth as gt
from kneuron.bench.ground_truth import Truth, deletion, draw, f1, mass_at, modules, ranks, recall_at, truths
from kneuron.bench.ground_truth_run import ground_truth_bench, resolve
from kneuron.errors import ConfigError
from kneuron.facts import Fact
from support.tiny import tiny_handle

pytestmark = pytest.mark.usefixtures("one_thread")

CAPITALS = [("france", "paris"), ("italy", "rome"), ("germany", "berlin"), ("spain", "madrid"),
            ("tanzania", "dodoma")]
# two "languages" the tiny word tokenizer encodes, aligned by id; "paris rome" is a two-token object
FACTS = [Fact(f"c{i}", "P36", lang, s, o, (t,), wrong_objects=tuple(x for _, x in CAPITALS if x != o) + ("paris rome",))
         for i, (s, o) in enumerate(CAPITALS)
         for lang, t in (("en", "the capital of [X] is [Y]"), ("xx", "the city of [X] is [Y]"))]


def handle():
    """The tiny Llama (output embeddings not tied to the input's) with 50x longer output embeddings: a random
    tiny model's cannot make any answer likely."""
    h = tiny_handle("llama")
    with torch.no_grad():
        h.model.get_output_embeddings().weight.mul_(50)
    return h


def test_recall_precision_and_ranks_on_a_hand_made_table():
    s = torch.tensor([[0.9, 0.1, 0.5], [0.8, 0.7, 0.0]])           # order: (0,0) (1,0) (1,1) (0,2) ...
    truth = [(1, 1), (0, 2)]
    assert ranks(s, truth) == [3, 4]
    assert recall_at(s, truth, 0.5) == (1 / 2, 1 / 3)               # top 3: (0,0) (1,0) (1,1)
    assert recall_at(s, truth, 4 / 6) == (1.0, 2 / 4)
    assert recall_at(s, truth, 0.0) == (0.0, 0.0)                   # at least one neuron: (0,0)


def test_each_difficulty_draws_what_it_says():
    h = handle()
    rng = lambda: random.Random(0)                                   # noqa: E731
    multi = draw(h, FACTS, "injected-multi", 3, rng())
    assert multi and all(o == "paris rome" for _, items, _ in multi for _, o in items)
    single = draw(h, FACTS, "injected", 3, rng())
    assert len(single) == 3 and all(len(items) == 1 and o != "paris rome" for _, items, _ in single for _, o in items)
    shared = draw(h, FACTS, "injected-shared", 2, rng())
    assert all(len(items) == 2 and items[0][1] == items[1][1] for _, items, _ in shared)   # same index, both langs
    assert {p.split(" of ")[0] for _, items, _ in shared for p, _ in items} == {"the capital", "the city"}


def test_deleting_the_truth_itself_removes_the_fact():
    h = handle()
    t = truths(h, FACTS, "injected", 1, seed=0, per_set=3, lr=0.05)[0]
    exact = torch.zeros(h.n_layers, h.n_neurons)
    for l, i in t.neurons:
        exact[l, i] = 1.0
    d = deletion(t, exact)
    assert d["fact_drop"] > 1.0 and d["control_change"] is not None    # log p(new) falls by more than a nat
    assert recall_at(exact, t.neurons, 0.05) == (1.0, len(t.neurons) / round(0.05 * exact.numel()))


def test_the_bench_separates_a_learned_mask_from_random_scores():
    h = handle()
    res = ground_truth_bench(h, FACTS, difficulties=("injected", "injected-degenerate", "injected-shared"),
                             methods=("mask", "actgrad", "random"), seeds=(0,), k=2, per_set=3, budgets=(0.05,),
                             lr=0.05)
    assert set(res["summary"]) == {"injected", "injected-degenerate", "injected-shared"} and not res["skipped"]
    for d, by in res["summary"].items():
        assert set(by) == {"mask", "actgrad", "random"}
        assert all(0 <= v["recall@0.05"]["mean"] <= 1 for v in by.values())
    inj = res["summary"]["injected"]
    assert inj["mask"]["recall@0.05"]["mean"] > inj["random"]["recall@0.05"]["mean"]
    assert inj["mask"]["fact_drop"]["mean"] > inj["random"]["fact_drop"]["mean"]
    assert all(len(r["truth"]) == (6 if r["difficulty"] == "injected-degenerate" else 3) for r in res["rows"])
    # Module 3 by both rules on the degenerate truths, in the summary and the report
    deg = [r for r in res["rows"] if r["difficulty"] == "injected-degenerate"]
    assert deg and all({"dkn_f1", "dkn_spans", "dkn_clusters_f1", "dkn_clusters_spans"} <= set(r) for r in deg)
    assert all(res["summary"]["injected-degenerate"][m]["dkn_clusters_f1"]["mean"] is not None for m in ("mask", "random"))
    from kneuron.bench.ground_truth_run import report_md
    assert "| dkn_f1 | dkn_spans | dkn_clusters_f1 | dkn_clusters_spans |" in report_md(res)


def _exact(h, neurons):
    s = torch.zeros(h.n_layers, h.n_neurons)
    for l, i in neurons:
        s[l, i] = 1.0 + l * 1e-3 + i * 1e-6                         # distinct, all far above tau x the best
    return SimpleNamespace(scores=s)


def test_mass_weights_the_found_truth_by_what_each_neuron_carries():
    s = torch.tensor([[0.9, 0.1, 0.5], [0.8, 0.7, 0.0]])           # top 2: (0,0) (1,0)
    truth = [(0, 0), (1, 1), (0, 2)]
    assert mass_at(s, truth, [3.0, 1.0, -2.0], 2 / 6) == 0.75        # (0,0) carries 3 of 4 (a negative share is 0)
    assert mass_at(s, truth, None, 0.5) is None and mass_at(s, truth, [0.0, 0.0, -1.0], 0.5) is None


def test_f1_of_found_against_truth():
    assert f1([(0, 1), (1, 2)], [(0, 1), (2, 2)]) == 0.5
    assert f1([], [(0, 1)]) == 0.0 and f1([(0, 1)], [(0, 1)]) == 1.0


def test_modules_recover_exact_scores_and_say_when_a_group_spans_both_sets(monkeypatch):
    h = handle()
    a, b = [(1, 2), (1, 5)], [(2, 3), (2, 7)]
    shared = Truth(h, [("the capital of france is", "rome"), ("the city of france is", "rome")], a, "injected-shared",
                   "c0", [], ["en", "zh"], [a])
    got = modules(shared, [_exact(h, a), _exact(h, a + [(0, 0)])])
    assert got["kn_f1"] == pytest.approx((1.0 + f1(a + [(0, 0)], a)) / 2) and got["likn_f1"] == 1.0
    deg = Truth(h, [("the capital of france is", "rome")], a + b, "injected-degenerate", "c0", [], ["en"], [a, b])
    seen = {}

    def rules(pairs, kept):
        """find_dkn faked: the pairs rule's groups, the clusters rule's kept clusters (its group their union)."""
        def fake(handle, prompt, target, neurons, cfg=None):
            seen.setdefault(cfg.method, list(neurons))
            if cfg.method == "pairs":
                return SimpleNamespace(groups=pairs)
            union = [tuple(sorted({n for c in kept for n in c}))] if len(kept) >= 2 else []
            return SimpleNamespace(groups=union, clusters=SimpleNamespace(kept_clusters=lambda: kept))
        return fake
    monkeypatch.setattr(gt, "find_dkn", rules([((1, 2), (2, 3)), ((1, 2), (1, 5))], [((1, 2), (1, 5)), ((2, 3),)]))
    got = modules(deg, [_exact(h, a + b)])
    assert set(seen["pairs"]) == set(seen["clusters"]) == set(a + b)    # Module 3 runs on Module 1's neurons
    assert got["dkn_spans"] == 1.0 and got["dkn_groups"] == 2 and got["dkn_f1"] == f1([(1, 2), (2, 3), (1, 5)], a + b)
    # the clusters rule: one kept cluster within each set, its DKN three of the four truth neurons
    assert got["dkn_clusters_spans"] == 1.0 and got["dkn_clusters"] == 2
    assert got["dkn_clusters_f1"] == f1([(1, 2), (1, 5), (2, 3)], a + b)
    monkeypatch.setattr(gt, "find_dkn", rules([((1, 2), (1, 5))], [((1, 2), (2, 3)), ((2, 7),)]))
    got = modules(deg, [_exact(h, a + b)])
    assert got["dkn_spans"] == 0.0                                  # one set's neurons only: not the planted degeneracy
    assert got["dkn_clusters_spans"] == 0.0                         # a cluster mixing both sets: not the two sets
    monkeypatch.setattr(gt, "find_dkn", rules([], [((1, 2),)]))
    got = modules(deg, [_exact(h, a + b)])
    assert got["dkn_clusters"] == 0 and got["dkn_clusters_f1"] == 0.0 and got["dkn_clusters_spans"] == 0.0


def test_a_stopped_run_resumes_to_the_same_rows_scoring_only_what_is_missing(tmp_path, monkeypatch):
    h = handle()
    kw = dict(difficulties=("injected",), methods=("actgrad", "random"), seeds=(0,), k=2, per_set=3, budgets=(0.05,),
              lr=0.05, out=tmp_path)
    first = ground_truth_bench(h, FACTS, **kw)
    path = tmp_path / "rows.jsonl"
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + len(first["rows"]) and len(first["rows"]) >= 2   # (a fact not learnt has no row)
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])  # stopped mid-row: one row kept, one torn
    calls = []
    real = gt.score_method
    monkeypatch.setattr("kneuron.bench.ground_truth_run.score_method", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    again = ground_truth_bench(h, FACTS, **kw)
    assert len(calls) == len(first["rows"]) - 1                     # the kept row is not scored again
    key = lambda r: (r["fact_id"], r["method"])                     # noqa: E731
    for x, y in zip(sorted(first["rows"], key=key), sorted(again["rows"], key=key)):
        assert x["truth"] == y["truth"] and x["recall@0.05"] == y["recall@0.05"]   # same draw, same sets
    calls.clear()
    ground_truth_bench(h, FACTS, **kw)
    assert calls == []                                              # complete: nothing injected or scored
    assert json.loads((tmp_path / "summary.json").read_text())["summary"]["injected"]["random"]["n"] == len(first["rows"]) // 2
    assert "| injected | actgrad |" in (tmp_path / "report.md").read_text()
    with pytest.raises(ConfigError):
        ground_truth_bench(h, FACTS, **{**kw, "k": 3})              # other settings on the same rows: refused


def test_a_draw_without_truths_is_not_injected_again_on_resume(tmp_path, monkeypatch):
    """A (seed, difficulty) whose facts were not learnt is marked in skipped.json with its reason: a resumed run
    reports it without injecting again, and --fresh forgets the mark."""
    h = handle()
    tried = []

    def nothing_learnt(*a, **k):
        tried.append(a[2])
        raise ValueError("no fact learnt to p >= 0.5")
    monkeypatch.setattr("kneuron.bench.ground_truth_run.truths", nothing_learnt)
    kw = dict(difficulties=("injected",), methods=("random",), seeds=(0,), k=2, per_set=3, budgets=(0.05,), out=tmp_path)
    first = ground_truth_bench(h, FACTS, **kw)
    assert first["skipped"] == {"injected (seed 0)": "no fact learnt to p >= 0.5"} and tried == ["injected"]
    again = ground_truth_bench(h, FACTS, **kw)
    assert again["skipped"] == first["skipped"] and tried == ["injected"]          # not injected again
    assert ground_truth_bench(h, FACTS, **{**kw, "seeds": (1,)})["skipped"] == {"injected (seed 1)": "no fact learnt to p >= 0.5"}
    ground_truth_bench(h, FACTS, **kw, fresh=True)
    assert tried == ["injected", "injected", "injected"]                          # --fresh: tried again


def test_tuning_stays_off_the_reported_seeds_and_auto_steps_are_named():
    h = handle()
    with pytest.raises(ConfigError, match="tune"):
        ground_truth_bench(h, FACTS, methods=("mask",), seeds=(0, 1), tune_seeds=(1, 2))
    assert resolve("ig@auto", 20, {}) == ("ig", "auto") and resolve("amig", 20, {}) == ("amig", 20)
    with pytest.raises(ConfigError):
        resolve("actgrad@auto", 20, {})


def test_too_few_facts_have_no_interval_and_separate_nothing():
    from kneuron.bench.ground_truth_run import separation, summarize
    rows = [{"seed": 0, "difficulty": "d", "fact_id": f"f{i}", "method": m, "recall@0.01": r}
            for i in range(2) for m, r in (("ig", 1.0), ("random", 0.0))]
    s = summarize(rows, ["d"], ["ig", "random"], [0.01])
    assert s["d"]["ig"]["recall@0.01"] == {"mean": 1.0, "ci": None}
    assert separation(rows, s, 0.01)["d"]["separated"] == []
    more = rows + [{**r, "fact_id": "f2"} for r in rows[:2]]
    s = summarize(more, ["d"], ["ig", "random"], [0.01])
    assert separation(more, s, 0.01)["d"]["separated"] == [["ig", "random"]]
