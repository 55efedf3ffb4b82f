"""models.hooks: capture reads what a manual hook reads, patch leaves the model as it was, forward speaks
each model's argument names, pad pads with one rule that changes no number behind the mask."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from kneuron.models import hooks
from kneuron.models.sites import as_bsn
from support.tiny import FAMILIES, tiny_handle

pytestmark = pytest.mark.usefixtures("one_thread")
CAUSAL = sorted(f for f, (kind, _) in FAMILIES.items() if kind == "causal")


def _ids(h, text="the capital of france is paris"):
    text = text.replace("paris", "[MASK]") if h.kind == "masked" else text
    return torch.tensor([h.tokenizer(text)["input_ids"]])


def _no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and "forward" not in m.__dict__
               for m in model.modules())


def _manual(h, ids):
    """Every site's input and every block's hidden output, read by hooks written by hand."""
    ins, outs, handles = {}, {}, []
    for l, (site, block) in enumerate(zip(h.sites, h.layers)):
        handles.append(site.register_forward_pre_hook(lambda m, a, l=l: ins.__setitem__(l, a[0].detach().clone())))
        handles.append(block.register_forward_hook(
            lambda m, a, o, l=l: outs.__setitem__(l, (o[0] if isinstance(o, tuple) else o).detach().clone())))
    try:
        with torch.no_grad():
            logits = h.model(input_ids=ids).logits
    finally:
        for x in handles:
            x.remove()
    return ins, outs, logits


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_capture_reads_what_a_manual_hook_reads(family):
    h = tiny_handle(family)
    ids = _ids(h)
    T = ids.shape[1]
    ins, outs, _ = _manual(h, ids)
    at = [1, T - 1]
    with torch.no_grad(), hooks.capture(h, inputs={"mlp": h.sites, "first": h.sites[0]}, outputs={"block": h.layers},
                                        at=at) as got:
        hooks.forward(h, ids)
    for l in range(h.n_layers):
        assert torch.equal(got["mlp"][l], as_bsn(ins[l], 1, T)[:, at])
        assert torch.equal(got["block"][l], outs[l][:, at])
    assert torch.equal(got["first"], as_bsn(ins[0], 1, T)[:, at])
    with torch.no_grad(), hooks.capture(h, inputs={"x": h.sites[1]}) as whole:      # no ``at``: as the module got it
        hooks.forward(h, ids)
    assert torch.equal(whole["x"], ins[1])
    assert _no_hooks_left(h.model)


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert", "opt", "gemma3_text"])
def test_capture_stop_after_runs_nothing_above(family):
    """stop_after ends the forward pass after that module: the layers above never run, the capture holds
    the full run's value, and the code after the forward inside the block is skipped."""
    h = tiny_handle(family)
    ids = _ids(h)
    ins, _, _ = _manual(h, ids)
    ran, after = [], []
    handle = h.layers[-1].register_forward_pre_hook(lambda m, a: ran.append(1))
    try:
        with torch.no_grad(), hooks.capture(h, inputs={"x": h.sites[0]}, stop_after=h.sites[0]) as got:
            hooks.forward(h, ids)
            after.append(1)
    finally:
        handle.remove()
    assert ran == [] and after == []
    assert torch.equal(got["x"], ins[0])
    assert _no_hooks_left(h.model)


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert", "opt", "bloom", "gemma3_text"])
def test_patch_changes_the_output_and_leaves_the_model_as_it_was(family):
    h = tiny_handle(family)
    ids = _ids(h)
    state = {k: v.clone() for k, v in h.model.state_dict().items()}
    with torch.no_grad():
        before = h.model(input_ids=ids).logits
        with hooks.patch(h, h.sites[1], torch.zeros_like):
            zeroed = hooks.forward(h, ids).logits
        with hooks.patch(h, h.layers[0], lambda y: y * 2, on="output"):
            doubled = hooks.forward(h, ids).logits
        with hooks.patch(h, h.sites[2], lambda x, y: y + x[..., :y.shape[-1]], on="output", with_input=True):
            added = hooks.forward(h, ids).logits
        after = h.model(input_ids=ids).logits
    for x in (zeroed, doubled, added):
        assert not torch.allclose(x, before)
    assert torch.equal(after, before)
    assert all(torch.equal(v, state[k]) for k, v in h.model.state_dict().items())
    assert _no_hooks_left(h.model)


