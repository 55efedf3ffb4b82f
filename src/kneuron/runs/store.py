"""The run directory: metadata plus per-fact results, resumable at any instant.

Layout:
    run.json          metadata given by the caller (model, method, parameters, versions, ...)
    facts.jsonl       the run's own copy of its facts (canonical JSONL, in order), when given
    facts.parquet     one row per finished (fact, lang)          } written by finalize()
    neurons.parquet   one row per selected neuron                }
    parts/            two small Parquet files per finished fact, while the run goes on

add() writes a fact's neurons part, then its facts part, each to a temp name and then
os.replace'd into place. The facts part is the commit marker: a neurons part without
one is an interrupted write and is ignored (and deleted when a writer opens the run).
finalize() merges the parts with any earlier compacted files, writing neurons.parquet
before facts.parquet, so that facts.parquet again says which facts are committed:
parts already in it are skipped, neuron rows not backed by it are ignored.

Every Parquet file is read through one checked reader: a part (or the compacted pair) that is not
what it should be (truncated, empty, unreadable, lacking the head columns, or holding another fact
than its name says) is moved aside into damaged/ by a writer, never deleted, and named in one
warning line (logger "kneuron.runs"); its facts then count as not done, so a resumed run redoes
them. A reader (open_run) moves nothing: it refuses the run in one line and suggests --resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kneuron.facts import Fact, save_facts
from kneuron.errors import KneuronError

# parameters that must not change when a run is resumed (checked when present on both sides)
RESUME_KEYS = ("model", "revision", "dtype", "kind", "site", "model_spec", "n_layers", "n_neurons", "method",
               "method_options", "objective", "steps", "rule", "threshold", "top_k", "refine_p", "facts_hash",
               "lang", "precision")

FACTS_FILE = "facts.jsonl"  # the run's own copy of its facts
TIMINGS_FILE = "timings.json"  # each stage's wall time, summed over the sessions of a run
RENAMED_OPTIONS = {"prefactor_kind": "prefactor"}    # method option: old name in run.json -> current name
DAMAGED = "damaged"         # where damaged files are moved aside
FACT_HEAD = ("order", "fact_id", "lang")
NEURON_HEAD = FACT_HEAD + ("layer", "neuron", "score", "rank")
FACT_SORT = ["order", "fact_id", "lang"]
NEURON_SORT = FACT_SORT + ["rank", "layer", "neuron"]
TYPES = {
    "order": pa.int64(), "layer": pa.int64(), "neuron": pa.int64(), "rank": pa.int64(),
    "score": pa.float64(), "fact_id": pa.string(), "lang": pa.string(),
}
# one fixed writer config, so that equal tables give equal bytes
WRITE_OPTS = dict(compression="zstd", version="2.6", use_dictionary=True,
                  write_statistics=True, row_group_size=1 << 20, data_page_size=1 << 20)


log = logging.getLogger("kneuron.runs")


def upgrade_meta(meta: dict) -> dict:
    """run.json as written by an older kneuron, in today's names (in memory; the file is left as it is):
    AMIG's ``prefactor_kind`` is ``prefactor`` now."""
    opts = meta.get("method_options")
    if isinstance(opts, dict) and any(k in opts for k in RENAMED_OPTIONS):
        meta = {**meta, "method_options": {RENAMED_OPTIONS.get(k, k): v for k, v in opts.items()}}
    return meta


class RunStoreError(KneuronError, RuntimeError):
    """A run directory cannot be used as asked (one-line message)."""


