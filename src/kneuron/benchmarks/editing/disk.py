"""The editing benchmark's run directory: where each row is kept, read back on resume, and moved to
damaged/ (then redone) when it does not read back.

    run.json                   the configuration (a resumed run must have the same) and the model
    cases.jsonl                the run's own records (a resumed run reads them back)
    timings.json               each stage's seconds, summed over the sessions of the run
    neurons/<fact>.<lang>.json   a fact's knowledge neurons;  neurons/common.json  each relation's common ones
    unedited/<case>.json       the unedited model's measurement of each case
    rome-sweep.json            ROME's layer sweep (the layer used is the best S)
    edits/<method>/<case>-<lang>.json   one edit: its time, size, info and every language's measurements
    sequential/<method>-<lang>/<i>.pt   sequential mode: the kept edits' changes (the commit marker)
    sequential/<method>-<lang>-k<k>.json   S after k kept edits
    batch/<method>-<lang>/<case>.pt   batch mode: each case's computed edit (the batch is applied once all are)
    results.json, report.md, report.html (+ fig-sequential.png)

Every file is written to a temporary name and renamed, so an interrupted run loses at most the edit under way.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, TypeVar

import torch

from kneuron.editing import Change
from kneuron.editing.records import Case
from kneuron.runs.store import TIMINGS_FILE, RunStoreError, add_time, check_out, move_aside

from .config import plain
from .rows import Checkpoint, EditRow, FactNeurons, Sweep, UneditedRow

T = TypeVar("T")


def _dump(path: Path, obj) -> None:
    """JSON into ``path`` atomically (temporary name, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, default=plain)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _changes_state(changes: list[Change]) -> list[dict]:
    return [{"param": ch.param, "value": ch.value.detach().cpu(), "index": ch.index} for ch in changes]


