"""Facts injected into a model's own neurons (Chang et al.'s INJ, NAACL 2024): a ground truth inside a
pretrained model rather than beside it.

``inject(handle, specs)`` teaches each spec's (prompt, new object) pairs by training ONLY a set of the
model's existing neurons -- their key rows (every MLP input projection's row for the neuron, and its bias
entry) and their value vectors (the output projection's column) -- every other weight frozen, bit for bit:

* the set: ``per_set`` neurons drawn (seeded) from ``layers`` (default: the middle third of the depth),
  disjoint from every other fact's; the budget ``per_set / (layers x neurons)`` is recorded;
* the loss: the new objects' NLL (teacher-forced, multi-token objects included) + ``keep`` x the KL from
  the unedited model's next-token distribution at the end of each of ``background`` prompts (the other
  behaviour kept); Adam at ``lr``, stopping once every pair has p(new) >= ``p_target``, at most
  ``max_steps``; each neuron's share (log p lost with it alone suppressed, the others in place) is
  reported: training does not make every neuron of the set carry the fact (a neuron that does not fire at
  the prompt may stay idle; with the answer near p = 1 any one neuron's share is small), so the share says
  how much of the truth a method can be asked to find;
* kinds: "single" (one set, one prompt), "shared" (one set taught every prompt of the spec, e.g. the same
  fact in en and zh: a planted language-independent fact), "degenerate" (two disjoint sets, each taught
  the pairs with the other suppressed at every position, so each suffices alone; the report says whether
  suppressing both removes the fact).

The ground truth is the trained set. Adam with a zero gradient writes nothing, so a weight outside the sets
never changes; ``Injected.changed`` counts the entries that did. The model is copied unless ``inplace``.
"""
from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Sequence

import torch

from kneuron.intervene import suppress
from kneuron.models import hooks
from kneuron.models.load import ModelHandle, from_model
from kneuron.models.sites import is_conv1d
from kneuron.models.targets import encode
from kneuron.neurons import Neuron
from kneuron.plant.prompts import background_prompts
from kneuron.plant.read import read_many, token_ids
from kneuron.plant.surgery import layout_for
from kneuron.plant.types import PlantError

INJECT_KINDS = ("single", "shared", "degenerate")
PER_SET, P_TARGET, LR, MAX_STEPS, KEEP, BACKGROUND = 8, 0.5, 1e-2, 300, 1.0, 24


@dataclass(frozen=True)
class InjectSpec:
    items: tuple[tuple[str, str], ...]       # (prompt, new object): causal prompts end before the answer,
    kind: str = "single"                     # masked ones hold [Y]; "single" | "shared" | "degenerate"


@dataclass
class InjectedFact:
    spec: InjectSpec
    sets: list[list[Neuron]]                 # the trained neurons: one set, two for "degenerate"
    p_before: list[float]                    # p(new object) per item, unedited
    p_after: list[float]                     # with every set in place
    steps: list[int]                         # Adam steps per set
    p_alone: list[list[float]] | None = None        # degenerate: per set, p per item with the other suppressed
    p_both_suppressed: list[float] | None = None    # degenerate: both sets suppressed
    shares: list[float] | None = None               # per neuron (sets in order): log p lost with it suppressed

    @property
    def neurons(self) -> list[Neuron]:
        return [n for s in self.sets for n in s]

    p_target: float = P_TARGET                      # what it was taught to

    @property
    def known(self) -> bool:
        """Every prompt reaches the p it was taught to (with every set in place)."""
        return all(p >= self.p_target for p in self.p_after)


@dataclass
class Injected:
    handle: ModelHandle
    facts: list[InjectedFact]
    layers: list[int]
    per_set: int
    budget: float                            # per_set / (len(layers) x neurons per layer)
    collateral: dict                         # background KL; the controls' log p before and after
    changed: dict[str, int] = field(default_factory=dict)   # parameter -> entries that differ from the unedited
    seconds: float = 0.0


def _params(handle: ModelHandle, lay, layer: int) -> list[tuple[torch.nn.Parameter, str, int]]:
    """(parameter, "row" | "col" | "entry", axis) of what one neuron of ``layer`` owns: each input
    projection's unit (and bias entry) and the output projection's value vector, in the weights' layouts."""
    block = handle.layers[layer]
    out = []
    for path in lay.inputs:
        proj = block.get_submodule(path)
        out.append((proj.weight, 1 if is_conv1d(proj) else 0))
        if proj.bias is not None:
            out.append((proj.bias, 0))
    proj = block.get_submodule(lay.proj)
    out.append((proj.weight, 0 if is_conv1d(proj) else 1))
    return out


