"""kneuron.editing.base: Rewrite checks, Edit apply / undo (bit for bit), context manager, save, dispatch."""
from __future__ import annotations

import json

import pytest
import torch

from kneuron.editing import METHODS, Change, Edit, EditError, Rewrite, edit
from kneuron.editing.base import value_index
from kneuron.errors import ConfigError
from kneuron.facts import Fact
from kneuron.models.sites import value_vectors
from support.tiny import same, snapshot, tiny_handle

FACT = Fact("c0", "P36", "en", "france", "paris", ("the capital of [X] is [Y]", "[X] capital city is [Y]"))


def one_line(e) -> bool:
    return "\n" not in str(e.value) and str(e.value)


def two_changes(h) -> list[Change]:
    """Two changes: the value vectors of layer 0's neurons 1 and 4 (+1.5), and the whole first 1-d
    parameter (set to 0.25)."""
    name, index = value_index(h, [1, 4], 0)
    cur = dict(h.model.named_parameters())[name][index]
    whole = next(n for n, p in h.model.named_parameters() if p.dim() == 1)
    p = dict(h.model.named_parameters())[whole]
    return [Change(name, cur + 1.5, index), Change(whole, torch.full_like(p, 0.25))]


# ----------------------------------------------------------------------------- Rewrite

def test_rewrite_refuses_same_or_empty_object():
    with pytest.raises(EditError, match="equals the fact's object") as e:
        Rewrite(FACT, " paris ")
    assert one_line(e)
    with pytest.raises(EditError, match="empty"):
        Rewrite(FACT, "  ")
    assert Rewrite(FACT, None).new is None                # erasure


# ----------------------------------------------------------------------------- apply / undo

@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_apply_undo_bit_exact(family):
    h = tiny_handle(family)
    snap = snapshot(h)
    e = Edit(h, "test", None, two_changes(h))
    assert not e.applied and e.params_changed == 2 * h.model.config.hidden_size + e.changes[1].value.numel()
    e.apply()
    assert e.applied and not same(h, snap)
    name, index = e.changes[0].param, e.changes[0].index
    assert torch.equal(dict(h.model.named_parameters())[name][index], e.changes[0].value)
    e.undo()
    assert not e.applied and same(h, snap)
    with e:
        assert not same(h, snap)
    assert same(h, snap)


def test_undo_after_exception_in_with():
    h = tiny_handle("gpt2")
    snap = snapshot(h)
    e = Edit(h, "test", None, two_changes(h))
    with pytest.raises(ZeroDivisionError):
        with e:
            1 / 0
    assert not e.applied and same(h, snap)


def test_apply_twice_and_undo_unapplied_are_one_line_errors():
    h = tiny_handle("gpt2")
    e = Edit(h, "test", None, two_changes(h))
    with pytest.raises(EditError, match="not applied") as err:
        e.undo()
    assert one_line(err)
    e.apply()
    with pytest.raises(EditError, match="already applied") as err:
        e.apply()
    assert one_line(err)
    e.undo()


def test_overlapping_changes_undo_in_reverse_order():
    h = tiny_handle("llama")
    snap = snapshot(h)
    name, index = value_index(h, [2, 3], 1)
    name2, index2 = value_index(h, [3, 5], 1)
    w = dict(h.model.named_parameters())[name]
    e = Edit(h, "test", None, [Change(name, torch.zeros_like(w[index]), index),
                               Change(name2, torch.ones_like(w[index2]), index2)])
    with e:
        assert torch.equal(value_vectors(h.sites[1])[3], torch.ones(h.model.config.hidden_size, dtype=w.dtype))
    assert same(h, snap)


def test_failed_apply_leaves_the_model_untouched():
    h = tiny_handle("gpt2")
    snap = snapshot(h)
    good = two_changes(h)
    bad = Change(good[0].param, torch.zeros(3, 3, dtype=torch.float64), good[0].index)   # wrong shape
    e = Edit(h, "test", None, good + [bad])
    with pytest.raises(EditError, match="cannot be applied") as err:
        e.apply()
    assert one_line(err) and not e.applied and same(h, snap)
    with pytest.raises(EditError, match="no parameter"):
        Edit(h, "test", None, [Change("nope.weight", torch.zeros(1))]).apply()


def test_bf16_undo_bit_exact():
    h = tiny_handle("llama", dtype=torch.bfloat16)
    snap = snapshot(h)
    name, index = value_index(h, [0, 7], 2)
    e = Edit(h, "test", None, [Change(name, torch.randn(h.model.config.hidden_size, 2, dtype=torch.float64), index)])
    with e:
        assert dict(h.model.named_parameters())[name].dtype == torch.bfloat16
        assert not same(h, snap)
    assert same(h, snap)


