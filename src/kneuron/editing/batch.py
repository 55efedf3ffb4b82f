"""Batch editing: many edits computed on the same (unedited) model, applied together as one ``Edit``.

    edits = [kneuron.edit(h, fact, new, method="kn") for fact, new in rewrites]   # none applied
    with batch_edit(edits):                                                           # all of them at once
        ...

How edits that touch the same weight entry combine depends on the method (its ``batch_rule``):

    add   kn, kn-eai, likn, kn-opt   each edit's change (its new value minus the unedited value) is added:
          likn-transfer              two facts that share a neuron both move its value vector
    set   kn-erase                   the entry takes the edit's value (erasure writes zeros, so the union
                                     of the facts' neurons is zeroed)

    joint memit, alphaedit           the batch is ONE edit computed from every rewrite together (a least-
                                     squares update of several layers): ``edit_batch``, not ``batch_edit``

    e = edit_batch(h, [(fact, new), ...], method="memit")    # any method with a batch mode: joint ones
                                                             # edit jointly, the others edit each rewrite
                                                             # and ``batch_edit`` combines the edits

ROME and FT-L have no batch mode here: summing rank-one updates computed one at a time is not ROME's batch
update (that is MEMIT), and FT-L's batch is one fine-tuning on every rewrite. Use the sequential mode for them.
"""
from __future__ import annotations

import torch

from kneuron.errors import ConfigError
from kneuron.facts.schema import Fact
from kneuron.models.load import ModelHandle

from .base import CONTEXT, Change, Edit, EditContext, EditError, Rewrite
from .registry import METHODS, edit, lookup, method_class, method_for


def edit_batch(handle: ModelHandle, rewrites, *, method: str = "memit", on_error=None, **options) -> Edit:
    """One Edit (not applied) that makes every rewrite of ``rewrites`` (``Rewrite``s or (fact, new) pairs)
    at once, computed on the model as it is now. A "joint" method computes it from all of them together
    (``on_error(i, rewrite, err)``: a rewrite it cannot edit is left out and said; None: raised); an "add" /
    "set" method edits each rewrite with ``options`` and ``batch_edit`` combines them. ``options``: the
    method's own and the edit's context (as ``registry.edit``)."""
    cls = method_class(method)
    if cls.batch_rule is None:
        raise EditError(f"{cls.name} has no batch mode (methods with one: {', '.join(_with_batch())}); "
                        "use the single or sequential mode")
    rws = [r if isinstance(r, Rewrite) else Rewrite(*r) for r in rewrites]
    if not rws:
        raise EditError("batch: no rewrites to edit")
    bad = [type(r.fact).__name__ for r in rws if not isinstance(r.fact, Fact)]
    if bad:
        raise EditError(f"batch: a rewrite's fact is a {bad[0]}, not a Fact")
    if cls.batch_rule != "joint":
        return batch_edit([edit(handle, r.fact, r.new, method=method, **options) for r in rws])
    ctx = {k: options.pop(k) for k in list(options) if k in CONTEXT}
    extra = sorted(set(ctx) - set(cls.context))
    if extra:
        raise ConfigError(f"{cls.name}: unknown option(s) {', '.join(extra)} (per edit it takes: "
                          f"{', '.join(cls.context)})")
    m = method_for(method, **options)
    return m.edit_batch(handle, rws, EditContext(**ctx), on_error)


def _with_batch() -> list[str]:
    return [n for n, c in METHODS.items() if c.batch_rule is not None]


def batch_rule(method: str) -> str | None:
    cls = lookup(method)
    return None if cls is None else cls.batch_rule


def batch_edit(edits: list[Edit]) -> Edit:
    """One Edit (not applied) that makes every edit of ``edits`` at once; each must be computed on the
    model as it is now, by the same method, and not applied. ``info``: the batch size and each edit's fact
    id. Undo restores every bit, as for a single edit."""
    if not edits:
        raise EditError("batch: no edits to combine")
    method, handle = edits[0].method, edits[0].handle
    rule = batch_rule(method)
    if rule is None:
        raise EditError(f"{method} has no batch mode (methods with one: {', '.join(_with_batch())}); "
                        "use the single or sequential mode")
    if rule == "joint":
        raise EditError(f"{method} makes a batch as one joint edit: pass the rewrites to edit_batch(handle, "
                        f"rewrites, method={method!r})")
    for e in edits:
        if e.method != method:
            raise EditError(f"batch: every edit must be made by one method ({method}), not also {e.method}")
        if e.handle is not handle:
            raise EditError("batch: the edits are of different models")
        if e.applied:
            raise EditError(f"batch: a {method} edit is applied; combine edits computed on the unedited model")
    params = dict(handle.model.named_parameters())
    delta: dict[str, torch.Tensor] = {}
    touched: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for e in edits:
            for c in e.changes:
                if c.param not in params:
                    raise EditError(f"batch: the model has no parameter {c.param!r}")
                p = params[c.param]
                if c.param not in delta:
                    delta[c.param] = torch.zeros(p.shape, dtype=torch.float64, device=p.device)
                    touched[c.param] = torch.zeros(p.shape, dtype=torch.bool, device=p.device)
                idx = slice(None) if c.index is None else c.index
                change = c.new_value(p[idx]).to(device=p.device, dtype=torch.float64) - p[idx].double()
                if rule == "add":
                    delta[c.param][idx] += change
                else:
                    delta[c.param][idx] = change
                touched[c.param][idx] = True
        changes = []
        for name, d in delta.items():
            p = params[name]
            where = touched[name].nonzero(as_tuple=True)
            changes.append(Change(name, (p.double() + d)[where].to(p.dtype), where))
    info = {"batch": len(edits),
            "facts": [e.rewrite.fact.id if e.rewrite is not None else None for e in edits]}
    return Edit(handle, method, None, changes, info, sum(e.seconds for e in edits))


__all__ = ["batch_edit", "batch_rule", "edit_batch"]
