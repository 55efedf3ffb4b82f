"""The "parquet" record codec: keyed rows in several tables, resumable at any instant, compacted into
one Parquet file per table that DuckDB (or pandas, or pyarrow) reads as it is.

One record = one row of the commit table (its identity: a position column, then the key columns) and
any number of rows of the other tables (each starting with the same identity columns). ``put`` writes
the record's part of every other table into ``parts/<stem>.<table>.parquet``, then its commit-table
part: that file is the commit marker, and a part without one is an interrupted write (removed by
``repair``). ``compact`` merges the parts with the compacted files, writing the commit table last,
so that it again says which records are committed (rows of other tables not backed by it are ignored).

Every file is read through one checked reader: one that is truncated, empty, unreadable, lacks or
mistypes a head column, or holds another record than its name says is moved into ``root``/damaged/
by a writer (one warning line for all that one operation found), and its records count as not done;
a reader (``readonly``) moves nothing and refuses in one line.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kneuron.store.atomic import DAMAGED, StoreError, clean_tmp, move_aside, one_line, write_with

# one fixed writer config, so that equal tables give equal bytes
WRITE_OPTS = dict(compression="zstd", version="2.6", use_dictionary=True,
                  write_statistics=True, row_group_size=1 << 20, data_page_size=1 << 20)


@dataclass(frozen=True)
class Table:
    name: str                       # file <name>.parquet, parts/<stem>.<name>.parquet
    head: tuple[str, ...]           # columns every row must hold, typed (checked on reading)
    sort: tuple[str, ...]           # the compacted file's row order


class Damaged(Exception):
    """A file is not what it should be: ``path`` and a one-line ``reason``."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def cell(v):
    """Normalise one value: numpy scalars to Python, containers to JSON text."""
    if isinstance(v, np.ndarray):
        v = v.tolist()
    elif isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True, ensure_ascii=False, default=str)
    return v


def write_parquet(path: Path, table: pa.Table) -> None:
    """``table`` as ``path``, atomically, with the one writer config."""
    write_with(path, lambda f: pq.write_table(table, f, **WRITE_OPTS))


def write_table(path, table: pa.Table, **opts) -> None:
    """``table`` as ``path``, atomically, with pyarrow's default writer config (or ``opts``): results
    saved beside a run (evaluation.parquet, likn.parquet, ...)."""
    write_with(path, lambda f: pq.write_table(table, f, **opts))


def stem_of(position: int, *key) -> str:
    """A part's file stem: its position, then a digest of its key (any text is a safe name)."""
    digest = hashlib.sha1(json.dumps(list(key)).encode()).hexdigest()[:16]
    return f"{position:09d}-{digest}"


def _some(items: list[str], sep: str, n: int = 5) -> str:
    """The first ``n`` items joined, and how many more."""
    more = f"{sep}and {len(items) - n} more" if len(items) > n else ""
    return sep.join(items[:n]) + more


