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
    """record() (what run.json and an edit's info hold) of a default config is what it was before CAS;
    a CAS config records its selection and betas."""
    assert loc.LocateConfig is LocateConfig
    assert list(LocateConfig().record()) == ["method", "steps", "threshold", "top_k", "refine_p", "objective",
                                             "rule", "method_options"]
    assert LocateConfig().record() == {"method": "ig", "steps": 20, "threshold": None, "top_k": None,
                                       "refine_p": 0.3, "objective": "prob", "rule": "left", "method_options": {}}
    assert LocateConfig(cas_beta2=3.0).record() == LocateConfig().record()     # betas unused by refine
    got = LocateConfig(select="cas", cas_beta1=2.0, cas_beta2=0.5).record()
    assert got == {**LocateConfig().record(), "select": "cas", "cas_beta1": 2.0, "cas_beta2": 0.5}
    assert asdict(LocateConfig(select="cas")) == LocateConfig(select="cas").record()
    for bad, needle in ((dict(select="union"), "select must be one of refine, cas"), (dict(cas_beta1=0.0), "cas-beta1"),
                        (dict(cas_beta2=-1.0), "cas-beta2")):
        with pytest.raises(ConfigError, match=needle):
            LocateConfig(**bad)
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


# ----------------------------------------------------------------------------- CAS

# three queries x one layer x three neurons: neuron 0 is strong on average (0.6) but unstable across the
# queries, neuron 1 steady (0.5 everywhere), neuron 2 weak
CAS_TABLE = [torch.tensor([[0.9, 0.5, 0.0]]), torch.tensor([[0.1, 0.5, 0.0]]), torch.tensor([[0.8, 0.5, 0.1]])]


def test_cas_ranks_a_steady_neuron_above_a_strong_unstable_one():
    from kneuron.neurons import cas, cas_scores
    mean0, std0 = 0.6, ((0.3 ** 2 + 0.5 ** 2 + 0.2 ** 2) / 3) ** 0.5
    s = cas_scores(CAS_TABLE, 1.0, 1.0)
    assert s[0].tolist() == pytest.approx([mean0 - std0, 0.5, 0.1 / 3 - (2 * (0.1 / 3) ** 2 + (0.2 / 3) ** 2) ** 0.5 / 3 ** 0.5])
    got = cas(CAS_TABLE, 0.3, beta1=1.0, beta2=1.0)          # > 0.3 x 0.5: neurons 1, then 0 (0.244)
    assert got.neurons == [(0, 1), (0, 0)] and got.scores == pytest.approx([0.5, mean0 - std0])
    assert cas(CAS_TABLE, 0.3, beta1=1.0, beta2=0.0).neurons == [(0, 0), (0, 1)]    # by the mean alone: 0 first
    assert cas(CAS_TABLE, 0.3, beta1=2.0, beta2=2.0).scores == pytest.approx([1.0, 2 * (mean0 - std0)])
    assert cas(CAS_TABLE, 0.3, beta2=3.0).neurons == [(0, 1)]                      # 0.6 - 3 x 0.356 < 0
    # Dai's refine keeps both too, but ranks the unstable neuron first (mean over the queries that found it)
    ref = refine([select(t, 0.3) for t in CAS_TABLE], 0.3)
    assert ref.neurons == [(0, 0), (0, 1)]
    # one query: CAS is select on its scores (x beta1)
    one = cas(CAS_TABLE[:1], 0.3)
    assert (one.neurons, one.scores) == (select(CAS_TABLE[0], 0.3).neurons, pytest.approx(select(CAS_TABLE[0], 0.3).scores))


def test_neurons_of_with_select_cas_uses_cas_over_the_prompts(h):
    from kneuron.neurons import cas, query_sets
    qs = FACT.queries(h.kind, skip_invalid=True)
    found = attribute_many(h, [(q.prompt, q.target) for q in qs], method="ig", steps=3, execution=Execution())
    cfg = LocateConfig(steps=3, select="cas", cas_beta1=1.0, cas_beta2=0.5, top_k=6)
    got = neurons_of(found, "en", cfg)
    want = cas([a.scores for a in found], tau_for("en"), 6, 1.0, 0.5)
    assert (got.neurons, got.scores) == (want.neurons, want.scores) and 0 < len(got) <= 6
    assert localize(h, FACT, cfg).neurons == got.neurons
    refined = neurons_of(found, "en", LocateConfig(steps=3, top_k=6))
    assert refined.neurons == refine(query_sets(found, "en", LocateConfig(steps=3, top_k=6)), 0.3).neurons