class _Damaged(Exception):
    """A file of the run is not what it should be: ``path`` and a one-line ``reason``."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


# ----------------------------------------------------------------------------- helpers

def _jsonable(v):
    return json.loads(json.dumps(v, sort_keys=True, default=str))


def _cell(v):
    """Normalise one value: numpy scalars to Python, containers to JSON text."""
    if isinstance(v, np.ndarray):
        v = v.tolist()
    elif isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True, ensure_ascii=False, default=str)
    return v


def _column(name: str, vals: list) -> pa.Array:
    typ = TYPES.get(name)
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


def _to_table(rows: list[dict], head: tuple[str, ...]) -> pa.Table:
    names = list(head) + sorted({k for r in rows for k in r} - set(head))
    for r in rows:
        missing = [h for h in head if r.get(h) is None]
        if missing:
            raise RunStoreError(f"row for fact {r.get('fact_id')!r} lacks {', '.join(missing)}")
    return pa.table({n: _column(n, [_cell(r.get(n)) for r in rows]) for n in names})


def _empty(head: tuple[str, ...]) -> pa.Table:
    return pa.table({n: pa.array([], TYPES[n]) for n in head})


def _merge(tables: list[pa.Table], head: tuple[str, ...], sort: list[str]) -> pa.Table:
    """Concatenate, fix the column order (head, then extras by name) and sort the rows."""
    tables = [t.replace_schema_metadata(None) for t in tables if t is not None]
    t = pa.concat_tables([_empty(head)] + tables, promote_options="permissive")
    t = t.select(list(head) + sorted(set(t.column_names) - set(head)))
    return t.sort_by([(c, "ascending") for c in sort]).combine_chunks()


def _keys(t: pa.Table) -> set[tuple[str, str]]:
    return set(zip(t["fact_id"].to_pylist(), t["lang"].to_pylist()))


def _stem(order: int, fact_id: str, lang: str) -> str:
    digest = hashlib.sha1(json.dumps([fact_id, lang]).encode()).hexdigest()[:16]
    return f"{order:09d}-{digest}"


def _stems(t: pa.Table) -> set[str]:
    cols = zip(t["order"].to_pylist(), t["fact_id"].to_pylist(), t["lang"].to_pylist())
    return {_stem(*c) for c in cols}


def _atomic_write(path: Path, write) -> None:
    """write(file) into path.tmp, fsync, then rename over path: readers see old or new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_parquet(path: Path, table: pa.Table) -> None:
    _atomic_write(path, lambda f: pq.write_table(table, f, **WRITE_OPTS))


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return re.sub(r"^Could not open Parquet input source '.*?': ", "", msg)


def _read_checked(path: Path, head: tuple[str, ...]) -> pa.Table:
    """Read one Parquet file of the run; _Damaged when it is missing, empty, unreadable, or lacks
    (or mistypes, or leaves empty) one of the head columns."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise _Damaged(path, "missing") from None
    if not path.is_file():
        raise _Damaged(path, "not a file")
    if size == 0:
        raise _Damaged(path, "empty file (0 bytes)")
    try:
        t = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError, IndexError, EOFError) as e:
        raise _Damaged(path, f"not readable as Parquet: {_one_line(e)}") from None
    missing = [c for c in head if c not in t.column_names]
    if missing:
        raise _Damaged(path, f"lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    for c in head:
        if t.schema.field(c).type != TYPES[c]:
            raise _Damaged(path, f"column {c} is {t.schema.field(c).type}, not {TYPES[c]}")
        if t[c].null_count:
            raise _Damaged(path, f"column {c} has empty values")
    return t


def _some(items: list[str], sep: str, n: int = 5) -> str:
    """The first ``n`` items joined, and how many more."""
    more = f"{sep}and {len(items) - n} more" if len(items) > n else ""
    return sep.join(items[:n]) + more


def _unique(path: Path) -> Path:
    """``path``, or ``path``.1, .2, ... if that is taken."""
    out, i = path, 0
    while out.exists():
        i += 1
        out = path.with_name(f"{path.name}.{i}")
    return out


def move_aside(path, run_dir) -> Path:
    """Move a damaged file of a run into ``run_dir``/damaged/ (never deleted; a name already taken
    there gets .1, .2, ...). Returns where it went."""
    path, where = Path(path), Path(run_dir) / DAMAGED
    try:
        where.mkdir(exist_ok=True)
        dst = _unique(where / path.name)
        os.replace(path, dst)
    except OSError as e:
        raise RunStoreError(f"{path}: damaged, and it cannot be moved aside into {where}: {_one_line(e)}") from None
    return dst


def add_time(run_dir, stage: str, seconds: float, warn=None) -> dict:
    """Adds ``seconds`` to ``stage`` in the run's timings.json -- each stage's wall time summed over the
    sessions of a run, so a resumed session adds only what it did -- and returns all of them. A file that
    does not read back as a JSON object is moved to damaged/ (``warn``, default a logged warning, says so)
    and the times start again."""
    run_dir = Path(run_dir)
    path = run_dir / TIMINGS_FILE
    times: dict = {}
    if path.exists():
        try:
            times = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(times, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            kept = move_aside(path, run_dir)
            (warn or log.warning)(f"{path}: damaged ({_one_line(e)}); kept as {kept} and the stage times start again")
            times = {}
    times[stage] = round(times.get(stage, 0.0) + seconds, 2)
    _atomic_write(path, lambda f: f.write(json.dumps(times, indent=2).encode("utf-8")))
    return times


# ----------------------------------------------------------------------------- the store

def check_out(path, resume: bool = False, readonly: bool = False) -> None:
    """Whether ``path`` can take a run as asked, before any work (one-line RunStoreError): a new run
    needs a missing or empty directory, a resumed (or read) one a directory with a run.json."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunStoreError(f"{path}: " + ("a file, not a run directory" if readonly
                                           else "--out names a file, not a run directory"))
    if resume and not (path / "run.json").is_file():
        raise RunStoreError(f"{path} holds no run (no run.json)")
    if not resume and path.exists() and any(path.iterdir()):
        raise RunStoreError(f"{path} already holds a run; pass --resume to continue it or choose another --out")