# ----------------------------------------------------------------------------- save

@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_save_roundtrip_and_refuses_non_empty(family, tmp_path):
    from kneuron.models import load_model
    h = tiny_handle(family)
    snap = snapshot(h)
    e = Edit(h, "test", Rewrite(FACT, "rome"), two_changes(h), info={"neurons": [(0, 1), (0, 4)], "x": {1, 2}})
    d = e.save(tmp_path / "edited")
    assert not e.applied and same(h, snap)                    # saving an unapplied edit leaves it unapplied
    meta = json.loads((d / "kneuron-edit.json").read_text())
    assert meta["method"] == "test" and meta["new"] == "rome" and meta["fact"]["object"] == "paris"
    assert meta["info"]["neurons"] == [[0, 1], [0, 4]]
    loaded = load_model(str(d), dtype="auto")
    ids = torch.tensor([[7, 8, 9, 10, 11]])
    with e, torch.no_grad():
        want = h.model(input_ids=ids).logits
        got = loaded.model(input_ids=ids).logits
    assert got.dtype == want.dtype and torch.allclose(got, want, rtol=0, atol=1e-12)
    with pytest.raises(EditError, match="not an empty directory") as err:
        e.save(d)
    assert one_line(err)
    (tmp_path / "file").write_text("x")
    with pytest.raises(EditError, match="not an empty directory"):
        e.save(tmp_path / "file")


def test_save_of_an_applied_edit_keeps_it_applied(tmp_path):
    h = tiny_handle("llama")
    e = Edit(h, "test", None, two_changes(h)).apply()
    e.save(tmp_path / "m")
    assert e.applied
    e.undo()


# ----------------------------------------------------------------------------- dispatch

def test_edit_dispatch_errors():
    h = tiny_handle("gpt2")
    with pytest.raises(ConfigError, match="unknown editing method 'nope'") as err:
        edit(h, FACT, "rome", method="nope")
    assert one_line(err)
    with pytest.raises(EditError, match="needs a new object") as err:
        edit(h, FACT, method="kn")
    assert one_line(err)
    with pytest.raises(EditError, match="equals the fact's object"):
        edit(h, FACT, "paris", method="kn", neurons=[(0, 1)])
    assert {"kn", "kn-eai", "kn-erase", "likn"} <= set(METHODS)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_method_that_needs_a_new_object_says_so_in_one_place(name):
    """EditMethod.check: the same one-line error whether the method is reached through ``edit`` or its own
    ``edit`` is called (ft-m, ft-l, kn-opt, rome check first); kn-erase needs none; rome refuses a masked model."""
    from kneuron.editing.registry import method_class
    h, cls = tiny_handle("gpt2"), method_class(name)
    if not cls.needs_new:
        cls().check(h, Rewrite(FACT, None))                   # erasure: no new object asked
        return
    want = f'{FACT.where("new")}method {name} needs a new object'
    with pytest.raises(EditError) as err:
        edit(h, FACT, method=name)
    assert str(err.value) == want
    if name in ("ft-m", "ft-l", "kn-opt", "rome"):
        with pytest.raises(EditError) as err:
            cls().edit(h, Rewrite(FACT, None))
        assert str(err.value) == want
    cls().check(h, Rewrite(FACT, "rome"))
    if cls.causal_only:
        with pytest.raises(EditError, match=f"{name} supports causal models only"):
            cls().check(tiny_handle("bert"), Rewrite(FACT, "rome"))


# ----------------------------------------------------------------------------- state

def _roundtrip(state: dict, tmp_path) -> dict:
    torch.save(state, tmp_path / "edit.pt")
    return torch.load(tmp_path / "edit.pt", weights_only=True)       # plain values and tensors only


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_state_round_trip_is_bit_exact(family, tmp_path):
    """state() -> torch.save -> load -> from_state gives the same edit: the same changes (values, dtypes,
    indices), info, seconds and rewrite, and applying it writes the same bits as the original."""
    from kneuron.editing import batch_edit
    h = tiny_handle(family)
    snap = snapshot(h)
    a = edit(h, FACT, "rome", method="kn", neurons=[(0, 1), (1, 4)])
    b = edit(h, Fact("c1", "P36", "en", "italy", "rome", ("the capital of [X] is [Y]",)), "paris", method="kn",
             neurons=[(1, 4), (2, 2)])
    for e in (a, Edit(h, "test", None, two_changes(h), {"k": (1, 2)}, 1.25), batch_edit([a, b])):
        back = Edit.from_state(h, _roundtrip(e.state(), tmp_path))
        assert (back.method, back.rewrite, back.info, back.seconds) == (e.method, e.rewrite, e.info, e.seconds)
        assert len(back.changes) == len(e.changes)
        for x, y in zip(e.changes, back.changes):
            assert x.param == y.param and x.value.dtype == y.value.dtype and torch.equal(x.value, y.value)
            assert type(x.index) is type(y.index)
        with e:
            after = snapshot(h)
        with back:
            assert same(h, after)
        assert same(h, snap)


