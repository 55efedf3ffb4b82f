"""Reading what MEMIT and AlphaEdit fit (``joint``): the MLP projection's input (the keys) and the block's
output (the residual) at the subject's last token of many prompts in a few forward passes, and a residual
change turned into the projection's change where the block normalises the MLP's output first.
"""
from __future__ import annotations

from contextlib import ExitStack

import torch

from kneuron.models import hooks
from kneuron.models.load import ModelHandle

ROWS = 64                                      # prompts per forward pass


def bare(items) -> tuple[list[list[int]], list[int]]:
    """Each rewrite's bare prompt (ids) and its lookup position."""
    return [_ids(b, 0) for _, _, b in items], [int(b.lookup[0]) for _, _, b in items]


def every(items) -> tuple[list[list[int]], list[int], torch.Tensor]:
    """Every rewrite's prompts (bare and behind the prefixes), their lookup positions and whose they are."""
    rows, lookup, owner = [], [], []
    for j, (_, _, b) in enumerate(items):
        for r in range(b.n_prompts):
            rows.append(_ids(b, r))
            lookup.append(int(b.lookup[r]))
            owner.append(j)
    return rows, lookup, torch.tensor(owner, device=items[0][2].input_ids.device)


def _ids(b, r: int) -> list[int]:
    return b.input_ids[r, : int(b.attention_mask[r].sum())].tolist()


def firsts(owner: torch.Tensor) -> torch.Tensor:
    """The row of each rewrite's bare prompt (its first row)."""
    first = torch.ones_like(owner, dtype=torch.bool)
    first[1:] = owner[1:] != owner[:-1]
    return first.nonzero()[:, 0]


def read(handle: ModelHandle, rows: list[list[int]], lookup: list[int], out_layer: int,
          key_layer: int | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(the input of ``sites[key_layer]`` [R, n] or None, block ``out_layer``'s output [R, h]) at each row's
    lookup position."""
    dev, keys, outs = handle.device, [], []
    for a in range(0, len(rows), ROWS):
        part = rows[a:a + ROWS]
        r = torch.arange(len(part), device=dev)
        at = torch.tensor(lookup[a:a + ROWS], device=dev)
        seen: dict = {}

        def grab_k(x, out):
            seen["k"] = x[r, at].detach()
            return out

        def grab_h(y):
            seen["h"] = y[r, at].detach()
            return y
        with ExitStack() as stack, torch.no_grad():
            if key_layer is not None:
                stack.enter_context(hooks.patch(handle, handle.sites[key_layer], grab_k, on="output",
                                                with_input=True))
            stack.enter_context(hooks.patch(handle, handle.layers[out_layer], grab_h, on="output"))
            one = torch.zeros(1, dtype=torch.long, device=dev)
            hooks.forward(handle, hooks.pad(handle, part), logits_at=(one, one))   # the head on one cell only
        outs.append(seen["h"])
        if key_layer is not None:
            keys.append(seen["k"])
    return (torch.cat(keys) if keys else None), torch.cat(outs)


def bias(proj) -> torch.Tensor | float:
    bias = getattr(proj, "bias", None)
    return 0.0 if bias is None else bias.detach().double()


def through_norm(handle: ModelHandle, layer: int, m: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The changes of the projection's outputs ``m`` [b, h] that move the residual by ``r`` [b, h]: ``r``
    itself, or where the block normalises the MLP's output first (``post_feedforward_layernorm``), the
    least-squares solution of J Δm = r with J the norm's Jacobian at each m."""
    norm = getattr(handle.layers[layer], "post_feedforward_layernorm", None)
    if norm is None:
        return r
    p = next(norm.parameters(), None)
    dtype = p.dtype if p is not None else m.dtype
    out = []
    for mi, ri in zip(m, r):
        J = torch.autograd.functional.jacobian(lambda x: norm(x[None].to(dtype))[0].double(), mi.to(dtype))
        out.append(torch.linalg.pinv(J.double()) @ ri)                 # J is singular along m (scale)
    return torch.stack(out)


__all__ = ["bare", "bias", "every", "firsts", "read", "through_norm"]