class RunStore:
    """A run directory: run.json metadata, facts and neurons tables, resumable."""

    def __init__(self, path, meta: dict | None = None, resume: bool = False, readonly: bool = False,
                 facts: list[Fact] | None = None):
        self.path = Path(path)
        self.parts = self.path / "parts"
        self.readonly = readonly
        self.damaged: list[Path] = []         # where damaged files were moved aside (this object's doing)
        self._notes: list[str] = []           # damaged parts found by the operation under way
        self._lost: str | None = None         # the same for a damaged compacted pair
        check_out(self.path, resume=resume or readonly, readonly=readonly)
        if facts is not None:
            facts = list(facts)
            seen: set = set()
            for f in facts:
                if f.key in seen:
                    raise RunStoreError(f"{self.path}: duplicate fact {f.key} in the facts given to the run")
                seen.add(f.key)
        if resume or readonly:
            try:
                self.meta = json.loads((self.path / "run.json").read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise RunStoreError(f"{self.path / 'run.json'}: damaged ({_one_line(e)})") from None
            if not isinstance(self.meta, dict):
                raise RunStoreError(f"{self.path / 'run.json'}: damaged (not a JSON object)")
            self.meta = upgrade_meta(self.meta)
            if meta is not None:
                self._check_meta(meta)
        else:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise RunStoreError(f"{self.path}: cannot make the run directory ({_one_line(e)})") from None
            self.meta = dict(meta or {})
            text = json.dumps(self.meta, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
            _atomic_write(self.path / "run.json", lambda f: f.write(text.encode("utf-8")))
        if facts is not None and not readonly:
            self._keep_facts(facts)
        if not readonly:
            self._repair()
        facts, _ = self._gather()
        self._done = _keys(facts)
        self._report(facts, "open")

    def _check_meta(self, meta: dict) -> None:
        for k in RESUME_KEYS:
            if k in meta and k in self.meta and _jsonable(meta[k]) != _jsonable(self.meta[k]):
                raise RunStoreError(
                    f"cannot resume {self.path}: {k} differs (run has {self.meta[k]!r}, now {meta[k]!r})")

    def _keep_facts(self, facts: list[Fact]) -> None:
        """Write the run's own facts.jsonl (a new run, or one made before runs kept their facts). On
        resume, the recorded and the given facts must agree (keys, in order) as far as both go: a run
        resumed with a larger --limit extends the file, one resumed with a smaller keeps it."""
        path = self.path / FACTS_FILE
        if not path.is_file():
            save_facts(facts, path)
            return
        with open(path, encoding="utf-8") as f:
            had = [(o.get("id"), o.get("lang")) for o in map(json.loads, filter(str.strip, f))]
        now = [tuple(x.key) for x in facts]
        n = min(len(had), len(now))
        if had[:n] != now[:n]:
            i = next(i for i in range(n) if had[i] != now[i])
            raise RunStoreError(f"cannot resume {self.path}: its facts differ from those given (fact {i + 1} is "
                                f"{had[i][0]!r} ({had[i][1]}) in its facts.jsonl, {now[i][0]!r} ({now[i][1]}) now)")
        if len(now) > len(had):
            save_facts(facts, path)

    # -- reading ------------------------------------------------------------------

    def _compacted(self) -> tuple[pa.Table | None, pa.Table | None]:
        """The finalized tables, neurons cut to the facts that facts.parquet commits. A damaged one:
        both are moved aside (writer) or the run is refused (reader)."""
        fp, np_ = self.path / "facts.parquet", self.path / "neurons.parquet"
        try:
            facts = _read_checked(fp, FACT_HEAD) if fp.exists() else None
            neurons = _read_checked(np_, NEURON_HEAD) if np_.exists() else None
            if facts is not None and neurons is None:
                raise _Damaged(np_, "missing, while facts.parquet is there")
        except _Damaged as d:
            if self.readonly:
                raise RunStoreError(f"{d.path}: damaged ({d.reason}); resume the run (kneuron locate ... --resume) "
                                    "to move it aside and recover or redo its facts") from None
            moved = [p for p in (fp, np_) if p.exists()]
            for p in moved:
                self.damaged.append(move_aside(p, self.path))
            self._lost = f"{d.path.name} damaged ({d.reason}): {' and '.join(p.name for p in moved)} moved to " \
                         f"{self.path / DAMAGED}"
            return None, None
        if neurons is not None:
            keep = _keys(facts) if facts is not None else set()
            mask = [k in keep for k in zip(neurons["fact_id"].to_pylist(), neurons["lang"].to_pylist())]
            if not all(mask):  # finalize was cut between its two writes
                neurons = neurons.filter(pa.array(mask, pa.bool_()))
        return facts, neurons

    def _part_stems(self, skip: set[str]) -> list[str]:
        if not self.parts.is_dir():
            return []
        names = (p.name for p in self.parts.glob("*.facts.parquet"))
        return sorted(s for s in (n[: -len(".facts.parquet")] for n in names) if s not in skip)

    def _part(self, stem: str) -> tuple[pa.Table, pa.Table]:
        """One committed part, checked: its facts part holds exactly the fact its name says, its
        neurons part is readable and holds rows of that fact only."""
        fp = self.parts / f"{stem}.facts.parquet"
        f = _read_checked(fp, FACT_HEAD)
        if f.num_rows != 1:
            raise _Damaged(fp, f"holds {f.num_rows} rows, not one")
        order, fid, lang = (f[c][0].as_py() for c in FACT_HEAD)
        if _stem(order, fid, lang) != stem:
            raise _Damaged(fp, f"holds fact {fid!r} ({lang}) at order {order}, not the one its name stands for")
        np_ = self.parts / f"{stem}.neurons.parquet"
        n = _read_checked(np_, NEURON_HEAD)
        other = set(zip(*(n[c].to_pylist() for c in FACT_HEAD))) - {(order, fid, lang)}
        if other:
            o = min(other)
            raise _Damaged(np_, f"holds neurons of another fact ({o[1]!r} ({o[2]}) at order {o[0]})")
        return f, n

    def _fact_name(self, stem: str) -> str:
        """"fact 'id' (lang)" of a damaged part: by its order in the run's facts.jsonl, else from
        whichever of its two files still names it; else "part <stem>"."""
        try:
            order = int(stem.split("-")[0])
            with open(self.path / FACTS_FILE, encoding="utf-8") as fh:
                for i, line in enumerate(filter(str.strip, fh)):
                    if i == order:
                        o = json.loads(line)
                        if _stem(order, str(o.get("id")), str(o.get("lang"))) == stem:
                            return f"fact {o['id']!r} ({o['lang']})"
                        break
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            pass
        for kind in ("facts", "neurons"):
            try:
                t = pq.read_table(self.parts / f"{stem}.{kind}.parquet", columns=list(FACT_HEAD))
                for order, fid, lang in zip(*(t[c].to_pylist() for c in FACT_HEAD)):
                    if _stem(order, fid, lang) == stem:
                        return f"fact {fid!r} ({lang})"
            except Exception:     # noqa: BLE001  (only a name for the warning: any failure means no name)
                pass
        return f"part {stem}"

    def _gather(self) -> tuple[pa.Table, pa.Table]:
        """Facts and neurons so far, compacted and parts, in one pass of the checked reader: a damaged
        part (with its pair) is moved aside by a writer (and noted for _report), refused by a reader."""
        facts, neurons = self._compacted()
        skip = _stems(facts) if facts is not None else set()
        ft, nt = [facts], [neurons]
        for stem in self._part_stems(skip):
            try:
                f, n = self._part(stem)
            except _Damaged as d:
                if self.readonly:
                    raise RunStoreError(f"{d.path}: damaged ({d.reason}); resume the run (kneuron locate ... "
                                        "--resume) to move it aside and redo its fact") from None
                name = self._fact_name(stem)
                for p in (self.parts / f"{stem}.facts.parquet", self.parts / f"{stem}.neurons.parquet"):
                    if p.exists():
                        self.damaged.append(move_aside(p, self.path))
                self._notes.append(f"{name}: {d.path.name} {d.reason}")
                continue
            ft.append(f)
            nt.append(n)
        return _merge(ft, FACT_HEAD, FACT_SORT), _merge(nt, NEURON_HEAD, NEURON_SORT)

    def _report(self, facts: pa.Table, when: str, missing: list[tuple[str, str]] = ()) -> None:
        """One warning line for what the operation just done found damaged and moved aside."""
        if not self._notes and self._lost is None:
            return
        said = []
        if self._lost is not None:
            said.append(f"{self._lost}, {facts.num_rows} facts recovered from parts/")
        if self._notes:
            n = len(self._notes)
            said.append(f"{n} damaged part{'s' if n > 1 else ''} moved to {self.path / DAMAGED} "
                        f"({_some(self._notes, '; ')})")
        if when == "finalize" and missing:
            names = _some([f"{k[0]!r} ({k[1]})" for k in missing], ", ")
            tail = f"missing from facts.parquet: {names}; resume the run to redo them"
        else:
            tail = "the facts they held count as not done: a resumed run redoes them"
        self._notes, self._lost = [], None
        log.warning("%s: %s; %s", self.path, "; ".join(said), tail)

    def _read(self, kind: str) -> pa.Table:
        facts, neurons = self._gather()
        if not self.readonly:
            self._done = _keys(facts)
        self._report(facts, "read")
        return facts if kind == "facts" else neurons

    def facts(self) -> pa.Table:
        """All finished facts so far (parts and compacted), sorted by order."""
        return self._read("facts")

    def neurons(self) -> pa.Table:
        """All selected neurons so far, sorted by order, then rank."""
        return self._read("neurons")

    def done(self) -> set[tuple[str, str]]:
        """The (fact_id, lang) keys already finished."""
        return set(self._done)

    # -- writing ------------------------------------------------------------------

    def _writable(self) -> None:
        if self.readonly:
            raise RunStoreError(f"{self.path} was opened read-only")

    def _repair(self) -> None:
        """Drop what an interrupted add() or finalize() left behind."""
        for p in list(self.path.glob("*.tmp")) + list(self.parts.glob("*.tmp")):
            p.unlink(missing_ok=True)
        facts, neurons = self._compacted()
        if neurons is not None and neurons.num_rows < pq.read_metadata(self.path / "neurons.parquet").num_rows:
            _write_parquet(self.path / "neurons.parquet", _merge([neurons], NEURON_HEAD, NEURON_SORT))
        compacted = _stems(facts) if facts is not None else set()
        for p in self.parts.glob("*.facts.parquet"):  # already compacted by a cut finalize()
            if p.name[: -len(".facts.parquet")] in compacted:
                p.unlink()
        for p in self.parts.glob("*.neurons.parquet"):  # orphans: no commit marker
            if not (self.parts / p.name.replace(".neurons.", ".facts.")).exists():
                p.unlink()

    def add(self, fact_row: dict, neuron_rows: list[dict]) -> None:
        """Record one finished (fact, lang) and its neurons, all or nothing."""
        self._writable()
        key = (str(fact_row.get("fact_id")), str(fact_row.get("lang")))
        if key in self._done:
            raise RunStoreError(f"fact {key[0]!r} ({key[1]}) is already recorded in {self.path}")
        write_part(self.path, fact_row, neuron_rows)
        self._done.add(key)

    def finalize(self) -> list[tuple[str, str]]:
        """Compact everything into facts.parquet and neurons.parquet and remove parts/. Parts are read
        through the checked reader, so one damaged since the run was opened is moved aside (one
        warning line) and the rest compacted. Returns the facts that were done but are now missing
        for that reason (a resumed run redoes them)."""
        self._writable()
        before = set(self._done)
        facts, neurons = self._gather()
        _write_parquet(self.path / "neurons.parquet", neurons)
        _write_parquet(self.path / "facts.parquet", facts)  # commit marker of the compaction
        shutil.rmtree(self.parts, ignore_errors=True)
        self._done = _keys(facts)
        missing = sorted(before - self._done)
        self._report(facts, "finalize", missing)
        return missing

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r}, {len(self._done)} facts done)"


