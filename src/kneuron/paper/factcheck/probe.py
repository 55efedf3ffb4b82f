"""The probe baseline: a logistic regression on the hidden state (a block's output) at the statement's
last token, one probe per layer fit on the training items, the layer of the best validation AUROC kept.

Why the statement's last token: a causal model's state at the last prompt token is the same for a
fact's true and wrong item (the candidate comes after it), so a probe reading it could not tell them
apart; the probes of the hallucination-detection literature read the statement once the candidate is in
it. Masked models: the candidate filled in for the mask, read at its last token.

The probe is fit on the training part only, its features standardised with that part's statistics; the
test rows are never read while it is fit or its layer chosen.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from kneuron.models import hooks
from kneuron.models.load import ModelHandle
from kneuron.models.targets import encode
from kneuron.paper.stats import auroc
from kneuron.paper.table1 import first_prompt
from kneuron.paper.table3 import Item

L2 = 1e-2                          # the probe's ridge penalty (on standardised features)


def statement_state(handle: ModelHandle, item: Item) -> torch.Tensor:
    """Every block's output at the statement's last token ([n_layers, hidden], float32, CPU): causal,
    the prompt followed by the candidate; masked, the candidate in place of the mask. One forward pass
    through the project's capture hook, stopped after the last block."""
    enc = encode(handle.tokenizer, handle.kind, first_prompt(handle, item.fact)[0], item.candidate)
    ids = list(enc.input_ids)
    if handle.kind == "causal":
        ids.append(enc.target_ids[-1])
        pos = len(ids) - 1
    else:
        for p, t in zip(enc.positions, enc.target_ids):
            ids[p] = t
        pos = enc.positions[-1]
    with torch.no_grad(), hooks.capture(handle, outputs={"h": handle.layers}, at=[pos],
                                        stop_after=handle.layers[-1]) as got:
        hooks.forward(handle, torch.tensor([ids], device=handle.device))
    return torch.stack([h.reshape(-1) for h in got["h"]]).float().cpu()


def hidden_states(handle: ModelHandle, items: list[Item], step: Callable = lambda: None) -> torch.Tensor:
    """``statement_state`` of each item, stacked: [n_items, n_layers, hidden]."""
    out = []
    for it in items:
        out.append(statement_state(handle, it))
        step()
    return torch.stack(out) if out else torch.zeros(0, handle.n_layers, 0)


@dataclass(frozen=True, eq=False)
class Probe:
    """A logistic regression on one layer's standardised features: ``score(x)`` is its logit."""
    layer: int
    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: float

    def score(self, x: torch.Tensor) -> np.ndarray:
        z = (x.double() - self.mean) / self.std
        return (z @ self.weight + self.bias).numpy()


def fit_probe(x: torch.Tensor, labels: Sequence[int], layer: int, l2: float = L2, max_iter: int = 200) -> Probe:
    """Logistic regression on ``x`` [n, d] (one layer's training features): standardised with the
    training mean and standard deviation only (a constant feature is left as it is), mean log-loss +
    l2 / 2 x |w|^2, full-batch L-BFGS in float64 from zero weights. No random draw: the same training
    items give the same probe, bit for bit."""
    x64 = x.double()
    mean, std = x64.mean(0), x64.std(0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    z, y = (x64 - mean) / std, torch.as_tensor(labels, dtype=torch.float64)
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        v = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 / 2 * (w * w).sum()
        v.backward()
        return v
    with torch.enable_grad():
        opt.step(loss)
    return Probe(layer, mean, std, w.detach(), float(b.detach()))


def choose_layer(feats: torch.Tensor, y: list[int], train: list[int], val: list[int],
                 l2: float = L2) -> tuple[Probe, list[float | None]]:
    """One probe per layer fit on the ``train`` rows of ``feats`` [n, layers, d]; the one with the best
    AUROC on the ``val`` rows (ties: the lowest layer) and every layer's validation AUROC. The test rows
    are never read here."""
    yt, yv = [y[i] for i in train], [y[i] for i in val]
    rank = lambda a: -1.0 if a is None else a  # noqa: E731
    best, aucs = None, []
    for layer in range(feats.shape[1]):
        p = fit_probe(feats[train, layer], yt, layer, l2)
        aucs.append(auroc(yv, p.score(feats[val, layer])))
        if best is None or rank(aucs[-1]) > rank(aucs[best.layer]):
            best = p
    return best, aucs
