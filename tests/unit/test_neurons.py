"""neurons.localize: fact -> queries -> attribution -> select -> refine, one definition for runs and edits."""
import dataclasses
from dataclasses import asdict

import pytest
import torch

import kneuron.runs.locate as loc
from kneuron.attribution import Execution, attribute_many
from kneuron.errors import ConfigError
from kneuron.facts import Fact, QueryError
from kneuron.neurons import LocateConfig, NeuronSet, localize, neurons_of, refine, select, tau_for
from support.tiny import tiny_handle

FACT = Fact("c1", "P36", "en", "france", "paris",
            ("the capital of [X] is [Y] .", "[X] capital city is [Y] .", "the city of [X] is a capital and [Y] ."))
MIXED = Fact("c2", "P36", "zh", "italy", "rome", ("[Y] is the capital of [X] .", "the capital of [X] is [Y] ."),
             source="f.jsonl:3")


@pytest.fixture(scope="module", params=["gpt2", "bert"])
def h(request):
    torch.set_num_threads(1)
    return tiny_handle(request.param, dtype=torch.float32)


@pytest.mark.parametrize("cfg", [LocateConfig(method="amig", steps=3, threshold=0.2),
                                 LocateConfig(steps=4, refine_p=0.5, top_k=5),
                                 LocateConfig(steps=5, rule="midpoint")])
def test_localize_is_a_locate_runs_neurons_exactly(h, cfg):
    old = loc.locate_fact(h, FACT, loc.check_fact(h, FACT), cfg)
    new = localize(h, FACT, cfg)
    assert new.neurons == old.neurons.neurons and new.scores == old.neurons.scores
    assert len(new) > 0


def test_localize_hands_back_the_attributions_it_selected_from(h):
    qs = FACT.queries(h.kind, skip_invalid=True)[:2]
    found = attribute_many(h, [(q.prompt, q.target) for q in qs], method="ig", steps=3, execution=Execution())
    atts: list = ["kept"]                                   # appended to, not replaced
    got = localize(h, FACT, LocateConfig(steps=3), max_prompts=2, attributions=atts)
    assert atts[0] == "kept" and len(atts) == 3
    assert all(torch.equal(a.scores, b.scores) for a, b in zip(atts[1:], found))
    assert neurons_of(atts[1:], "en", LocateConfig(steps=3)).neurons == got.neurons


def test_localize_is_select_per_prompt_then_refine_with_refine_p(h):
    """The composition KN edits used (editing.localize.fact_neuron_set with ``p``), by hand."""
    qs = FACT.queries(h.kind, skip_invalid=True)[:2]
    found = attribute_many(h, [(q.prompt, q.target) for q in qs], method="ig", steps=5, rule="midpoint",
                           execution=Execution())
    for p in (0.3, 0.6):
        want = refine([select(a.scores, tau_for("en"), None) for a in found], p)
        got = localize(h, FACT, LocateConfig(steps=5, rule="midpoint", refine_p=p), max_prompts=2)
        assert (got.neurons, got.scores) == (want.neurons, want.scores)
        assert neurons_of(found, "en", LocateConfig(steps=5, rule="midpoint", refine_p=p)).neurons == want.neurons
    strict = refine([select(a.scores, tau_for("en"), None) for a in found], 0.6)
    loose = refine([select(a.scores, tau_for("en"), None) for a in found], 0.3)
    assert set(strict.neurons) <= set(loose.neurons)


def test_tau_is_the_facts_language_unless_a_threshold_is_given(h):
    zh = MIXED.queries(h.kind, skip_invalid=True)
    found = attribute_many(h, [(q.prompt, q.target) for q in zh], steps=3)
    want = refine([select(a.scores, 0.2, None) for a in found], 0.3)        # zh: tau 0.2
    got = localize(h, MIXED, LocateConfig(steps=3))
    assert got.neurons == want.neurons
    want = refine([select(a.scores, 0.9, None) for a in found], 0.3)
    assert localize(h, MIXED, LocateConfig(steps=3, threshold=0.9)).neurons == want.neurons


def test_a_causal_model_drops_the_templates_it_cannot_use_unless_strict():
    h = tiny_handle("gpt2", dtype=torch.float32)
    only = dataclasses.replace(MIXED, templates=MIXED.templates[1:])
    got, want = localize(h, MIXED, LocateConfig(steps=2)), localize(h, only, LocateConfig(steps=2))
    assert (got.neurons, got.scores) == (want.neurons, want.scores) and len(got) > 0
    with pytest.raises(QueryError, match=r'^f\.jsonl:3: field "templates": fact c2 \(zh\) template 0: '):
        localize(h, MIXED, LocateConfig(steps=2), skip_invalid=False)
    none = Fact("c3", "P36", "en", "spain", "madrid", ("[Y] is in [X] .",), source="f.jsonl:4")
    with pytest.raises(QueryError, match=r'^f\.jsonl:4: field "templates": no template usable by a causal model'):
        localize(h, none, LocateConfig(steps=2))


def test_an_object_the_tokenizer_cannot_encode_names_the_object_field():
    h = tiny_handle("gpt2", dtype=torch.float32)
    bad = Fact("c4", "P36", "en", "spain", "Ωμέγα", ("the capital of [X] is [Y] .",), source="f.jsonl:5")
    with pytest.raises(QueryError) as ei:
        localize(h, bad, LocateConfig(steps=2))
    assert str(ei.value).startswith('f.jsonl:5: field "object": ') and "\n" not in str(ei.value)


def test_locate_config_lives_here_and_serialises_as_before():
    assert loc.LocateConfig is LocateConfig
    assert list(asdict(LocateConfig())) == ["method", "steps", "threshold", "top_k", "refine_p", "objective",
                                           "rule", "method_options"]
    assert asdict(LocateConfig()) == {"method": "ig", "steps": 20, "threshold": None, "top_k": None,
                                      "refine_p": 0.3, "objective": "prob", "rule": "left", "method_options": {}}
    with pytest.raises(ConfigError, match=r"refine-p must be in \[0, 1\), got 1"):
        LocateConfig(refine_p=1)


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