def test_state_keeps_a_rome_edits_tensors(tmp_path):
    from kneuron.editing.methods import RomeEdit
    h = tiny_handle("gpt2", dtype=torch.float32)
    e = edit(h, FACT, "rome", method="rome", layer=1, stats="identity", v_steps=2, use_prefixes=False)
    back = RomeEdit.from_state(h, _roundtrip(e.state(), tmp_path))
    assert isinstance(back, RomeEdit)
    assert all(torch.equal(getattr(e, k), getattr(back, k)) for k in ("k_star", "key", "v_star"))
    assert torch.equal(back.changes[0].value, e.changes[0].value) and back.info == e.info
    plain = Edit.from_state(h, e.state())                     # the base class: the same changes, no extras
    assert type(plain) is Edit and torch.equal(plain.changes[0].value, e.changes[0].value)
    with pytest.raises(EditError, match="not an edit's state") as err:
        Edit.from_state(h, {"method": "kn"})
    assert one_line(err)


# ----------------------------------------------------------------------------- low-rank changes, compact state

LOW_RANK = {"rome": dict(layer=1, stats="identity", v_steps=2, use_prefixes=False),
            "memit": dict(layer=1, span=2, stats="identity", v_steps=2, use_prefixes=False),
            "alphaedit": dict(layer=1, span=2, stats_texts=4, stats_length=12, v_steps=2, use_prefixes=False)}


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("method", sorted(LOW_RANK))
def test_a_low_rank_change_is_its_factors_and_applies_only_where_it_was_computed(method, family, tmp_path,
                                                                                  monkeypatch):
    """ROME, MEMIT and AlphaEdit write each weight as W + A B (``low_rank_add``, float32 factors in the
    weight's own layout): the compact state keeps the factors and W's fingerprint, not the weight; read back,
    it writes the same bits on W and refuses any other weight with one line."""
    from kneuron.editing.lowrank import low_rank_add
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))
    h = tiny_handle(family, dtype=torch.float32)
    snap = snapshot(h)
    e = edit(h, FACT, "rome", method=method, progress=False, **LOW_RANK[method])
    params = dict(h.model.named_parameters())
    for c in e.changes:
        a, b = c.low_rank
        assert a.dtype == b.dtype == torch.float32 and a.shape[0] * b.shape[1] == params[c.param].numel()
        assert a.shape[1] == b.shape[0] == 1                                   # one rewrite: rank one
        assert torch.equal(c.value, low_rank_add(params[c.param], a, b))
    with e:
        after = snapshot(h)
        state = e.state(compact=True, keep=())                           # applied: the base is what it overwrote
    shapes = [params[c.param].shape for c in e.changes]
    stored = sum(t.numel() for c in state["changes"] for t in c["low_rank"])
    assert all("value" not in c for c in state["changes"]) and "extra" not in state
    assert stored == sum(r + k for r, k in shapes) < sum(r * k for r, k in shapes) / 10   # a row and a column each
    back = Edit.from_state(h, _roundtrip(state, tmp_path))
    assert all(c.value is None for c in back.changes) and back.params_changed == e.params_changed
    with back:
        assert same(h, after)
    assert same(h, snap)
    other = dict(h.model.named_parameters())[e.changes[0].param]
    with torch.no_grad():
        other[0, 0] += 1.0                                               # another base: refused, nothing written
    moved = snapshot(h)
    again = Edit.from_state(h, _roundtrip(state, tmp_path))
    with pytest.raises(EditError, match="computed on other weights") as err:
        again.apply()
    assert one_line(err) and same(h, moved)


def test_a_released_edit_stays_written_and_holds_no_weight():
    h = tiny_handle("gpt2", dtype=torch.float32)
    snap = snapshot(h)
    e = edit(h, FACT, "rome", method="rome", progress=False, **LOW_RANK["rome"]).apply()
    after = snapshot(h)
    e.release()
    assert not e.applied and e.overwritten is None and all(c.value is None for c in e.changes)
    assert same(h, after) and not same(h, snap) and e.params_changed > 0
