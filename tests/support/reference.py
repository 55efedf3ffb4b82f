"""A plain, slow reference implementation of IG / AMIG over neurons: one full forward pass per
(answer token, layer, path, step), patching one layer at a time. The fast engine must equal it."""
from __future__ import annotations

import torch

from kneuron.attribution.quadrature import nodes
from kneuron.models.sites import as_bsn
from kneuron.models.targets import encode


def _forward_read(h, ids, pos):
    acts = {}
    hooks = [s.register_forward_pre_hook(lambda m, a, l=l: acts.__setitem__(l, as_bsn(a[0], 1, ids.shape[1])[0, pos].detach()))
             for l, s in enumerate(h.sites)]
    with torch.no_grad():
        logits = h.model(input_ids=ids).logits[0, pos]
    for x in hooks:
        x.remove()
    return torch.stack([acts[l] for l in range(h.n_layers)]), logits


def _value_and_grad(h, ids, pos, layer, point, target, objective):
    point = point.clone().requires_grad_(True)

    def patch(m, a):
        x = as_bsn(a[0], 1, ids.shape[1]).clone()
        x[0, pos] = point
        return (x.view(a[0].shape),) + a[1:]
    hook = h.sites[layer].register_forward_pre_hook(patch)
    try:
        logp = torch.log_softmax(h.model(input_ids=ids).logits[0, pos], -1)[target]
        f = logp.exp() if objective == "prob" else logp
        g, = torch.autograd.grad(f, point)
    finally:
        hook.remove()
    return float(f.detach()), g


def reference_attribute(h, prompt, target, method="ig", steps=20, rule="left", objective="prob",
                        paths="mean", prefactor_kind="activation"):
    enc = encode(h.tokenizer, h.kind, prompt, target)
    full = torch.tensor([enc.input_ids])
    alphas, weights = nodes(rule, steps)
    scores = torch.zeros(h.n_layers, h.n_neurons, dtype=torch.float64)
    for pos, tgt in zip(enc.positions, enc.target_ids):
        ids = full[:, :pos + 1] if h.kind == "causal" else full
        a, _ = _forward_read(h, ids, pos)
        if method == "ig":
            bases = [torch.zeros_like(a)]
        else:
            fill = h.tokenizer.mask_token_id if h.kind == "masked" else h.tokenizer.eos_token_id
            span = enc.positions[0] + 1 if h.kind == "causal" else full.shape[1]
            bases = []
            for i in range(span):
                if int(full[0, i]) in h.tokenizer.all_special_ids:
                    continue
                rep = full.clone()
                rep[0, i] = fill
                bases.append(_forward_read(h, rep[:, :ids.shape[1]], pos)[0])
            if paths == "mean":
                bases = [torch.stack(bases).mean(0)]
        for b in bases:
            pref = a if (method == "amig" and prefactor_kind == "activation") else a - b
            for l in range(h.n_layers):
                G = torch.zeros(h.n_neurons, dtype=torch.float64)
                for al, w in zip(alphas, weights):
                    _, g = _value_and_grad(h, ids, pos, l, b[l] + al.item() * (a[l] - b[l]), tgt, objective)
                    G += w.item() * g.double()
                scores[l] += pref[l].double() * G
    return scores
