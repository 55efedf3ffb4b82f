"""Selection by tau x max and refinement across prompts."""
import pytest
import torch

from kneuron.neurons import NeuronSet, refine, select, tau_for


def test_select_threshold_is_relative_to_the_global_max_and_sorted():
    s = torch.tensor([[0.1, 0.9, 0.2], [0.5, -1.0, 0.31]])
    got = select(s, 0.3)                         # > 0.27
    assert got.neurons == [(0, 1), (1, 0), (1, 2)]
    assert got.scores == pytest.approx([0.9, 0.5, 0.31])
    assert select(s, 0.3, top_k=2).neurons == [(0, 1), (1, 0)]
    assert select(s, 0.6).neurons == [(0, 1)]     # 0.5 is not > 0.54


def test_select_no_positive_score_gives_no_neurons():
    assert len(select(-torch.ones(2, 3), 0.3)) == 0
    with pytest.raises(ValueError):
        select(torch.ones(2, 2), 1.5)


def test_tau_per_language():
    assert tau_for("en") == 0.3 and tau_for("zh") == 0.2 and tau_for("fr") == 0.3
    assert tau_for("zh", 0.5) == 0.5


def test_refine_keeps_neurons_shared_by_more_than_p_of_prompts():
    a = NeuronSet([(1, 1), (2, 2), (3, 3)], [3.0, 2.0, 1.0])
    b = NeuronSet([(2, 2), (1, 1)], [4.0, 1.0])
    c = NeuronSet([(2, 2), (4, 4)], [1.0, 5.0])
    r = refine([a, b, c], p=0.5)                  # needs > 1.5 of 3 prompts
    assert r.neurons == [(2, 2), (1, 1)]          # mean scores 7/3 and 2
    assert r.scores == pytest.approx([7 / 3, 2.0])
    assert refine([a, b, c], p=0.4).neurons == [(2, 2), (1, 1)]   # > 1.2 prompts
    r = refine([a, b, c], p=0.3)                                  # > 0.9: every neuron found once
    assert r.neurons == [(4, 4), (2, 2), (1, 1), (3, 3)]          # by mean score 5, 7/3, 2, 1
    assert refine([a]).neurons == a.neurons
