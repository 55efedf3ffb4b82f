"""Plant knowledge neurons whose job is known: a ground truth for scoring localization methods.

``plant(handle, specs, layer)`` grows ONE layer's MLP by K neurons, each storing one new
(counterfactual) fact:

* key: a linear classifier on the MLP's input (the normalised hidden state entering it), fitted
  (squared hinge, ridge) to reach a pre-activation of +``strength`` at the answer position of the
  fact's prompt(s) and at most -``strength`` at every position of a diverse background of other
  prompts (many subjects x several relations and templates) and of the other planted prompts.
  Families whose input projection has a bias use it; the others (Llama-like) get no bias, the
  classifier leans on directions that are nearly constant across inputs (e.g. the mean direction).
* gated MLPs: gate row = the key, up row = the least-norm vector with up.x = 1 on the prompt(s), so
  the neuron act(gate.x) * (up.x) is ~strength there and ~0 elsewhere; plain MLPs: act(key.x + b).
* value: Adam steps on log p(new object | prompt), only the new value vector trained, every new
  neuron alone (the others' value vectors still zero), until p >= ``p_target``.

Every other layer gets K inert neurons (all weights zero: activation exactly 0, no effect) so all
layers keep one width, which the attribution engine needs; the planted neurons are
``(layer, n_old + i)``. The model is copied unless ``inplace=True``.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from torch import nn

from kneuron.errors import KneuronError
from kneuron.organisms.prompts import background_prompts
from kneuron.intervene import answer_positions, suppress
from kneuron.models import hooks
from kneuron.models.load import ModelHandle, from_model
from kneuron.models.sites import ARCHITECTURES, Arch, is_conv1d, value_vectors
from kneuron.models.targets import Encoded, encode
from kneuron.neurons import Neuron

KINDS = ("single", "pair", "shared")
MARGIN = 0.1                  # value training stops once the new object leads by this many nats (and p >= p_target)


class PlantError(KneuronError, ValueError):
    """The model or a spec cannot be planted; the message says why."""


LAYOUTS = {t: a for t, a in ARCHITECTURES.items() if a.inputs}     # the families planting can grow


@dataclass(frozen=True)
class PlantSpec:
    prompt: str                              # causal: text before the answer; masked: with [Y]
    new_object: str                          # one token, e.g. " Rome"
    kind: str = "single"                     # "single" | "pair" (two neurons) | "shared" (one neuron, several prompts)
    extra_prompts: tuple[str, ...] = ()      # shared: the same fact's other prompts (e.g. another language)
    paraphrases: tuple[str, ...] = ()        # reported only: the fact under templates that are not keyed


@dataclass(frozen=True)
class Control:
    prompt: str
    answer: str                              # gold answer (may be several tokens)
    group: str = ""                          # e.g. "same-subject": summarised separately


@dataclass
class PromptCheck:
    prompt: str
    p_before: float                          # p(new object) on the original model
    p_after: float
    top1_after: str                          # the planted model's top token at the answer position
    is_top1: bool                            # new object is the planted model's top-1


@dataclass
class PlantedFact:
    spec: PlantSpec
    neurons: list[Neuron]
    prompts: list[PromptCheck]               # the keyed prompts: prompt, then extra_prompts
    paraphrases: list[PromptCheck]
    value_steps: list[int]                   # Adam steps per neuron
    p_alone: list[float] | None = None       # pair: p(new) with only neuron i (the other suppressed)
    top1_alone: list[bool] | None = None
    p_both_suppressed: float | None = None
    top1_both_suppressed: bool | None = None

    @property
    def p_before(self) -> float:
        return self.prompts[0].p_before

    @property
    def p_after(self) -> float:
        return self.prompts[0].p_after

    @property
    def top1(self) -> bool:
        return all(c.is_top1 for c in self.prompts)


@dataclass
class ControlRow:
    prompt: str
    answer: str
    group: str
    top1_before: str
    top1_after: str
    logp_before: float
    logp_after: float
    max_activation: float                    # largest planted activation at any position / own activation


@dataclass
class Collateral:
    n_prompts: int
    top1_changed: float                      # share of control prompts whose top-1 token changed
    mean_abs_dlogp: float                    # mean |log p(gold) after - before|
    max_abs_dlogp: float
    max_activation: float                    # largest planted activation on a control / own activation
    changed: list[str]                       # prompts whose top-1 changed
    by_group: dict[str, dict] = field(default_factory=dict)


@dataclass
class Planted:
    handle: ModelHandle
    layer: int
    n_old: int
    facts: list[PlantedFact]
    collateral: Collateral
    controls: list[ControlRow]
    key_fit: list[dict]                      # per neuron: margins of the key on its training data

    @property
    def neurons(self) -> list[Neuron]:
        return [n for f in self.facts for n in f.neurons]

    def to_json(self) -> dict:
        facts = [{**asdict(f), "p_before": f.p_before, "p_after": f.p_after, "top1": f.top1} for f in self.facts]
        return {"model": self.handle.name, "layer": self.layer, "n_old": self.n_old,
                "n_neurons": self.handle.n_neurons, "facts": facts, "collateral": asdict(self.collateral),
                "key_fit": self.key_fit}


# ---------------------------------------------------------------- the model's MLP
def layout_for(handle: ModelHandle) -> Arch:
    """The architecture table's entry of the model's family, where it names the MLP's inputs."""
    mt = getattr(handle.model.config, "model_type", None)
    if mt not in LAYOUTS:
        raise PlantError(f"planting supports the MLPs of {', '.join(sorted(LAYOUTS))}; "
                         f"{handle.name} is {mt!r}")
    lay = LAYOUTS[mt]
    if handle.site.proj_path != lay.proj:
        raise PlantError(f"planting needs the neuron site {lay.proj}, not {handle.site.proj_path}")
    return lay


