"""Knowledge editing through a model's weights: every method returns an ``Edit`` (``base.py``) that can be
applied, undone bit for bit, used as a context manager, and saved as a model directory.

    method      module        what it changes
    kn          kn.py         value vectors of the fact's knowledge neurons (Dai et al., norm-scaled rule)
    kn-eai      kn.py         the same neurons, EleutherAI / EasyEdit's x2-embedding rule (for comparison)
    kn-erase    kn.py         zeroes the fact's neurons' value vectors (Dai et al.'s erasure)
    likn        kn.py         the kn rule on the fact's language-independent neurons (both languages at once)
    kn-opt      optimize.py   value vectors of the fact's neurons, optimised on ROME's objective
    rome        rome.py       rank-one update of one layer's MLP output projection (Meng et al.)
    ft          ft.py         norm-bounded fine-tuning of one layer's output projection (FT-L)

``batch_edit(edits)`` (batch.py) makes many edits of the value-vector methods at once.
"""
from __future__ import annotations

import importlib
import inspect

from kneuron.facts.schema import Fact
from kneuron.models.load import ModelHandle

from .base import Change, Edit, EditError, Rewrite
from .batch import batch_edit

# method -> (module in this package, function(handle, rewrite, **options) -> Edit)
METHODS: dict[str, tuple[str, str]] = {
    "kn":       ("kn", "kn_edit"),
    "kn-eai":   ("kn", "kn_eai_edit"),
    "kn-erase": ("kn", "erase_edit"),
    "likn":     ("kn", "likn_edit"),
    "kn-opt":   ("optimize", "kn_opt_edit"),
    "rome":     ("rome", "rome_edit"),
    "ft":       ("ft", "ft_edit"),
}


def edit(handle: ModelHandle, fact: Fact, new: str | None = None, *, method: str = "kn", **options) -> Edit:
    """Compute an edit of ``fact`` (object -> ``new``) by ``method`` against the model as it is now; the
    returned ``Edit`` is not applied yet (``with edit(...):`` or ``.apply()``)."""
    if method not in METHODS:
        raise EditError(f"unknown editing method {method!r} (expected one of {', '.join(METHODS)})")
    module, fn = METHODS[method]
    if new is None and method != "kn-erase":
        raise EditError(f"{fact.where('new')}method {method} needs a new object")
    rewrite = Rewrite(fact, new)
    return getattr(importlib.import_module(f"{__name__}.{module}"), fn)(handle, rewrite, **options)


def named_options(method: str) -> set[str]:
    """The options an editing method's function names (keyword parameters; not those it takes as **kwargs)."""
    module, fn = METHODS[method]
    params = inspect.signature(getattr(importlib.import_module(f"{__name__}.{module}"), fn)).parameters
    return {k for k, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


__all__ = ["METHODS", "Change", "Edit", "EditError", "Rewrite", "batch_edit", "edit", "named_options"]
