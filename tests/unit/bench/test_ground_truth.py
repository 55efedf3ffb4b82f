"""kneuron.bench.ground_truth: the injected-facts benchmark on a tiny model -- recall / precision at a budget
and ranks on hand-made score tables, the facts each difficulty draws, the deletion damage of the truth itself,
and the whole bench separating a learned mask from random scores."""
from __future__ import annotations

import random

import pytest
import torch

from kneuron.bench.ground_truth import deletion, draw, ground_truth_bench, ranks, recall_at, truths
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
    assert multi and all(o == "paris rome" for _, items in multi for _, o in items)
    single = draw(h, FACTS, "injected", 3, rng())
    assert len(single) == 3 and all(len(items) == 1 and o != "paris rome" for _, items in single for _, o in items)
    shared = draw(h, FACTS, "injected-shared", 2, rng())
    assert all(len(items) == 2 and items[0][1] == items[1][1] for _, items in shared)   # same index, both langs
    assert {p.split(" of ")[0] for _, items in shared for p, _ in items} == {"the capital", "the city"}


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
