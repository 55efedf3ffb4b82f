"""kneuron.editing.methods.kn_opt (kn-opt) on tiny random-weight models of every family."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from kneuron.editing import EditError, KnOpt, Rewrite, edit
from kneuron.editing.localize import LOCALIZE
from kneuron.errors import ConfigError
from kneuron.facts import Fact
from support.tiny import FAMILIES, same, snapshot, tiny_handle
from support.editing import mean_logp

pytestmark = pytest.mark.usefixtures("one_thread")

FACT = Fact("c0", "P36", "en", "france", "paris", ("the capital of [X] is [Y].", "[X] has its capital in [Y]."))
NEURONS = [(0, 3), (2, 7), (2, 11), (1, 40)]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))


def prompt(h) -> str:
    return "the capital of france is" if h.kind == "causal" else "the capital of france is [Y] ."


def value(h, layer: int, i: int) -> torch.Tensor:
    """Neuron i's value vector straight from the weight: row of GPT-2's Conv1D, column of a Linear."""
    proj = h.sites[layer]
    w = proj.weight.detach()
    return (w[i] if type(proj).__name__ == "Conv1D" else w[:, i]).clone()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_kn_opt_changes_only_the_chosen_vectors_and_lowers_the_nll(family):
    h = tiny_handle(family)
    before = snapshot(h)
    p0 = mean_logp(h, prompt(h), "rome")
    e = edit(h, FACT, "rome", method="kn-opt", neurons=NEURONS)
    assert same(h, before) and e.params_changed == len(NEURONS) * value(h, 0, 0).numel()
    old = {n: value(h, *n) for n in NEURONS}
    with e:
        moved = [float((value(h, *n) - old[n]).norm() / old[n].norm()) for n in NEURONS]
        assert max(moved) > 0 and all(d <= e.info["bound"] + 1e-9 for d in moved)   # (a ReLU neuron may be off)
        for layer in range(h.n_layers):                     # every other column untouched
            others = [i for i in range(h.n_neurons) if (layer, i) not in NEURONS]
            w0 = before[[k for k, p in h.model.named_parameters() if p is h.sites[layer].weight][0]]
            conv = type(h.sites[layer]).__name__ == "Conv1D"
            now = h.sites[layer].weight.detach()
            assert torch.equal(now[others] if conv else now[:, others], w0[others] if conv else w0[:, others])
        sites = {k for k, p in h.model.named_parameters() if any(p is s.weight for s in h.sites)}
        assert all(torch.equal(v, before[k]) for k, v in h.model.state_dict().items() if k not in sites)
        assert mean_logp(h, prompt(h), "rome") > p0
    assert same(h, before)
    assert e.info["neurons"] == NEURONS and not e.info["localized"] and e.info["nll"] < e.info["nll_before"]
    assert len(e.info["relative_change"]) == len(NEURONS)


def test_kn_opt_localizes_lazily(monkeypatch):
    """Without neurons=, kn-opt asks localize.fact_neurons (with the localisation options)."""
    import kneuron.editing.localize as loc
    asked = {}

    def fake(handle, fact, **options):
        asked.update(options, fact=fact)
        return [(1, 5), (1, 5), (2, 9)]
    monkeypatch.setattr(loc, "fact_neurons", fake)
    h = tiny_handle("llama")
    e = edit(h, FACT, "rome", method="kn-opt", localize={"steps": 3}, max_prompts=1)
    want = replace(LOCALIZE, steps=3)
    assert asked == {"cfg": want, "max_prompts": 1, "execution": None, "fact": FACT}
    assert e.info["neurons"] == [(1, 5), (2, 9)]
    assert e.info["localized"] and e.info["localize"] == {**want.record(), "max_prompts": 1}
    asked.clear()                                            # the same, typed
    typed = edit(h, FACT, "rome", method=KnOpt(localize=want, max_prompts=1))
    assert asked["cfg"] == want and typed.info["localize"] == e.info["localize"]


def test_kn_opt_errors():
    h = tiny_handle("gpt2")
    rw = Rewrite(FACT, "rome")
    for bad in ([(5, 0)], [(0, 999)]):
        with pytest.raises(EditError, match=r"fact c0 \(en\)") as err:
            edit(h, rw.fact, rw.new, method="kn-opt", neurons=bad)
        assert "\n" not in str(err.value)
    for given in (NEURONS, None):                  # also when localising: refused before any attribution
        with pytest.raises(ConfigError, match="unknown option"):
            edit(h, rw.fact, rw.new, method="kn-opt", neurons=given, lambda2=3)
    e = edit(h, rw.fact, rw.new, method="kn-opt", neurons=NEURONS, common=[(0, 3), (1, 1)], v_steps=2)
    assert e.info["neurons"] == NEURONS[1:] and e.info["filtered"] == [(0, 3)] and len(e.changes) == 2
    for none in (dict(neurons=NEURONS, common=NEURONS), dict(neurons=[])):   # as kn: an edit that writes nothing
        e = edit(h, rw.fact, rw.new, method="kn-opt", v_steps=2, **none)
        assert e.changes == [] and e.params_changed == 0 and "changes nothing" in e.info["note"]
        assert e.info["filtered"] == (NEURONS if none.get("common") else [])
    with pytest.raises(EditError, match="new"):
        edit(h, FACT, "zanzibar", method="kn-opt", neurons=NEURONS)
