"""kneuron.editing.health on a tiny random GPT-2 (float64): ‖ΔW‖/‖W‖ equals the hand computation, applied or
not; the unrelated NLL equals one sentence at a time by hand and does not move under a no-op edit; a large
random ΔW raises it past the margin (disabling); the greedy continuation is the argmax loop; JSON round-trips."""
from __future__ import annotations

import json
import math

import pytest
import torch

from kneuron.editing import Change, Edit
from kneuron.editing.base import value_index
from kneuron.editing.health import (DISABLING_MARGIN, Health, continuation, health, unrelated_digest, unrelated_nll,
                                    unrelated_sentences, weight_ratios)
from kneuron.editing.stats import start_ids
from support.tiny import snapshot, tiny_handle

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPT = "the capital of france is"


@pytest.fixture(scope="module")
def h():
    return tiny_handle("gpt2")


def _param(h, name):
    return dict(h.model.named_parameters())[name]


def _noise(p, scale, seed=0):
    return scale * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed), dtype=p.dtype)


def test_the_bundled_sentences_are_fixed():
    s = unrelated_sentences()
    assert sorted(s) == ["en", "zh"] and all(len(v) == 8 and len(set(v)) == 8 for v in s.values())
    assert len(unrelated_digest()) == 64 and unrelated_digest() == unrelated_digest()


def test_weight_ratios_are_the_hand_computation(h):
    whole = "transformer.h.1.mlp.c_proj.weight"
    w = _param(h, whole).detach().clone()
    d = _noise(w, 0.1)
    part, index = value_index(h, [2, 5], 2)                    # two value vectors (rows of a Conv1D)
    v = _param(h, part).detach().clone()
    new_rows = v[index] * 3.0
    e = Edit(h, "hand", None, [Change(whole, w + d), Change(part, new_rows, index)])
    dv = torch.zeros_like(v)
    dv[index] = new_rows - v[index]
    want = {whole: float(d.norm() / w.norm()), part: float(dv.norm() / v.norm())}
    overall = math.sqrt(float(d.norm()) ** 2 + float(dv.norm()) ** 2) / math.sqrt(float(w.norm()) ** 2 +
                                                                                  float(v.norm()) ** 2)
    before = snapshot(h)
    ratio, per = weight_ratios(e)                               # not applied: against the weights now
    assert per == pytest.approx(want, rel=1e-12) and ratio == pytest.approx(overall, rel=1e-12)
    assert all(torch.equal(x, before[k]) for k, x in h.model.state_dict().items())   # nothing written
    with e:                                                     # applied: against what it overwrote
        assert weight_ratios(e) == (pytest.approx(overall, rel=1e-12), pytest.approx(want, rel=1e-12))
    assert weight_ratios(Edit(h, "none", None, [])) == (None, {})


def test_unrelated_nll_is_the_mean_token_nll_sentence_by_sentence(h):
    got = unrelated_nll(h)
    assert list(got) == ["en", "zh"] and unrelated_nll(h, ["en", "fr"]).keys() == {"en"}
    total, count = 0.0, 0
    for s in unrelated_sentences()["en"]:
        ids = torch.tensor([start_ids(h.tokenizer, s)])
        with torch.no_grad():
            lp = torch.log_softmax(h.model(input_ids=ids).logits[0, :-1].double(), -1)
        total -= float(lp[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum())
        count += ids.shape[1] - 1
    assert got["en"] == pytest.approx(total / count, rel=1e-10)


def test_a_no_op_edit_leaves_the_unrelated_nll_bit_for_bit(h):
    before = unrelated_nll(h)
    name = "transformer.h.0.mlp.c_proj.weight"
    same = Edit(h, "same", None, [Change(name, _param(h, name).detach().clone())])
    with same:
        got = health(h, same, PROMPT, before)
    assert got.nll_after == before and got.rise == {"en": 0.0, "zh": 0.0} and got.nll_rise == 0.0
    assert got.weight_ratio == 0.0 and not got.disabling()
    empty = Edit(h, "empty", None, [])
    with empty:
        assert health(h, empty, PROMPT, before).nll_after == before


def test_a_large_random_change_raises_the_nll_and_is_disabling(h):
    before = unrelated_nll(h, ["en"])          # (the tiny tokenizer reads Chinese as [UNK]s)
    name = "transformer.wte.weight"
    p = _param(h, name).detach()
    big = Edit(h, "big", None, [Change(name, p + _noise(p, 1.0))], info={"u_dot_k": 1e-3})
    w0 = snapshot(h)
    with big:
        got = health(h, big, PROMPT, before)
    assert all(torch.equal(x, w0[k]) for k, x in h.model.state_dict().items())
    assert got.rise["en"] > 10 * DISABLING_MARGIN and got.disabling() and got.u_dot_k == 1e-3
    assert got.weight_ratio == pytest.approx(float(_noise(p, 1.0).norm() / p.norm()), rel=1e-12)
    small = Edit(h, "small", None, [Change(name, p + _noise(p, 1e-4))])
    with small:
        assert not health(h, small, PROMPT, before).disabling()
    assert Health(1.0, nll_before={"en": 3.0}, nll_after={"en": math.nan}).disabling()    # broken: NaN
    assert Health(1.0, nll_before={"en": 3.0}, nll_after={"en": 3.0 + DISABLING_MARGIN}).disabling() is False
    assert not Health(None).disabling() and Health(None).nll_rise is None


def test_the_continuation_is_greedy(h):
    ids = h.tokenizer(PROMPT)["input_ids"]
    start = len(ids)
    for _ in range(5):
        with torch.no_grad():
            ids = ids + [int(h.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())]
    want = h.tokenizer.decode(ids[start:], skip_special_tokens=True)
    assert continuation(h, PROMPT, tokens=5) == want
    state = torch.random.get_rng_state()
    assert continuation(h, PROMPT) == continuation(h, PROMPT)
    assert torch.equal(torch.random.get_rng_state(), state)   # greedy: the random state untouched


def test_a_masked_model_has_no_nll_nor_continuation():
    m = tiny_handle("bert")
    assert unrelated_nll(m) == {} and continuation(m, PROMPT) is None
    name = "bert.encoder.layer.0.output.dense.weight"
    e = Edit(m, "x", None, [Change(name, _param(m, name).detach() * 2)])
    with e:
        got = health(m, e, PROMPT, {})
    assert got.weight_ratio == pytest.approx(1.0, rel=1e-12) and got.rise == {} and not got.disabling()


def test_health_round_trips_as_json(h):
    before = unrelated_nll(h)
    e = Edit(h, "empty", None, [], info={"u_dot_k": 0.25})
    with e:
        got = health(h, e, PROMPT, before)
    d = json.loads(json.dumps(got.to_json()))
    assert list(d) == ["weight_ratio", "weight_ratios", "u_dot_k", "nll_before", "nll_after", "continuation"]
    assert Health.from_json(d) == got and got.u_dot_k == 0.25 and isinstance(got.continuation, str)
