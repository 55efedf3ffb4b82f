"""PEP 562 lazy names for a package's ``__init__``: each name is imported from its home module on first use.
Free of torch and of every other kneuron module, so that a package using it starts quickly."""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy(package: str, namespace: dict[str, Any],
         homes: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the package named ``package``, whose globals are ``namespace``: a name of
    ``homes`` (name -> home module) is imported on first use and kept in ``namespace``, so later lookups skip
    ``__getattr__``; any other name raises AttributeError naming the package."""

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(homes[name]), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted([*namespace, *homes])

    return __getattr__, __dir__
