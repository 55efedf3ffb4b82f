"""ROME (Meng et al. 2022): a rank-one update of one layer's MLP output projection W (causal models only).

    k*   the projection's input at the subject's last token, averaged over the rewrite prompt (the fact's
         first usable template) bare and behind the model's own 10 short prefixes (``objective.prefixes``)
    δ    Adam (v_lr 0.5, v_steps 20) on a vector added to the projection's output at that token in every
         prompt, minimising ROME's objective (``objective``): the new object's mean NLL over the prompts
         + kl_factor (0.0625) * KL(P_δ || P) at the subject's last token of "{subject} is a"
         + v_weight_decay (0.5) * ‖δ‖ / ‖m0‖², with ‖δ‖ clamped to clamp_norm (4) * ‖m0‖ after each step,
         stopping once the loss < 0.05 (m0: the projection's output at the subject in the bare prompt).
         These are ROME's GPT-2 XL hyper-parameters; on smollm2 the decay alone is ~0.07 at the clamp,
         so all 20 steps run.
    C    the uncentred second moment E[k kᵀ] of the projection's input (``stats.second_moment``: over text
         the model writes itself by default, ``corpus=`` texts, ``stats="identity"`` as EasyEdit does for
         LLaMA, or a given [n, n] tensor), with a small ridge (1e-4 x its mean diagonal)
    W'   = W + Λuᵀ with u = C⁻¹k* / ‖C⁻¹k*‖ and Λ = δ / (uᵀk), so that W'k = Wk + δ =: v* exactly, for k =
         ``insert``: "prompt" (default, as ROME's code) the bare rewrite prompt's key, "mean" (the paper) k*.

The layer: ``layer=``, else ``default_layer``: 6 for smollm2-135m (of 30), the same depth fraction (0.2)
for other models. ``info`` records the layer, the losses, the norms, the insertion and what C was taken
over (with the seconds it took: ~0 once cached); the Edit (a ``RomeEdit``) carries k*, the key and v*.

Measured on smollm2-135m: 10 EN facts of 5 relations (P36, P37, P30, P103, P1412) that the model knows,
each rewritten to its first wrong object; ES / PS / NS as CounterFact's (NS over 5 facts of the same
relation); the unedited model 0 / 0 / 0.98.

    layer 6, insert="prompt", self-written C   1.0 / 0.86 / 0.92    (the defaults)
    layer 6, insert="prompt", C = identity     1.0 / 0.86 / 0.82
    layer 6, insert="mean", self-written C     0.9 / 0.70 / 0.96
    layer 4 / 8, insert="prompt"               0.9 / 0.73 / 0.94  --  0.9 / 0.74 / 0.78
    an earlier ``sweep_layers`` pass (insert="mean", layers 2 / 4 / 6 / 8 / 10 / 12 / 15): ES 0.8-0.9,
    PS 0.48 / 0.60 / 0.70 / 0.70 / 0.70 / 0.65 / 0.65, NS 0.94 / 1.0 / 0.94 / 0.90 / 0.82 / 0.82 / 0.74

"mean" misses "Canada belongs to the continent of" -> Meganesia: a subject that is the prompt's first
token has a key unlike its keys behind a prefix, so an update exact at k* barely moves it. Chinese facts
work the same way (3 of 4 P36 facts rewritten). Cost: 10-20 s an edit (mean ~14 s) on this project's
shared 2-core CPU, one thread (the part of each prompt before the subject runs once: ``objective.Runner``),
plus the statistics once per model and layer (~1 min, ``stats``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable

import torch

from kneuron.facts.schema import Fact
from kneuron.models.load import ModelHandle
from kneuron.models.sites import is_conv1d, value_vectors

from .base import Change, Edit, EditError, Rewrite, param_name
from .objective import Objective, adam, batch, hooked, prefixes, work_dtype
from .stats import LENGTH, TEXTS, second_moment, second_moments

V_LR, V_STEPS, V_WEIGHT_DECAY, CLAMP_NORM, KL_FACTOR, STOP = 0.5, 20, 0.5, 4.0, 0.0625, 0.05
RIDGE = 1e-4
INSERT = "prompt"
DEFAULT_LAYERS = {"smollm2-135m": 6}          # of 30: the best ES/PS/NS measured (module doc)
DEFAULT_FRACTION = 0.2                         # depth of the default layer in other models


@dataclass
class RomeEdit(Edit):
    """A ROME edit: ``k_star`` (the key averaged over the prompts, [n]), ``key`` (where the update is exact:
    ``k_star``, or the bare prompt's key for insert="prompt") and ``v_star`` (what the edited layer writes
    for ``key``, [h])."""
    k_star: torch.Tensor | None = field(default=None, repr=False)
    key: torch.Tensor | None = field(default=None, repr=False)
    v_star: torch.Tensor | None = field(default=None, repr=False)


def default_layer(handle: ModelHandle) -> int:
    """The layer ROME (and FT-L) edit unless told: DEFAULT_LAYERS for known models, else the layer at
    DEFAULT_FRACTION of the depth."""
    if handle.name in DEFAULT_LAYERS and DEFAULT_LAYERS[handle.name] < handle.n_layers:
        return DEFAULT_LAYERS[handle.name]
    return min(handle.n_layers - 1, round(DEFAULT_FRACTION * handle.n_layers))


def check_layer(handle: ModelHandle, rewrite: Rewrite, layer: int | None, method: str) -> int:
    layer = default_layer(handle) if layer is None else layer
    if not isinstance(layer, int) or not 0 <= layer < handle.n_layers:
        raise EditError(f"{rewrite.fact.where()}{method}: layer {layer!r} is outside {handle.name} "
                        f"({handle.n_layers} layers)")
    return layer


def rome_edit(handle: ModelHandle, rewrite: Rewrite, *, layer: int | None = None,
              stats: str | torch.Tensor = "auto", corpus: Iterable[str] | None = None,
              stats_texts: int = TEXTS, stats_length: int = LENGTH, seed: int = 0, use_prefixes: bool = True,
              v_lr: float = V_LR, v_steps: int = V_STEPS, v_weight_decay: float = V_WEIGHT_DECAY,
              clamp_norm: float = CLAMP_NORM, kl_factor: float = KL_FACTOR, stop: float = STOP,
              insert: str = INSERT, progress: bool = True, **unknown) -> RomeEdit:
    """ROME's rank-one edit of ``rewrite`` at ``layer`` (see the module doc), not applied.

    ``stats``: "auto" (C over ``corpus``, or over ``stats_texts`` x ``stats_length`` tokens the model
    writes), "identity", or an [n, n] tensor. ``seed`` seeds the prefixes and the self-written corpus.
    """
    t0 = time.perf_counter()
    fact = rewrite.fact
    if unknown:
        raise EditError(f"{fact.where()}rome: unknown option(s) {', '.join(sorted(unknown))}")
    if handle.kind != "causal":
        raise EditError(f"{fact.where()}rome supports causal models only")
    if rewrite.new is None:
        raise EditError(f"{fact.where('new')}rome needs a new object")
    if insert not in ("mean", "prompt"):
        raise EditError(f"{fact.where()}rome: insert must be 'mean' or 'prompt', not {insert!r}")
    layer = check_layer(handle, rewrite, layer, "rome")
    proj = handle.sites[layer]
    t_stats = time.perf_counter()
    C, stats_info = _moment(handle, layer, stats, corpus, stats_texts, stats_length, seed, progress, fact)
    stats_info["seconds"] = time.perf_counter() - t_stats           # ~0 once cached
    contexts = prefixes(handle, seed) if use_prefixes else []
    k_star, k_prompt, delta, info = value_delta(handle, rewrite, layer, contexts, v_lr=v_lr, v_steps=v_steps,
                                                v_weight_decay=v_weight_decay, clamp_norm=clamp_norm,
                                                kl_factor=kl_factor, stop=stop)
    key = k_star if insert == "mean" else k_prompt
    u, w_new = rank_one(proj, k_star, delta, C, key)
    with torch.no_grad():
        v_star = proj(key.to(handle.dtype)[None])[0].to(delta.dtype) + delta
    info.update(u_dot_k=float(u @ key), insert=insert, stats=stats_info)
    name = param_name(handle, proj.weight)
    return RomeEdit(handle, "rome", rewrite, [Change(name, w_new)], info, time.perf_counter() - t0,
                    k_star=k_star.detach().cpu(), key=key.detach().cpu(), v_star=v_star.detach().cpu())


def value_delta(handle: ModelHandle, rewrite: Rewrite, layer: int, contexts: list[str], *, v_lr: float,
                v_steps: int, v_weight_decay: float, clamp_norm: float, kl_factor: float, stop: float
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """(k*, k, δ, info): the key averaged over the prompts, the bare prompt's key, and the change of the
    projection's output at the subject's last token that makes the model say the new object."""
    proj = handle.sites[layer]
    b = batch(handle, rewrite, contexts, kl_at="subject")
    obj = Objective(handle, b, reuse_prefix=True)
    dt = work_dtype(handle)
    shape, lookup = obj.run.shape, obj.run.lookup
    rows = torch.arange(shape[0], device=handle.device)
    at = torch.zeros(shape, dtype=dt, device=handle.device)
    at[rows, lookup] = 1.0
    seen = {}

    def grab(x, out):
        seen["k"], seen["m"] = x[rows, lookup].detach(), out[rows, lookup].detach()
        return out

    with hooked(proj, grab, shape):
        nll0 = float(obj.reference())
    k_star = seen["k"][: b.n_prompts].to(dt).mean(0)
    m0_norm = float(seen["m"][0].to(dt).norm())                          # the bare prompt's, as ROME
    delta = torch.zeros(seen["m"].shape[-1], dtype=dt, device=handle.device, requires_grad=True)

    def add(x, out):
        return out + (at[..., None] * delta).to(out.dtype)

    def loss():
        with hooked(proj, add, shape):
            nll, kl = obj()
        decay = v_weight_decay * delta.norm() / max(m0_norm, 1e-12) ** 2
        total = nll + kl_factor * kl + decay
        return total, {"loss": total.item(), "nll": nll.item(), "kl": kl.item(), "decay": decay.item()}

    def clamp():
        limit = clamp_norm * m0_norm
        if float(delta.norm()) > limit:
            delta.mul_(limit / delta.norm())

    log = adam([delta], loss, v_steps, v_lr, clamp, stop)
    delta = delta.detach()
    info = {"layer": layer, "prompts": b.n_prompts, "steps": len(log), "nll_before": nll0,
            "nll": log[-1]["nll"], "kl": log[-1]["kl"], "losses": [s["loss"] for s in log],
            "delta_norm": float(delta.norm()), "m0_norm": m0_norm, "k_norm": float(k_star.norm())}
    return k_star, seen["k"][0].to(dt), delta, info


def rank_one(proj: torch.nn.Module, k: torch.Tensor, delta: torch.Tensor, C: torch.Tensor | None,
             key: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, the projection's new weight in its own layout) for W' = W + Λuᵀ, u = C⁻¹k/‖C⁻¹k‖ (C None:
    the identity), Λ = δ/(uᵀkey) (``key`` default ``k``): W'key = W key + δ."""
    k64 = k.double()
    if C is None:
        u = k64.clone()
    else:
        C = C.to(device=k.device, dtype=torch.float64)
        ridge = RIDGE * float(C.diagonal().mean()) or RIDGE
        u = torch.linalg.solve(C + ridge * torch.eye(len(C), dtype=C.dtype, device=C.device), k64)
    u = u / u.norm()
    lam = delta.double() / (u @ (k64 if key is None else key.double()))
    values = value_vectors(proj).detach()                      # [n, h]
    new = (values.double() + torch.outer(u, lam)).to(values.dtype)
    weight = new if is_conv1d(proj) else new.T
    return u.to(k.dtype), weight.contiguous()


