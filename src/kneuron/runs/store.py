"""The run directory: metadata plus per-fact results, resumable at any instant.

Layout:
    run.json          metadata given by the caller (model, method, parameters, versions, ...)
    facts.jsonl       the run's own copy of its facts (canonical JSONL, in order), when given
    facts.parquet     one row per finished (fact, lang)          } written by finalize()
    neurons.parquet   one row per selected neuron                }
    queries.parquet   one row per neuron of each query's own set }  (runs made since it exists)
    parts/            two (three) small Parquet files per finished fact, while the run goes on

queries.parquet: each query's own neurons (above tau x the query's best score, before refine / CAS),
the per-query sets that localization consistency (``kneuron.paper.consistency``) compares. A run keeps
it when its run.json says ``"query_neurons": true`` (every run made since); a run made before, even one
resumed now, keeps the two tables it had, and asking it for query neurons says to re-run it.

A RunStore is a manifest (``kneuron.store.manifest``: run.json, the resume check over RESUME_KEYS)
plus "parquet" records (``kneuron.store.parquet``): add() writes a fact's neurons part, then its facts
part, the commit marker; finalize() compacts them into facts.parquet and neurons.parquet. A part (or
the compacted pair) that is not what it should be is moved aside into damaged/ by a writer, never
deleted, and named in one warning line (logger "kneuron.runs"); its facts then count as not done, so
a resumed run redoes them. A reader (open_run) moves nothing: it refuses the run in one line and
suggests --resume.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from kneuron.errors import KneuronError
from kneuron.facts import Fact, save_facts
from kneuron.store.atomic import DAMAGED
from kneuron.store.manifest import MANIFEST, RENAMED_OPTIONS, TIMINGS, Manifest
from kneuron.store.manifest import check_out as _check_out
from kneuron.store.manifest import upgrade as upgrade_meta
from kneuron.store.parquet import WRITE_OPTS, ParquetRecords, Table, stem_of

# parameters that must not change when a run is resumed (checked when present on both sides)
RESUME_KEYS = ("model", "revision", "dtype", "kind", "site", "model_spec", "n_layers", "n_neurons", "method",
               "method_options", "objective", "steps", "rule", "threshold", "top_k", "refine_p", "facts_hash",
               "lang", "precision", "select", "cas_beta1", "cas_beta2")
RESUME_DEFAULTS = {"select": "refine"}   # what a run.json without the key was made with
QUERY_NEURONS = "query_neurons"          # run.json: true when the run keeps queries.parquet

FACTS_FILE = "facts.jsonl"  # the run's own copy of its facts
TIMINGS_FILE = TIMINGS      # each stage's wall time, summed over the sessions of a run
FACT_HEAD = ("order", "fact_id", "lang")
NEURON_HEAD = FACT_HEAD + ("layer", "neuron", "score", "rank")
QUERY_HEAD = FACT_HEAD + ("query", "layer", "neuron", "score", "rank")
FACT_SORT = ["order", "fact_id", "lang"]
NEURON_SORT = FACT_SORT + ["rank", "layer", "neuron"]
QUERY_SORT = FACT_SORT + ["query", "rank", "layer", "neuron"]
TYPES = {
    "order": pa.int64(), "layer": pa.int64(), "neuron": pa.int64(), "rank": pa.int64(), "query": pa.int64(),
    "score": pa.float64(), "fact_id": pa.string(), "lang": pa.string(),
}
NEURONS, QUERIES, FACTS = (Table("neurons", NEURON_HEAD, tuple(NEURON_SORT)),
                           Table("queries", QUERY_HEAD, tuple(QUERY_SORT)), Table("facts", FACT_HEAD, tuple(FACT_SORT)))
TABLES = (NEURONS, FACTS)                  # a run made before queries.parquet
TABLES_Q = (NEURONS, QUERIES, FACTS)       # a run with ``"query_neurons": true``
HINT = "resume the run (kneuron locate ... --resume)"
__all__ = ["RESUME_KEYS", "DKN_FILES", "FACTS_FILE", "TIMINGS_FILE", "RENAMED_OPTIONS", "DAMAGED", "WRITE_OPTS", "Run",
           "RunStore", "RunStoreError", "check_out", "open_run", "query", "run_dirs", "tables_for",
           "upgrade_meta", "write_part", "QUERY_NEURONS", "RESUME_DEFAULTS"]

log = logging.getLogger("kneuron.runs")


class RunStoreError(KneuronError, RuntimeError):
    """A run directory cannot be used as asked (one-line message)."""


def _stem(order: int, fact_id: str, lang: str) -> str:
    return stem_of(order, fact_id, lang)


def tables_for(meta: dict) -> tuple[Table, ...]:
    """The tables a run keeps: with queries.parquet when its run.json says so (``QUERY_NEURONS``)."""
    return TABLES_Q if meta.get(QUERY_NEURONS) is True else TABLES


def _records(path, readonly: bool = False, describe=None, tables=TABLES) -> ParquetRecords:
    return ParquetRecords(path, tables=tables, types=TYPES, readonly=readonly, noun="fact", describe=describe,
                          hint=HINT, error=RunStoreError, logger=log)


def _keys(t: pa.Table) -> set[tuple[str, str]]:
    return set(zip(t["fact_id"].to_pylist(), t["lang"].to_pylist()))


# ----------------------------------------------------------------------------- kept for callers (store/ now)

def check_out(path, resume: bool = False, readonly: bool = False) -> None:
    """Whether ``path`` can take a run as asked, before any work (one-line RunStoreError): a new run
    needs a missing or empty directory, a resumed (or read) one a directory with a run.json."""
    _check_out(path, resume=resume, readonly=readonly, error=RunStoreError)


# ----------------------------------------------------------------------------- the store

class RunStore:
    """A run directory: run.json metadata, facts and neurons tables, resumable."""

    def __init__(self, path, meta: dict | None = None, resume: bool = False, readonly: bool = False,
                 facts: list[Fact] | None = None):
        self.path = Path(path)
        self.parts = self.path / "parts"
        self.readonly = readonly
        check_out(self.path, resume=resume or readonly, readonly=readonly)
        if facts is not None:
            facts = list(facts)
            seen: set = set()
            for f in facts:
                if f.key in seen:
                    raise RunStoreError(f"{self.path}: duplicate fact {f.key} in the facts given to the run")
                seen.add(f.key)
        self.manifest = Manifest.open(self.path, meta, resume=resume, readonly=readonly, keys=RESUME_KEYS,
                                      error=RunStoreError, defaults=RESUME_DEFAULTS)
        self.records = _records(self.path, readonly, self._fact_name, tables_for(self.meta))
        if facts is not None and not readonly:
            self._keep_facts(facts)
        if not readonly:
            self.records.repair()
        facts = self.records.gather()["facts"]
        self._done = _keys(facts)
        self.records.report(facts, "open")

    @property
    def meta(self) -> dict:
        return self.manifest.meta

    @meta.setter
    def meta(self, value: dict) -> None:
        self.manifest.meta = value

    @property
    def damaged(self) -> list[Path]:
        """Where damaged files were moved aside (this object's doing)."""
        return self.records.damaged

    def save_meta(self) -> None:
        """Write run.json again (after a change of ``meta``), atomically."""
        self._writable()
        self.manifest.save()

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

    def _fact_name(self, stem: str) -> str | None:
        """"fact 'id' (lang)" of a damaged part by its order in the run's facts.jsonl (None: the store
        then asks the part's own files)."""
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
        return None

    # -- reading ------------------------------------------------------------------

    def _read(self, kind: str) -> pa.Table:
        tables = self.records.gather()
        if not self.readonly:
            self._done = _keys(tables["facts"])
        self.records.report(tables["facts"], "read")
        return tables[kind]

    def facts(self) -> pa.Table:
        """All finished facts so far (parts and compacted), sorted by order."""
        return self._read("facts")

    def neurons(self) -> pa.Table:
        """All selected neurons so far, sorted by order, then rank."""
        return self._read("neurons")

    def done(self) -> set[tuple[str, str]]:
        """The (fact_id, lang) keys already finished."""
        return set(self._done)

    @property
    def keeps_queries(self) -> bool:
        """Whether the run keeps each query's own neurons (queries.parquet)."""
        return self.meta.get(QUERY_NEURONS) is True

    def queries(self) -> pa.Table:
        """Each query's own neurons so far (order, fact_id, lang, query, layer, neuron, score, rank),
        sorted by order, query, rank; RunStoreError (one line) for a run made before runs kept them."""
        if not self.keeps_queries:
            raise RunStoreError(f"{self.path}: the run was made before locate runs kept each query's neurons "
                                "(no queries.parquet); re-run it (kneuron locate) to measure their consistency")
        return self._read("queries")

    # -- writing ------------------------------------------------------------------

    def _writable(self) -> None:
        if self.readonly:
            raise RunStoreError(f"{self.path} was opened read-only")

    def add(self, fact_row: dict, neuron_rows: list[dict], query_rows: list[dict] | None = None) -> None:
        """Record one finished (fact, lang), its neurons and (a run that keeps them) each query's own
        neurons, all or nothing; ``query_rows`` are dropped by a run made before runs kept them."""
        self._writable()
        key = (str(fact_row.get("fact_id")), str(fact_row.get("lang")))
        if key in self._done:
            raise RunStoreError(f"fact {key[0]!r} ({key[1]}) is already recorded in {self.path}")
        if self.keeps_queries and query_rows is None:
            raise RunStoreError(f"fact {key[0]!r} ({key[1]}): {self.path} keeps each query's neurons; none given")
        self.records.put(fact_row, {"neurons": neuron_rows, "queries": query_rows or []})
        self._done.add(key)

    def finalize(self) -> list[tuple[str, str]]:
        """Compact everything into facts.parquet and neurons.parquet and remove parts/. Parts are read
        through the checked reader, so one damaged since the run was opened is moved aside (one
        warning line) and the rest compacted. Returns the facts that were done but are now missing
        for that reason (a resumed run redoes them)."""
        self._writable()
        before = set(self._done)
        facts = self.records.compact()["facts"]
        self._done = _keys(facts)
        missing = sorted(before - self._done)
        self.records.report(facts, "compact", missing)
        return missing

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r}, {len(self._done)} facts done)"


