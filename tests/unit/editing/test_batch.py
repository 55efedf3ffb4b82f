"""kneuron.editing.batch: many value-vector edits at once, on tiny random-weight models."""
from __future__ import annotations

import pytest
import torch

from kneuron.editing import EditError, Rewrite, batch_edit, edit
from kneuron.facts import Fact
from support.tiny import FAMILIES, snapshot, tiny_handle

A = Fact("a", "P36", "en", "france", "paris", ("the capital of [X] is [Y]",))
B = Fact("b", "P36", "en", "italy", "rome", ("the capital of [X] is [Y]",))
NA = [(0, 3), (2, 7), (1, 40)]
NB = [(2, 7), (1, 5)]                          # shares (2, 7) with A


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_batch_adds_each_edits_change_and_undoes_bit_for_bit(family):
    h = tiny_handle(family)
    w0 = snapshot(h)
    ea = edit(h, A, "rome", method="kn", neurons=NA)
    eb = edit(h, B, "paris", method="kn", neurons=NB)
    with ea:
        wa = snapshot(h)
    with eb:
        wb = snapshot(h)
    both = batch_edit([ea, eb])
    assert both.info["batch"] == 2 and both.info["facts"] == ["a", "b"]
    # the shared neuron's value vector gets both changes, the others one each: 4 value vectors written
    hidden = h.model.config.hidden_size if hasattr(h.model.config, "hidden_size") else h.model.config.n_embd
    assert both.params_changed == 4 * hidden
    with both:
        now = h.model.state_dict()
        for k in w0:
            want = w0[k].double() + (wa[k].double() - w0[k].double()) + (wb[k].double() - w0[k].double())
            assert torch.allclose(now[k].double(), want, rtol=0, atol=1e-5), (family, k)
    assert all(torch.equal(h.model.state_dict()[k], w0[k]) for k in w0)


def test_batch_erase_zeroes_the_union_of_the_neurons():
    h = tiny_handle("llama")
    e = batch_edit([edit(h, A, None, method="kn-erase", neurons=NA), edit(h, B, None, method="kn-erase", neurons=NB)])
    w = h.sites[2].weight
    with e:
        for layer, i in set(NA) | set(NB):
            assert torch.count_nonzero(h.sites[layer].weight[:, i]) == 0
        assert torch.count_nonzero(w[:, 8]) > 0                 # a neuron of neither fact is untouched


def test_batch_refuses_what_it_cannot_combine():
    h = tiny_handle("gpt2")
    ea = edit(h, A, "rome", method="kn", neurons=NA)
    with pytest.raises(EditError, match="no edits"):
        batch_edit([])
    with pytest.raises(EditError, match="rome has no batch mode"):
        batch_edit([edit(h, A, "rome", method="rome", stats="identity", v_steps=1, use_prefixes=False,
                         progress=False)])
    with pytest.raises(EditError, match="one method"):
        batch_edit([ea, edit(h, B, None, method="kn-erase", neurons=NB)])
    with ea:
        with pytest.raises(EditError, match="is applied"):
            batch_edit([ea])
