"""Transitional: ROME lives in ``editing.methods.rome``; ``benchmarks.editing`` imports ``default_layer`` from
here until it reads the registry (``editing.registry``). Remove once nothing imports this module."""
from .methods.rome import DEFAULT_FRACTION, DEFAULT_LAYERS, default_layer

__all__ = ["DEFAULT_FRACTION", "DEFAULT_LAYERS", "default_layer"]