def write_part(path, fact_row: dict, neuron_rows: list[dict], query_rows: list[dict] | None = None) -> None:
    """Write one fact's part into ``path``/parts, atomically: neurons (and queries) first, then the facts
    part that commits it; the tables are those the run's run.json says it keeps (``tables_for``). Safe
    from several processes at once (each fact has its own file names; a fact written twice, e.g. by a
    retried worker, is replaced whole, never duplicated). Used by the workers of a sharded run."""
    tables = tables_for(Manifest.read(path, error=RunStoreError).meta)
    if tables is TABLES_Q and query_rows is None:
        raise RunStoreError(f"fact {fact_row.get('fact_id')!r} ({fact_row.get('lang')}): {path} keeps each "
                            "query's neurons; none given")
    _records(path, tables=tables).put(fact_row, {"neurons": neuron_rows, "queries": query_rows or []})


# what the analyses of a run leave in its directory (``Run`` reads them; kneuron.paper writes them)
EVALUATION, LIKN = "evaluation", "likn"
REPORT = "report.html"
# Module 3 (``kneuron dkn``), per rule (``--method``): its rows file (one row per fact) and its summary. The one
# home of these names: ``kneuron.paper.dkn.files`` writes them, ``Run.dkn`` reads them (the pairs rule's are
# those from before the clusters rule; the two rules' never mix)
DKN_FILES = {"pairs": ("dkn.jsonl", "dkn.json"), "clusters": ("dkn-clusters.jsonl", "dkn-clusters.json")}
DKN_KEY = ("fact_id", "lang")


