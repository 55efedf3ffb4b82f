"""The editing benchmark: every method on the same CounterFact-style records, in every language, resumable.

    run_editing_bench(handle, facts, n=100, methods=("kn", "rome"), out="runs/edit", mode="single")

Single mode: for each method, case and edit language, compute the edit, apply it, measure the case in every
language, undo it. Sequential mode: per method and edit language, the edits are kept one after another;
after each the case is measured, and after 1, 10, 50, 100 kept edits every record edited so far is measured
again (S after k edits). Batch mode (the value-vector methods, ``kneuron.editing.batch``): per method and
edit language, every case's edit is computed on the unedited model, all are applied at once, and each case
is measured under the whole batch. Measurements and metrics: ``kneuron.editing.metrics``; records:
``kneuron.editing.records``.

The run directory:

    run.json                   the configuration (a resumed run must have the same) and the model
    cases.jsonl                the run's own records (a resumed run reads them back)
    neurons/                   each record's knowledge neurons and each relation's common neurons, localized
                               once for every KN method (kn, kn-eai, kn-erase, likn, kn-opt)
    unedited/<case>.json       the unedited model's measurement of each case
    rome-sweep.json            ROME's layer sweep (the layer used is the best S)
    edits/<method>/<case>-<lang>.json   one edit: its time, size, info and both languages' measurements
    sequential/<method>-<lang>/<i>.pt   sequential mode: the kept edits' changes (the commit marker)
    sequential/<method>-<lang>-k<k>.json   S after k kept edits
    batch/<method>-<lang>/<case>.pt   batch mode: each case's computed edit (the batch is applied once all are)
    results.json, report.md, report.html (+ fig-sequential.png)

Every file is written to a temporary name and renamed, so an interrupted run loses at most the edit under
way; ``resume=True`` skips what is there and redoes a file that does not read back (moved to damaged/).
"""
from __future__ import annotations

import json
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from kneuron.editing import METHODS, Change, Edit, EditError, edit, named_options
from kneuron.editing.metrics import measure, record_scores
from kneuron.editing.records import Case, build_cases
from kneuron.facts import Fact
from kneuron.errors import ConfigError
from kneuron.facts.templates import QueryError
from kneuron.models.load import ModelHandle
from kneuron.runs.store import TIMINGS_FILE, RunStoreError, add_time, check_out, move_aside

KN_METHODS = ("kn", "kn-eai", "kn-erase", "likn", "kn-opt")
DEFAULT_METHODS = ("kn", "kn-eai", "kn-opt", "likn", "rome", "ft")
MODES = ("single", "sequential", "batch")
CHECKPOINTS = (1, 10, 50, 100)
CAUSAL_ONLY = ("rome",)                           # methods a masked model cannot take
# run.json keys a resumed run must keep
RESUME_KEYS = ("model", "n", "mode", "langs", "seed", "n_neighbours", "n_generation", "common_facts",
               "sweep_cases", "rome_layers", "cases_hash")


@dataclass(frozen=True)
class EditingConfig:
    n: int = 100                                  # cases (fact ids), each rewritten in every language
    methods: tuple[str, ...] = DEFAULT_METHODS
    mode: str = "single"
    langs: tuple[str, ...] | None = None          # None: every language of the facts
    seed: int = 0
    n_neighbours: int = 10
    n_generation: int = 2                         # generation prompts per record (GE; 0: none)
    common_facts: int = 10                        # facts per relation that Dai's 10 % filter counts over
    sweep_cases: int = 4                          # ROME's layer sweep: cases (first language)
    rome_layers: tuple[int, ...] | None = None    # layers the sweep tries (None: every layer, at most 8)
    method_options: dict = field(default_factory=dict)    # method -> options for kneuron.editing.edit

    def validate(self) -> None:
        if self.n < 1:
            raise ConfigError(f"n must be >= 1, got {self.n}")
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not self.methods:
            raise ConfigError("no editing method given")
        for m in self.methods:
            if m not in METHODS:
                raise ConfigError(f"unknown editing method {m!r} (expected one of {', '.join(METHODS)})")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"a method is named twice in {', '.join(self.methods)}")
        if self.mode == "batch":
            from kneuron.editing.batch import RULES
            bad = [m for m in self.methods if m not in RULES]
            if bad:
                raise ConfigError(f"{', '.join(bad)} has no batch mode (methods with one: {', '.join(RULES)}); "
                                  "leave it out or use --mode single or sequential")
        for k in ("n_neighbours", "n_generation", "common_facts", "sweep_cases"):
            if getattr(self, k) < 0:
                raise ConfigError(f"{k} must be >= 0, got {getattr(self, k)}")