def write_part(path, fact_row: dict, neuron_rows: list[dict]) -> None:
    """Write one fact's part into ``path``/parts, atomically: neurons first, then the facts part that
    commits it. Safe from several processes at once (each fact has its own file names; a fact written
    twice, e.g. by a retried worker, is replaced whole, never duplicated). Used by RunStore.add and by
    the workers of a sharded run."""
    facts = _to_table([fact_row], FACT_HEAD)
    order = facts["order"][0].as_py()
    key = (str(fact_row.get("fact_id")), str(fact_row.get("lang")))
    rows = []
    for r in neuron_rows:
        r = dict(r)
        for k in FACT_HEAD:
            if k in r and str(_cell(r[k])) != str(_cell(fact_row[k])):
                raise RunStoreError(f"neuron row has {k}={r[k]!r} but the fact has {fact_row[k]!r}")
            r[k] = fact_row[k]
        rows.append(r)
    neurons = _to_table(rows, NEURON_HEAD) if rows else _empty(NEURON_HEAD)
    parts = Path(path) / "parts"
    parts.mkdir(exist_ok=True)
    stem = _stem(order, *key)
    _write_parquet(parts / f"{stem}.neurons.parquet", neurons)
    _write_parquet(parts / f"{stem}.facts.parquet", facts)  # commit marker


def open_run(path) -> RunStore:
    """Open an existing run to read it (evaluate, intervene); changes nothing on disk."""
    return RunStore(path, resume=True, readonly=True)


def query(path, sql: str) -> list[tuple]:
    """Run SQL over a run with DuckDB; the views `facts` and `neurons` hold its tables."""
    try:
        import duckdb
    except ImportError:
        raise RunStoreError("query() needs duckdb: pip install duckdb") from None
    run = open_run(path)
    facts, neurons = run.facts(), run.neurons()
    con = duckdb.connect()
    try:
        con.register("facts", facts)
        con.register("neurons", neurons)
        return con.execute(sql).fetchall()
    finally:
        con.close()
