"""The joint multi-layer edit that MEMIT (``memit``, where the equations are) and AlphaEdit (``alphaedit``)
share: each rewrite's target z at the last critical layer, then the spread over the critical layers, each
layer's keys and residuals read again with the updates below it in place; each method's ``solve`` is its
update of one layer. ``JointEdit`` is the one Edit of a batch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from kneuron.errors import ConfigError
from kneuron.models import hooks
from kneuron.models.load import ModelHandle
from kneuron.models.sites import is_conv1d, value_vectors

from ..base import Change, Edit, EditContext, EditError, EditMethod, Rewrite, param_name
from ..lowrank import factor_dtype, low_rank_add
from ..objective import Objective, adam, batch, prefixes, work_dtype
from ..stats import LENGTH, TEXTS, second_moments
from .keys import bare, bias, every, firsts, read, through_norm
from .rome import default_layer

SPAN, V_LR, V_STEPS, V_WEIGHT_DECAY, CLAMP_NORM, KL_FACTOR, STOP = 5, 0.5, 25, 0.5, 0.75, 0.0625, 0.05


@dataclass
class JointEdit(Edit):
    """One edit of a batch of rewrites (memit, alphaedit). For each edited layer: ``keys`` [b, n] (the keys
    it was fitted at) and ``residuals`` [b, h] (what it was asked to add there); ``targets`` [b, h] the z of
    each rewrite written (``info["rewrites"]`` says which were, and why any was left out)."""
    keys: dict | None = field(default=None, repr=False)
    residuals: dict | None = field(default=None, repr=False)
    targets: torch.Tensor | None = field(default=None, repr=False)

    def member(self, i: int) -> Edit:
        """The i-th rewrite's view of the batch, for reports (not to apply): the shared info and its own,
        its share of the time, and the batch's changes (none if it was left out)."""
        per = (self.info.get("rewrites") or [{}])[i]
        shared = {k: v for k, v in self.info.items() if k != "rewrites"}
        n = max(1, len(self.info.get("rewrites") or [None]))
        return Edit(self.handle, self.method, None, [] if "error" in per else self.changes, {**shared, **per},
                    self.seconds / n)


