"""Fitting a planted neuron: its key (a linear classifier on the MLP's input) and its value (Adam steps).

Keys are fitted on the original model's MLP inputs at the layer (``fit_keys``, ``fit_key``); the value
vector of each new neuron is trained alone on the grown model (``train_value``) until its fact's new
object is the top prediction by ``MARGIN`` nats with p >= p_target.
"""
from __future__ import annotations

from typing import Sequence

import torch

from kneuron.models import hooks
from kneuron.models.load import ModelHandle
from kneuron.models.sites import Arch, value_vectors
from kneuron.models.targets import Encoded
from kneuron.plant.read import mlp_inputs, token_ids
from kneuron.plant.types import PlantError, PlantSpec

MARGIN = 0.1                  # value training stops once the new object leads by this many nats (and p >= p_target)


def fit_key(pos: torch.Tensor, neg: torch.Tensor, bias: bool, reg: float = 1e-3) -> tuple[torch.Tensor, float, dict]:
    """Linear classifier w.x + b >= 1 on ``pos`` [P, D], <= -1 on ``neg`` [N, D] (squared hinge,
    classes weighted equally, ridge ``reg`` on per-dimension-standardised inputs). Scaled so that
    min over pos of w.x + b == 1; returns w, b and the margins on the training data."""
    X = torch.cat([pos, neg]).double()
    y = torch.cat([torch.ones(len(pos)), -torch.ones(len(neg))]).double()
    sw = torch.cat([torch.full((len(pos),), 1 / len(pos)), torch.full((len(neg),), 1 / len(neg))]).double()
    scale = X.pow(2).mean(0).sqrt().clamp_min(1e-8)
    Z = X / scale
    if bias:
        Z = torch.cat([Z, torch.ones(len(Z), 1, dtype=Z.dtype)], 1)
    theta = torch.zeros(Z.shape[1], dtype=Z.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([theta], max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        w = theta[:pos.shape[1]]
        L = (sw * torch.relu(1 - y * (Z @ theta)).pow(2)).sum() + 0.5 * reg * w.pow(2).sum()
        L.backward()
        return L

    with torch.enable_grad():
        opt.step(loss)
    th = theta.detach()
    w, b = th[:pos.shape[1]] / scale, float(th[-1]) if bias else 0.0
    f_pos, f_neg = pos.double() @ w + b, neg.double() @ w + b
    lo = float(f_pos.min())
    if lo <= 0:
        raise PlantError("the key cannot separate the fact's prompt from the background prompts at this layer")
    stats = {"neg_max": float(f_neg.max()) / lo, "neg_firing": int((f_neg > 0).sum()), "n_neg": len(neg)}
    return w / lo, b / lo, stats


def least_norm_up(pos: torch.Tensor) -> torch.Tensor:
    """u with u.x = 1 for every row x of ``pos``, of least norm."""
    P = pos.double()
    return P.T @ torch.linalg.solve(P @ P.T, torch.ones(len(P), dtype=P.dtype))


def train_value(handle: ModelHandle, layer: int, idx: int, queries: list[Encoded], p_target: float = 0.9,
                max_steps: int = 200, gen: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """Value vector of neuron ``idx`` (its weight column must be zero) that makes each query's one-token
    answer the top prediction (by MARGIN nats) with p >= p_target: Adam on -sum log p, only this
    vector trained.
    The step size is ~3% of the residual stream's RMS per coordinate (per unit of activation); with
    ``gen`` the vector starts from seeded noise of a few steps' size, else from zero."""
    site = handle.sites[layer]
    D = value_vectors(site).shape[1]
    batch = [(torch.tensor([q.input_ids], device=handle.device), q.positions[0], q.target_ids[0]) for q in queries]
    ids, pos = batch[0][0], batch[0][1]
    lr = 0.03 * _residual_rms(handle, layer, ids, pos) / _activation(handle, layer, idx, ids, pos)
    v0 = 3 * lr * torch.randn(D, generator=gen, dtype=torch.float64) if gen is not None else torch.zeros(D)
    v = v0.to(handle.device, handle.dtype).requires_grad_(True)
    step = 0
    with torch.enable_grad(), hooks.patch(handle, site, lambda x, y: y + x[..., idx:idx + 1] * v, on="output",
                                          with_input=True):
        opt = torch.optim.Adam([v], lr=lr)
        for step in range(max_steps + 1):
            loss, done = 0.0, True
            for ids, pos, tgt in batch:
                lp = torch.log_softmax(hooks.forward(handle, ids).logits[0, pos].float(), -1)
                loss = loss - lp[tgt]
                other = torch.cat([lp[:tgt], lp[tgt + 1:]]).max()
                done &= bool(lp[tgt].exp() >= p_target and lp[tgt] - other >= MARGIN)
            if done or step == max_steps:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
    return v.detach(), step


def _residual_rms(handle: ModelHandle, layer: int, ids: torch.Tensor, pos: int) -> float:
    with torch.no_grad(), hooks.capture(handle, outputs={"h": handle.layers[layer]}) as got:
        hooks.forward(handle, ids)
    return float(got["h"].reshape(ids.shape[1], -1)[pos].float().pow(2).mean().sqrt())


def _activation(handle: ModelHandle, layer: int, idx: int, ids: torch.Tensor, pos: int) -> float:
    with torch.no_grad(), hooks.capture(handle, inputs={"a": handle.sites[layer]}) as got:
        hooks.forward(handle, ids)
    a = float(got["a"].reshape(ids.shape[1], -1)[pos, idx])
    if abs(a) < 1e-6:
        raise PlantError(f"planted neuron {idx} does not fire on its own prompt")
    return abs(a)


def fit_keys(handle: ModelHandle, lay: Arch, layer: int, specs: list[PlantSpec], encs: list[list[Encoded]],
             background: Sequence[str], gen: torch.Generator, reg: float, neg_share: float):
    """One key per planted neuron, fitted on the original model's MLP inputs at ``layer``: positives
    = the fact's answer position(s); negatives = a ``neg_share`` sample of every background position,
    the fact's other positions and every position of the other planted prompts.
    Returns [(w, b, up or None)], the owning spec of each, and the fit statistics."""
    bg = torch.cat(mlp_inputs(handle, layer, [token_ids(handle, p) for p in background]))
    xs = [mlp_inputs(handle, layer, [e.input_ids for e in fe], batch=1) for fe in encs]
    key_proj = handle.layers[layer].get_submodule(lay.inputs[0])
    has_bias, gated = key_proj.bias is not None, len(lay.inputs) == 2
    keys, owner, fits = [], [], []
    for i, s in enumerate(specs):
        pos = torch.stack([x[e.positions[0]] for x, e in zip(xs[i], encs[i])])
        own = [torch.cat([x[:e.positions[0]], x[e.positions[0] + 1:]]) for x, e in zip(xs[i], encs[i])]
        others = [x for j in range(len(specs)) if j != i for x in xs[j]]
        for _ in range(2 if s.kind == "pair" else 1):
            keep = torch.randperm(len(bg), generator=gen)[:max(1, int(neg_share * len(bg)))]
            w, b, stats = fit_key(pos, torch.cat([bg[keep], *own, *others]), has_bias, reg)
            keys.append((w, b, least_norm_up(pos) if gated else None))
            owner.append(i)
            fits.append({"fact": i, **stats})
    return keys, owner, fits