class ParquetRecords:
    """Records in ``directory`` (see the module doc). ``tables``: the last is the commit table, whose
    head is the identity (position column, then the key). ``types``: the head columns' Arrow types.
    ``noun`` names a record in messages; ``describe(stem)`` names a damaged part's record; ``hint``
    tells a reader how to recover (e.g. "resume the run (kneuron locate ... --resume)")."""

    def __init__(self, directory, *, tables: Sequence[Table], types: dict, root=None, readonly: bool = False,
                 noun: str = "record", describe: Callable[[str], str] | None = None, hint: str = "resume it",
                 error: type[Exception] = StoreError, logger: logging.Logger | None = None):
        self.dir = Path(directory)
        self.parts = self.dir / "parts"
        self.tables, self.commit = list(tables), tables[-1]
        self.ident, self.key = self.commit.head, self.commit.head[1:]
        self.types, self.noun, self.hint, self.error = types, noun, hint, error
        self.root = Path(root) if root is not None else self.dir
        self.readonly, self.describe = readonly, describe
        self.log = logger or logging.getLogger("kneuron.store")
        self.damaged: list[Path] = []         # where damaged files were moved aside (this object's doing)
        self._notes: list[str] = []           # damaged parts found by the operation under way
        self._lost: str | None = None         # the same for a damaged compacted set

    # -- tables ---------------------------------------------------------------------

    def _column(self, name: str, vals: list) -> pa.Array:
        typ = self.types.get(name)
        if typ == pa.string():
            return pa.array([str(v) for v in vals], typ)
        if typ == pa.int64():
            return pa.array([int(v) for v in vals], typ)
        if typ == pa.float64():
            return pa.array([float(v) for v in vals], typ)
        try:  # extra column: let Arrow infer (bool, int64, float64, string, null)
            return pa.array(vals)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return pa.array([None if v is None else str(v) for v in vals], pa.string())

    def to_table(self, rows: list[dict], head: tuple[str, ...]) -> pa.Table:
        names = list(head) + sorted({k for r in rows for k in r} - set(head))
        for r in rows:
            missing = [h for h in head if r.get(h) is None]
            if missing:
                raise self.error(f"row for {self.noun} {r.get(self.key[0])!r} lacks {', '.join(missing)}")
        return pa.table({n: self._column(n, [cell(r.get(n)) for r in rows]) for n in names})

    def empty(self, head: tuple[str, ...]) -> pa.Table:
        return pa.table({n: pa.array([], self.types[n]) for n in head})

    def merge(self, tables: list, t: Table) -> pa.Table:
        """Concatenate, fix the column order (head, then extras by name) and sort the rows."""
        tables = [x.replace_schema_metadata(None) for x in tables if x is not None]
        out = pa.concat_tables([self.empty(t.head)] + tables, promote_options="permissive")
        out = out.select(list(t.head) + sorted(set(out.column_names) - set(t.head)))
        return out.sort_by([(c, "ascending") for c in t.sort]).combine_chunks()

    def keys_of(self, t: pa.Table) -> set[tuple]:
        return set(zip(*(t[c].to_pylist() for c in self.key)))

    def stems_of(self, t: pa.Table) -> set[str]:
        return {stem_of(*c) for c in zip(*(t[c].to_pylist() for c in self.ident))}

    def label(self, key) -> str:
        """A record's key for messages: 'P3' (en)."""
        return f"{key[0]!r}" + "".join(f" ({k})" for k in key[1:])

    def read_checked(self, path: Path, head: tuple[str, ...]) -> pa.Table:
        """One Parquet file; Damaged when it is missing, empty, unreadable, or lacks (or mistypes, or
        leaves empty) one of the head columns."""
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise Damaged(path, "missing") from None
        if not path.is_file():
            raise Damaged(path, "not a file")
        if size == 0:
            raise Damaged(path, "empty file (0 bytes)")
        try:
            t = pq.read_table(path)
        except (pa.ArrowException, OSError, ValueError, IndexError, EOFError) as e:
            raise Damaged(path, f"not readable as Parquet: {one_line(e)}") from None
        missing = [c for c in head if c not in t.column_names]
        if missing:
            raise Damaged(path, f"lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        for c in head:
            if t.schema.field(c).type != self.types[c]:
                raise Damaged(path, f"column {c} is {t.schema.field(c).type}, not {self.types[c]}")
            if t[c].null_count:
                raise Damaged(path, f"column {c} has empty values")
        return t

    # -- reading --------------------------------------------------------------------

    def compacted(self) -> dict[str, pa.Table | None]:
        """The compacted tables (None where a file is not there), the others cut to the records the
        commit table commits. A damaged one: all are moved aside (writer; then all None) or the store
        refused (reader)."""
        paths = {t.name: self.dir / f"{t.name}.parquet" for t in self.tables}
        try:
            out = {t.name: self.read_checked(paths[t.name], t.head) if paths[t.name].exists() else None
                   for t in self.tables}
            if out[self.commit.name] is not None:
                for t in self.tables[:-1]:
                    if out[t.name] is None:
                        raise Damaged(paths[t.name], f"missing, while {self.commit.name}.parquet is there")
        except Damaged as d:
            if self.readonly:
                raise self.error(f"{d.path}: damaged ({d.reason}); {self.hint} to move it aside and recover or "
                                 f"redo its {self.noun}s") from None
            moved = [p for p in paths.values() if p.exists()]
            for p in moved:
                self.damaged.append(move_aside(p, root=self.root))
            self._lost = f"{d.path.name} damaged ({d.reason}): {' and '.join(p.name for p in moved)} moved to " \
                         f"{self.root / DAMAGED}"
            return {t.name: None for t in self.tables}
        commit = out[self.commit.name]
        keep = self.keys_of(commit) if commit is not None else set()
        for t in self.tables[:-1]:
            x = out[t.name]
            if x is None:
                continue
            mask = [k in keep for k in zip(*(x[c].to_pylist() for c in self.key))]
            if not all(mask):  # compact was cut between its writes
                out[t.name] = x.filter(pa.array(mask, pa.bool_()))
        return out

    def part_stems(self, skip: set[str]) -> list[str]:
        if not self.parts.is_dir():
            return []
        tail = f".{self.commit.name}.parquet"
        names = (p.name for p in self.parts.glob("*" + tail))
        return sorted(s for s in (n[: -len(tail)] for n in names) if s not in skip)

    def part(self, stem: str) -> dict[str, pa.Table]:
        """One committed part, checked: its commit part holds exactly the record its name says, its
        other parts are readable and hold rows of that record only."""
        fp = self.parts / f"{stem}.{self.commit.name}.parquet"
        f = self.read_checked(fp, self.ident)
        if f.num_rows != 1:
            raise Damaged(fp, f"holds {f.num_rows} rows, not one")
        ident = tuple(f[c][0].as_py() for c in self.ident)
        if stem_of(*ident) != stem:
            raise Damaged(fp, f"holds {self.noun} {self.label(ident[1:])} at {self.ident[0]} {ident[0]}, not the one "
                              "its name stands for")
        out = {self.commit.name: f}
        for t in self.tables[:-1]:
            p = self.parts / f"{stem}.{t.name}.parquet"
            n = self.read_checked(p, t.head)
            other = set(zip(*(n[c].to_pylist() for c in self.ident))) - {ident}
            if other:
                o = min(other)
                raise Damaged(p, f"holds {t.name} of another {self.noun} ({self.label(o[1:])} at {self.ident[0]} "
                                 f"{o[0]})")
            out[t.name] = n
        return out

    def _name(self, stem: str) -> str:
        """The record a damaged part held, for messages: ``describe``, else whichever of its files still
        names it, else "part <stem>"."""
        if self.describe is not None:
            said = self.describe(stem)
            if said:
                return said
        for t in reversed(self.tables):
            try:
                x = pq.read_table(self.parts / f"{stem}.{t.name}.parquet", columns=list(self.ident))
                for ident in zip(*(x[c].to_pylist() for c in self.ident)):
                    if stem_of(*ident) == stem:
                        return f"{self.noun} {self.label(ident[1:])}"
            except Exception:     # noqa: BLE001  (only a name for the warning: any failure means no name)
                pass
        return f"part {stem}"

    def gather(self) -> dict[str, pa.Table]:
        """Every table so far, compacted and parts, in one pass of the checked reader: a damaged part
        (with its pair) is moved aside by a writer (and noted for ``report``), refused by a reader."""
        comp = self.compacted()
        skip = self.stems_of(comp[self.commit.name]) if comp[self.commit.name] is not None else set()
        got = {t.name: [comp[t.name]] for t in self.tables}
        for stem in self.part_stems(skip):
            try:
                p = self.part(stem)
            except Damaged as d:
                if self.readonly:
                    raise self.error(f"{d.path}: damaged ({d.reason}); {self.hint} to move it aside and redo its "
                                     f"{self.noun}") from None
                name = self._name(stem)
                for t in self.tables:
                    f = self.parts / f"{stem}.{t.name}.parquet"
                    if f.exists():
                        self.damaged.append(move_aside(f, root=self.root))
                self._notes.append(f"{name}: {d.path.name} {d.reason}")
                continue
            for t in self.tables:
                got[t.name].append(p[t.name])
        return {t.name: self.merge(got[t.name], t) for t in self.tables}

    def report(self, committed: pa.Table, when: str, missing: list[tuple] = ()) -> None:
        """One warning line for what the operation just done found damaged and moved aside."""
        if not self._notes and self._lost is None:
            return
        said = []
        if self._lost is not None:
            said.append(f"{self._lost}, {committed.num_rows} {self.noun}s recovered from parts/")
        if self._notes:
            n = len(self._notes)
            said.append(f"{n} damaged part{'s' if n > 1 else ''} moved to {self.root / DAMAGED} "
                        f"({_some(self._notes, '; ')})")
        if when == "compact" and missing:
            names = _some([self.label(k) for k in missing], ", ")
            tail = f"missing from {self.commit.name}.parquet: {names}; resume the run to redo them"
        else:
            tail = f"the {self.noun}s they held count as not done: a resumed run redoes them"
        self._notes, self._lost = [], None
        self.log.warning("%s: %s; %s", self.dir, "; ".join(said), tail)

    # -- writing --------------------------------------------------------------------

    def repair(self) -> None:
        """Drop what an interrupted ``put`` or ``compact`` left behind."""
        clean_tmp(self.dir, self.parts)
        comp = self.compacted()
        for t in self.tables[:-1]:
            path = self.dir / f"{t.name}.parquet"
            if comp[t.name] is not None and comp[t.name].num_rows < pq.read_metadata(path).num_rows:
                write_parquet(path, self.merge([comp[t.name]], t))
        done = self.stems_of(comp[self.commit.name]) if comp[self.commit.name] is not None else set()
        tail = f".{self.commit.name}.parquet"
        for p in self.parts.glob("*" + tail):  # already compacted by a cut compact()
            if p.name[: -len(tail)] in done:
                p.unlink()
        for t in self.tables[:-1]:             # orphans: no commit marker
            for p in self.parts.glob(f"*.{t.name}.parquet"):
                if not (self.parts / (p.name[: -len(f".{t.name}.parquet")] + tail)).exists():
                    p.unlink()

    def put(self, row: dict, others: dict[str, list[dict]]) -> str:
        """Write one record's part, atomically: the other tables' rows (each given the record's identity
        values) first, then its commit row. Safe from several processes at once (a record written twice,
        e.g. by a retried worker, is replaced whole, never duplicated). Returns the part's stem."""
        commit = self.to_table([row], self.ident)
        ident = tuple(commit[c][0].as_py() for c in self.ident)
        parts = {}
        for t in self.tables[:-1]:
            rows = []
            for r in others.get(t.name, []):
                r = dict(r)
                for k in self.ident:
                    if k in r and str(cell(r[k])) != str(cell(row[k])):
                        raise self.error(f"{t.name[:-1] if t.name.endswith('s') else t.name} row has {k}={r[k]!r} "
                                         f"but the {self.noun} has {row[k]!r}")
                    r[k] = row[k]
                rows.append(r)
            parts[t.name] = self.to_table(rows, t.head) if rows else self.empty(t.head)
        self.parts.mkdir(parents=True, exist_ok=True)
        stem = stem_of(ident[0], *(str(row.get(k)) for k in self.key))
        for t in self.tables[:-1]:
            write_parquet(self.parts / f"{stem}.{t.name}.parquet", parts[t.name])
        write_parquet(self.parts / f"{stem}.{self.commit.name}.parquet", commit)  # commit marker
        return stem

    def compact(self) -> dict[str, pa.Table]:
        """Merge everything into one file per table (the commit table last) and remove parts/."""
        tables = self.gather()
        for t in self.tables:
            write_parquet(self.dir / f"{t.name}.parquet", tables[t.name])
        shutil.rmtree(self.parts, ignore_errors=True)
        return tables
