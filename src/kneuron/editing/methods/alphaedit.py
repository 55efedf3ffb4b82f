"""AlphaEdit (Fang et al., ICLR 2025): MEMIT's targets and layer spread (``memit.LayerSpread``), with each
layer's update confined to the null space of the knowledge to preserve (causal models only).

    C0    the second moment of the layer's keys over a corpus (``stats.second_moment``, as MEMIT's): the
          preserved knowledge K0 with C0 ∝ K0 K0ᵀ
    P     the projector onto C0's eigenvectors whose eigenvalues are below ``nullspace_threshold`` (1e-2)
          x the largest: P K0 ≈ 0 (exactly 0 for directions no preserved key has), so (W + ΔP) K0 ≈ W K0
    ΔW    (column form, keys K [n, b] and residuals R [h, b] as MEMIT's) the minimiser over Δ of
              ‖(W + ΔP) K − (W K + R)‖² + α ‖ΔP‖² + ‖ΔP K_p‖²
          i.e. Δ = R Kᵀ P (K_p K_pᵀ P + K Kᵀ P + α I)⁻¹, written as ΔP (= Δ when α > 0: Δ's rows lie in P's
          range). MEMIT's λC0 term is gone (P does its work); α = ``l2`` x C0's mean diagonal keeps the solve
          regular at the keys' own scale (the paper's α = 1 is for its models' key scale; ours vary by model).
    K_p   the keys edited before (lifelong / sequential editing): each layer's ``keys`` of the context's
          ``kept`` edits (``JointEdit``s of this method, oldest first), so a new edit keeps the old ones where
          they are. The bench's sequential mode passes its chain's kept edits; by hand:
              e1 = edit(h, f1, "x", method="alphaedit").apply()
              e2 = edit(h, f2, "y", method="alphaedit", kept=[e1]).apply()
          An edit made without them (or one read back without its keys) adds nothing to K_p.

C0 must carry information: ``stats="identity"`` (no null space) is refused. In a sequential chain give
``moments=`` (the unedited model's C0 per layer), as the bench does, so that P stays that of the
knowledge the model had. P is computed once per C0 and threshold and kept in memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from kneuron.errors import ConfigError
from kneuron.models.fingerprint import tensor_fingerprint

from ..base import EditError
from .joint import LayerSpread

THRESHOLD, L2 = 1e-2, 1.0
_PROJECTORS: dict[tuple, torch.Tensor] = {}


def null_projector(C: torch.Tensor, threshold: float = THRESHOLD) -> torch.Tensor:
    """[n, n] float64 projector onto the eigenvectors of C whose eigenvalues are < threshold x the largest."""
    C64 = C.detach().to(torch.float64)
    key = (tensor_fingerprint(C64), float(threshold), str(C.device))
    if key not in _PROJECTORS:
        if len(_PROJECTORS) >= 16:
            _PROJECTORS.clear()
        values, vectors = torch.linalg.eigh((C64 + C64.T) / 2)
        small = vectors[:, values < threshold * float(values.max())]
        _PROJECTORS[key] = small @ small.T
    return _PROJECTORS[key]


@dataclass(frozen=True)
class AlphaEdit(LayerSpread):
    """AlphaEdit's null-space constrained edit (see the module doc)."""
    nullspace_threshold: float = THRESHOLD
    l2: float = L2
    name = "alphaedit"
    help = "AlphaEdit: MEMIT's update projected onto the null space of the preserved keys (causal models)"
    context: ClassVar[tuple[str, ...]] = ("moments", "kept", "progress")

    def __post_init__(self):
        super().__post_init__()
        t = self.nullspace_threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 1:
            raise ConfigError(f"alphaedit: nullspace_threshold must be in (0, 1) (relative to C0's largest "
                              f"eigenvalue), not {t!r}")
        if isinstance(self.l2, bool) or not isinstance(self.l2, (int, float)) or not self.l2 > 0:
            raise ConfigError(f"alphaedit: l2 must be > 0, not {self.l2!r}")
        if self.stats == "identity":
            raise ConfigError("alphaedit: stats='identity' leaves no null space to edit in; use stats='auto' "
                              "(or a corpus=)")

    def solve(self, K, C, layer, ctx, info) -> torch.Tensor:
        if C is None:
            raise EditError(f"alphaedit: no second moment C0 for layer {layer}")
        n, dev = K.shape[1], K.device
        P = null_projector(C, self.nullspace_threshold).to(dev)
        C64 = C.to(dev, torch.float64)
        S = K.T @ K
        previous = 0
        for e in ctx.kept:
            kp = (getattr(e, "keys", None) or {}).get(layer)
            if kp is not None:
                kp = kp.to(dev, torch.float64)
                S = S + kp.T @ kp
                previous += kp.shape[0]
        alpha = self.l2 * float(C64.diagonal().mean()) or self.l2
        # row form (value vectors [n, h]): ΔWᵀ = P (P S + αI)⁻¹ P Kᵀ · R, S = KᵀK + K_pᵀK_p
        M = P @ torch.linalg.solve(P @ S + alpha * torch.eye(n, dtype=torch.float64, device=dev), P @ K.T)
        info.update(null_dims=int(round(float(P.trace()))), kept_keys=previous, l2=alpha)
        return M


__all__ = ["AlphaEdit", "null_projector"]