class Run(RunStore):
    """A run opened to read it, with what the analyses left beside it, so that a reader (the explorer)
    need not know their file names. Each accessor reads the files as they are now; nothing is written."""

    def query_neurons(self) -> dict[tuple[str, str], list[list[tuple[int, int]]]]:
        """Each finished fact's queries' own neuron sets, by (fact id, lang): one list per query (its
        ``n_prompts``, a query with no neuron an empty list), each by rank. RunStoreError (one line) for
        a run made before runs kept them (``queries``)."""
        rows = self.queries().select(["fact_id", "lang", "query", "layer", "neuron"]).to_pylist()
        out = {(r["fact_id"], r["lang"]): [[] for _ in range(int(r["n_prompts"]))]
               for r in self.facts().select(["fact_id", "lang", "n_prompts"]).to_pylist()}
        for r in rows:
            out[(r["fact_id"], r["lang"])][r["query"]].append((r["layer"], r["neuron"]))
        return out

    def evaluation(self) -> dict[tuple[str, str], dict]:
        """Table 1's per-fact effects (``kneuron evaluate``), by (fact id, lang); {} when not evaluated.
        ``kneuron.paper.table1.Evaluation.load`` gives the typed result."""
        path = self.path / f"{EVALUATION}.parquet"
        return {(r["fact_id"], r["lang"]): r for r in pq.read_table(path).to_pylist()} if path.is_file() else {}

    def likn(self) -> dict[str, list[tuple[int, int]]] | None:
        """The language-independent neurons saved with the run (``kneuron likn``), by fact id (facts
        with none are absent); None when not saved. ``kneuron.paper.likn.LIKNResult.load``: typed."""
        path = self.path / f"{LIKN}.parquet"
        if not path.is_file():
            return None
        out: dict[str, list[tuple[int, int]]] = {}
        for r in pq.read_table(path).to_pylist():
            out.setdefault(r["fact_id"], []).append((r["layer"], r["neuron"]))
        return out

    def dkn(self, method: str = "pairs") -> dict[tuple[str, str], dict]:
        """Module 3's rows by the rule ``method`` (``kneuron dkn --method``: "pairs", dkn.jsonl, or
        "clusters", dkn-clusters.jsonl; ``DKN_FILES``), by (fact id, lang): each with its ``groups``; {}
        when not run. Damaged lines are skipped here (a resumed ``kneuron dkn`` moves them aside and redoes
        them). ``kneuron.paper.dkn.DKNRun.load`` gives the typed result (rows and summary)."""
        from kneuron.store.records import JsonLines
        if method not in DKN_FILES:
            raise RunStoreError(f"no DKN rule {method!r}: the rules are {', '.join(DKN_FILES)}")
        path = self.path / DKN_FILES[method][0]
        if not path.is_file():
            return {}
        return dict(JsonLines(path, key=DKN_KEY, need=("groups",), readonly=True).rows)

    def dkn_methods(self) -> list[str]:
        """The DKN rules the run has rows of (their rows file is there), in ``DKN_FILES``' order."""
        return [m for m, (rows, _) in DKN_FILES.items() if (self.path / rows).is_file()]

    def report(self) -> Path | None:
        """The HTML report made for the run (``kneuron reproduce`` puts it beside the run), if any."""
        return next((p for p in (self.path / REPORT, self.path.parent / REPORT) if p.is_file()), None)


def run_dirs(path) -> list[Path]:
    """The runs at ``path``: the directory itself, or (a `reproduce` directory, whose manifest is
    reproduce.json) its sub-directories that hold a run. Anything else is refused by ``open_run``'s
    check (RunStoreError)."""
    path = Path(path).expanduser()
    if (path / "reproduce.json").is_file() and not (path / MANIFEST).is_file():
        subs = sorted(p for p in path.iterdir() if (p / MANIFEST).is_file())
        if subs:
            return subs
    open_run(path)
    return [path]


def open_run(path) -> Run:
    """Open an existing run to read it (evaluate, intervene, explore); changes nothing on disk."""
    return Run(path, resume=True, readonly=True)


def query(path, sql: str) -> list[tuple]:
    """Run SQL over a run with DuckDB; the views `facts` and `neurons` hold its tables (and `queries`,
    each query's own neurons, in a run that keeps them)."""
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
        if run.keeps_queries:
            con.register("queries", run.queries())
        return con.execute(sql).fetchall()
    finally:
        con.close()