def test_patch_input_zero_equals_zeroing_the_weights():
    """The patched input is the site's real input: zeroing it equals zeroing the projection's weight."""
    h = tiny_handle("gpt2")
    ids = _ids(h)
    with torch.no_grad(), hooks.patch(h, h.sites[1], torch.zeros_like):
        patched = hooks.forward(h, ids).logits
    w = h.sites[1].weight.detach().clone()
    with torch.no_grad():
        h.sites[1].weight.zero_()
        zeroed = h.model(input_ids=ids).logits
        h.sites[1].weight.copy_(w)
    torch.testing.assert_close(patched, zeroed, rtol=1e-9, atol=1e-9)


def test_hooks_are_removed_after_an_exception():
    h = tiny_handle("llama")
    ids = _ids(h)
    with torch.no_grad():
        before = h.model(input_ids=ids).logits
    with pytest.raises(RuntimeError, match="boom"):
        with hooks.patch(h, h.sites[0], torch.zeros_like), hooks.capture(h, outputs={"b": h.layers}), \
                hooks.replaced_forward(h.layers[1], lambda *a, **k: None):
            raise RuntimeError("boom")
    with pytest.raises(ValueError, match="inside"):
        with hooks.patch(h, h.sites[0], lambda x: (_ for _ in ()).throw(ValueError("inside"))):
            hooks.forward(h, ids)
    assert _no_hooks_left(h.model)
    with torch.no_grad():
        assert torch.equal(h.model(input_ids=ids).logits, before)
    with pytest.raises(ValueError, match="on must be"):
        with hooks.hook(h.sites[0], lambda *a: None, on="inside"):
            pass


@pytest.mark.parametrize("family", CAUSAL)
def test_forward_continues_a_cache_and_keeps_chosen_logits(family):
    """Every causal family: the last token run against the prefix's cache (under the model's own cache
    argument name, position ids where it takes them) gives the full pass's logits; logits_at keeps the
    chosen positions or cells."""
    h = tiny_handle(family)
    ids = _ids(h)
    T = ids.shape[1]
    with torch.no_grad():
        full = h.model(input_ids=ids).logits
        past = hooks.forward(h, ids[:, :-1], use_cache=True).cache
        assert past is not None
        step = hooks.forward(h, ids[:, -1:], past=past, position_ids=torch.tensor([[T - 1]]))
        some = hooks.forward(h, ids, logits_at=torch.tensor([1, T - 1])).logits
        cells = hooks.forward(h, ids.repeat(2, 1), logits_at=(torch.tensor([0, 1]), torch.tensor([2, T - 1]))).logits
        decoder = hooks.forward(h, ids, use_cache=True, head=False)
    torch.testing.assert_close(step.logits[:, 0], full[:, -1], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(some, full[:, [1, T - 1]], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(cells, full[0, [2, T - 1]], rtol=1e-9, atol=1e-9)
    assert decoder.logits is None and decoder.cache is not None


@pytest.mark.parametrize("family", ["bert", "roberta", "xlm-roberta"])
def test_forward_masked_logits_at(family):
    h = tiny_handle(family)
    ids = _ids(h)
    with torch.no_grad():
        full = h.model(input_ids=ids).logits
        some = hooks.forward(h, ids, logits_at=[0, 2]).logits
    assert torch.equal(some, full[:, [0, 2]])


class _Recorder(nn.Module):
    """A model whose forward takes the cache under ``name`` (and no position ids): records its arguments."""

    def __init__(self, name):
        super().__init__()
        self.lin, self.got = nn.Linear(2, 2), {}
        if name == "cache":
            self.forward = lambda input_ids, attention_mask=None, cache=None, use_cache=None: self._run(
                input_ids, attention_mask=attention_mask, cache=cache, use_cache=use_cache)
        else:
            self.forward = lambda input_ids, attention_mask=None, past_key_values=None, use_cache=None: self._run(
                input_ids, attention_mask=attention_mask, past_key_values=past_key_values, use_cache=use_cache)

    def _run(self, input_ids, **kw):
        self.got = kw
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, 3), cache="the cache")


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_forward_passes_the_cache_under_the_name_the_model_takes(name):
    m = _Recorder(name)
    h = SimpleNamespace(model=m)
    assert hooks.cache_argument(m) == name and not hooks.takes(m, "position_ids")
    out = hooks.forward(h, torch.zeros(1, 1, dtype=torch.long), past="kv", position_ids=torch.zeros(1, 1))
    assert m.got[name] == "kv" and m.got["use_cache"] is True and "position_ids" not in m.got
    assert out.cache == "the cache"
    hooks.forward(h, torch.zeros(1, 1, dtype=torch.long))
    assert m.got[name] is None and m.got["use_cache"] is None