def _moment(handle, layer, stats, corpus, texts, length, seed, progress, fact) -> tuple[torch.Tensor | None, dict]:
    n = handle.n_neurons
    if isinstance(stats, torch.Tensor):
        if stats.shape != (n, n):
            raise EditError(f"{fact.where()}rome: stats must be [{n}, {n}], not {list(stats.shape)}")
        return stats, {"source": "given"}
    if stats == "identity":
        return None, {"source": "identity"}
    if stats != "auto":
        raise EditError(f"{fact.where()}rome: stats must be 'auto', 'identity' or a tensor, not {stats!r}")
    C = second_moment(handle, layer, corpus=corpus, texts=texts, length=length, seed=seed, progress=progress)
    info = {"source": "corpus"} if corpus is not None else {"source": "self", "texts": texts, "length": length,
                                                            "seed": seed}
    return C, info


# ----------------------------------------------------------------------------- choosing the layer

def mean_logp(handle: ModelHandle, prompt: str, obj: str) -> float:
    """Mean log-probability per token of ``obj`` after ``prompt`` (CounterFact's -NLL)."""
    from kneuron.probe import answer_prob
    s = answer_prob(handle, prompt, obj)
    return s.logp / len(s.target_ids)


def scores(handle: ModelHandle, rewrite: Rewrite, neighbours: list[Fact]) -> dict:
    """ES, PS (over the fact's other usable prompts) and NS (neighbours: [own object beats this new one])."""
    from kneuron.facts.templates import queries_for
    qs = queries_for(rewrite.fact, handle.kind, skip_invalid=True)
    wins = [mean_logp(handle, q.prompt, rewrite.new) > mean_logp(handle, q.prompt, rewrite.fact.object) for q in qs]
    ns = []
    for nb in neighbours:
        q = queries_for(nb, handle.kind, skip_invalid=True)[0]
        ns.append(mean_logp(handle, q.prompt, nb.object) > mean_logp(handle, q.prompt, rewrite.new))
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {"es": float(wins[0]), "ps": mean(wins[1:]), "ns": mean(ns)}


