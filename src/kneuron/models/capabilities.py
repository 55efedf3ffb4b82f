"""What a loaded model's blocks allow the fast paths to do: one object per handle (``h.capabilities``).

The attribution engine and the editing objective have optimised paths whose correctness depends on
the model's family: the layer staircase (a block runs on the first rows of a batch only), batches
shared by several prompts, attention to one shared key/value prefix, and ROME's prefix reuse (the
prompts' common start run once). For a family the architecture table knows
(``models.sites.ARCHITECTURES``) the answer is declared there; otherwise it is checked once per
handle at run time, by running the fast path against the plain one, and the verdict is kept here
(not in a module global), logged when it is no, and inspectable (``h.capabilities.verdicts``,
``repr``).

``decide`` turns a check into a verdict: only torch's runtime errors (a per-row tensor that cannot be
cut or stacked: a shape mismatch) count as a no; any other exception is a bug and raises, and running
out of memory raises for the caller to back off.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import torch

from kneuron.models.sites import CAPABILITIES, declared_capability, model_type

log = logging.getLogger("kneuron")

WHAT = {"staircase": "the layer staircase (blocks run on the rows that reached them)",
        "share": "shared batches of several prompts",
        "prefix": "attention to one shared key/value prefix (no copy per row)",
        "reuse_prefix": "the edit objective's prefix reuse (the prompts' start run once)"}
CHECKED_ONLY = ("reuse_prefix",)      # never declared by the architecture table: always checked


def is_oom(e: BaseException) -> bool:
    """Whether ``e`` is running out of (GPU or host) memory."""
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


@dataclass
class Capabilities:
    """The run-time verdicts of one handle: (capability, variant) -> bool, where the variant tells
    apart the cases a check covers separately (the engine's mixed / single-prompt batches; None)."""
    verdicts: dict[tuple[str, object], bool] = field(default_factory=dict)

    def declared(self, model, capability: str) -> bool | None:
        """What the architecture table says of ``capability`` for ``model``'s family (None: not known)."""
        return None if capability in CHECKED_ONLY else declared_capability(model, capability)

    def known(self, model, capability: str, variant=None) -> bool | None:
        """The declared answer, else the verdict of an earlier check, else None (not checked yet)."""
        declared = self.declared(model, capability)
        return declared if declared is not None else self.verdicts.get((capability, variant))

    def decide(self, h, capability: str, check: Callable[[], bool], variant=None) -> bool:
        """The declared answer; else ``check()``'s verdict, computed once per (capability, variant)
        and logged when it is no (see the module docstring for what counts as a no)."""
        _known(capability)
        got = self.known(h.model, capability, variant)
        if got is None:
            got = self.verdicts[(capability, variant)] = _verdict(h, capability, check)
        return got

    def record(self, capability: str, ok: bool, variant=None) -> bool:
        """Keep a verdict reached elsewhere (a check whose fallback the caller runs itself)."""
        _known(capability)
        self.verdicts[(capability, variant)] = bool(ok)
        if not ok:
            log.info("%s off: it differs from the plain path on this model", WHAT[capability])
        return bool(ok)

    def checked(self, capability: str) -> dict:
        """variant -> verdict of every check of ``capability`` run so far on this handle."""
        return {v: ok for (c, v), ok in self.verdicts.items() if c == capability}

    def __repr__(self) -> str:
        shown = ", ".join(f"{c}{'' if v is None else f'[{v}]'}={'on' if ok else 'off'}"
                          for (c, v), ok in sorted(self.verdicts.items(), key=str))
        return f"Capabilities({shown or 'nothing checked'})"


def _known(capability: str) -> None:
    if capability not in CAPABILITIES and capability not in CHECKED_ONLY:
        raise KeyError(capability)


def _verdict(h, capability: str, check: Callable[[], bool]) -> bool:
    family = model_type(h.model) or type(h.model).__name__
    try:
        if check():
            log.debug("%s (%s): %s checked: on", h.name, family, WHAT[capability])
            return True
        reason = "its rows differ from the plain batch's"
    except RuntimeError as e:
        if is_oom(e):
            raise
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    log.info("%s (%s): %s off, as its family is not in the architecture table and the check failed: %s",
             h.name, family, WHAT[capability], reason)
    return False
