"""The one weights fingerprint: a short hash that changes when any weight of a model does, so that what
is computed from the weights (ROME's key statistics, the explorer's value index, seeded prefixes) is
cached under it (``kneuron.store.cache``) and never found stale.

It hashes every parameter's name, shape, dtype, sum, absolute sum and a strided sample of its values.
Reading every weight takes a while on a real model, so the hash is kept per model object and computed
again only when a parameter was written since: torch counts in-place writes in each tensor's version,
and a parameter given new storage has a new data pointer (an applied edit and its undo both count).
"""
from __future__ import annotations

import hashlib
import weakref

import torch

_FINGERPRINTS: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def weights_fingerprint(model: torch.nn.Module) -> str:
    """16 hex digits that change when any weight of ``model`` does (kept until a parameter is written)."""
    state = tuple((id(p), p.data_ptr(), p._version) for p in model.parameters())
    had = _FINGERPRINTS.get(model)
    if had is not None and had[0] == state:
        return had[1]
    fp = _fingerprint(model)
    _FINGERPRINTS[model] = (state, fp)
    return fp


@torch.no_grad()
def _fingerprint(model: torch.nn.Module) -> str:
    h = hashlib.sha1()
    for name, p in model.named_parameters():
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // 61)
        sums = torch.stack([flat.sum(dtype=torch.float64), flat.abs().sum(dtype=torch.float64)])
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        h.update(sums.cpu().numpy().tobytes())
        h.update(flat[::step][:64].double().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def tensor_fingerprint(t: torch.Tensor) -> str:
    """32 hex digits of every byte of one tensor (dtype and shape included): what a stored low-rank change
    (``editing.base.Change``) checks its base weight by, and what AlphaEdit's projectors are kept under."""
    h = hashlib.blake2b(digest_size=16)
    x = t.detach().cpu().contiguous()
    h.update(f"{x.dtype}:{tuple(x.shape)}".encode())
    h.update(x.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
