"""plant(handle, specs, layer): grow, write the keys, train the values, and report (see the package docstring)."""
from __future__ import annotations

import copy
import math
from typing import Sequence

import torch

from kneuron.intervene import suppress
from kneuron.models.load import ModelHandle, from_model
from kneuron.models.sites import value_vectors
from kneuron.plant.fit import fit_keys, train_value
from kneuron.plant.read import Read, one_token, read_many, read_one
from kneuron.plant.surgery import grow, key_rows, layout_for
from kneuron.plant.types import (KINDS, Collateral, Control, ControlRow, Planted, PlantedFact, PlantError,
                                           PlantSpec, PromptCheck)
from kneuron.plant.prompts import background_prompts


def _check_specs(specs: list[PlantSpec]) -> None:
    if not specs:
        raise PlantError("nothing to plant: no specs")
    seen = set()
    for s in specs:
        if s.kind not in KINDS:
            raise PlantError(f"kind must be one of {', '.join(KINDS)}, not {s.kind!r}")
        if s.kind == "shared" and not s.extra_prompts:
            raise PlantError(f"a shared neuron needs extra_prompts ({s.prompt!r})")
        if s.kind != "shared" and s.extra_prompts:
            raise PlantError(f"extra_prompts are for kind='shared' only ({s.prompt!r})")
        for p in (s.prompt, *s.extra_prompts):
            if p in seen:
                raise PlantError(f"prompt planted twice: {p!r}")
            seen.add(p)


def _summary(rows: list[ControlRow]) -> dict:
    if not rows:
        return {"n_prompts": 0, "top1_changed": 0.0, "mean_abs_dlogp": 0.0, "max_abs_dlogp": 0.0,
                "max_activation": 0.0, "changed": []}
    d = [abs(r.logp_after - r.logp_before) for r in rows]
    changed = [r.prompt for r in rows if r.top1_after != r.top1_before]
    return {"n_prompts": len(rows), "top1_changed": len(changed) / len(rows), "mean_abs_dlogp": sum(d) / len(d),
            "max_abs_dlogp": max(d), "max_activation": max(r.max_activation for r in rows), "changed": changed}


def _check_pair(h: ModelHandle, f: PlantedFact, target: int) -> None:
    """Each neuron alone (the other suppressed), and both suppressed."""
    alone = []
    for n in f.neurons:
        with suppress(h, [m for m in f.neurons if m != n]):
            alone.append(read_one(h, f.spec.prompt, f.spec.new_object))
    with suppress(h, f.neurons):
        both = read_one(h, f.spec.prompt, f.spec.new_object)
    f.p_alone = [math.exp(r.logp) for r in alone]
    f.top1_alone = [r.top1 == target for r in alone]
    f.p_both_suppressed, f.top1_both_suppressed = math.exp(both.logp), both.top1 == target