def _masks(handle: ModelHandle, lay, neurons: Sequence[Neuron]) -> dict[int, tuple[torch.nn.Parameter, torch.Tensor]]:
    """id(parameter) -> (parameter, a 0/1 mask of the entries the neurons own)."""
    masks: dict = {}
    for layer, i in neurons:
        for p, axis in _params(handle, lay, layer):
            _, m = masks.setdefault(id(p), (p, torch.zeros_like(p, dtype=torch.bool)))
            m.select(axis, i).fill_(True)
    return masks


def _log_probs(handle: ModelHandle, encs) -> torch.Tensor:
    """log p(object) of each encoded pair (sum over its tokens), with gradients."""
    out = []
    for e in encs:
        ids = torch.tensor([e.input_ids], device=handle.device)
        logits = hooks.forward(handle, ids, logits_at=torch.tensor(e.positions, device=handle.device)).logits[0]
        lp = torch.log_softmax(logits.double(), -1)
        out.append(lp[torch.arange(len(e.target_ids)), torch.tensor(e.target_ids, device=lp.device)].sum())
    return torch.stack(out)


def _background(handle: ModelHandle, texts: list[str]) -> list[tuple[list[int], int]]:
    """(token ids, the position read) of each background text: a causal model's next token after it, a
    masked model's prediction at a mask put after it."""
    if handle.kind == "causal":
        return [(ids, len(ids) - 1) for ids in (token_ids(handle, t) for t in texts)]
    mask = handle.tokenizer.mask_token_id
    return [(ids, ids.index(mask)) for ids in (token_ids(handle, f"{t} [Y] .") for t in texts)]


def _background_logprobs(handle: ModelHandle, back: list[tuple[list[int], int]]) -> torch.Tensor:
    """[B, V] log-probs at the read position of each background text (right-padded, one batch)."""
    padded = hooks.pad(handle, [ids for ids, _ in back])
    logits = hooks.forward(handle, padded).logits
    at = torch.tensor([pos for _, pos in back], device=logits.device)
    return torch.log_softmax(logits[torch.arange(len(back), device=logits.device), at].double(), -1)


def _shares(h: ModelHandle, encs, neurons: list[Neuron]) -> list[float]:
    """Per neuron: the log p (summed over the pairs) lost with it alone suppressed at every position."""
    with torch.no_grad():
        full = float(_log_probs(h, encs).sum())
        out = []
        for n in neurons:
            with suppress(h, [n], at="all"):
                out.append(full - float(_log_probs(h, encs).sum()))
    return out


def _train(h: ModelHandle, lay, neurons: list[Neuron], encs, back_ids, back0, p_target, lr, max_steps, keep,
           off: list[Neuron]) -> int:
    """Adam on the entries ``neurons`` own (the rest frozen: zero gradient), the neurons ``off`` suppressed
    at every position, until every pair has p >= p_target; returns the steps taken."""
    masks = _masks(h, lay, neurons)
    params = [p for p, _ in masks.values()]
    flags = {id(p): p.requires_grad for p in h.model.parameters()}
    for p in h.model.parameters():
        p.requires_grad_(id(p) in masks)
    opt = torch.optim.Adam(params, lr=lr)
    steps = 0
    try:
        with suppress(h, off, at="all") if off else nullcontext():
            for steps in range(max_steps + 1):
                with torch.enable_grad():
                    lp = _log_probs(h, encs)
                    if bool((lp.detach().exp() >= p_target).all()) or steps == max_steps:
                        break
                    kl = (back0.exp() * (back0 - _background_logprobs(h, back_ids))).sum(-1).mean() if keep else 0.0
                    loss = -lp.sum() + keep * kl
                    opt.zero_grad()
                    loss.backward()
                for p, m in masks.values():
                    p.grad.mul_(m)
                opt.step()
    finally:
        for p in h.model.parameters():
            p.requires_grad_(flags[id(p)])
    return steps