class BenchDir:
    """One run directory of the editing benchmark (``warn``: where a damaged file is said)."""

    def __init__(self, out, warn: Callable[[str], None]):
        self.out, self.warn = Path(out), warn

    # -- setup ----------------------------------------------------------------------

    def check(self, resume: bool) -> None:
        """Refuse a directory that holds something else (or, to resume, no run); a run stored before
        timings.json existed is marked ``untimed``: its earlier sessions' times are not known."""
        check_out(self.out, resume=resume)
        if resume and (self.out / "unedited").is_dir() and not (self.out / TIMINGS_FILE).exists():
            _dump(self.out / TIMINGS_FILE, {"untimed": True})

    def cases(self) -> list[Case] | None:
        """The run's own records, where an earlier session stored them."""
        path = self.out / "cases.jsonl"
        if not path.is_file():
            return None
        with open(path, encoding="utf-8") as f:
            return [Case.from_json(json.loads(line)) for line in f if line.strip()]

    def meta(self) -> dict:
        """run.json as stored (a damaged one is refused: it holds the settings a resume is checked against)."""
        try:
            return json.loads((self.out / "run.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise RunStoreError(f"{self.out / 'run.json'}: damaged ({' '.join(str(e).split())})") from None

    def commit(self, cases: list[Case], meta: dict) -> None:
        """The records (once) and run.json; what an interrupted write left (``*.tmp``) is removed."""
        self.out.mkdir(parents=True, exist_ok=True)
        if not (self.out / "cases.jsonl").is_file():
            tmp = self.out / "cases.jsonl.tmp"
            tmp.write_text("".join(json.dumps(c.to_json(), ensure_ascii=False) + "\n" for c in cases), encoding="utf-8")
            os.replace(tmp, self.out / "cases.jsonl")
        _dump(self.out / "run.json", meta)
        for p in self.out.rglob("*.tmp"):
            p.unlink(missing_ok=True)

    def add_time(self, stage: str, seconds: float) -> dict:
        """A stage's seconds into timings.json (summed over the sessions of the run); its content now."""
        return add_time(self.out, stage, seconds, self.warn)

    # -- JSON rows ------------------------------------------------------------------

    def _read(self, path: Path, need: tuple[str, ...], cls: Callable[[dict], T]) -> T | None:
        """A row of the run, or None when it is not there; one that does not read back as a JSON object with
        the ``need`` keys (and as ``cls``) is moved to damaged/ (None: it is redone)."""
        if not path.is_file():
            return None
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(d, dict) or any(k not in d for k in need):
                raise ValueError("missing keys")
            return cls(d)
        except (ValueError, UnicodeDecodeError, KeyError, TypeError):
            where = move_aside(path, self.out)
            self.warn(f"{path}: damaged, moved to {where}; it is redone")
            return None

    def _edit_path(self, method: str, case_id: int, lang: str) -> Path:
        return self.out / "edits" / method / f"{case_id}-{lang}.json"

    def edit(self, method: str, case_id: int, lang: str) -> EditRow | None:
        return self._read(self._edit_path(method, case_id, lang), ("scores", "seconds", "params_changed"),
                          EditRow.from_json)

    def put_edit(self, row: EditRow) -> None:
        _dump(self._edit_path(row.method, row.case_id, row.edit_lang), row.to_json())

    def unedited(self, case_id: int) -> UneditedRow | None:
        return self._read(self.out / "unedited" / f"{case_id}.json", ("case_id", "measure"), UneditedRow.from_json)

    def put_unedited(self, row: UneditedRow) -> None:
        _dump(self.out / "unedited" / f"{row.case_id}.json", row.to_json())

    def neurons(self, fact_id: str, lang: str) -> FactNeurons | None:
        return self._read(self.out / "neurons" / f"{fact_id}.{lang}.json", ("neurons", "seconds"),
                          FactNeurons.from_json)

    def put_neurons(self, fact_id: str, lang: str, row: FactNeurons) -> None:
        _dump(self.out / "neurons" / f"{fact_id}.{lang}.json", row.to_json())

    def put_common(self, common: dict) -> None:
        """neurons/common.json: {"<relation>.<lang>": CommonNeurons}."""
        _dump(self.out / "neurons" / "common.json", {k: v.to_json() for k, v in common.items()})

    def sweep(self) -> Sweep | None:
        return self._read(self.out / "rome-sweep.json", ("layers", "best"), Sweep.from_json)

    def put_sweep(self, sweep: Sweep) -> None:
        _dump(self.out / "rome-sweep.json", sweep.to_json())

    def _checkpoint_path(self, method: str, lang: str, k: int) -> Path:
        return self.out / "sequential" / f"{method}-{lang}-k{k}.json"

    def checkpoint(self, method: str, lang: str, k: int) -> Checkpoint | None:
        return self._read(self._checkpoint_path(method, lang, k), ("k", "scores"), Checkpoint.from_json)

    def put_checkpoint(self, method: str, row: Checkpoint) -> None:
        _dump(self._checkpoint_path(method, row.lang, row.k), row.to_json())

    def put_results(self, res: dict) -> None:
        _dump(self.out / "results.json", res)

    # -- kept edits (torch) ------------------------------------------------------------

    def chain(self, method: str, lang: str) -> list[list[Change]]:
        """The sequential chain's kept edits, in order, up to the first that does not read back (moved to
        damaged/: it and those after it are redone)."""
        d = self.out / "sequential" / f"{method}-{lang}"
        d.mkdir(parents=True, exist_ok=True)
        kept = []
        while (d / f"{len(kept)}.pt").is_file():
            path = d / f"{len(kept)}.pt"
            try:
                kept.append([Change(**c) for c in torch.load(path, weights_only=False)])
            except Exception as err:     # noqa: BLE001  (any unreadable file: redo from there)
                where = move_aside(path, self.out)
                self.warn(f"{path}: damaged ({type(err).__name__}), moved to {where}")
                break
        return kept

    def put_chain(self, method: str, lang: str, i: int, changes: list[Change]) -> None:
        """The chain's ``i``-th kept edit (written last: the commit marker of that step)."""
        d = self.out / "sequential" / f"{method}-{lang}"
        tmp = d / f"{i}.pt.tmp"
        torch.save(_changes_state(changes), tmp)
        os.replace(tmp, d / f"{i}.pt")

    def batch_member(self, method: str, lang: str, case_id: int) -> tuple[list[Change], dict, float] | None:
        """A batch member computed earlier (changes, info, seconds), or None (not there, or damaged: moved
        aside and redone)."""
        path = self.out / "batch" / f"{method}-{lang}" / f"{case_id}.pt"
        if not path.is_file():
            return None
        try:
            d = torch.load(path, weights_only=False)
            return [Change(**c) for c in d["changes"]], d["info"], float(d["seconds"])
        except Exception as err:     # noqa: BLE001  (any unreadable file: redo it)
            where = move_aside(path, self.out)
            self.warn(f"{path}: damaged ({type(err).__name__}), moved to {where}; it is redone")
            return None

    def put_batch_member(self, method: str, lang: str, case_id: int, changes: list[Change], info: dict,
                         seconds: float) -> None:
        d = self.out / "batch" / f"{method}-{lang}"
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f"{case_id}.pt.tmp"
        torch.save({"changes": _changes_state(changes), "info": info, "seconds": seconds}, tmp)
        os.replace(tmp, d / f"{case_id}.pt")


__all__ = ["BenchDir"]
