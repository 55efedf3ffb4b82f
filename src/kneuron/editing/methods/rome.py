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
         ``insert``: "auto" (default, below), "prompt" (ROME's code) the bare rewrite prompt's key, "mean"
         (the paper and r-ROME: the same k* on both sides) k*, "start" the rewrite prompt's key behind the
         model's own document-start token (``stats.start_ids``: its BOS where the tokenizer adds one -- then
         the same as "prompt" -- else "<|endoftext|>"), so the subject never sits on the first position.

The layer: ``layer=``, else ``default_layer``: 6 for smollm2-135m (of 30), the same depth fraction (0.2)
for other models; ``choose_layer`` sweeps layers on CounterFact-style cases (``editing.metrics``) and
keeps the best. ``info`` records the layer, the losses, the norms, the insertion and what C was taken over
(with the seconds it took: ~0 once cached); the Edit (a ``RomeEdit``) carries k*, the key and v*.

Why "auto" is the default insertion. With u fixed by k*, ‖ΔW‖ scales as 1/(u·key). A subject that is the
prompt's first token (the attention sink) has a bare-prompt key unlike its keys behind a prefix: "prompt"
then edits the bare prompt exactly but u·k_prompt can be near 0 and the update huge -- r-ROME's *disabling
edits*, which ES counts as successes; "mean" is always small but misses the bare prompt where its key is far
from k*. "auto" takes the bare prompt's key unless that update would be more than ``auto_limit`` (10) times
r-ROME's, r = u·k*/u·k_prompt (or r ≤ 0), and k* then; ``info`` records which key and r. Chosen on 40
held-out English records of smollm2-135m against "prompt", "mean" and "start" (``bench/rome_insert.py``;
the numbers and the limit's sweep in BENCHMARKS.md, "ROME's insertion key"). The other measured choices
(layer, C) and costs are in BENCHMARKS.md, "Editing methods".
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterable, Literal

import torch

from kneuron.errors import ConfigError
from kneuron.models import hooks
from kneuron.models.load import ModelHandle
from kneuron.models.registry import CARDS
from kneuron.models.sites import is_conv1d

from ..base import Change, Edit, EditContext, EditError, EditMethod, Rewrite, param_name
from ..lowrank import factor_dtype, low_rank_add
from ..metrics import Measured, measure, record_scores, summarize
from ..objective import Objective, adam, batch, last_token_of, prefixes, rewrite_prompt, work_dtype
from ..records import Case
from ..stats import LENGTH, TEXTS, second_moment, start_ids

V_LR, V_STEPS, V_WEIGHT_DECAY, CLAMP_NORM, KL_FACTOR, STOP = 0.5, 20, 0.5, 4.0, 0.0625, 0.05
RIDGE = 1e-4
INSERT = "auto"
INSERTS = ("auto", "prompt", "mean", "start")
AUTO_LIMIT = 10.0               # insert="auto": the bare prompt's key unless its update is > 10x r-ROME's
DEFAULT_LAYERS = {n: c.rome_layer for n, c in CARDS.items() if c.rome_layer is not None}   # the model cards'
DEFAULT_FRACTION = 0.2                         # depth of the default layer in other models


@dataclass
class RomeEdit(Edit):
    """A ROME edit: ``k_star`` (the key averaged over the prompts, [n]), ``key`` (where the update is exact:
    ``k_star``, the bare prompt's key, or that key behind the start token; see ``insert``) and ``v_star`` (what the edited layer writes
    for ``key``, [h])."""
    k_star: torch.Tensor | None = field(default=None, repr=False)
    key: torch.Tensor | None = field(default=None, repr=False)
    v_star: torch.Tensor | None = field(default=None, repr=False)


def default_layer(handle: ModelHandle) -> int:
    """The layer ROME (and FT-M) edit unless told: DEFAULT_LAYERS for known models, else the layer at
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


@dataclass(frozen=True)
class ROME(EditMethod):
    """ROME's rank-one edit at ``layer`` (see the module doc). ``stats``: "auto" (C over ``corpus``, or
    over ``stats_texts`` x ``stats_length`` tokens the model writes) or "identity"; a precomputed C is the
    context's ``moment``. ``seed`` seeds the prefixes and the self-written corpus."""
    layer: int | None = None
    stats: Literal["auto", "identity"] = "auto"
    corpus: tuple[str, ...] | None = None
    stats_texts: int = TEXTS
    stats_length: int = LENGTH
    seed: int = 0
    use_prefixes: bool = True
    v_lr: float = V_LR
    v_steps: int = V_STEPS
    v_weight_decay: float = V_WEIGHT_DECAY
    clamp_norm: float = CLAMP_NORM
    kl_factor: float = KL_FACTOR
    stop: float = STOP
    insert: Literal["auto", "prompt", "mean", "start"] = INSERT
    auto_limit: float = AUTO_LIMIT
    name = "rome"
    help = "ROME: a rank-one update of one layer's MLP output projection (causal models)"
    causal_only: ClassVar[bool] = True
    context: ClassVar[tuple[str, ...]] = ("moment", "progress")
    sweeps_layer: ClassVar[bool] = True

    def __post_init__(self):
        if self.insert not in INSERTS:
            raise ConfigError(f"rome: insert must be one of {', '.join(INSERTS)}, not {self.insert!r}")
        if not isinstance(self.stats, str) or self.stats not in ("auto", "identity"):
            what = repr(self.stats) if isinstance(self.stats, str) else f"a {type(self.stats).__name__}"
            raise ConfigError(f"rome: stats must be 'auto' or 'identity', not {what} (a precomputed C is the "
                              "edit's moment=)")
        if self.corpus is not None:
            object.__setattr__(self, "corpus", tuple(self.corpus))

    def edit(self, handle: ModelHandle, rewrite: Rewrite, ctx: EditContext = EditContext()) -> "RomeEdit":
        t0 = time.perf_counter()
        self.check(handle, rewrite)
        fact = rewrite.fact
        layer = check_layer(handle, rewrite, self.layer, "rome")
        proj = handle.sites[layer]
        t_stats = time.perf_counter()
        stats = self.stats if ctx.moment is None else ctx.moment
        C, stats_info = _moment(handle, layer, stats, self.corpus, self.stats_texts, self.stats_length, self.seed,
                                ctx.progress, fact)
        stats_info["seconds"] = time.perf_counter() - t_stats           # ~0 once cached
        contexts = prefixes(handle, self.seed) if self.use_prefixes else []
        k_star, k_prompt, delta, info = value_delta(handle, rewrite, layer, contexts, v_lr=self.v_lr,
                                                    v_steps=self.v_steps, v_weight_decay=self.v_weight_decay,
                                                    clamp_norm=self.clamp_norm, kl_factor=self.kl_factor,
                                                    stop=self.stop)
        u = direction(k_star, C)
        used, chosen = self.insert, {}
        if used == "auto":
            used, r = auto_insert(u, k_star, k_prompt, self.auto_limit)
            chosen = {"inserted": used, "key_ratio": r if math.isfinite(r) else None}    # JSON: no inf
        key = insertion_key(handle, rewrite, layer, used, k_star, k_prompt)
        u, w_new, factors = rank_one(proj, k_star, delta, C, key, u=u)
        with torch.no_grad():
            v_star = proj(key.to(handle.dtype)[None])[0].to(delta.dtype) + delta
        info.update(u_dot_k=float(u @ key), insert=self.insert, **chosen, stats=stats_info)
        name = param_name(handle, proj.weight)
        return RomeEdit(handle, self.name, rewrite, [Change(name, w_new, low_rank=factors)], info, time.perf_counter() - t0,
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

    with hooks.patch(handle, proj, grab, on="output", with_input=True):
        nll0 = float(obj.reference())
    k_star = seen["k"][: b.n_prompts].to(dt).mean(0)
    m0_norm = float(seen["m"][0].to(dt).norm())                          # the bare prompt's, as ROME
    delta = torch.zeros(seen["m"].shape[-1], dtype=dt, device=handle.device, requires_grad=True)

    def add(x, out):
        return out + (at[..., None] * delta).to(out.dtype)

    def loss():
        with hooks.patch(handle, proj, add, on="output", with_input=True):
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


def insertion_key(handle: ModelHandle, rewrite: Rewrite, layer: int, insert: str, k_star: torch.Tensor,
                  k_prompt: torch.Tensor) -> torch.Tensor:
    """The key the update is exact at (``insert``): k*, the bare prompt's, or the bare prompt's behind the
    document-start token (one more forward pass, read at the subject's last token)."""
    if insert == "mean":
        return k_star
    if insert == "prompt":
        return k_prompt
    prompt, at = rewrite_prompt(rewrite, handle.kind)
    tok = handle.tokenizer
    bare = tok(prompt)["input_ids"]
    ids = start_ids(tok, prompt)
    shift = len(ids) - len(bare)                  # 0 where the tokenizer puts its own BOS first
    if shift == 0:
        return k_prompt
    pos = last_token_of(handle, prompt, at, at + len(rewrite.fact.subject), bare) + shift
    proj = handle.sites[layer]
    with torch.no_grad(), hooks.capture(handle, inputs={"k": proj}, at=[pos], stop_after=proj) as got:
        hooks.forward(handle, torch.tensor([ids], device=handle.device), head=False)
    return got["k"][0, 0].to(k_prompt.dtype)


def direction(k: torch.Tensor, C: torch.Tensor | None) -> torch.Tensor:
    """u = C⁻¹k/‖C⁻¹k‖ (float64; C None: the identity), with ROME's small ridge on C."""
    k64 = k.double()
    if C is None:
        u = k64.clone()
    else:
        C = C.to(device=k.device, dtype=torch.float64)
        ridge = RIDGE * float(C.diagonal().mean()) or RIDGE
        u = torch.linalg.solve(C + ridge * torch.eye(len(C), dtype=C.dtype, device=C.device), k64)
    return u / u.norm()


def auto_insert(u: torch.Tensor, k_star: torch.Tensor, k_prompt: torch.Tensor, limit: float = AUTO_LIMIT
                ) -> tuple[str, float]:
    """("prompt" or "mean", the ratio r = u·k* / u·k_prompt): the bare prompt's key unless its update would
    be more than ``limit`` times r-ROME's (‖ΔW‖ scales as 1/u·key, so r is that factor) or point the other
    way (r ≤ 0). inf where u·k_prompt is 0."""
    a, b = float(u.double() @ k_star.double()), float(u.double() @ k_prompt.double())
    r = a / b if b else math.inf
    return ("prompt" if 0 < r <= limit else "mean"), r


def rank_one(proj: torch.nn.Module, k: torch.Tensor, delta: torch.Tensor, C: torch.Tensor | None,
             key: torch.Tensor | None = None, u: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """(u, the projection's new weight in its own layout, its low-rank form (A, B) in that layout) for
    W' = W + Λuᵀ, u = C⁻¹k/‖C⁻¹k‖ (C None: the identity; ``u``: given, computed already), Λ = δ/(uᵀkey)
    (``key`` default ``k``): W'key = W key + δ. u and Λ are rounded to float32 (``factor_dtype``) before the product
    (``lowrank.low_rank_add``), so that the change stored as its factors writes the same bits."""
    k64 = k.double()
    u = direction(k, C) if u is None else u.double()
    ft = factor_dtype(proj.weight)
    lam = (delta.double() / (u @ (k64 if key is None else key.double()))).to(ft)
    u32 = u.to(ft)
    factors = (u32[:, None], lam[None, :]) if is_conv1d(proj) else (lam[:, None], u32[None, :])
    weight = low_rank_add(proj.weight, *factors)
    return u.to(k.dtype), weight.contiguous(), factors


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

def candidate_layers(handle: ModelHandle, k: int = 8) -> list[int]:
    """The layers a sweep tries by default: ``k`` spread over the depth, and ``default_layer``."""
    n = handle.n_layers
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)} | {default_layer(handle)})