def inject(handle: ModelHandle, specs: Sequence[InjectSpec], *, per_set: int = PER_SET,
           layers: Sequence[int] | None = None, controls: Sequence[tuple[str, str]] = (),
           background: Sequence[str] | None = None, seed: int = 0, p_target: float = P_TARGET, lr: float = LR,
           max_steps: int = MAX_STEPS, keep: float = KEEP, inplace: bool = False) -> Injected:
    """Inject each spec's facts into sets of the model's own neurons (see the module doc)."""
    t0 = time.perf_counter()
    lay = layout_for(handle)
    specs = list(specs)
    if not specs:
        raise PlantError("nothing to inject: no specs")
    for s in specs:
        if s.kind not in INJECT_KINDS:
            raise PlantError(f"inject kind must be one of {', '.join(INJECT_KINDS)}, not {s.kind!r}")
        if not s.items or (s.kind != "shared" and len(s.items) != 1):
            raise PlantError(f"a {s.kind!r} spec teaches {'one or more' if s.kind == 'shared' else 'exactly one'} "
                             f"(prompt, object) pair, not {len(s.items)}")
    L, N = handle.n_layers, handle.n_neurons
    layers = sorted(set(layers)) if layers is not None else list(range(L // 3, max(L // 3 + 1, 2 * L // 3)))
    if not layers or any(not 0 <= l < L for l in layers):
        raise PlantError(f"layers must be within 0..{L - 1}, not {list(layers)}")
    need = sum(per_set * (2 if s.kind == "degenerate" else 1) for s in specs)
    if per_set < 1 or need > len(layers) * N:
        raise PlantError(f"{need} neurons asked of {len(layers)} layers x {N}: per_set must be >= 1 and fit")
    model = handle.model if inplace else copy.deepcopy(handle.model)
    how = handle.site.how != "table"
    h = from_model(model, handle.tokenizer, kind=handle.kind, name=f"{handle.name}+injected",
                   site=handle.site.proj_path if how else None, layers=handle.site.layers_path if how else None)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(seed)
    pool = [(l, i) for l in layers for i in range(N)]
    order = torch.randperm(len(pool), generator=gen).tolist()
    draw = iter(pool[j] for j in order)
    texts = list(background) if background is not None else background_prompts()
    pick = torch.randperm(len(texts), generator=gen)[:BACKGROUND].tolist()
    back_ids = _background(h, [texts[j] for j in sorted(pick)])
    with torch.no_grad():
        back0 = _background_logprobs(h, back_ids)
    ctrl0 = read_many(h, list(controls)) if controls else []
    facts = []
    for s in specs:
        encs = [encode(h.tokenizer, h.kind, p, o) for p, o in s.items]
        p0 = [math.exp(r.logp) for r in read_many(h, list(s.items))]
        sets = [[next(draw) for _ in range(per_set)] for _ in range(2 if s.kind == "degenerate" else 1)]
        args = (encs, back_ids, back0, p_target, lr, max_steps, keep)
        steps = [_train(h, lay, sets[0], *args, off=sets[1] if len(sets) == 2 else [])]
        if len(sets) == 2:
            steps.append(_train(h, lay, sets[1], *args, off=sets[0]))
        f = InjectedFact(s, sets, p0, [math.exp(r.logp) for r in read_many(h, list(s.items))], steps,
                         p_target=p_target)
        f.shares = _shares(h, encs, f.neurons)          # each neuron's own: log p lost without it
        if len(sets) == 2:
            f.p_alone = []
            for other in (sets[1], sets[0]):
                with suppress(h, other, at="all"):
                    f.p_alone.append([math.exp(r.logp) for r in read_many(h, list(s.items))])
            with suppress(h, sets[0] + sets[1], at="all"):
                f.p_both_suppressed = [math.exp(r.logp) for r in read_many(h, list(s.items))]
        facts.append(f)
    with torch.no_grad():
        back1 = _background_logprobs(h, back_ids)
    ctrl1 = read_many(h, list(controls)) if controls else []
    collateral = {"background_kl": float((back0.exp() * (back0 - back1)).sum(-1).mean()),
                  "controls": [{"prompt": p, "answer": a, "logp_before": r0.logp, "logp_after": r1.logp}
                               for (p, a), r0, r1 in zip(controls, ctrl0, ctrl1)]}
    changed = {n: int((p.detach() != before[n]).sum()) for n, p in model.named_parameters()}
    return Injected(h, facts, layers, per_set, per_set / (len(layers) * N), collateral,
                    {n: c for n, c in changed.items() if c}, time.perf_counter() - t0)


__all__ = ["INJECT_KINDS", "InjectSpec", "Injected", "InjectedFact", "inject"]