def sweep_layers(handle: ModelHandle, rewrites: list[Rewrite], layers: Iterable[int], *,
                 pool: Iterable[Fact] = (), neighbours: int = 5, **options) -> list[dict]:
    """Edit each rewrite with ROME at each of ``layers`` (undone after scoring) and report, per layer, the
    mean ES (new beats old on the rewrite prompt), PS (on the fact's other prompts), NS (facts of the same
    relation and language from the other rewrites and ``pool``, at most ``neighbours``, keep their object
    over this new one) and seconds per edit; the unedited model's scores come as layer None. Second
    moments of all layers are computed together first. ``options`` go to ``rome_edit``."""
    layers = list(layers)
    if options.get("stats", "auto") == "auto":
        second_moments(handle, layers, corpus=options.get("corpus"), texts=options.get("stats_texts", TEXTS),
                       length=options.get("stats_length", LENGTH), seed=options.get("seed", 0),
                       progress=options.get("progress", True))
    others = [o.fact for o in rewrites] + list(pool)
    near = {id(r): [f for f in others if f.subject != r.fact.subject and f.relation == r.fact.relation
                    and f.lang == r.fact.lang][:neighbours] for r in rewrites}
    out = [_average(None, [scores(handle, r, near[id(r)]) for r in rewrites], [])]
    for layer in layers:
        rows, secs = [], []
        for r in rewrites:
            e = rome_edit(handle, r, layer=layer, **options)
            secs.append(e.seconds)
            with e:
                rows.append(scores(handle, r, near[id(r)]))
        out.append(_average(layer, rows, secs))
    return out


def _average(layer, rows: list[dict], secs: list[float]) -> dict:
    def mean(k):
        xs = [r[k] for r in rows if r[k] is not None]
        return sum(xs) / len(xs) if xs else None
    return {"layer": layer, "es": mean("es"), "ps": mean("ps"), "ns": mean("ns"),
            "seconds": sum(secs) / len(secs) if secs else None, "n": len(rows)}