def sweep_scores(scores: list[dict]) -> dict:
    """ES, PS, NS, S and EM (``metrics.summarize``) of a list of ``metrics.record_scores``."""
    s = summarize(scores)
    return {k: s[k] for k in ("ES", "PS", "NS", "S", "EM")}


def choose_layer(handle: ModelHandle, cases: list[Case], layers: Iterable[int], before: list[Measured], *,
                 lang: str | None = None, edit_at: Callable[[Case, int], Edit] | None = None,
                 step: Callable[[], None] | None = None,
                 known: Callable[[Case, int], dict | None] | None = None,
                 keep: Callable[[Case, int, dict], None] | None = None) -> tuple[int, list[dict]]:
    """The layer a one-layer method edits best, and one row per layer: each case's ``lang`` record (default:
    the first case's first language) edited at each of ``layers`` by ``edit_at(case, layer)`` (default: ROME
    with its defaults at that layer; the bench sweeps ft-l's layer the same way), measured
    (``metrics.measure``, no generation) against ``before`` (each case's unedited measurement of that record,
    in case order) and undone. Best: the highest S, then ES, PS, EM (a missing score ranks last); ties keep
    the first layer. ``step`` is called after each edit. ``known(case, layer)``: that edit's scores where an
    earlier session stored them (not edited again); ``keep(case, layer, scores)``: store each new one, so
    that an interrupted sweep resumes where it stopped."""
    lang = lang or cases[0].langs[0]
    if edit_at is None:
        def edit_at(c: Case, layer: int) -> Edit:
            r = c.records[lang]
            return ROME(layer=layer).edit(handle, Rewrite(r.edit_fact, r.new))
    rows = []
    for layer in layers:
        scores = []
        for c, b in zip(cases, before):
            got = known(c, layer) if known is not None else None
            if got is None:
                with edit_at(c, layer):
                    m = measure(handle, [c.records[lang]], generation=False)[0]
                got = record_scores(m, b)
                if keep is not None:
                    keep(c, layer, got)
            scores.append(got)
            if step is not None:
                step()
        rows.append({"layer": layer, **sweep_scores(scores)})
    rank = lambda x: tuple(-1e9 if x.get(k) is None else x[k] for k in ("S", "ES", "PS", "EM"))  # noqa: E731
    return max(rows, key=rank)["layer"], rows