def _key_rows(proj: nn.Module) -> torch.Tensor:
    """View [units, hidden] of an input projection's weight."""
    return proj.weight.T if is_conv1d(proj) else proj.weight


def _append_zeros(w: torch.Tensor, dim: int, k: int) -> nn.Parameter:
    """``w`` with k zero slices appended along ``dim``, as a frozen parameter."""
    shape = list(w.shape)
    shape[dim] = k
    return nn.Parameter(torch.cat([w.detach(), w.new_zeros(shape)], dim), requires_grad=False)


def _grow_units(proj: nn.Module, k: int) -> None:
    """Input projection: k more output units (zero weights and bias)."""
    proj.weight = _append_zeros(proj.weight, 1 if is_conv1d(proj) else 0, k)
    if proj.bias is not None:
        proj.bias = _append_zeros(proj.bias, 0, k)
    if is_conv1d(proj):
        proj.nf += k
    else:
        proj.out_features += k


def _grow_inputs(proj: nn.Module, k: int) -> None:
    """Output projection: k more input units (zero value vectors)."""
    n_in = proj.weight.shape[0] if is_conv1d(proj) else proj.weight.shape[1]
    proj.weight = _append_zeros(proj.weight, 0 if is_conv1d(proj) else 1, k)
    if is_conv1d(proj):
        proj.nx = getattr(proj, "nx", n_in) + k
    else:
        proj.in_features += k


def grow(model: nn.Module, blocks: Sequence[nn.Module], lay: Arch, k: int) -> None:
    """Add k inert neurons (zero weights) to the MLP of every block; update the config's width."""
    with torch.no_grad():
        for b in blocks:
            for p in lay.inputs:
                _grow_units(b.get_submodule(p), k)
            _grow_inputs(b.get_submodule(lay.proj), k)
    cfg = model.config
    old = getattr(cfg, lay.width, None)
    if old is None:                          # gpt2: n_inner None means 4 x hidden
        old = _key_rows(blocks[0].get_submodule(lay.inputs[0])).shape[0] - k
    setattr(cfg, lay.width, old + k)


