"""Atomic writes and checked reads: the one place in kneuron that renames files.

A write goes to a temporary file in the destination's folder (``<name>.<random>.tmp``), is flushed and
fsync'ed, renamed over the destination (``os.replace``, atomic on POSIX and Windows) and the folder is
fsync'ed, so a reader (or a run resumed after a kill or a power cut) sees the old file or the new one,
never half of one. A file that does not read back as it should (torn, truncated, not the expected
shape) is never deleted: ``move_aside`` moves it into a ``damaged/`` folder, and one warning line says
which file, why, where it went and what happens next.
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
from pathlib import Path
from typing import Any, BinaryIO, Callable

from kneuron.errors import KneuronError

DAMAGED = "damaged"            # where damaged files are moved aside
TMP = ".tmp"                   # every temporary file ends so (``clean_tmp`` removes what a kill left)
log = logging.getLogger("kneuron.store")

Warn = Callable[[str], None]


class StoreError(KneuronError, RuntimeError):
    """A file cannot be written, read or moved aside as asked (one-line message)."""


def one_line(e: BaseException) -> str:
    """An exception's message on one line (and without pyarrow's long 'Could not open ...' prefix)."""
    msg = " ".join(str(e).split())
    return re.sub(r"^Could not open Parquet input source '.*?': ", "", msg)


# ----------------------------------------------------------------------------- writing

def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path``, made with the usual permissions (0666 less the umask, as
    ``open`` gives; ``mkstemp``'s 0600 would hide a run's files from the other users of a machine)."""
    for _ in range(100):
        tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}{TMP}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), str(tmp)
        except FileExistsError:
            continue
    raise StoreError(f"{path}: no free temporary name beside it")


def write_with(path, write: Callable[[BinaryIO], Any]) -> Path:
    """``write(file)`` into a temporary file beside ``path``, fsync, rename over ``path``, fsync the
    folder. Any failure leaves ``path`` as it was and removes the temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_bytes(path, data: bytes) -> Path:
    """``data`` as ``path``, atomically."""
    return write_with(path, lambda f: f.write(data))


def write_text(path, text: str) -> Path:
    """``text`` (UTF-8) as ``path``, atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, obj, *, newline: bool = False, **dumps) -> Path:
    """``json.dumps(obj, **dumps)`` (plus a final newline if asked) as ``path``, atomically."""
    return write_text(path, json.dumps(obj, **dumps) + ("\n" if newline else ""))


def write_lines(path, lines) -> Path:
    """``lines`` (strings without newlines), each ended by a newline, as ``path``, atomically."""
    return write_text(path, "".join(line + "\n" for line in lines))


def append_line(path, line: str) -> None:
    """Append one line (a newline is added) to ``path`` and fsync: a kill loses at most that line, torn
    (``read_lines`` finds it)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def clean_tmp(*folders) -> None:
    """Remove the temporary files an interrupted write left in ``folders`` (not recursive)."""
    for folder in folders:
        for p in Path(folder).glob("*" + TMP):
            p.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- damaged files

def _unique(path: Path) -> Path:
    """``path``, or ``path``.1, .2, ... if that is taken."""
    out, i = path, 0
    while out.exists():
        i += 1
        out = path.with_name(f"{path.name}.{i}")
    return out


def move_aside(path, why: str | None = None, *, root=None, then: str = "it is redone",
               warn: Warn | None = None) -> Path:
    """Move a damaged file into ``root``/damaged/ (``root``: default the file's own folder; a name
    already taken there gets .1, .2, ...); never deleted. With ``why``, one warning line (``warn``,
    default the "kneuron.store" logger) says "<path>: damaged (<why>); kept as <where> and <then>";
    without, the caller reports (e.g. many files in one line). Returns where it went."""
    path = Path(path)
    where = Path(root) / DAMAGED if root is not None else path.parent / DAMAGED
    try:
        where.mkdir(parents=True, exist_ok=True)
        dst = _unique(where / path.name)
        os.replace(path, dst)
    except OSError as e:
        raise StoreError(f"{path}: damaged, and it cannot be moved aside into {where}: {one_line(e)}") from None
    _fsync_dir(where)
    if why is not None:
        (warn or log.warning)(f"{path}: damaged ({why}); kept as {dst} and {then}")
    return dst


# ----------------------------------------------------------------------------- checked reading

def json_problem(value, kind: type | tuple[type, ...] = dict, need: tuple[str, ...] = ()) -> str | None:
    """Why ``value`` is not a JSON value of ``kind`` holding the ``need`` keys (None: it is)."""
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        article = {"dict": "a JSON object", "list": "a JSON array"}
        return "not " + article.get(names, names)
    missing = [k for k in need if k not in value]
    if missing:
        return f"lacks the key{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
    return None


def parse_json(data: bytes, kind=dict, need: tuple[str, ...] = ()) -> tuple[Any, str | None]:
    """(value, None), or (None, why it is not a JSON ``kind`` with the ``need`` keys)."""
    if not data:
        return None, "empty file (0 bytes)"
    try:
        value = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        return None, one_line(e)
    why = json_problem(value, kind, need)
    return (None, why) if why else (value, None)


def read_json(path, *, kind=dict, need: tuple[str, ...] = (), root=None, then: str = "it is redone",
              warn: Warn | None = None, readonly: bool = False):
    """The JSON value in ``path``; None when there is none. A file that is empty, torn, not JSON, not
    a ``kind`` or lacking a ``need`` key is moved aside (``move_aside``: one warning line) and None
    returned, so the caller redoes it; ``readonly``: a StoreError instead, nothing moved."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except (IsADirectoryError, PermissionError) as e:
        raise StoreError(f"{path}: cannot be read ({one_line(e)})") from None
    value, why = parse_json(data, kind, need)
    if why is None:
        return value
    if readonly:
        raise StoreError(f"{path}: damaged ({why})")
    move_aside(path, why, root=root, then=then, warn=warn)
    return None