def plant(handle: ModelHandle, specs: Sequence[PlantSpec], layer: int, controls: Sequence[Control | tuple] = (),
          background: Sequence[str] | None = None, seed: int = 0, strength: float = 20.0, p_target: float = 0.9,
          reg: float = 1e-3, neg_share: float = 0.8, inplace: bool = False) -> Planted:
    """Plant one neuron per spec (two for kind="pair") in ``layer``; see the module docstring.

    ``controls``: (prompt, gold answer) of other facts, for the collateral report. ``background``:
    prompts whose every position the keys must not fire on (default: the built-in English set of
    ``kneuron.plant.prompts``); each key sees a ``neg_share`` sample of it drawn with ``seed``.
    """
    lay = layout_for(handle)
    if not 0 <= layer < handle.n_layers:
        raise PlantError(f"layer {layer} is outside 0..{handle.n_layers - 1}")
    specs = list(specs)
    _check_specs(specs)
    controls = [c if isinstance(c, Control) else Control(*c) for c in controls]
    if background is None:
        background = background_prompts()
    tok = handle.tokenizer
    encs = [[one_token(handle, p, s.new_object) for p in (s.prompt, *s.extra_prompts)] for s in specs]

    def reads(h: ModelHandle, watch=None):
        keyed = [read_many(h, [(p, s.new_object) for p in (s.prompt, *s.extra_prompts)], watch) for s in specs]
        para = [read_many(h, [(p, s.new_object) for p in s.paraphrases]) for s in specs]
        return keyed, para, read_many(h, [(c.prompt, c.answer) for c in controls], watch)

    keyed0, para0, ctrl0 = reads(handle)
    gen = torch.Generator().manual_seed(seed)

    keys, owner, fits = fit_keys(handle, lay, layer, specs, encs, background, gen, reg, neg_share)

    # grow every layer by K inert neurons, then write the keys into ``layer``
    n_old, K = handle.n_neurons, len(keys)
    model = handle.model if inplace else copy.deepcopy(handle.model)
    blocks = list(model.get_submodule(handle.site.layers_path))
    grow(model, blocks, lay, K)
    with torch.no_grad():
        kp = blocks[layer].get_submodule(lay.inputs[0])
        for j, (w, b, up) in enumerate(keys):
            key_rows(kp)[n_old + j] = (strength * w).to(kp.weight.dtype)
            if kp.bias is not None:
                kp.bias[n_old + j] = strength * b
            if up is not None:                                   # gated: up.x = 1 on the fact's prompt(s)
                key_rows(blocks[layer].get_submodule(lay.inputs[1]))[n_old + j] = up.to(kp.weight.dtype)
    how = handle.site.how != "table"
    new = from_model(model, tok, kind=handle.kind, name=f"{handle.name}+planted",
                     site=handle.site.proj_path if how else None, layers=handle.site.layers_path if how else None)

    # values: each neuron alone (the others' value vectors are still zero), then written together
    trained = [train_value(new, layer, n_old + j, encs[i], p_target, gen=gen) for j, i in enumerate(owner)]
    with torch.no_grad():
        vv = value_vectors(new.sites[layer])
        for j, (v, _) in enumerate(trained):
            vv[n_old + j] = v.to(vv.dtype)

    keyed1, para1, ctrl1 = reads(new, watch=(layer, n_old))
    own_act = torch.zeros(K, dtype=torch.float64)
    for j, i in enumerate(owner):
        own_act[j] = min(float(r.acts[j]) for r in keyed1[i])

    def check(p: str, s: PlantSpec, r0: Read, r1: Read) -> PromptCheck:
        tgt = one_token(handle, p, s.new_object).target_ids[0]
        return PromptCheck(p, math.exp(r0.logp), math.exp(r1.logp), tok.decode([r1.top1]), r1.top1 == tgt)

    facts = []
    for i, s in enumerate(specs):
        idx = [j for j, o in enumerate(owner) if o == i]
        f = PlantedFact(s, [(layer, n_old + j) for j in idx],
                        [check(p, s, a, b) for p, a, b in zip((s.prompt, *s.extra_prompts), keyed0[i], keyed1[i])],
                        [check(p, s, a, b) for p, a, b in zip(s.paraphrases, para0[i], para1[i])],
                        [trained[j][1] for j in idx])
        if s.kind == "pair":
            _check_pair(new, f, encs[i][0].target_ids[0])
        facts.append(f)

    rows = [ControlRow(c.prompt, c.answer, c.group, tok.decode([a.top1]), tok.decode([b.top1]), a.logp, b.logp,
                       float((b.acts / own_act.clamp_min(1e-12)).max()))
            for c, a, b in zip(controls, ctrl0, ctrl1)]
    groups = sorted({r.group for r in rows if r.group})
    coll = Collateral(**_summary(rows), by_group={g: _summary([r for r in rows if r.group == g]) for g in groups})
    return Planted(new, layer, n_old, facts, coll, rows, fits)
