"""The one way a low-rank change is written (``base.Change.low_rank``): W + A B in float64, rounded to W's
dtype, from factors kept in float32 (or W's own dtype if wider). A change computed now (ROME's rank one, the
MEMIT / AlphaEdit spread) and the same change read back from its stored factors write the same bits."""
from __future__ import annotations

import torch


def factor_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype a low-rank change's factors are kept in: float32, or the weight's own if wider (float64)."""
    return torch.promote_types(weight.dtype, torch.float32)


def low_rank_add(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``weight + a @ b`` in float64, rounded to the weight's dtype."""
    w = weight.detach()
    return (w.double() + a.to(w.device, torch.float64) @ b.to(w.device, torch.float64)).to(w.dtype)


__all__ = ["factor_dtype", "low_rank_add"]
