"""Keyed records: what a resumable step has finished, one record per key, each committed atomically.

    rec = open_records(run / "edits", codec="json", need=("scores",))   # one <key>.json per key
    rec = open_records(run / "chain", codec=Blob(torch.save, torch.load, ".pt"))   # the caller's serialiser
    rec = open_records(run / "dkn.jsonl", codec="jsonl", key=("fact_id", "lang"), config=conf)
    rec = open_records(run, codec="parquet", tables=[...])              # parts + compaction (store.parquet)
    todo = [k for k in keys if k not in rec]; rec.put(k, value); rec.get(k); rec.keys()

Codecs: "json" (one file per key: small results that a person may open), a ``Blob`` (one file per key,
written and read by functions the caller passes, so that this layer needs no torch: tensors), "jsonl"
(one line per key in one file, fsync'ed per line: many small rows, which DuckDB's read_json reads) and
"parquet" (``kneuron.store.parquet``: tables, compacted into one file per table, for DuckDB).

A key is done only once its record is committed and reads back: a record that is torn, truncated or not
the expected shape is moved into ``root``/damaged/ (one warning line) and counts as not done, so a
resumed run redoes it. A folder of records may carry the settings it was made with (``config``, kept in
``.records.json``): a writer opened with other settings is refused in one line naming what differs.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator
from urllib.parse import quote, unquote

from kneuron.errors import ConfigError
from kneuron.store.atomic import (DAMAGED, TMP, Warn, append_line, clean_tmp, move_aside, one_line, parse_json,
                                  write_bytes, write_json, write_lines)
from kneuron.store.manifest import check_resume, jsonable

log = logging.getLogger("kneuron.store")
CONFIG = ".records.json"       # a folder's settings (a key's file never starts with a dot)
_MISSING = object()


@dataclass(frozen=True)
class Blob:
    """A codec for values this layer cannot serialise (tensors): ``dump(value, file)`` and
    ``load(file) -> value`` on binary files; any exception of ``load`` means damaged."""
    dump: Callable[[Any, BinaryIO], Any]
    load: Callable[[BinaryIO], Any]
    suffix: str = ".bin"


def key_name(key) -> str:
    """A key (a string, or a tuple of parts) as a file stem: each part percent-encoded, joined by ","
    (readable for plain ids, reversible by ``key_of``, never starting with a dot)."""
    parts = key if isinstance(key, tuple) else (key,)
    stem = ",".join(quote(str(p), safe="") for p in parts)
    return "%2E" + stem[1:] if stem.startswith(".") else stem


def key_of(stem: str):
    """The key a stem of ``key_name`` stands for (a string, or a tuple of strings)."""
    parts = tuple(unquote(p) for p in stem.split(","))
    return parts[0] if len(parts) == 1 else parts


class Records:
    """One file per key in ``directory``: codec "json" (a JSON value of ``kind`` with the ``need`` keys)
    or a ``Blob``. ``name``/``parse`` map keys to file stems and back (default ``key_name``/``key_of``);
    ``check(value)`` returns why a decoded value is unusable (None: usable). Damaged files go to
    ``root``/damaged/ (default ``directory``'s parent), said by ``warn`` (default a logged warning).
    Opening removes the temporary files a killed ``put`` left."""

    def __init__(self, directory, *, codec="json", kind=dict, need: tuple[str, ...] = (), check=None,
                 name: Callable[[Any], str] = key_name, parse: Callable[[str], Any] = key_of, root=None,
                 warn: Warn | None = None, then: str = "it is redone", dumps: dict | None = None,
                 config: dict | None = None, error: type[Exception] = ConfigError, hint: str = ""):
        self.dir = Path(directory)
        self.codec = codec
        if codec != "json" and not isinstance(codec, Blob):
            raise ConfigError(f"unknown record codec {codec!r} (expected json or a Blob)")
        self.suffix = ".json" if codec == "json" else codec.suffix
        self.kind, self.need, self.check = kind, tuple(need), check
        self.name, self.parse = name, parse
        self.root = Path(root) if root is not None else self.dir.parent
        self.warn, self.then = warn or log.warning, then
        self.dumps = dict(ensure_ascii=False) if dumps is None else dumps
        self.clean()                     # what a killed writer left (one writer per folder at a time)
        if config is not None:
            self._settle(config, error, hint)

    def _settle(self, config: dict, error, hint: str) -> None:
        path = self.dir / CONFIG
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            write_json(path, {"config": config}, indent=2, sort_keys=True, ensure_ascii=False, default=str)
            return
        head, why = parse_json(data, dict, ("config",))
        if why is not None:              # settings unknown: nothing can be trusted
            move_aside(path, why, root=self.root, then="every record is redone", warn=self.warn)
            for k in self.keys(checked=False):
                move_aside(self.path(k), root=self.root)
            write_json(path, {"config": config}, indent=2, sort_keys=True, ensure_ascii=False, default=str)
            return
        check_resume(self.dir, head["config"], config, error=error, hint=hint)

    def path(self, key) -> Path:
        return self.dir / f"{self.name(key)}{self.suffix}"

    def put(self, key, value) -> Path:
        """Commit ``value`` as ``key``'s record, atomically (replacing an earlier one)."""
        if self.codec == "json":
            return write_bytes(self.path(key), json.dumps(value, **self.dumps).encode("utf-8"))
        from kneuron.store.atomic import write_with
        return write_with(self.path(key), lambda f: self.codec.dump(value, f))

    def _decode(self, path: Path):
        if self.codec == "json":
            value, why = parse_json(path.read_bytes(), self.kind, self.need)
        else:
            if not path.stat().st_size:
                return None, "empty file (0 bytes)"
            try:
                with open(path, "rb") as f:
                    value, why = self.codec.load(f), None
            except Exception as e:       # noqa: BLE001  (whatever the caller's loader raises: damaged)
                return None, f"{type(e).__name__}: {one_line(e)}"[:200]
        if why is None and self.check is not None:
            why = self.check(value)
        return value, why

    def get(self, key, default=None):
        """``key``'s record; ``default`` when it has none or its file is damaged (moved aside, one warning)."""
        path = self.path(key)
        if not path.is_file():
            return default
        value, why = self._decode(path)
        if why is not None:
            move_aside(path, why, root=self.root, then=self.then, warn=self.warn)
            return default
        return value

    def __contains__(self, key) -> bool:
        """Whether ``key`` is done: committed and readable (a damaged record is moved aside: not done)."""
        return self.get(key, _MISSING) is not _MISSING

    def keys(self, checked: bool = True) -> list:
        """The done keys, in file-name order (``checked``: each record read back; damaged ones moved aside)."""
        if not self.dir.is_dir():
            return []
        stems = sorted(p.name[: -len(self.suffix)] for p in self.dir.iterdir()
                       if p.is_file() and p.name.endswith(self.suffix) and not p.name.startswith(".")
                       and not p.name.endswith(TMP))
        keys = [self.parse(s) for s in stems]
        return [k for k in keys if k in self] if checked else keys

    def items(self) -> Iterator[tuple[Any, Any]]:
        for k in self.keys(checked=False):
            v = self.get(k, _MISSING)
            if v is not _MISSING:
                yield k, v

    def __len__(self) -> int:
        return len(self.keys())

    def clean(self) -> None:
        """Remove what an interrupted ``put`` left (temporary files)."""
        if self.dir.is_dir():
            clean_tmp(self.dir)

    def __repr__(self) -> str:
        return f"Records({str(self.dir)!r}, {self.codec if self.codec == 'json' else self.suffix})"


class JsonLines:
    """Records as lines of one JSON-lines file: a settings line ``{"config": ...}``, then one JSON
    object per record (holding its ``key`` fields and the ``need`` keys), appended and fsync'ed one by
    one. ``fresh``: start over. On opening, damaged lines (torn by a kill, not a record) are dropped:
    the file as it was goes to damaged/, is rewritten with its good lines, one warning says which lines,
    and their records count as not done; a damaged settings line drops every record. ``readonly``: read
    what is good, whatever the settings, and change nothing (``config`` then holds the file's)."""

    def __init__(self, path, *, key: tuple[str, ...], need: tuple[str, ...] = (), config: dict | None = None,
                 fresh: bool = False, root=None, warn: Warn | None = None, noun: str = "record",
                 error: type[Exception] = ConfigError, hint: str = "", readonly: bool = False):
        self.path, self.key, self.need = Path(path), tuple(key), tuple(key) + tuple(need)
        self.config = config
        self.root = Path(root) if root is not None else self.path.parent
        self.warn, self.noun = warn or log.warning, noun
        self.rows: dict = {}
        self.readonly = readonly
        if not fresh:
            self._read(error, hint)
        if readonly:
            return
        if not self.rows and (fresh or not self.path.exists()):
            write_lines(self.path, [json.dumps({"config": config})])

    def _ok(self, line: str) -> dict | None:
        try:
            r = json.loads(line)
        except ValueError:
            return None
        return r if isinstance(r, dict) and all(k in r for k in self.need) else None

    def _read(self, error, hint: str) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        lines = raw.decode("utf-8", errors="replace").split("\n")
        try:
            head = json.loads(lines[0])["config"]
        except (ValueError, KeyError, TypeError):
            head = _MISSING
        if head is not _MISSING and self.readonly:
            self.config = head
        if head is _MISSING:          # nothing can be trusted without the settings it was made with
            if self.readonly:
                return
            what = "empty" if not raw else "its first line is not the settings line"
            move_aside(self.path, what, root=self.root, then=f"every {self.noun} is redone", warn=self.warn)
            return
        if not self.readonly and jsonable(head) != jsonable(self.config):
            check_resume(self.path, head if isinstance(head, dict) else {"config": head},
                         self.config if isinstance(self.config, dict) else {"config": self.config},
                         error=error, hint=hint)
        good, bad = [lines[0]], []
        last = max((i for i, line in enumerate(lines) if line.strip()), default=0)
        for i, line in enumerate(lines[1:], 1):
            if not line.strip():
                continue
            r = self._ok(line)
            if r is None:
                torn = i == last and not raw.endswith(b"\n")
                bad.append(f"line {i + 1}" + (" (torn)" if torn else ""))
                continue
            self.rows[self._key(r)] = r
            good.append(line)
        if bad and not self.readonly:
            kept = move_aside(self.path, root=self.root)
            write_lines(self.path, good)
            n, s = len(bad), "s" if len(bad) > 1 else ""
            self.warn(f"{self.path}: {n} damaged line{s} ({', '.join(bad[:5])}"
                      f"{f', and {n - 5} more' if n > 5 else ''}); the file as it was is kept as {kept}, and the "
                      f"{self.noun}{s} of {'those lines are' if n > 1 else 'that line is'} redone")
        elif not self.readonly and not raw.endswith(b"\n"):  # a whole last row without its newline: end it
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write("\n")

    def _key(self, row: dict):
        return tuple(row[k] for k in self.key)

    def __contains__(self, key) -> bool:
        return tuple(key) in self.rows

    def get(self, key, default=None):
        return self.rows.get(tuple(key), default)

    def keys(self) -> list:
        return list(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def put(self, row: dict) -> None:
        """Append ``row`` (its key from its own fields) and fsync it."""
        if self.readonly:
            raise ConfigError(f"{self.path} was opened read-only")
        append_line(self.path, json.dumps(row))
        self.rows[self._key(row)] = row

    def compact(self, order=None) -> None:
        """Rewrite the file with one line per record (the last written for a key), atomically; ``order``:
        these keys first, in this order (e.g. the run's facts: the file an uninterrupted run writes)."""
        keys = [tuple(k) for k in order or () if tuple(k) in self.rows]
        keys += [k for k in self.rows if k not in set(keys)]
        write_lines(self.path, [json.dumps({"config": self.config})] + [json.dumps(self.rows[k]) for k in keys])


def open_records(path, *, codec="json", **kw):
    """Keyed records at ``path`` with ``codec``: "json" or a ``Blob`` (``Records``), "jsonl"
    (``JsonLines``), "parquet" (``kneuron.store.parquet.ParquetRecords``)."""
    if codec == "jsonl":
        return JsonLines(path, **kw)
    if codec == "parquet":
        from kneuron.store.parquet import ParquetRecords
        return ParquetRecords(path, **kw)
    return Records(path, codec=codec, **kw)


__all__ = ["Blob", "JsonLines", "Records", "open_records", "key_name", "key_of", "DAMAGED"]
