"""kneuron.attribution.local and .mask: the baselines beside IG (activation, gradient, activation x gradient,
random, a learned mask) through ``attribute`` on tiny models of every family: activation x gradient is IG's
one-node rule at α = 1 (per answer token), the gradient its quotient by the activation, the activation what
the model's hook reads, random seeded, and the mask and activation x gradient find a neuron made to carry
the answer."""
from __future__ import annotations

import pytest
import torch

from kneuron.attribution import BASELINES, METHODS, attribute, make_method
from kneuron.attribution.mask import LearnedMask
from kneuron.errors import ConfigError
from kneuron.models import hooks
from kneuron.models.targets import encode
from support.tiny import FAMILIES, tiny_handle

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = {"causal": "the capital of france is", "masked": "the capital of france is [Y] ."}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_actgrad_is_igs_one_node_rule_and_the_gradient_its_quotient(family):
    """IG with the "right" rule at one step integrates once, at α = 1: activation x gradient there. Two
    answer tokens: each differentiated for its own objective, as IG's rows are."""
    h = tiny_handle(family)
    prompt = PROMPT[h.kind]
    for target in ("paris", "paris rome"):
        ig = attribute(h, prompt, target, method="ig", steps=1, rule="right")
        ag = attribute(h, prompt, target, method="actgrad")
        assert torch.allclose(ag.scores.double(), ig.scores.double(), rtol=1e-4, atol=1e-7), (family, target)
        assert ag.prob == pytest.approx(ig.prob) and ag.completeness is None and ag.method == "actgrad"
    g = attribute(h, prompt, "paris", method="gradient").scores.double()
    a = attribute(h, prompt, "paris", method="activation").scores.double()
    ag = attribute(h, prompt, "paris", method="actgrad").scores.double()
    live = a > 1e-6
    assert torch.allclose(g[live], (ag.abs() / a)[live], rtol=1e-4, atol=1e-9) and bool((g >= 0).all())


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_activation_is_what_the_hook_reads_at_the_answer_positions(family):
    h = tiny_handle(family)
    enc = encode(h.tokenizer, h.kind, PROMPT[h.kind], "paris rome")
    ids = torch.tensor([enc.input_ids])
    with torch.no_grad(), hooks.capture(h, inputs={"a": h.sites}, at=enc.positions) as got:
        h.model(input_ids=ids)
    want = torch.stack(got["a"], dim=1)[0].abs().sum(dim=1).double()          # [L, N], over the two tokens
    got_scores = attribute(h, PROMPT[h.kind], "paris rome", method="activation").scores.double()
    assert torch.allclose(got_scores, want.float().double(), rtol=1e-6)


def test_random_is_seeded_by_its_seed_and_the_pair():
    h = tiny_handle("gpt2")
    one = attribute(h, PROMPT["causal"], "paris", method="random").scores
    assert torch.equal(one, attribute(h, PROMPT["causal"], "paris", method="random").scores)
    assert not torch.equal(one, attribute(h, PROMPT["causal"], "rome", method="random").scores)
    assert not torch.equal(one, attribute(h, PROMPT["causal"], "paris", method=make_method("random", seed=1)).scores)
    assert 0 <= float(one.min()) and float(one.max()) < 1


def carrier(h, prompt: str, target: str, scale: float = 40.0) -> tuple[int, int]:
    """Make the last layer's most active neuron at the answer position carry ``target`` (a causal model):
    the target's output embedding set to 3 x a unit vector u (a tiny model's are too short for any residual
    to make the answer likely through the final norm) and the neuron's value vector to ``scale`` x u over
    its activation there. Returns (layer, neuron)."""
    enc = encode(h.tokenizer, h.kind, prompt, target)
    layer = h.n_layers - 1
    with torch.no_grad(), hooks.capture(h, inputs={"a": h.sites[layer]}, at=enc.positions) as got:
        h.model(input_ids=torch.tensor([enc.input_ids]))
    j = int(got["a"][0, 0].argmax())
    out = h.model.get_output_embeddings().weight
    w = h.sites[layer].weight
    with torch.no_grad():
        u = torch.randn(out.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        u = u / u.norm()
        out[enc.target_ids[0]] = (3.0 * u).to(out.dtype)
        v = scale * u / float(got["a"][0, 0, j])
        if w.shape[0] == h.n_neurons:               # Conv1D: rows are value vectors
            w[j] = v.to(w.dtype)
        else:
            w[:, j] = v.to(w.dtype)
    return layer, j


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_the_mask_and_actgrad_find_a_neuron_made_to_carry_the_answer(family):
    h = tiny_handle(family)
    prompt = PROMPT[h.kind]
    layer, j = carrier(h, prompt, "paris")
    before = attribute(h, prompt, "paris", method="activation").prob
    assert before > 0.5                                  # the neuron carries the answer now
    for m in ("mask", "actgrad"):
        a = attribute(h, prompt, "paris", method=m)
        assert a.top(1)[0][:2] == (layer, j), (family, m, a.top(3))


def test_the_registry_and_one_line_errors():
    assert set(BASELINES) == {"activation", "gradient", "actgrad", "random", "mask"}
    assert not set(BASELINES) & set(METHODS)
    assert make_method("mask", l1=1e-3) == LearnedMask(l1=1e-3)
    assert make_method("mask", **LearnedMask(lr=0.05).params()) == LearnedMask(lr=0.05)
    with pytest.raises(ConfigError, match="unknown method 'nope'.*actgrad.*mask"):
        make_method("nope")
    for bad in (dict(mask_steps=0), dict(lr=-1), dict(l1=0), dict(init="x")):
        with pytest.raises(ConfigError, match="mask ") as err:
            LearnedMask(**bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="takes seed"):
        make_method("random", steps=3)