# ---------------------------------------------------------------- reading the model
def _ids(handle: ModelHandle, prompt: str) -> list[int]:
    tok = handle.tokenizer
    if handle.kind == "masked":
        return tok(prompt.replace("[Y]", tok.mask_token))["input_ids"]
    return tok(prompt.rstrip())["input_ids"]


def mlp_inputs(handle: ModelHandle, layer: int, ids: list[list[int]], batch: int = 32) -> list[torch.Tensor]:
    """Per prompt [T, hidden]: the input of the layer's MLP (its first input projection) at every
    position. Right-padded batches with an attention mask; the forward stops at that projection."""
    proj = handle.layers[layer].get_submodule(layout_for(handle).inputs[0])
    out: list[torch.Tensor] = []
    for s in range(0, len(ids), batch):
        chunk = ids[s:s + batch]
        padded = hooks.pad(handle, chunk)
        T = padded.shape[1]
        with torch.no_grad(), hooks.capture(handle, inputs={"x": proj}, stop_after=proj) as got:
            hooks.forward(handle, padded)
        xs = got["x"].reshape(len(chunk), T, -1).double().cpu()
        out += [xs[j, :len(i)] for j, i in enumerate(chunk)]
    return out


@dataclass
class _Read:
    logp: float                   # log p(answer), all its tokens (teacher forcing)
    top1: int                     # top token id at the first answer position
    acts: torch.Tensor | None     # [n_new] max |activation| of the planted neurons over positions


def _reads(handle: ModelHandle, items: Sequence[tuple[str, str]], watch: tuple[int, int] | None = None,
           batch: int = 16) -> list[_Read]:
    """Right-padded batched forwards: each (prompt, answer)'s gold log-prob and top-1, and with
    ``watch=(layer, n_old)`` the planted neurons' largest |activation| over the prompt's positions.
    A single item runs alone with its answer positions declared, so interventions apply to it."""
    encs = [encode(handle.tokenizer, handle.kind, p, a) for p, a in items]
    out: list[_Read] = []
    for s in range(0, len(encs), batch):
        chunk = encs[s:s + batch]
        padded = hooks.pad(handle, [e.input_ids for e in chunk])
        T = padded.shape[1]
        points = {"a": handle.sites[watch[0]]} if watch is not None else {}
        with torch.no_grad(), hooks.capture(handle, inputs=points) as got, \
                (answer_positions(chunk[0].positions) if len(chunk) == 1 else contextlib.nullcontext()):
            logits = hooks.forward(handle, padded).logits
        if watch is not None:
            got["a"] = got["a"][..., watch[1]:].abs().reshape(len(chunk), T, -1)
        for j, e in enumerate(chunk):
            lp = torch.log_softmax(logits[j, e.positions].double(), -1)
            logp = float(lp[torch.arange(len(e.target_ids)), torch.tensor(e.target_ids)].sum())
            acts = got["a"][j, :len(e.input_ids)].amax(0).double().cpu() if watch else None
            out.append(_Read(logp, int(lp[0].argmax()), acts))
    return out


def _read(handle: ModelHandle, prompt: str, answer: str) -> _Read:
    return _reads(handle, [(prompt, answer)])[0]


# ---------------------------------------------------------------- keys and values
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


def _least_norm_up(pos: torch.Tensor) -> torch.Tensor:
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


# ---------------------------------------------------------------- planting
def _one_token(handle: ModelHandle, prompt: str, obj: str) -> Encoded:
    enc = encode(handle.tokenizer, handle.kind, prompt, obj)
    if len(enc.target_ids) != 1:
        raise PlantError(f"new object {obj!r} is {len(enc.target_ids)} tokens for this tokenizer; "
                         f"planting needs a one-token object")
    return enc


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


