"""suppress / enhance patch only the answer positions and leave the model untouched; erase undoes."""
import pytest
import torch

from kneuron.probe import answer_prob
from kneuron import enhance, suppress
from kneuron.intervene import erase
from kneuron.intervene import answer_positions
from support.tiny import tiny_handle

IDS = torch.tensor([[7, 8, 9, 10, 11]])


def _read(h, layer, ids):
    got = {}
    hook = h.sites[layer].register_forward_pre_hook(lambda m, a: got.__setitem__("x", a[0].detach().clone()))
    with torch.no_grad():
        logits = h.model(input_ids=ids).logits
    hook.remove()
    return got["x"], logits


def test_causal_patch_hits_only_the_last_position_by_default():
    h = tiny_handle("llama")
    x0, l0 = _read(h, 1, IDS)
    with enhance(h, [(1, 5), (1, 9)], factor=2.0):
        x1, l1 = _read(h, 1, IDS)
    assert torch.equal(x1[0, :-1], x0[0, :-1])                     # earlier positions untouched
    assert torch.allclose(x1[0, -1, [5, 9]], 2 * x0[0, -1, [5, 9]])
    other = [j for j in range(h.n_neurons) if j not in (5, 9)]
    assert torch.equal(x1[0, -1, other], x0[0, -1, other])
    assert torch.equal(l1[0, :-1], l0[0, :-1]) and not torch.equal(l1[0, -1], l0[0, -1])


def test_model_untouched_after_the_block_even_on_error():
    h = tiny_handle("gpt2")
    before = {k: v.clone() for k, v in h.model.state_dict().items()}
    _, l0 = _read(h, 0, IDS)
    with pytest.raises(RuntimeError):
        with suppress(h, [(0, 1)]):
            raise RuntimeError("boom")
    _, l1 = _read(h, 0, IDS)
    assert torch.equal(l0, l1)
    assert all(torch.equal(before[k], v) for k, v in h.model.state_dict().items())
    assert all(not s._forward_pre_hooks for s in h.sites) and not h.model._forward_pre_hooks


def test_masked_patch_hits_the_mask_positions():
    h = tiny_handle("bert")
    mask = h.tokenizer.mask_token_id
    ids = torch.tensor([[2, 7, 8, mask, mask, 3]])
    x0, _ = _read(h, 2, ids)
    with suppress(h, [(2, 4)]):
        x1, _ = _read(h, 2, ids)
    assert torch.all(x1[0, [3, 4], 4] == 0)
    assert torch.equal(x1[0, [0, 1, 2, 5]], x0[0, [0, 1, 2, 5]])


def test_answer_positions_and_answer_prob():
    h = tiny_handle("gpt2")
    base = answer_prob(h, "the capital of france is", "paris rome")
    assert len(base.token_probs) == 2 and base.prob == pytest.approx(base.token_probs[0] * base.token_probs[1])
    with suppress(h, [(l, j) for l in range(3) for j in range(h.n_neurons)]):
        after = answer_prob(h, "the capital of france is", "paris rome")
    assert after.token_probs[0] != pytest.approx(base.token_probs[0])
    assert after.token_probs[1] != pytest.approx(base.token_probs[1])   # both answer positions patched
    with answer_positions([0]):
        x0, _ = _read(h, 0, IDS)
        with suppress(h, [(0, 3)]):
            x1, _ = _read(h, 0, IDS)
    assert x1[0, 0, 3] == 0 and torch.equal(x1[0, 1:], x0[0, 1:])


def test_erase_is_persistent_until_undo():
    h = tiny_handle("llama")
    _, l0 = _read(h, 0, IDS)
    e = erase(h, [(0, 2), (2, 7)])
    _, l1 = _read(h, 0, IDS)
    _, l2 = _read(h, 0, IDS)
    assert not torch.equal(l0, l1) and torch.equal(l1, l2)
    assert torch.all(h.sites[0].weight[:, 2] == 0)
    e.undo()
    _, l3 = _read(h, 0, IDS)
    assert torch.equal(l0, l3)


def test_bad_neuron_is_a_clear_error():
    h = tiny_handle("gpt2")
    with pytest.raises(ValueError, match=r"outside tiny-gpt2 \(3 layers x 48 neurons\)"):
        with suppress(h, [(3, 0)]):
            pass
