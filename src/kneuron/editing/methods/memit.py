"""MEMIT (Meng et al., ICLR 2023): many rewrites written at once into the MLP output projections of a range
of critical layers R = [L-span+1 .. L] (causal models only).

Per rewrite i, the target z_i at the last layer L (MEMIT's compute_z, on ROME's objective: ``objective``):
    δ_i   Adam (v_lr 0.5, v_steps 25) on a vector added to the residual h_L (block L's output) at the
          subject's last token of every prompt (the rewrite prompt bare and behind the model's own prefixes,
          and "{subject} is a" for the KL term), minimising the new object's NLL + kl_factor (0.0625) x KL +
          v_weight_decay (0.5) x ‖δ‖ / ‖h_L‖², with ‖δ‖ ≤ clamp_norm (0.75) x ‖h_L‖ after each step
          (‖h_L‖: the bare prompt's), stopping once the loss < 0.05
    z_i   = h_L + δ_i at the subject's last token of the bare rewrite prompt
Then, for each layer l of R in ascending order, with the updates of the layers below in place (each layer's
keys and residuals read again, as MEMIT does):
    K     [b, n] the projection's inputs at the subject's last token, averaged over the bare prompt and its
          prefixes (ROME's k*)
    R     [b, h] = (z − h_L now) / (layers left, l included): this layer's share of what is still missing
    ΔW    (column form) = R Kᵀ (λ (C0 + ρI) + K Kᵀ)⁻¹, the least-squares update that keeps the layer's other
          keys (their second moment C0 = E[k kᵀ], ``stats.second_moment``, cached) where they map now;
          ρ = 1e-4 x C0's mean diagonal (ROME's ridge) keeps the solve regular for a rank-deficient C0
    λ     ``mom2_update_weight``: MEMIT uses 15000 for GPT-J (n = 16384 keys) and 20000 for GPT-2 XL
          (n = 6400). λC0 stands for λ "typical" preserved keys weighed against the batch (a key drawn from
          C0 has kᵀC0⁻¹k ≈ n), so λ should scale with the key width: the default (None) keeps GPT-J's
          ratio, λ = 15000 · n / 16384 ≈ 0.92 n (≈ 1400 for smollm2-135m's 1536 keys, 44 for the tiny test
          models). With stats="identity" (C0 = I) λ weighs ‖ΔW‖² itself and has no such scale.
The one Edit holds every layer's new weight in full; ``JointEdit`` keeps K, R and z.

Blocks that normalise the MLP's output before adding it to the residual (Gemma 2/3's
post_feedforward_layernorm): there a layer's residual share r is turned into the projection's change Δm by
the norm's Jacobian J at the projection's current output (the least-squares Δm of J Δm = r), which is
exact to first order; later layers correct what the linearisation misses.

Sequential editing: give ``moments=`` (the unedited model's C0 per layer) or C0 is taken on the edited model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kneuron.errors import ConfigError

from .joint import JointEdit, LayerSpread
from .rome import RIDGE

GPTJ_WEIGHT, GPTJ_KEYS = 15000.0, 16384        # MEMIT's λ for GPT-J and GPT-J's key width


@dataclass(frozen=True)
class MEMIT(LayerSpread):
    """MEMIT's batched least-squares edit (see the module doc); ``mom2_update_weight`` λ (None: 15000 ·
    n / 16384, GPT-J's λ per key dimension)."""
    mom2_update_weight: float | None = None
    name = "memit"
    help = "MEMIT: many rewrites at once, spread over several layers' MLP output projections (causal models)"

    def __post_init__(self):
        super().__post_init__()
        w = self.mom2_update_weight
        if w is not None and (isinstance(w, bool) or not isinstance(w, (int, float)) or not w > 0):
            raise ConfigError(f"memit: mom2_update_weight must be > 0 or None (scaled to the key width), not {w!r}")

    def weight(self, n: int) -> float:
        """λ for keys of width ``n``."""
        return float(self.mom2_update_weight) if self.mom2_update_weight is not None else GPTJ_WEIGHT * n / GPTJ_KEYS

    def solve(self, K, C, layer, ctx, info) -> torch.Tensor:
        n = K.shape[1]
        lam = self.weight(n)
        C = torch.eye(n, dtype=torch.float64, device=K.device) if C is None else C.to(K.device, torch.float64)
        ridge = RIDGE * float(C.diagonal().mean()) or RIDGE
        A = lam * (C + ridge * torch.eye(n, dtype=torch.float64, device=K.device)) + K.T @ K
        info["mom2_update_weight"] = lam
        return torch.linalg.solve(A, K.T)                       # ΔWᵀ = (λC0 + KᵀK)⁻¹ Kᵀ · R


__all__ = ["JointEdit", "LayerSpread", "MEMIT"]
