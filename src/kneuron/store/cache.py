"""The content cache: what kneuron computes once per model's weights (ROME's key statistics, the
explorer's value index), kept across sessions in one directory.

The directory is ``$KNEURON_CACHE`` when set, else the platform's user cache directory
(``platformdirs.user_cache_dir("kneuron")``: ~/.cache/kneuron on Linux, honouring XDG_CACHE_HOME);
each kind of entry has its own folder (``stats/``, ``value-index/``). An entry's name holds everything
it depends on (model name, weights fingerprint -- ``kneuron.models.fingerprint`` -- and settings), so
a stale entry is never found. Entries are written atomically; one that does not read back (torn, or
not what its name says) is rebuilt and replaced, with one warning.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Callable

from kneuron.store.atomic import one_line, write_with

ENV = "KNEURON_CACHE"


def cache_dir(*parts: str) -> Path:
    """The cache directory (``$KNEURON_CACHE``, else the user cache directory), or a folder in it."""
    env = os.environ.get(ENV)
    if env:
        root = Path(env).expanduser()
    else:
        from platformdirs import user_cache_dir
        root = Path(user_cache_dir("kneuron", appauthor=False))
    return root.joinpath(*parts)


def safe_name(text: str, keep: int = 60) -> str:
    """``text`` (e.g. a model name or path) as a file-name piece: other than [A-Za-z0-9._-] becomes _,
    the last ``keep`` characters kept."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text.strip("/"))[-keep:]


class Cache:
    """One kind of cache entry: files ``<cache_dir>/<kind>/<name>``, read with ``load(file)`` and
    written with ``dump(value, file)`` (so this layer needs no torch or numpy)."""

    def __init__(self, kind: str, *, load: Callable[[BinaryIO], Any], dump: Callable[[Any, BinaryIO], Any],
                 directory=None, what: str = "cache file"):
        self.dir = Path(directory) / kind if directory is not None else cache_dir(kind)
        self.load, self.dump, self.what = load, dump, what

    def path(self, name: str) -> Path:
        return self.dir / name

    def get(self, name: str, check: Callable[[Any], bool] | None = None):
        """The entry ``name``, or None when there is none or it is damaged (``load`` raised, or
        ``check(value)`` is false): then one warning says it is built again."""
        path = self.path(name)
        if not path.is_file():
            return None
        try:
            with open(path, "rb") as f:
                value = self.load(f)
            ok = check is None or bool(check(value))
            why = "not what its name says"
        except Exception as e:       # noqa: BLE001 -- any unreadable file is rebuilt
            ok, why = False, f"{type(e).__name__}: {one_line(e)}"[:160]
        if not ok:
            warnings.warn(f"{path}: damaged or stale {self.what} ({why}), computing it again", stacklevel=3)
            return None
        return value

    def put(self, name: str, value) -> Path | None:
        """Write the entry atomically; a cache that cannot be written is said (a warning) and skipped:
        the value is computed again next time."""
        path = self.path(name)
        try:
            return write_with(path, lambda f: self.dump(value, f))
        except OSError as e:
            warnings.warn(f"cannot cache {self.what} in {path.parent} ({one_line(e)}); it will be computed again "
                          "next time", stacklevel=3)
            return None

    def get_or_build(self, name: str, build: Callable[[], Any], check: Callable[[Any], bool] | None = None):
        """The entry ``name``, built by ``build()`` and written when missing or damaged."""
        value = self.get(name, check)
        if value is None:
            value = build()
            self.put(name, value)
        return value