def _fit_keys(handle: ModelHandle, lay: Arch, layer: int, specs: list[PlantSpec], encs: list[list[Encoded]],
              background: Sequence[str], gen: torch.Generator, reg: float, neg_share: float):
    """One key per planted neuron, fitted on the original model's MLP inputs at ``layer``: positives
    = the fact's answer position(s); negatives = a ``neg_share`` sample of every background position,
    the fact's other positions and every position of the other planted prompts.
    Returns [(w, b, up or None)], the owning spec of each, and the fit statistics."""
    bg = torch.cat(mlp_inputs(handle, layer, [_ids(handle, p) for p in background]))
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
            keys.append((w, b, _least_norm_up(pos) if gated else None))
            owner.append(i)
            fits.append({"fact": i, **stats})
    return keys, owner, fits


def _check_pair(h: ModelHandle, f: PlantedFact, target: int) -> None:
    """Each neuron alone (the other suppressed), and both suppressed."""
    alone = []
    for n in f.neurons:
        with suppress(h, [m for m in f.neurons if m != n]):
            alone.append(_read(h, f.spec.prompt, f.spec.new_object))
    with suppress(h, f.neurons):
        both = _read(h, f.spec.prompt, f.spec.new_object)
    f.p_alone = [math.exp(r.logp) for r in alone]
    f.top1_alone = [r.top1 == target for r in alone]
    f.p_both_suppressed, f.top1_both_suppressed = math.exp(both.logp), both.top1 == target


def plant(handle: ModelHandle, specs: Sequence[PlantSpec], layer: int, controls: Sequence[Control | tuple] = (),
          background: Sequence[str] | None = None, seed: int = 0, strength: float = 20.0, p_target: float = 0.9,
          reg: float = 1e-3, neg_share: float = 0.8, inplace: bool = False) -> Planted:
    """Plant one neuron per spec (two for kind="pair") in ``layer``; see the module docstring.

    ``controls``: (prompt, gold answer) of other facts, for the collateral report. ``background``:
    prompts whose every position the keys must not fire on (default: the built-in English set of
    ``kneuron.organisms.prompts``); each key sees a ``neg_share`` sample of it drawn with ``seed``.
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
    encs = [[_one_token(handle, p, s.new_object) for p in (s.prompt, *s.extra_prompts)] for s in specs]

    def reads(h: ModelHandle, watch=None):
        keyed = [_reads(h, [(p, s.new_object) for p in (s.prompt, *s.extra_prompts)], watch) for s in specs]
        para = [_reads(h, [(p, s.new_object) for p in s.paraphrases]) for s in specs]
        return keyed, para, _reads(h, [(c.prompt, c.answer) for c in controls], watch)

    keyed0, para0, ctrl0 = reads(handle)
    gen = torch.Generator().manual_seed(seed)

    keys, owner, fits = _fit_keys(handle, lay, layer, specs, encs, background, gen, reg, neg_share)

    # grow every layer by K inert neurons, then write the keys into ``layer``
    n_old, K = handle.n_neurons, len(keys)
    model = handle.model if inplace else copy.deepcopy(handle.model)
    blocks = list(model.get_submodule(handle.site.layers_path))
    grow(model, blocks, lay, K)
    with torch.no_grad():
        kp = blocks[layer].get_submodule(lay.inputs[0])
        for j, (w, b, up) in enumerate(keys):
            _key_rows(kp)[n_old + j] = (strength * w).to(kp.weight.dtype)
            if kp.bias is not None:
                kp.bias[n_old + j] = strength * b
            if up is not None:                                   # gated: up.x = 1 on the fact's prompt(s)
                _key_rows(blocks[layer].get_submodule(lay.inputs[1]))[n_old + j] = up.to(kp.weight.dtype)
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

    def check(p: str, s: PlantSpec, r0: _Read, r1: _Read) -> PromptCheck:
        tgt = _one_token(handle, p, s.new_object).target_ids[0]
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