@dataclass(frozen=True)
class LayerSpread(EditMethod):
    """What MEMIT and AlphaEdit share (see the module doc): the targets z at ``layer`` (None: ROME's
    default layer) and the spread over the ``span`` layers ending there; ``solve`` is each one's update."""
    layer: int | None = None
    span: int = SPAN
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
    causal_only: ClassVar[bool] = True
    batch_rule: ClassVar[str | None] = "joint"
    context: ClassVar[tuple[str, ...]] = ("moments", "progress")
    edit_class: ClassVar[type] = JointEdit     # what its stored edits read back as (the bench's run directory)

    def __post_init__(self):
        def bad(option, want, got):
            raise ConfigError(f"{self.name}: {option} must be {want}, not {got!r}")
        if self.layer is not None and (not isinstance(self.layer, int) or self.layer < 0):
            bad("layer", "a layer index >= 0 or None", self.layer)
        if not isinstance(self.span, int) or self.span < 1:
            bad("span", "an integer >= 1", self.span)
        if not isinstance(self.stats, str) or self.stats not in ("auto", "identity"):
            bad("stats", "'auto' or 'identity' (a precomputed C0 is the edit's moments=)", self.stats)
        if not self.clamp_norm > 0:
            bad("clamp_norm", "> 0", self.clamp_norm)
        if self.corpus is not None:
            object.__setattr__(self, "corpus", tuple(self.corpus))

    # -- what the edit touches -----------------------------------------------------------

    def layers(self, handle: ModelHandle, where: str = "") -> list[int]:
        """The critical layers, ascending: the ``span`` ending at ``layer`` (clipped at layer 0)."""
        last = default_layer(handle) if self.layer is None else self.layer
        if not 0 <= last < handle.n_layers:
            raise EditError(f"{where}{self.name}: layer {last} is outside {handle.name} ({handle.n_layers} layers)")
        return list(range(max(0, last - self.span + 1), last + 1))

    def moments(self, handle: ModelHandle, layers: list[int] | None = None, progress: bool = True
                ) -> dict[int, torch.Tensor] | None:
        """C0 of each layer's keys as ``stats`` says (cached on disk); None for "identity"."""
        if self.stats == "identity":
            return None
        return second_moments(handle, self.layers(handle) if layers is None else layers, corpus=self.corpus,
                              texts=self.stats_texts, length=self.stats_length, seed=self.seed, progress=progress)

    def solve(self, K: torch.Tensor, C: torch.Tensor | None, layer: int, ctx: EditContext, info: dict
              ) -> torch.Tensor:
        """M [n, b] (float64) for keys K [b, n]: the change of the layer's value vectors [n, h] is M R for
        residuals R [b, h] (both methods' updates are linear in R)."""
        raise NotImplementedError

    # -- the edit ------------------------------------------------------------------------

    def edit(self, handle: ModelHandle, rewrite: Rewrite, ctx: EditContext = EditContext()) -> JointEdit:
        e = self.edit_batch(handle, [rewrite], ctx)
        e.rewrite = rewrite
        e.info = {**{k: v for k, v in e.info.items() if k != "rewrites"}, **e.info["rewrites"][0]}
        return e

    def edit_batch(self, handle: ModelHandle, rewrites: list[Rewrite], ctx: EditContext = EditContext(),
                   on_error=None) -> JointEdit:
        t0 = time.perf_counter()
        if not rewrites:
            raise EditError(f"{self.name}: no rewrites to edit")
        for rw in rewrites:
            self.check(handle, rw)
        layers = self.layers(handle, rewrites[0].fact.where())
        last, dt = layers[-1], work_dtype(handle)
        contexts = prefixes(handle, self.seed) if self.use_prefixes else []
        per: list[dict] = [{"fact": rw.fact.id, "lang": rw.fact.lang, "new": rw.new} for rw in rewrites]
        items = []                                                   # (index, rewrite, prompts batch)

        def skip(i, err):
            if on_error is None:
                raise err
            per[i]["error"] = str(err)
            on_error(i, rewrites[i], err)
        for i, rw in enumerate(rewrites):
            try:
                items.append((i, rw, batch(handle, rw, contexts, kl_at="subject")))
            except EditError as err:
                skip(i, err)
        t_stats = time.perf_counter()
        C, stats_info = self._moments(handle, layers, ctx, rewrites[0].fact.where())
        stats_info["seconds"] = time.perf_counter() - t_stats
        # the targets z at the last layer, on the model as it is now
        targets, written = [], []
        for i, rw, b in items:
            try:
                z, zinfo = self.target(handle, b, last)
            except EditError as err:
                skip(i, err)
                continue
            per[i].update(zinfo)
            targets.append(z.to(dt))
            written.append((i, rw, b))
        items = written
        if not items:
            raise EditError(f"{self.name}: none of the {len(rewrites)} rewrites can be edited "
                            f"({next(p['error'] for p in per if 'error' in p)})")
        Z = torch.stack(targets)
        # the spread, layer by layer, each update applied (for the reads above it) and undone at the end
        info = {"layers": layers, "batch": len(rewrites), "written": len(items), "stats": stats_info,
                "per_layer": []}
        keys, residuals, changes, placed = {}, {}, [], []
        rows, lookup, owner = every(items)
        try:
            for j, l in enumerate(layers):
                k_rows, H = read(handle, rows, lookup, last, key_layer=l)
                K = torch.zeros(len(items), k_rows.shape[-1], dtype=torch.float64, device=k_rows.device)
                K.index_add_(0, owner, k_rows.double())
                K /= torch.bincount(owner, minlength=len(items))[:, None].double()
                H = H[firsts(owner)].to(dt)
                R = (Z - H) / (len(layers) - j)
                row = {"layer": l, "residual": float(R.norm(dim=1).mean())}
                proj = handle.sites[l]
                values = value_vectors(proj).detach()
                R = through_norm(handle, l, K @ values.double() + bias(proj), R.double())
                ft = factor_dtype(proj.weight)
                M = self.solve(K, None if C is None else C[l], l, ctx, row).to(ft)
                R32 = R.to(M.device, ft)                                 # the factors, as stored
                factors = (M, R32) if is_conv1d(proj) else (R32.T.contiguous(), M.T.contiguous())
                new = low_rank_add(proj.weight, *factors)
                change = Change(param_name(handle, proj.weight), new.contiguous(), low_rank=factors)
                D = M.double() @ R32.double()
                row.update(update_norm=float(D.norm()), weight_norm=float(values.double().norm()))
                info["per_layer"].append(row)
                placed.append(Edit(handle, self.name, None, [change]).apply())
                changes.append(change)
                keys[l], residuals[l] = K.to(dt).cpu(), R.cpu()
            _, H = read(handle, *bare(items), last)
            info["z_error"] = float((Z - H.to(dt)).norm(dim=1).mean())      # what the edit leaves missing at L
        finally:
            for e in reversed(placed):
                e.undo()
        info["rewrites"] = per
        return JointEdit(handle, self.name, None, changes, info, time.perf_counter() - t0, keys=keys,
                         residuals=residuals, targets=Z.cpu())

    def target(self, handle: ModelHandle, b, layer: int) -> tuple[torch.Tensor, dict]:
        """(z, info): block ``layer``'s output at the bare prompt's lookup position plus the δ that makes the
        model say the new object (see the module doc), for the prompts ``b`` (``objective.batch``)."""
        block, dt = handle.layers[layer], work_dtype(handle)
        obj = Objective(handle, b, reuse_prefix=True)
        shape, lookup = obj.run.shape, obj.run.lookup
        rows = torch.arange(shape[0], device=handle.device)
        at = torch.zeros(shape, dtype=dt, device=handle.device)
        at[rows, lookup] = 1.0
        seen = {}

        def grab(y):
            seen["h"] = y[rows, lookup].detach()
            return y
        with hooks.patch(handle, block, grab, on="output"):
            nll0 = float(obj.reference())
        h0 = seen["h"][0].to(dt)                                         # the bare prompt's h_L
        norm = max(float(h0.norm()), 1e-12)
        delta = torch.zeros(h0.shape[-1], dtype=dt, device=handle.device, requires_grad=True)

        def loss():
            with hooks.patch(handle, block, lambda y: y + (at[..., None] * delta).to(y.dtype), on="output"):
                nll, kl = obj()
            decay = self.v_weight_decay * delta.norm() / norm ** 2
            total = nll + self.kl_factor * kl + decay
            return total, {"loss": total.item(), "nll": nll.item(), "kl": kl.item(), "decay": decay.item()}

        def clamp():
            if float(delta.norm()) > self.clamp_norm * norm:
                delta.mul_(self.clamp_norm * norm / delta.norm())
        log = adam([delta], loss, self.v_steps, self.v_lr, clamp, self.stop)
        delta = delta.detach()
        info = {"layer": layer, "prompts": b.n_prompts, "steps": len(log), "nll_before": nll0, "nll": log[-1]["nll"],
                "kl": log[-1]["kl"], "losses": [x["loss"] for x in log], "delta_norm": float(delta.norm()),
                "h_norm": norm}
        return h0 + delta, info

    def _moments(self, handle, layers, ctx, where) -> tuple[dict | None, dict]:
        if ctx.moments is not None:
            n = handle.n_neurons
            for l in layers:
                C = ctx.moments.get(l) if isinstance(ctx.moments, dict) else None
                if not isinstance(C, torch.Tensor) or C.shape != (n, n):
                    raise EditError(f"{where}{self.name}: moments= must hold an [{n}, {n}] C0 for each of layers "
                                    f"{', '.join(map(str, layers))} (layer {l}: "
                                    f"{'missing' if C is None else getattr(C, 'shape', type(C).__name__)})")
            return {l: ctx.moments[l] for l in layers}, {"source": "given"}
        if self.stats == "identity":
            return None, {"source": "identity"}
        C = self.moments(handle, layers, ctx.progress)
        info = ({"source": "corpus"} if self.corpus is not None else
                {"source": "self", "texts": self.stats_texts, "length": self.stats_length, "seed": self.seed})
        return C, info


__all__ = ["JointEdit", "LayerSpread"]
