"""kneuron.paper.factcheck.probe: the probe fit on training items only (a spy on fit_probe) and its layer
chosen on validation, never on test; a probe is deterministic and standardised on its training rows; the
statement state is each block's output at the statement's last token."""
import pytest
import torch

import kneuron.paper.factcheck.probe as probe_module
from kneuron.facts import Fact
from kneuron.paper.factcheck.check import fact_check_beside
from kneuron.paper.factcheck.plan import check_held_out
from kneuron.paper.factcheck.probe import choose_layer, fit_probe, statement_state
from kneuron.paper.table3 import Item
from kneuron.report.stats import auroc
from support.factcheck import features, inputs, synthetic, synthetic_facts
from support.tiny import tiny_handle


def test_the_probe_trains_on_training_items_only(monkeypatch):
    fs = synthetic_facts(5, 6)
    dkn, kn, wrong = inputs(fs)
    seen = []
    real = probe_module.fit_probe                       # the spy goes where choose_layer looks fit_probe up
    monkeypatch.setattr(probe_module, "fit_probe",
                        lambda x, y, layer, *a, **k: (seen.append(x[:, 0].round().int().tolist()),
                                                      real(x, y, layer, *a, **k))[1])
    attr, prob = synthetic(fs)
    plan, res = fact_check_beside(fs, dkn, kn, wrong, attr, prob, features, n_boot=20)
    assert len(seen) == 2 * 3                                  # one probe per layer, per split
    for k, name in enumerate(("facts", "relations")):
        sp = plan.splits[name]
        train = sorted(i for i, it in enumerate(plan.items) if it.fact in sp.fit)
        for rows in seen[3 * k:3 * k + 3]:
            assert sorted(rows) == train                           # exactly the training items
            held = {f.key for f in sp.val + sp.test}
            assert not any(plan.items[i].fact.key in held for i in rows)
        assert sorted(res[name].ids["train"]) == sorted(f.id for f in sp.fit)
    rel = plan.relations
    trained = {plan.items[i].fact.relation for i in seen[3]}
    assert trained == set(rel.train) and not trained & (set(rel.val) | set(rel.test))
    assert res["relations"].relations == {"train": list(rel.train), "val": list(rel.val), "test": list(rel.test)}
    # the guard itself refuses a leak
    leak = [it for it in plan.items if it.fact.relation == rel.test[0]][:1]
    with pytest.raises(AssertionError, match="held out"):
        check_held_out("relations", plan.splits["relations"], leak)


def test_the_layer_is_chosen_on_validation_never_on_test():
    """Layer 0 separates train and test but is inverted on validation; layer 1 separates train and
    validation but is inverted on test: validation must pick layer 1 (the test then scores low)."""
    y = [1, 0] * 12
    train, val, test = list(range(0, 8)), list(range(8, 16)), list(range(16, 24))
    x = torch.zeros(24, 2, 2)
    gen = torch.Generator().manual_seed(0)
    x[:, :, 1] = torch.rand(24, 2, generator=gen) * 0.1                 # noise
    for i, lab in enumerate(y):
        sign = {0: -1.0 if i in val else 1.0, 1: -1.0 if i in test else 1.0}
        for layer in (0, 1):
            x[i, layer, 0] = sign[layer] * (lab - 0.5)
    probe, aucs = choose_layer(x, y, train, val)
    assert probe.layer == 1 and aucs[1] == 1.0 and aucs[0] == 0.0
    poisoned = x.clone()
    poisoned[test] = -poisoned[test] + 3.0                               # the test rows cannot move the choice
    again, aucs2 = choose_layer(poisoned, y, train, val)
    assert again.layer == 1 and aucs2 == aucs and torch.equal(again.weight, probe.weight)
    test_auc = auroc([y[i] for i in test], probe.score(x[test, 1]))
    assert test_auc == 0.0


def test_the_probe_is_deterministic_and_standardised_on_training_rows():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(40, 5, generator=gen) * torch.tensor([1.0, 10.0, 0.1, 3.0, 0.0]) + 4.0
    y = [int(v > 4.0) for v in x[:, 0]]
    a, b = fit_probe(x[:30], y[:30], 0), fit_probe(x[:30], y[:30], 0)
    assert torch.equal(a.weight, b.weight) and a.bias == b.bias
    assert torch.allclose(a.mean, x[:30].double().mean(0)) and torch.allclose(a.std[:4], x[:30, :4].double().std(0, unbiased=False))
    assert a.std[4] == 1.0                                                  # a constant feature is left as it is
    assert auroc(y[30:], a.score(x[30:])) == 1.0


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_statement_state_is_each_blocks_output_at_the_statements_last_token(family, one_thread):
    """The hidden states of the model itself (output_hidden_states: entry l + 1 is block l's output, the
    last one before the final norm), read at the candidate's last token; a wrong candidate reads otherwise."""
    h = tiny_handle(family)
    tpl = "the capital of [X] is [Y] ." if family == "bert" else "the capital of [X] is [Y]"
    f = Fact("c", "P36", "en", "france", "paris", (tpl,))
    got = statement_state(h, Item(f, "paris", 1, "rome"))
    assert got.shape == (h.n_layers, h.model.config.hidden_size) and got.dtype == torch.float32
    tok = h.tokenizer
    ids = tok("the capital of france is paris" + (" ." if family == "bert" else ""))["input_ids"]
    pos = ids.index(tok.convert_tokens_to_ids("paris"))
    with torch.no_grad():
        ref = h.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    for layer in range(h.n_layers - 1):
        assert torch.allclose(got[layer], ref[layer + 1][0, pos].float(), atol=1e-5)
    assert not torch.allclose(got, statement_state(h, Item(f, "rome", 0, "paris")))
