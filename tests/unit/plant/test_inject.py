"""kneuron.plant.inject: facts taught to a model's own neurons. Only the trained sets' entries change (every
other weight bit for bit), each fact is known after, a shared set teaches both prompts, a degenerate fact
survives suppressing either set alone but not both, the model given is left as it was, errors are one line."""
from __future__ import annotations

import pytest
import torch

from kneuron.intervene import suppress
from kneuron.plant import PlantError
from kneuron.plant.inject import InjectSpec, _masks, inject
from kneuron.plant.read import read_many
from kneuron.plant.surgery import layout_for
from support.tiny import same, snapshot, tiny_handle

pytestmark = pytest.mark.usefixtures("one_thread")


def handle(family):
    """A tiny model whose output embeddings are 50x longer: a random tiny model's are too short for any
    residual to make an answer likely through the final norm (p stays near 1/vocabulary)."""
    h = tiny_handle(family)
    with torch.no_grad():
        h.model.get_output_embeddings().weight.mul_(50)
    return h


def prompts(h):
    end = "" if h.kind == "causal" else " [Y] ."
    return f"the capital of france is{end}", f"the capital of italy is{end}"


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_only_the_sets_change_and_every_fact_is_known(family):
    h = handle(family)
    p, q = prompts(h)
    snap = snapshot(h)
    specs = [InjectSpec(((p, "rome"),)), InjectSpec(((p, "berlin"), (q, "berlin")), "shared"),
             InjectSpec(((q, "madrid"),), "degenerate")]
    r = inject(h, specs, per_set=4, lr=0.05, controls=[(q, "rome")])
    assert same(h, snap)                                                  # the model given is untouched
    sets = [n for f in r.facts for n in f.neurons]
    assert len(sets) == len(set(sets)) == 16 and all(l in r.layers for l, _ in sets)   # disjoint, in the layers
    assert r.budget == pytest.approx(4 / (len(r.layers) * h.n_neurons))
    owned = {name: m for name, (_, m) in _named(r.handle, _masks(r.handle, layout_for(h), sets))}
    now = dict(r.handle.model.named_parameters())
    for name, w0 in snap.items():
        if name not in now:
            continue
        moved = now[name].detach() != w0
        allowed = owned.get(name, torch.zeros_like(moved))
        assert not bool((moved & ~allowed).any()), name                  # nothing outside the sets moved
    assert r.changed and set(r.changed) <= set(owned)
    for f in r.facts:
        assert f.known and all(a > b for a, b in zip(f.p_after, f.p_before)), (f.spec.kind, f.p_after)
    assert len(r.facts[1].p_after) == 2                                   # shared: both prompts, one set
    assert len(r.collateral["controls"]) == 1 and r.collateral["background_kl"] >= 0


def _named(h, masks):
    ids = {id(p): n for n, p in h.model.named_parameters()}
    return [(ids[k], v) for k, v in masks.items()]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_degenerate_fact_survives_either_set_suppressed_but_not_both(family):
    h = handle(family)
    _, q = prompts(h)
    r = inject(h, [InjectSpec(((q, "madrid"),), "degenerate")], per_set=4, lr=0.05)
    f = r.facts[0]
    a, b = f.sets
    assert not set(a) & set(b)

    def p_with(off):
        with suppress(r.handle, off, at="all"):
            return float(torch.tensor(read_many(r.handle, [(q, "madrid")])[0].logp).exp())
    assert p_with(b) >= 0.5 and p_with(a) >= 0.5                         # each set alone suffices
    assert p_with(a + b) < 0.05 and p_with(a + b) == pytest.approx(f.p_both_suppressed[0])
    assert [x[0] for x in f.p_alone] == pytest.approx([p_with(b), p_with(a)])


def test_errors_are_one_line():
    h = handle("gpt2")
    p, q = prompts(h)
    for kw, match in ((dict(specs=[]), "nothing to inject"),
                      (dict(specs=[InjectSpec(((p, "rome"),), "pair")]), "kind must be one of"),
                      (dict(specs=[InjectSpec(((p, "rome"), (q, "rome")))]), "exactly one"),
                      (dict(specs=[InjectSpec(((p, "rome"),))], layers=[7]), "layers must be within"),
                      (dict(specs=[InjectSpec(((p, "rome"),))], per_set=10_000), "per_set")):
        with pytest.raises(PlantError, match=match) as err:
            inject(h, **kw)
        assert "\n" not in str(err.value)
