"""`kneuron reproduce`: Modules 1-3 and Tables 1-3 of Chen et al. (AAAI 2024) end to end, into one
directory, resumable step by step, ending in report.md and a self-contained report.html.

Layout of ``out``:
    reproduce.json        the settings (a resumed run must use the same), model and data provenance
    facts.jsonl           the facts used (the selection made here), so that --resume keeps the same selection
    known.json            a model judged by the rank rule (``kneuron.organisms.known``): each fact's gold-answer
                          rank and p, and whether the model knows it (every fact is used either way)
    locate-ig/ locate-amig/   Module 1 runs (B-KN = Dai et al.'s IG, and AMIG), resumable per fact; each keeps
                          its own copy of the facts and its model spec, so it can be re-opened anywhere
    table1.json           Table 1 per method and language
    locate-amig/likn.*, table2.json    Module 2 and Table 2 (two languages only)
    locate-amig/dkn.*     Module 3 (resumable per fact);  table3-<lang>.json  Table 3
    locate-amig/dkn-clusters.*, locate-amig/factcheck*-<lang>.*, next-*.json
                          with ``next_questions``: the authors' follow-up questions (``paper.next_questions``)
    fig-*.png, report.md, report.html
    results.json          everything above in one file (``ReproduceResult``: ``.save()`` / ``.load()``)

Each step's result is a keyed record of ``kneuron.store`` (<step>.json, committed atomically; one that does not
read back is moved to damaged/ and recomputed), reproduce.json the manifest a resumed run is checked against.
Module 1 runs on an executor (``kneuron.runs.locate.LocalExecutor``, or ``kneuron.runs.ray.RayExecutor``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kneuron.paper.dkn import DKNConfig, DKNRun
from kneuron.facts.sampling import round_robin
from kneuron.facts import Fact, fact_file_hash, load_facts, resolve_facts, save_facts
from kneuron.models.load import ModelHandle
from kneuron.models.registry import CARDS
from kneuron.errors import ConfigError
from kneuron.runs.store import RunStoreError
from kneuron.store import Manifest, Records, add_time, check_resume, write_json

log = logging.getLogger("kneuron.paper")
MONOLINGUAL = {n: c.languages[0] for n, c in CARDS.items() if len(c.languages) == 1}   # know one language only
METHODS = ("ig", "amig")
MANIFEST = "reproduce.json"
DUMPS = dict(indent=2, sort_keys=True, ensure_ascii=False, default=str)    # how results and step caches are written


@dataclass
class ReproduceConfig:
    model: str
    facts: str
    langs: tuple[str, ...] = ("en", "zh")
    limit: int | None = None                 # fact ids (each in every language), spread over relations
    relations: int | None = None             # only the first N relations of the fact file
    steps: int = 20
    seed: int = 42
    n_boot: int = 1000
    prompts: int | None = 1                  # templates per fact (the paper: one, mLAMA's); None = all
    dkn: DKNConfig = field(default_factory=DKNConfig)

    def validate(self) -> None:
        if not self.langs:
            raise ConfigError("--langs names no language")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}")
        if self.relations is not None and self.relations < 1:
            raise ConfigError(f"--relations must be >= 1, got {self.relations}")
        if self.steps < 1:
            raise ConfigError(f"--steps must be >= 1, got {self.steps}")
        if self.prompts is not None and self.prompts < 1:
            raise ConfigError(f"--prompts must be >= 1, got {self.prompts}")
        self.dkn.validate()

    def to_json(self) -> dict:
        return {**asdict(self), "langs": list(self.langs), "dkn": self.dkn.record(speed=True)}


def spread_ids(facts: list[Fact], langs: tuple[str, ...], limit: int | None, relations: int | None = None) -> list[str]:
    """Fact ids present in every language, taken round-robin over relations (in file order within a
    relation), so a small limit still covers many relations with several facts each. ``relations``:
    only the first N relations (in file order)."""
    have: dict[str, set] = defaultdict(set)
    rel: dict[str, str] = {}
    for f in facts:
        have[f.id].add(f.lang)
        rel.setdefault(f.id, f.relation)
    by_rel: dict[str, list[str]] = defaultdict(list)
    for fid in dict.fromkeys(f.id for f in facts):
        if all(l in have[fid] for l in langs):
            by_rel[rel[fid]].append(fid)
    if relations is not None:
        by_rel = dict(list(by_rel.items())[:relations])
    return round_robin(by_rel, limit)


def model_langs(handle: ModelHandle, langs: tuple[str, ...]) -> tuple[tuple[str, ...], list[str]]:
    """The languages the model can be tested in, and a note for each one dropped."""
    notes = []
    only = MONOLINGUAL.get(handle.name)
    if only:
        dropped = [l for l in langs if l != only]
        if dropped:
            notes.append(f"{handle.name} is an English-only model: {', '.join(dropped)} skipped, and with it "
                         "Module 2 and Table 2 (cross-lingual), which need two languages")
        langs = tuple(l for l in langs if l == only)
    return langs, notes


@dataclass(frozen=True)
class ReproduceResult:
    """What `reproduce` found: the manifest, Tables 1-3 (Table 2 None with one language), the DKN summary,
    neurons per layer, each step's seconds and the report's files. ``to_json()`` is results.json."""
    meta: dict
    table1: dict
    table2: dict | None
    dkn: dict
    table3: dict
    layers: dict
    timings: dict
    report: dict | None = None                 # once written: paper.report.write_report's (files, comparison, verdicts, facts used)
    next: dict | None = None                   # with next_questions: paper.next_questions.run's

    def to_json(self) -> dict:
        d = {"meta": self.meta, "table1": self.table1, "table2": self.table2, "dkn": self.dkn, "table3": self.table3,
             "layers": self.layers, "timings": self.timings}
        if self.next is not None:
            d["next"] = self.next
        return d if self.report is None else {**d, "report": self.report}

    @classmethod
    def from_json(cls, d: dict) -> "ReproduceResult":
        return cls(d["meta"], d["table1"], d["table2"], d["dkn"], d["table3"], d["layers"], d["timings"],
                   d.get("report"), d.get("next"))

    def save(self, out) -> Path:
        """results.json in ``out``, atomically."""
        return write_json(Path(out) / "results.json", self.to_json(), **DUMPS)

    @classmethod
    def load(cls, out) -> "ReproduceResult":
        """The result a reproduce directory holds (its results.json)."""
        path = Path(out) / "results.json"
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise RunStoreError(f"{out} holds no reproduce result (no results.json)") from None
        except (ValueError, KeyError, TypeError) as e:
            raise RunStoreError(f"{path}: damaged ({type(e).__name__}: {' '.join(str(e).split())})") from None


class Reproduction:
    """One `reproduce` directory; each step is skipped when its result is already there. ``executor``:
    where Module 1 localizes (default ``LocalExecutor()``; ``RayExecutor(workers=N)`` shards it).
    ``next_questions``: also the follow-up questions' steps (``paper.next_questions``); not a setting of the
    run (they add steps and change none), so a finished run can be resumed with them."""

    def __init__(self, handle: ModelHandle, cfg: ReproduceConfig, out, resume: bool = False,
                 show_progress: bool = True, log=print, executor=None, prompts_per_batch: int = 1,
                 next_questions: bool = False):
        from kneuron.runs.locate import LocalExecutor
        cfg.validate()
        self.h, self.cfg, self.out = handle, cfg, Path(out)
        self.executor = LocalExecutor() if executor is None else executor
        self.prompts_per_batch = prompts_per_batch
        self.next_questions = next_questions
        self.progress, self.log = show_progress, log
        self.notes: list[str] = []
        self.timings: dict[str, float] = {}
        self._open(resume)              # --out checked first: opening the records cleans their temp files
        self.steps = Records(self.out, codec="json", root=self.out, warn=_warn, then="recomputed", dumps=DUMPS)

    # ------------------------------------------------------------------ set-up
    def _open(self, resume: bool) -> None:
        meta_path = self.out / MANIFEST
        stored = None
        if self.out.exists() and any(self.out.iterdir()):
            if not resume:
                raise RunStoreError(f"{self.out} is not empty: pass --resume to continue it, or choose another --out")
            if not (meta_path.exists() or (self.out / "facts.jsonl").exists()):
                raise RunStoreError(f"{self.out} is not a reproduce directory (no {MANIFEST})")
            if meta_path.exists():
                stored = Manifest.read(self.out, name=MANIFEST, error=RunStoreError).meta
                check_resume(self.out, stored.get("config") or {}, self.cfg.to_json(), error=RunStoreError,
                             hint="use the same settings to resume")
        self.out.mkdir(parents=True, exist_ok=True)
        langs, self.notes = model_langs(self.h, tuple(self.cfg.langs))
        if not langs:
            raise ConfigError(f"{self.h.name} cannot be tested in {', '.join(self.cfg.langs)}")
        self.langs = langs
        save_path = self.out / "facts.jsonl"
        if save_path.exists():                 # resumed: the selection made the first time
            self.facts = load_facts(save_path)
            if stored is not None:
                self.notes = stored["notes"]
        else:
            self.facts = self._select_facts()
            save_facts(self.facts, save_path)
        import platform

        import torch
        import transformers

        from kneuron._version import __version__
        meta = {"config": self.cfg.to_json(), "langs_used": list(self.langs), "notes": self.notes,
                "versions": {"kneuron": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                             "python": platform.python_version()},
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "model": {"name": self.h.name, "kind": self.h.kind, "n_layers": self.h.n_layers,
                          "n_neurons": self.h.n_neurons, "site": f"{self.h.site.layers_path}[i].{self.h.site.proj_path}",
                          "dtype": str(self.h.dtype)},
                "data": {"facts": str(resolve_facts(self.cfg.facts)), "facts_hash": fact_file_hash(self.cfg.facts),
                         "n_ids": len({f.id for f in self.facts}), "n_facts": len(self.facts),
                         "relations": len({f.relation for f in self.facts})}}
        if not meta_path.exists():
            write_json(meta_path, meta, indent=2, sort_keys=True, ensure_ascii=False)
        self.meta = meta

    def _select_facts(self) -> list[Fact]:
        from kneuron.organisms.known import K, known_facts, rule_of, trained_on
        from kneuron.runs.locate import check_fact
        fs = [f for f in load_facts(self.cfg.facts) if f.lang in self.langs]
        if trained_on(self.h) is not None:        # an organism only knows the facts it was trained on
            fs = known_facts(self.h, fs)
            self.notes.append(f"{self.h.name} is a model organism: only the {len({f.id for f in fs})} fact ids it "
                              "was trained on are used")
        elif rule_of(self.h) == "rank":           # the paper localises with the gold answer, known or not
            self.notes.append(f"every fact is used, known or not (the paper localises with the gold answer); "
                              f"known.json says which ones {self.h.name} knows (the gold answer's first token "
                              f"in its top {K})")
        # keep only facts with a template the model can use (causal: [Y] at the end), and of those
        # templates the first ``prompts``
        usable = []
        for f in fs:
            try:
                qs = check_fact(self.h, f, skip_invalid=True)
            except ValueError:
                continue
            keep = [f.templates[q.template_index] for q in qs][:self.cfg.prompts]
            usable.append(dataclasses.replace(f, templates=tuple(keep)))
        if len(usable) < len(fs):
            self.notes.append(f"{len(fs) - len(usable)} of the {len(fs)} facts of {self.cfg.facts} in "
                              f"{', '.join(self.langs)} have no template a {self.h.kind} model can use "
                              "([Y] not at the end, an object the tokenizer cannot spell, or a prompt longer than the "
                              "model's context); left out before the selection")
        ids = set(spread_ids(usable, self.langs, self.cfg.limit, self.cfg.relations))
        if not ids:
            raise ConfigError(f"{self.cfg.facts}: no fact is usable in every language of {', '.join(self.langs)}")
        return [f for f in usable if f.id in ids]

    def _timed(self, name: str, fn):
        """Run a step; its seconds are added to timings.json (summed over resumed invocations)."""
        t0 = time.perf_counter()
        self.log(f"[reproduce] {name} ...")
        r = fn()
        self.timings = add_time(self.out, name, time.perf_counter() - t0, warn=log.warning)
        return r

    def _cached(self, step: str, fn):
        """A step's result (``step``: its name; its file is <step>.json): read back when a run made it
        before; one that cannot be read is kept in damaged/ and recomputed (one warning line)."""
        r = self.steps.get(step)
        if r is not None:
            return r
        r = fn()
        self.steps.put(step, r)
        return r

    # ------------------------------------------------------------------ steps
    def known(self) -> dict:
        """known.json: the rank rule's record of each fact used (``kneuron.organisms.known.known_report``), so
        that the report can say which facts the model knows; no fact is dropped for it (the paper's way)."""
        from kneuron.organisms.known import known_report
        return self._cached("known", lambda: known_report(self.h, self.facts, show=self.progress))

    def locate(self, method: str) -> Path:
        from kneuron.attribution import Execution
        from kneuron.runs.locate import LocateConfig, locate
        d = self.out / f"locate-{method}"
        facts_path = self.out / "facts.jsonl"
        cfg = LocateConfig(method=method, steps=self.cfg.steps)
        locate(self.h, self.facts, cfg, d, execution=Execution(prompts_per_batch=self.prompts_per_batch),
               executor=self.executor, resume=d.exists(), facts_path=str(facts_path.resolve()),
               facts_hash=fact_file_hash(facts_path), lang=",".join(self.langs), skip_invalid=True,
               show_progress=self.progress)
        return d

    def table1(self) -> dict:
        from kneuron.paper.facts_used import read_known
        from kneuron.paper.table1 import edit_effects, load_run, table1_cells

        def make():      # per method and language; split by known where known.json is there
            return {m: table1_cells(edit_effects(self.h, load_run(self.out / f"locate-{m}"), seed=self.cfg.seed),
                                    self.langs, self.cfg.n_boot, read_known(self.out)) for m in METHODS}
        return self._cached("table1", make)

    def table2(self) -> dict | None:
        if len(self.langs) < 2:
            return None
        from kneuron.paper.likn import likn_from_run
        from kneuron.paper.table2 import table2_from_run
        run = self.out / "locate-amig"

        def make():
            lk = likn_from_run(run, self.langs[:2])
            lk.save(run)
            res = table2_from_run(self.h, run, lk.per_fact, self.langs[:2], seed=self.cfg.seed,
                                  n_boot=self.cfg.n_boot, show_progress=self.progress)
            res.save_effects(run)
            return {"likn": lk.to_json(), **res.to_json()}
        return self._cached("table2", make)

    def dkn(self) -> DKNRun:
        from kneuron.paper.dkn import dkn_from_run
        return dkn_from_run(self.h, self.out / "locate-amig", self.cfg.dkn, resume=True, show_progress=self.progress)

    def table3(self, dkn: DKNRun) -> dict:
        from kneuron.paper.table3 import table3_from_run
        out = {}
        for lang in self.langs:
            out[lang] = self._cached(f"table3-{lang}", lambda: table3_from_run(
                self.h, self.out / "locate-amig", lang, dkn, "amig", self.cfg.steps, seed=self.cfg.seed,
                show_progress=self.progress).to_json())
        return out

    def layer_counts(self, dkn_rows: list[dict], likn: dict | None) -> dict:
        """Per method/lang: knowledge neurons per layer; LIKN and DKN neurons per layer."""
        from kneuron.runs.store import open_run
        n = self.h.n_layers
        out: dict = {"kn": {}, "likn": {}, "dkn": {}}
        for m in METHODS:
            nt = open_run(self.out / f"locate-{m}").neurons().select(["lang", "layer"]).to_pylist()
            out["kn"][m] = {lang: per_layer(n, (r["layer"] for r in nt if r["lang"] == lang)) for lang in self.langs}
        if likn:
            out["likn"] = [0] * n
            for k, v in likn["layers"].items():            # {layer: count}, keys as text once read back
                out["likn"][int(k)] = v
        for lang in self.langs:
            out["dkn"][lang] = per_layer(n, (x[0] for r in dkn_rows if r["lang"] == lang
                                             for x in {tuple(x) for g in r["groups"] for x in g}))
        return out

    def run(self) -> ReproduceResult:
        """Every step (each skipped when done), then figures, the report and results.json."""
        from kneuron.organisms.known import rule_of
        if rule_of(self.h) == "rank":
            self._timed("known facts", self.known)
        for m in METHODS:
            self._timed(f"Module 1 ({m})", lambda m=m: self.locate(m))
        t1 = self._timed("Table 1", self.table1)
        t2 = self._timed("Module 2 + Table 2", self.table2)
        d = self._timed("Module 3 (DKN)", self.dkn)
        t3 = self._timed("Table 3", lambda: self.table3(d))
        nx = None
        if self.next_questions:
            from kneuron.paper import next_questions
            nx = next_questions.run(self.h, self.out, self.cfg, self.langs, self.facts, d, self._timed, self._cached,
                                    self.progress)
        res = ReproduceResult(self.meta, t1, t2, d.to_json(), t3,
                              self.layer_counts(d.rows, t2["likn"] if t2 else None), self.timings, next=nx)
        from kneuron.paper.report import write_report
        res = dataclasses.replace(res, report=self._timed("report", lambda: write_report(res.to_json(), self.out)))
        res.save(self.out)
        return res


def per_layer(n_layers: int, layers) -> list[int]:
    """How many of ``layers`` (layer indices, one per neuron) fall in each of the model's layers."""
    c = [0] * n_layers
    for layer in layers:
        c[layer] += 1
    return c


def _warn(s: str) -> None:
    log.warning("%s", s)


def reproduce(handle: ModelHandle, cfg: ReproduceConfig, out, resume: bool = False, show_progress: bool = True,
              log=print, executor=None, prompts_per_batch: int = 1, next_questions: bool = False) -> ReproduceResult:
    """``Reproduction(...).run()``: Modules 1-3 and Tables 1-3 into ``out`` (see the module's docstring);
    ``next_questions``: the follow-up questions' steps too."""
    return Reproduction(handle, cfg, out, resume, show_progress, log, executor, prompts_per_batch,
                        next_questions).run()
