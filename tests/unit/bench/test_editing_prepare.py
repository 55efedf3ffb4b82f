"""kneuron.bench.editing.prepare: the bench's ROME layer sweep tries ``rome.candidate_layers`` (the
list the bench computed itself before, kept here as the reference) unless the config names the layers."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from kneuron.bench.editing import prepare
from kneuron.editing.methods.ft import L_BOUNDS
from kneuron.editing.methods import rome
from kneuron.editing.methods.rome import candidate_layers, default_layer


def old_sweep_layers(h) -> list[int]:
    """The bench's own list before it used candidate_layers: 8 layers spread over the depth + the default."""
    n = h.n_layers
    return sorted({round(i * (n - 1) / 7) for i in range(8)} | {default_layer(h)})


@pytest.mark.parametrize("name", ["some-model", "smollm2-135m"])
def test_candidate_layers_are_the_bench_sweeps_old_list(name):
    for n in range(1, 65):
        h = SimpleNamespace(name=name, n_layers=n)
        assert candidate_layers(h) == old_sweep_layers(h), n
    assert candidate_layers(SimpleNamespace(name="smollm2-135m", n_layers=30)) == [0, 4, 6, 8, 12, 17, 21, 25, 29]


def _ctx(n_layers: int, rome_layers=None, tune=()):
    cfg = SimpleNamespace(options=lambda m: {"stats": "identity"}, rome_layers=rome_layers, sweep_cases=1)
    disk = SimpleNamespace(sweep=lambda m: None, put_sweep=lambda s, m: None, sweep_part=lambda m, layer, c: None,
                           put_sweep_part=lambda m, layer, c, s: None)
    cases = [SimpleNamespace(langs=["en"], case_id=i) for i in range(3)]
    return SimpleNamespace(cfg=cfg, handle=SimpleNamespace(name="x", n_layers=n_layers), cases=cases, disk=disk,
                           show=False, unedited=lambda c: {"en": {}}, edit=None,
                           tune=[SimpleNamespace(langs=["en"], case_id=i) for i in tune])


@pytest.mark.parametrize("given", [None, (2, 1)])
def test_rome_layer_sweeps_candidate_layers_unless_given(monkeypatch, given):
    seen = []

    def choose(h, cases, layers, before, **kw):
        seen.append(list(layers))
        return layers[-1], [{"layer": l} for l in layers]

    monkeypatch.setattr(rome, "choose_layer", choose)
    ctx = _ctx(12, given)
    best, sweep = prepare.rome_layer(ctx)
    want = list(given) if given else candidate_layers(ctx.handle)
    assert seen == [want] and best == want[-1] and sweep.best == best
    assert [r["layer"] for r in sweep.layers] == want and sweep.cases == [0] and sweep.lang == "en"


@pytest.mark.parametrize("tune, swept", [((), [0]), ((3, 4), [3, 4])])
def test_the_sweep_runs_on_the_held_out_cases_where_there_are_any(monkeypatch, tune, swept):
    seen = []

    def choose(h, cases, layers, before, **kw):
        seen.append([c.case_id for c in cases])
        return layers[0], [{"layer": l} for l in layers]

    monkeypatch.setattr(rome, "choose_layer", choose)
    _, sweep = prepare.rome_layer(_ctx(12, (1, 2), tune))
    assert seen == [swept] and sweep.cases == swept and sweep.held_out is bool(tune)
    assert ("held_out" in sweep.to_json()) is bool(tune) and type(sweep).from_json(sweep.to_json()) == sweep


def test_ft_l_is_swept_as_rome_is_with_its_own_edits(monkeypatch):
    """prepare.layer_sweep("ft-l"): its L∞ bound swept first, then the same candidate layers and cases as
    ROME's, each edit made by ft-l, stored under its name; a given ``ft-l.layer`` is used unswept."""
    seen, stored = [], []

    def choose(h, cases, layers, before, edit_at=None, **kw):
        edit_at(cases[0], layers[0])
        return layers[1], [{"layer": l} for l in layers]

    monkeypatch.setattr(rome, "choose_layer", choose)
    ctx = _ctx(12, None, (5,))
    ctx.edit = lambda m, c, lang, **kw: seen.append((m, c.case_id, lang, kw))
    ctx.disk.put_sweep = lambda s, m: stored.append(m)
    best, sweep = prepare.layer_sweep(ctx, "ft-l")
    want = candidate_layers(ctx.handle)
    assert best == want[1] and sweep.cases == [5] and sweep.held_out and stored == ["ft-l"]
    # its bound first, at its default layer 0 (the stub picks the second bound), then the layers at that bound
    assert seen == [("ft-l", 5, "en", {"layer": 0, "norm_bound": L_BOUNDS[0]}),
                    ("ft-l", 5, "en", {"layer": want[0], "norm_bound": L_BOUNDS[1]})]
    assert sweep.best_bound == L_BOUNDS[1] and sweep.bound_layer == 0 and len(sweep.bounds) == len(L_BOUNDS)
    seen.clear()
    ctx.cfg.options = lambda m: {"norm_bound": 1e-3}                  # a given bound: the layers alone
    best, sweep = prepare.layer_sweep(ctx, "ft-l")
    assert seen == [("ft-l", 5, "en", {"layer": want[0]})] and sweep.bounds is None
    ctx.cfg.options = lambda m: {"layer": 3}
    assert prepare.layer_sweep(ctx, "ft-l") == (3, None)