def test_pad_matches_manual_padding():
    h = tiny_handle("gpt2")
    rows = [[7, 8, 9], [10], torch.tensor([11, 12])]
    p = hooks.pad(h, rows)
    assert p.ids.tolist() == [[7, 8, 9], [10, 0, 0], [11, 12, 0]]
    assert p.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert p.ids.dtype == torch.long and p.lengths == [3, 1, 2] and p.shape == (3, 3)
    assert hooks.pad(h, rows, value=4).ids.tolist()[1] == [10, 4, 4]


def test_pad_id_rule():
    """The tokenizer's pad token, else the model config's, else 0."""
    cfg = SimpleNamespace(pad_token_id=3)
    assert hooks.pad_id(SimpleNamespace(tokenizer=SimpleNamespace(pad_token_id=5), model=SimpleNamespace(config=cfg))) == 5
    assert hooks.pad_id(SimpleNamespace(tokenizer=SimpleNamespace(pad_token_id=None), model=SimpleNamespace(config=cfg))) == 3
    none = SimpleNamespace(pad_token_id=None)
    assert hooks.pad_id(SimpleNamespace(tokenizer=none, model=SimpleNamespace(config=none))) == 0
    assert hooks.pad_id(SimpleNamespace(tokenizer=SimpleNamespace(), model=nn.Linear(1, 1))) == 0


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_pad_id_changes_no_number_behind_the_mask(family):
    """Right padding behind the attention mask: the rows' own positions give bit-identical logits
    whatever id fills the padding (the five copies this replaced chose it three ways)."""
    h = tiny_handle(family)
    rows = [h.tokenizer(t)["input_ids"] for t in ("the capital of france is paris", "italy rome", "the city")]
    with torch.no_grad():
        logits = [hooks.forward(h, hooks.pad(h, rows, value=v)).logits for v in (hooks.pad_id(h), 0, 7, 20)]
    for other in logits[1:]:
        for i, r in enumerate(rows):
            assert torch.equal(other[i, :len(r)], logits[0][i, :len(r)])


def test_a_patch_holds_when_a_submodule_is_run_on_its_own():
    """A forward that skips h.model (its base model run directly) is still patched: the sequence
    length is needed only for flattened activations, which then get one clear error."""
    from kneuron.intervene import suppress
    h = tiny_handle("gpt2")
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        plain = h.model.base_model(input_ids=ids).last_hidden_state
        with suppress(h, [(0, 1)], at="all"):
            patched = h.model.base_model(input_ids=ids).last_hidden_state
    assert not torch.equal(plain, patched)
    with pytest.raises(ValueError, match="flattened"):
        hooks.bsn(torch.zeros(6, 4), None)
