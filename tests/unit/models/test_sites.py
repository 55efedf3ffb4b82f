"""The neuron site is right for every family: patching neuron j through the hook equals zeroing
input column j of the output projection's weight; the table names the expected module."""
import pytest
import torch

from kneuron import intervene
from kneuron.models.sites import find_site, proj_dims, value_vectors
from support.tiny import EXPECTED_SITE, FAMILIES, tiny_handle


@pytest.mark.parametrize("family", list(FAMILIES))
def test_site_table(family):
    h = tiny_handle(family)
    assert h.site.proj_path == EXPECTED_SITE[family]
    assert h.site.how == "table"
    assert h.n_layers == 3


@pytest.mark.parametrize("family", list(FAMILIES))
def test_hook_patch_equals_zeroed_weight_column(family):
    h = tiny_handle(family)
    ids = torch.tensor([[7, 8, 9, 10, 11, 12]])
    neurons = [(0, 3), (1, 0), (1, 17), (2, h.n_neurons - 1)]
    with torch.no_grad():
        clean = h.model(input_ids=ids).logits
        with intervene.suppress(h, neurons, at="all"):
            hooked = h.model(input_ids=ids).logits
        with intervene.erase(h, neurons):
            zeroed = h.model(input_ids=ids).logits
        after = h.model(input_ids=ids).logits
    assert not torch.allclose(hooked, clean)                 # the neurons matter
    torch.testing.assert_close(hooked, zeroed, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(after, clean, rtol=0, atol=0)  # erase undone exactly, hooks removed


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_structural_fallback_finds_the_same_site(family):
    h = tiny_handle(family)
    h.model.config.model_type = "unknown-family"
    found = find_site(h.model)
    assert found.how == "structural"
    assert found.proj_path == EXPECTED_SITE[family]


def test_site_named_by_hand_and_bad_name():
    from kneuron.models.sites import SiteError
    h = tiny_handle("llama")
    assert find_site(h.model, site="mlp.up_proj").proj_path == "mlp.up_proj"
    with pytest.raises(SiteError, match="not found"):
        find_site(h.model, site="mlp.nope")


def test_value_vectors_are_neuron_rows():
    for family in ("gpt2", "llama"):            # Conv1D and Linear
        h = tiny_handle(family)
        n_in, n_out = proj_dims(h.sites[0])
        assert value_vectors(h.sites[0]).shape == (n_in, n_out) == (h.n_neurons, h.model.config.hidden_size)