# ----------------------------------------------------------------------------- files

def _dump(path: Path, obj) -> None:
    """JSON into ``path`` atomically (temporary name, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, default=_plain)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _plain(x):
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, (set, tuple)):
        return list(x)
    return str(x)


def _same(a, b) -> bool:
    """Equal once written as JSON (tuples as lists, tensors as lists)."""
    return json.loads(json.dumps(a, default=_plain)) == json.loads(json.dumps(b, default=_plain))


def _read(path: Path, need: tuple[str, ...], run_dir: Path, warn: Callable[[str], None]) -> dict | None:
    """A file of the run, or None when it is not there; one that does not read back as a JSON object with
    the ``need`` keys is moved to damaged/ (None: it is redone)."""
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(d, dict) or any(k not in d for k in need):
            raise ValueError("missing keys")
        return d
    except (ValueError, UnicodeDecodeError):
        where = move_aside(path, run_dir)
        warn(f"{path}: damaged, moved to {where}; it is redone")
        return None


# ----------------------------------------------------------------------------- the run

class EditingBench:
    def __init__(self, handle: ModelHandle, facts: list[Fact], cfg: EditingConfig, out, *, pool=None,
                 resume: bool = False, show_progress: bool = True, log: Callable[[str], None] = lambda s: None,
                 facts_name: str | None = None, limit: int | None = None):
        cfg.validate()
        self.h, self.cfg, self.out, self.log = handle, cfg, Path(out), log
        self.facts, self.pool = list(facts), list(pool if pool is not None else facts)
        self.resume, self.show, self.facts_name, self.limit = resume, show_progress, facts_name, limit
        self.new_edits = 0                          # edits computed by this process (``limit`` counts these)
        self.timings: dict = {}                    # timings.json once a stage has run

    # -- setup ----------------------------------------------------------------------

    def _cases(self) -> list[Case]:
        path = self.out / "cases.jsonl"
        if self.resume and path.is_file():
            with open(path, encoding="utf-8") as f:
                return [Case.from_json(json.loads(line)) for line in f if line.strip()]
        cases = build_cases(self.facts, self.cfg.n, kind=self.h.kind, tokenizer=self.h.tokenizer,
                            langs=list(self.cfg.langs) if self.cfg.langs else None, seed=self.cfg.seed,
                            pool=self.pool, n_neighbours=self.cfg.n_neighbours, n_generation=self.cfg.n_generation)
        if not cases:
            raise EditError(f"no fact can be made an edit record for {self.h.name} (each needs a wrong object the "
                            "tokenizer encodes and a usable template in every language)")
        return cases

    def _meta(self, cases: list[Case]) -> dict:
        import hashlib

        import transformers

        from kneuron._version import __version__
        text = "\n".join(json.dumps(c.to_json(), ensure_ascii=False, sort_keys=True) for c in cases)
        cfg = asdict(self.cfg)
        cfg["methods"], cfg["langs"] = list(self.cfg.methods), cases[0].langs
        cfg["rome_layers"] = list(self.cfg.rome_layers) if self.cfg.rome_layers else None
        return {**cfg, "model": self.h.name, "kind": self.h.kind, "n_layers": self.h.n_layers,
                "n_neurons": self.h.n_neurons, "facts": self.facts_name, "n_cases": len(cases),
                "cases_hash": hashlib.sha256(text.encode()).hexdigest(),
                "versions": {"kneuron": __version__, "torch": torch.__version__,
                             "transformers": transformers.__version__, "python": platform.python_version()}}

    def _open(self) -> list[Case]:
        check_out(self.out, resume=self.resume)
        if self.resume and (self.out / "unedited").is_dir() and not (self.out / TIMINGS_FILE).exists():
            _dump(self.out / TIMINGS_FILE, {"untimed": True})    # work of sessions that kept no times
        cases = self._cases()
        meta = self._meta(cases)
        if self.resume:
            try:
                had = json.loads((self.out / "run.json").read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise RunStoreError(f"{self.out / 'run.json'}: damaged ({' '.join(str(e).split())})") from None
            for k in RESUME_KEYS:
                if k in had and not _same(had[k], meta[k]):
                    raise RunStoreError(f"cannot resume {self.out}: {k} differs (run has {had[k]!r}, now {meta[k]!r})")
            opts = had.get("method_options") or {}
            for m in self.cfg.methods:
                if m in opts and not _same(opts[m], meta["method_options"].get(m)):
                    raise RunStoreError(f"cannot resume {self.out}: the options of {m} differ")
            meta["methods"] = list(dict.fromkeys(list(had.get("methods", [])) + list(self.cfg.methods)))
            meta["method_options"] = {**opts, **meta["method_options"]}
        self.out.mkdir(parents=True, exist_ok=True)
        if not (self.out / "cases.jsonl").is_file():
            tmp = self.out / "cases.jsonl.tmp"
            tmp.write_text("".join(json.dumps(c.to_json(), ensure_ascii=False) + "\n" for c in cases), encoding="utf-8")
            os.replace(tmp, self.out / "cases.jsonl")
        _dump(self.out / "run.json", meta)
        for p in self.out.rglob("*.tmp"):
            p.unlink(missing_ok=True)
        self.meta = meta
        return cases

    def _add_time(self, stage: str, seconds: float) -> None:
        """A stage's seconds into timings.json (``runs.store.add_time``: summed over the sessions of the run).
        A run stored before timings.json existed is marked ``untimed`` (in ``_open``): its earlier sessions'
        times are not known, and the report says the times are lower bounds."""
        self.timings = add_time(self.out, stage, seconds, self.warn)

    def warn(self, s: str) -> None:
        self.log(f"warning: {s}")

    # -- the unedited model ------------------------------------------------------------

    def unedited(self, cases: list[Case]) -> dict[int, dict]:
        out = {}
        with _Progress(self.show, "unedited", len(cases)) as step:
            for c in cases:
                path = self.out / "unedited" / f"{c.case_id}.json"
                d = _read(path, ("case_id", "measure"), self.out, self.warn)
                if d is None:
                    recs = list(c.records.values())
                    ms = measure(self.h, recs, generation=True, seed=self.cfg.seed + c.case_id)
                    d = {"case_id": c.case_id, "measure": {r.lang: m for r, m in zip(recs, ms)}}
                    _dump(path, d)
                out[c.case_id] = d["measure"]
                step()
        return out

    # -- localization, once for every KN method ---------------------------------------------

    def neurons(self, cases: list[Case]) -> None:
        """Each record's knowledge neurons and its relation's common neurons (Dai et al.'s filter: found for
        more than 10 % of ``common_facts`` facts of the relation, the records' own first; with fewer than 10
        facts, for more than one), cached."""
        from kneuron.editing.localize import common_neurons, fact_neurons
        self.fact_n: dict = {}
        self.common: dict = {}
        by_key = {(f.id, f.lang): f for f in self.pool}
        for c in cases:
            for r in c.records.values():
                by_key[(r.fact.id, r.lang)] = r.fact
        rel_facts: dict = {}
        for c in cases:
            for lang, r in c.records.items():
                rel_facts.setdefault((c.relation, lang), [])
                if r.fact.id not in rel_facts[(c.relation, lang)]:
                    rel_facts[(c.relation, lang)].append(r.fact.id)
        for (rel, lang), ids in rel_facts.items():
            more = sorted(f.id for f in self.pool if f.relation == rel and f.lang == lang and f.id not in ids)
            random.Random(f"{self.cfg.seed}:{rel}:common").shuffle(more)
            ids += more[: max(0, self.cfg.common_facts - len(ids))]
        todo = {(fid, lang) for (rel, lang), ids in rel_facts.items() for fid in ids}
        with _Progress(self.show, "localizing", len(todo)) as step:
            for fid, lang in sorted(todo):
                path = self.out / "neurons" / f"{fid}.{lang}.json"
                d = _read(path, ("neurons", "seconds"), self.out, self.warn)
                if d is None:
                    t0 = time.perf_counter()
                    try:
                        ns = fact_neurons(self.h, by_key[(fid, lang)])
                    except EditError as e:
                        self.warn(f"no neurons for fact {fid} ({lang}): {e}")
                        ns = []
                    d = {"neurons": [[int(a), int(b)] for a, b in ns], "seconds": time.perf_counter() - t0}
                    _dump(path, d)
                self.fact_n[(fid, lang)] = (tuple(map(tuple, d["neurons"])), float(d["seconds"]))
                step()
        for (rel, lang), ids in rel_facts.items():
            sets = [self.fact_n[(fid, lang)][0] for fid in ids]
            share = max(0.1, 1 / len(sets))       # fewer than 10 facts: a neuron of one fact alone is not common
            self.common[(rel, lang)] = {"facts": ids, "share": share,
                                        "neurons": sorted(common_neurons(sets, share=share))}
        _dump(self.out / "neurons" / "common.json",
              {f"{rel}.{lang}": v for (rel, lang), v in self.common.items()})

    # -- ROME's layer ----------------------------------------------------------------------------

    def rome_layer(self, cases: list[Case], before: dict) -> int:
        if "layer" in self.cfg.method_options.get("rome", {}):
            return int(self.cfg.method_options["rome"]["layer"])
        path = self.out / "rome-sweep.json"
        d = _read(path, ("layers", "best"), self.out, self.warn)
        if d is not None:
            self.sweep = d
            return int(d["best"])
        n = self.h.n_layers
        if self.cfg.rome_layers:
            layers = list(self.cfg.rome_layers)
        else:                                   # at most 8 layers spread over the depth, and rome's default
            from kneuron.editing.rome import default_layer
            layers = sorted({round(i * (n - 1) / 7) for i in range(8)} | {default_layer(self.h)})
        lang, sub = cases[0].langs[0], cases[: max(1, self.cfg.sweep_cases)]
        rows = []
        t0 = time.perf_counter()
        opts = self.cfg.method_options.get("rome", {})
        if opts.get("stats", "auto") == "auto":                # every layer's C in one pass, cached on disk
            from kneuron.editing.stats import second_moments
            second_moments(self.h, layers, corpus=opts.get("corpus"), progress=self.show)
        with _Progress(self.show, "ROME layer sweep", len(layers) * len(sub)) as step:
            for layer in layers:
                scores = []
                for c in sub:
                    r = c.records[lang]
                    e = self._edit("rome", c, lang, layer=layer)
                    with e:
                        m = measure(self.h, [r], generation=False)[0]
                    scores.append(record_scores(m, before[c.case_id][lang]))
                    step()
                rows.append({"layer": layer, **_es_ps_ns(scores)})
        rank = lambda x: tuple(-1e9 if x.get(k) is None else x[k] for k in ("S", "ES", "PS", "EM"))  # noqa: E731
        best = max(rows, key=rank)["layer"]
        self.sweep = {"lang": lang, "cases": [c.case_id for c in sub], "layers": rows, "best": best,
                      "seconds": time.perf_counter() - t0}
        _dump(path, self.sweep)
        return best

    # -- one edit --------------------------------------------------------------------------------------

    def _options(self, method: str, case: Case, lang: str, **extra) -> dict:
        """What the method is given: the cached neurons (KN methods: the fact's, minus the relation's common
        ones; likn: those the fact shares with its other language, unfiltered), the other language (likn),
        ROME's layer (the sweep's) -- each only where the method's function names it -- then the user's
        options for the method."""
        r = case.records[lang]
        auto: dict = {}
        if method in KN_METHODS and hasattr(self, "fact_n"):
            auto["neurons"] = list(self.fact_n[(r.fact.id, lang)][0])
            if method != "likn":
                auto["common"] = set(map(tuple, self.common[(case.relation, lang)]["neurons"]))
        if method == "likn":
            other = next((o for o in case.langs if o != lang), None)
            if other is not None:
                o = case.records[other]
                auto.update(other=o.edit_fact, other_new=o.new)
                if "neurons" in auto:
                    auto["neurons"] = sorted(set(auto["neurons"]) & set(self.fact_n[(o.fact.id, other)][0]))
        if method in ("rome", "ft") and getattr(self, "layer", None) is not None:
            auto["layer"] = self.layer
        if method == "rome":
            auto["progress"] = self.show
            if getattr(self, "rome_stats", None) is not None:
                auto["stats"] = self.rome_stats        # the unedited model's C, also under kept edits
        named = named_options(method)
        return {**{k: v for k, v in auto.items() if k in named}, **self.cfg.method_options.get(method, {}), **extra}

    def _local_seconds(self, method: str, case: Case, lang: str) -> float:
        """Localization time the method would have spent on its own (its neurons were cached)."""
        if method not in KN_METHODS or not hasattr(self, "fact_n"):
            return 0.0
        langs = case.langs if method == "likn" else [lang]
        return sum(self.fact_n[(case.records[g].fact.id, g)][1] for g in langs)

    def _edit(self, method: str, case: Case, lang: str, **extra) -> Edit:
        """The method's edit of the case's ``lang`` record; one it cannot make (an EditError or QueryError:
        no usable prompt, no shared neuron ...) is an edit that changes nothing, with the reason in its info
        (and a warning), so every method is measured on the same records."""
        r = case.records[lang]
        try:
            return edit(self.h, r.edit_fact, r.new, method=method, **self._options(method, case, lang, **extra))
        except (EditError, QueryError) as err:
            self.warn(f"{method} cannot edit case {case.case_id} ({case.fact_id}, {lang}): {err}")
            return Edit(self.h, method, None, [], info={"error": str(err)})

    def _row(self, method: str, case: Case, lang: str, e: Edit, before: dict) -> dict:
        recs = list(case.records.values())
        ms = measure(self.h, recs, generation=[lang], seed=self.cfg.seed + case.case_id)
        loc = self._local_seconds(method, case, lang)
        return {"method": method, "case_id": case.case_id, "fact_id": case.fact_id, "edit_lang": lang,
                "new": case.records[lang].new, "edit_seconds": e.seconds, "localize_seconds": loc,
                "seconds": e.seconds + loc, "params_changed": e.params_changed, "info": e.info,
                "error": e.info.get("error"),
                "measure": {r.lang: m for r, m in zip(recs, ms)},
                "scores": {r.lang: record_scores(m, before[r.lang]) for r, m in zip(recs, ms)}}

    def _budget(self) -> bool:
        """False once ``limit`` new edits were computed (a simulated interruption)."""
        return self.limit is None or self.new_edits < self.limit

    # -- modes ------------------------------------------------------------------------------------------------

    def single(self, method: str, cases: list[Case], before: dict) -> dict:
        rows = {}
        total = sum(len(c.langs) for c in cases)
        with _Progress(self.show, method, total) as step:
            for c in cases:
                for lang in c.langs:
                    path = self.out / "edits" / method / f"{c.case_id}-{lang}.json"
                    d = _read(path, ("scores", "seconds", "params_changed"), self.out, self.warn)
                    if d is None:
                        if not self._budget():
                            return rows
                        e = self._edit(method, c, lang)
                        with e:
                            d = self._row(method, c, lang, e, before[c.case_id])
                        _dump(path, d)
                        self.new_edits += 1
                    rows[(c.case_id, lang)] = d
                    step()
        return rows

    def sequential(self, method: str, cases: list[Case], before: dict) -> tuple[dict, dict]:
        """Per edit language, a chain of kept edits; returns (rows per edit, S after k edits)."""
        rows, curve = {}, {}
        langs = cases[0].langs
        with _Progress(self.show, f"{method} (sequential)", len(cases) * len(langs)) as step:
            for lang in langs:
                chain = self.out / "sequential" / f"{method}-{lang}"
                chain.mkdir(parents=True, exist_ok=True)
                kept: list[Edit] = []
                try:
                    done = 0
                    while (chain / f"{done}.pt").is_file():
                        try:
                            changes = [Change(**c) for c in torch.load(chain / f"{done}.pt", weights_only=False)]
                        except Exception as err:     # noqa: BLE001  (any unreadable file: redo from there)
                            where = move_aside(chain / f"{done}.pt", self.out)
                            self.warn(f"{chain / f'{done}.pt'}: damaged ({type(err).__name__}), moved to {where}")
                            break
                        kept.append(Edit(self.h, method, None, changes).apply())
                        done += 1
                    for i, c in enumerate(cases):
                        path = self.out / "edits" / method / f"{c.case_id}-{lang}.json"
                        if i < done:
                            d = _read(path, ("scores", "seconds", "params_changed"), self.out, self.warn)
                            if d is not None:
                                rows[(c.case_id, lang)] = d
                            step()
                            continue
                        if not self._budget():
                            break
                        e = self._edit(method, c, lang).apply()
                        kept.append(e)
                        d = self._row(method, c, lang, e, before[c.case_id])
                        _dump(path, d)
                        rows[(c.case_id, lang)] = d
                        if i + 1 in CHECKPOINTS or i + 1 == len(cases):
                            self._checkpoint(method, lang, cases[: i + 1], before)
                        tmp = chain / f"{i}.pt.tmp"
                        torch.save([{"param": ch.param, "value": ch.value.detach().cpu(), "index": ch.index}
                                    for ch in e.changes], tmp)
                        os.replace(tmp, chain / f"{i}.pt")            # the commit marker
                        self.new_edits += 1
                        step()
                finally:
                    for e in reversed(kept):
                        e.undo()
                for k in sorted(set(CHECKPOINTS) | {len(cases)}):
                    d = _read(self.out / "sequential" / f"{method}-{lang}-k{k}.json", ("k", "scores"), self.out,
                              self.warn)
                    if d is not None:
                        curve.setdefault(lang, {})[k] = d
        return rows, curve

    def batched(self, method: str, cases: list[Case], before: dict) -> dict:
        """Per edit language: every case's edit computed on the unedited model (each kept on disk as it is
        made), then all applied at once and every case measured under the whole batch."""
        from kneuron.editing.batch import batch_edit
        rows = {}
        with _Progress(self.show, f"{method} (batch)", 2 * len(cases) * len(cases[0].langs)) as step:
            for lang in cases[0].langs:
                paths = [self.out / "edits" / method / f"{c.case_id}-{lang}.json" for c in cases]
                done = [_read(p, ("scores", "seconds", "params_changed"), self.out, self.warn) for p in paths]
                if all(d is not None for d in done):                 # measured already (a resumed run)
                    rows.update({(c.case_id, lang): d for c, d in zip(cases, done)})
                    step(2 * len(cases))
                    continue
                store = self.out / "batch" / f"{method}-{lang}"
                store.mkdir(parents=True, exist_ok=True)
                edits = []
                for c in cases:
                    e = self._stored_edit(store / f"{c.case_id}.pt", method)
                    if e is None:
                        if not self._budget():
                            return rows
                        e = self._edit(method, c, lang)
                        tmp = store / f"{c.case_id}.pt.tmp"
                        torch.save({"changes": [{"param": ch.param, "value": ch.value.detach().cpu(), "index": ch.index}
                                                for ch in e.changes], "info": e.info, "seconds": e.seconds}, tmp)
                        os.replace(tmp, store / f"{c.case_id}.pt")
                        self.new_edits += 1
                    edits.append(e)
                    step()
                combined = batch_edit(edits) if any(e.changes for e in edits) else None
                if combined is not None:
                    combined.apply()
                try:
                    for c, e in zip(cases, edits):
                        path = self.out / "edits" / method / f"{c.case_id}-{lang}.json"
                        d = _read(path, ("scores", "seconds", "params_changed"), self.out, self.warn)
                        if d is None:
                            d = self._row(method, c, lang, e, before[c.case_id])
                            d["batch"] = len(cases)
                            _dump(path, d)
                        rows[(c.case_id, lang)] = d
                        step()
                finally:
                    if combined is not None:
                        combined.undo()
        return rows

    def _stored_edit(self, path: Path, method: str) -> Edit | None:
        """A batch member computed earlier, or None (not there, or damaged: moved aside and redone)."""
        if not path.is_file():
            return None
        try:
            d = torch.load(path, weights_only=False)
            return Edit(self.h, method, None, [Change(**c) for c in d["changes"]], d["info"], float(d["seconds"]))
        except Exception as err:     # noqa: BLE001  (any unreadable file: redo it)
            where = move_aside(path, self.out)
            self.warn(f"{path}: damaged ({type(err).__name__}), moved to {where}; it is redone")
            return None

    def _checkpoint(self, method: str, lang: str, cases: list[Case], before: dict) -> None:
        recs = [c.records[lang] for c in cases]
        ms = measure(self.h, recs, generation=False)
        scores = [record_scores(m, before[c.case_id][lang]) for c, m in zip(cases, ms)]
        _dump(self.out / "sequential" / f"{method}-{lang}-k{len(cases)}.json",
              {"k": len(cases), "lang": lang, "scores": scores, **_es_ps_ns(scores)})

    # -- all of it ------------------------------------------------------------------------------------------------

    def run(self) -> dict | None:
        t0 = time.perf_counter()
        if self.h.kind != "causal":
            bad = [m for m in self.cfg.methods if m in CAUSAL_ONLY]
            if bad:
                raise ConfigError(f"{', '.join(bad)} supports causal models only; {self.h.name} is a {self.h.kind} "
                                  f"model: leave {', '.join(bad)} out of the methods")
        cases = self._open()
        self.log(f"{len(cases)} cases in {', '.join(cases[0].langs)}; methods {', '.join(self.cfg.methods)}; "
                 f"mode {self.cfg.mode}; {self.out}")
        before = self.unedited(cases)
        self._add_time("unedited", time.perf_counter() - t0)
        if any(m in KN_METHODS for m in self.cfg.methods):
            t = time.perf_counter()
            self.neurons(cases)
            self._add_time("localize", time.perf_counter() - t)
        self.layer, self.sweep = None, None
        self.rome_stats = None
        if "rome" in self.cfg.methods:
            t = time.perf_counter()
            self.layer = self.rome_layer(cases, before)
            opts = self.cfg.method_options.get("rome", {})
            if opts.get("stats", "auto") == "auto":
                from kneuron.editing.stats import second_moment
                self.rome_stats = second_moment(self.h, self.layer, corpus=opts.get("corpus"), progress=self.show)
            self._add_time("rome_sweep", time.perf_counter() - t)
        rows, curves = {}, {}
        for m in self.cfg.methods:
            t = time.perf_counter()
            if self.cfg.mode == "single":
                rows[m] = self.single(m, cases, before)
            elif self.cfg.mode == "batch":
                rows[m] = self.batched(m, cases, before)
            else:
                rows[m], curves[m] = self.sequential(m, cases, before)
            self._add_time(m, time.perf_counter() - t)
        if not self._budget() and any(len(rows[m]) < sum(len(c.langs) for c in cases) for m in rows):
            self.log(f"stopped after {self.new_edits} new edits (limit); resume to finish")
            return None
        from kneuron.benchmarks.editing_report import results, write_report
        res = results(self.meta, cases, before, rows, curves, self.sweep, self.layer, self.timings)
        _dump(self.out / "results.json", res)
        write_report(res, self.out)
        return res


def _es_ps_ns(scores: list[dict]) -> dict:
    from kneuron.editing.metrics import summarize
    s = summarize(scores)
    return {k: s[k] for k in ("ES", "PS", "NS", "S", "EM")}


class _Progress:
    """A rich progress bar (a no-op when disabled)."""

    def __init__(self, show: bool, label: str, total: int):
        self.show, self.label, self.total = show and total > 0, label, total

    def __enter__(self) -> Callable[[], None]:
        if not self.show:
            return lambda k=1: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        self.bar = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        self.bar.start()
        task = self.bar.add_task(self.label, total=self.total)
        return lambda k=1: self.bar.advance(task, k)

    def __exit__(self, *exc):
        if self.show:
            self.bar.stop()


def run_editing_bench(handle: ModelHandle, facts: list[Fact], *, out, n: int = 100,
                      methods=DEFAULT_METHODS, mode: str = "single", langs=None, seed: int = 0, resume: bool = False,
                      pool: list[Fact] | None = None, show_progress: bool = True, log=lambda s: None,
                      facts_name: str | None = None, limit: int | None = None, **config) -> dict | None:
    """Run (or resume) the editing benchmark into ``out``; returns results.json's content (None when stopped
    by ``limit``: that many new edits were computed, as if interrupted). ``facts``: the facts to draw cases
    from; ``pool``: the facts neighbours come from (default ``facts``; for an organism, the facts it was
    trained on). ``config``: the other EditingConfig fields (n_neighbours, n_generation, common_facts,
    sweep_cases, rome_layers, method_options)."""
    cfg = EditingConfig(n=n, methods=tuple(methods), mode=mode, langs=tuple(langs) if langs else None, seed=seed,
                        **config)
    return EditingBench(handle, facts, cfg, out, pool=pool, resume=resume, show_progress=show_progress, log=log,
                        facts_name=facts_name, limit=limit).run()


def summary(res: dict) -> dict:
    """What ``kneuron bench editing --json`` prints: model, n_records, unedited, methods."""
    return {k: res[k] for k in ("model", "n_records", "unedited", "methods")}


__all__ = ["CHECKPOINTS", "DEFAULT_METHODS", "EditingBench", "EditingConfig", "KN_METHODS", "named_options",
           "run_editing_bench", "summary"]

