"""kneuron.editing.methods.ft (FT-L) on tiny random-weight models of every family; on smollm2-135m beside kn-opt."""
from __future__ import annotations

import pytest
import torch

from kneuron.editing import EditError, KnOpt, Rewrite, edit
from kneuron.errors import ConfigError
from kneuron.facts import Fact
from support.tiny import FAMILIES, same, snapshot, tiny_handle
from support.editing import mean_logp

pytestmark = pytest.mark.usefixtures("one_thread")

FACT = Fact("c0", "P36", "en", "france", "paris", ("the capital of [X] is [Y].", "[X] has its capital in [Y]."))


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))


def prompt(h) -> str:
    return "the capital of france is" if h.kind == "causal" else "the capital of france is [Y] ."


@pytest.mark.parametrize("family", list(FAMILIES))
def test_ft_stays_within_its_bound_and_lowers_the_nll(family):
    h = tiny_handle(family)
    before = snapshot(h)
    p0 = mean_logp(h, prompt(h), "rome")
    e = edit(h, FACT, "rome", method="ft", layer=1, norm_bound=1e-2)
    proj = h.sites[1]
    name = [k for k, p in h.model.named_parameters() if p is proj.weight][0]
    assert [c.param for c in e.changes] == [name] and same(h, before)
    with e:
        change = (proj.weight.detach() - before[name]).abs().max()
        assert 0 < change <= 1e-2 * (1 + 1e-9) and abs(float(change) - e.info["max_change"]) < 1e-12
        assert mean_logp(h, prompt(h), "rome") > p0
        assert all(torch.equal(v, before[k]) for k, v in h.model.state_dict().items() if k != name)
    assert same(h, before)
    assert e.info["layer"] == 1 and e.info["nll"] < e.info["nll_before"] and e.info["norm_bound"] == 1e-2


def test_ft_options_and_errors():
    h = tiny_handle("llama")
    rw = Rewrite(FACT, "rome")
    e = edit(h, rw.fact, rw.new, method="ft", use_prefixes=True, kl_factor=0.1, steps=3)
    assert e.info["prompts"] == 11 and e.info["steps"] <= 3 and e.info["layer"] == 1     # default: depth 0.2 -> 1
    with pytest.raises(ConfigError, match="norm_bound must be > 0"):
        edit(h, rw.fact, rw.new, method="ft", norm_bound=0)
    with pytest.raises(ConfigError, match="bound must be > 0"):
        KnOpt(bound=0)
    with pytest.raises(ConfigError, match="unknown option"):
        edit(h, rw.fact, rw.new, method="ft", neurons=[(0, 1)])
    with pytest.raises(EditError, match="layer"):
        edit(h, rw.fact, rw.new, method="ft", layer=-1)


@pytest.mark.slow
def test_smollm2_ft_and_kn_opt():
    """smollm2-135m: FT-L's defaults flip a fact on its rewrite prompt; kn-opt on a handful of neurons lowers
    the new object's NLL."""
    from kneuron.models import load_model
    h = load_model("smollm2-135m")
    fact = Fact("P36-001", "P36", "en", "Denmark", "Copenhagen", ("The capital of [X] is [Y].",))
    rw, p = Rewrite(fact, "Taipei"), "The capital of Denmark is"
    gap = lambda: mean_logp(h, p, "Taipei") - mean_logp(h, p, "Copenhagen")  # noqa: E731
    assert gap() < 0
    with edit(h, rw.fact, rw.new, method="ft"):
        assert gap() > 0
    e = edit(h, rw.fact, rw.new, method="kn-opt", neurons=[(20, 10), (21, 100), (22, 7), (23, 42), (24, 3)], use_prefixes=False)
    assert e.info["nll"] < e.info["nll_before"]
