"""Models: load one (a bundled name, a local directory, a .gguf file or a hub id) as a ModelHandle, and find
its MLP sites. Names are imported on first use (PEP 562): ``kneuron.models.registry`` and ``.hub`` stay free
of torch and transformers for the command line's start."""
from __future__ import annotations

from typing import TYPE_CHECKING

from kneuron._lazy import lazy

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


__getattr__, __dir__ = lazy(__name__, globals(), _HOMES)
