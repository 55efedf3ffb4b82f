"""Models: load one (a bundled name, a local directory, a .gguf file or a hub id) as a ModelHandle, and find
its MLP sites. Names are imported on first use (PEP 562): ``kneuron.models.registry`` and ``.hub`` stay free
of torch and transformers for the command line's start."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_HOMES = {
    "DEFAULT_MODEL": "kneuron.models.load", "ModelHandle": "kneuron.models.load",
    "ModelLoadError": "kneuron.models.registry", "from_model": "kneuron.models.load", "load_model": "kneuron.models.load",
    "ARCHITECTURES": "kneuron.models.sites", "SiteError": "kneuron.models.sites", "find_site": "kneuron.models.sites",
    "value_vectors": "kneuron.models.sites",
}
__all__ = list(_HOMES)

if TYPE_CHECKING:
    from kneuron.models.load import DEFAULT_MODEL, ModelHandle, ModelLoadError, from_model, load_model
    from kneuron.models.sites import ARCHITECTURES, SiteError, find_site, value_vectors


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'kneuron.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
