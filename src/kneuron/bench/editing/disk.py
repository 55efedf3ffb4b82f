"""The editing benchmark's run directory: where each row is kept, read back on resume, and moved to
damaged/ (then redone) when it does not read back.

    run.json                   the configuration (a resumed run must have the same), the model and the
                               facts per relation Dai's filter counted (``common_counts``)
    cases.jsonl                the run's own records (a resumed run reads them back)
    tune-cases.jsonl           the held-out records the layers are chosen on (``--tune-records``; not reported)
    timings.json               each stage's seconds, summed over the sessions of the run
    neurons/<fact>.<lang>.json   a fact's knowledge neurons;  neurons/common.json  each relation's common ones
    unedited/<case>.json       the unedited model's measurement of each case
    unrelated.json             the unedited model's NLL of the unrelated sentences (``editing.health``)
    rome-sweep.json            ROME's layer sweep (the layer used is the best S); ft-l-sweep.json ft-l's
    edits/<method>/<case>-<lang>.json   one edit: its time, size, info and every language's measurements
    sequential/<method>-<lang>/<i>.pt   sequential mode: the kept edits' changes (the commit marker; ROME,
                               MEMIT, AlphaEdit: as low-rank factors, ~8 / 42 / 72 KB a step on smollm2-135m)
    sequential/<method>-<lang>-k<k>.json   S after k kept edits
    batch/<method>-<lang>/<case>.pt   batch mode: each case's computed edit (the batch is applied once all are)
    batch/<method>-<lang>/joint.pt    batch mode of a joint method (memit, alphaedit): the batch's one edit
    results.json, report.md, report.html (+ fig-sequential.png)

Every file is committed atomically through ``kneuron.store`` (JSON rows and ``.pt`` blobs as keyed records,
run.json's resume check, timings.json), so an interrupted run loses at most the edit under way; a file that
does not read back is moved to damaged/ (one warning) and redone.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from kneuron.editing import Change, Edit, EditError
from kneuron.editing.registry import lookup
from kneuron.editing.records import Case
from kneuron.runs.store import RunStoreError
from kneuron.store import (Blob, Manifest, Records, add_time, check_out, move_aside, read_json, write_json,
                           write_lines)
from kneuron.store.atomic import TMP

from .config import plain
from .rows import Checkpoint, EditRow, FactNeurons, Sweep, UneditedRow, Unrelated

DUMPS = dict(ensure_ascii=False, default=plain)        # how every JSON file of the run is written
TIMINGS_FILE = "timings.json"


def _torch_blob(suffix: str = ".pt") -> Blob:
    return Blob(lambda value, f: torch.save(value, f), lambda f: torch.load(f, weights_only=False), suffix)


def _reads_as(cls) -> Callable[[dict], str | None]:
    """A records ``check``: why a JSON object is not a ``cls`` row (None: it is)."""
    def check(d: dict) -> str | None:
        try:
            cls.from_json(d)
        except (KeyError, TypeError, ValueError) as e:
            return f"not {cls.__name__} ({type(e).__name__}: {e})"
        return None
    return check


class BenchDir:
    """One run directory of the editing benchmark (``warn``: where a damaged file is said)."""

    def __init__(self, out, warn: Callable[[str], None]):
        self.out, self.warn = Path(out), warn

    def _records(self, folder: Path, need: tuple[str, ...] = (), cls=None, name=str, parse=str, codec="json",
                 check=None):
        return Records(folder, codec=codec, need=need, check=_reads_as(cls) if cls else check, name=name,
                       parse=parse, root=self.out, warn=self.warn, dumps=DUMPS)

    # -- setup ----------------------------------------------------------------------

    def check(self, resume: bool) -> None:
        """Refuse a directory that holds something else (or, to resume, no run); a run stored before
        timings.json existed is marked ``untimed``: its earlier sessions' times are not known."""
        check_out(self.out, resume=resume, error=RunStoreError)
        if resume and (self.out / "unedited").is_dir() and not (self.out / TIMINGS_FILE).exists():
            write_json(self.out / TIMINGS_FILE, {"untimed": True}, **DUMPS)

    def cases(self, name: str = "cases.jsonl") -> list[Case] | None:
        """The run's own records (``name``: or its held-out ones, tune-cases.jsonl), where an earlier session
        stored them."""
        path = self.out / name
        if not path.is_file():
            return None
        with open(path, encoding="utf-8") as f:
            return [Case.from_json(json.loads(line)) for line in f if line.strip()]

    def meta(self) -> dict:
        """run.json as stored (a damaged one is refused: it holds the settings a resume is checked against)."""
        return Manifest.read(self.out, error=RunStoreError).meta

    def commit(self, cases: list[Case], meta: dict, tune: list[Case] = ()) -> None:
        """The records and the held-out ones (once) and run.json; what an interrupted write left (``*.tmp``)
        is removed."""
        self.out.mkdir(parents=True, exist_ok=True)
        for name, cs in (("cases.jsonl", cases), ("tune-cases.jsonl", tune)):
            if cs and not (self.out / name).is_file():
                write_lines(self.out / name, [json.dumps(c.to_json(), ensure_ascii=False) for c in cs])
        write_json(self.out / "run.json", meta, **DUMPS)
        for p in self.out.rglob("*" + TMP):
            p.unlink(missing_ok=True)

    def put_meta(self, meta: dict) -> None:
        """run.json rewritten with what the run found out (e.g. the facts Dai's filter counted)."""
        write_json(self.out / "run.json", meta, **DUMPS)

    def add_time(self, stage: str, seconds: float) -> dict:
        """A stage's seconds into timings.json (summed over the sessions of the run); its content now."""
        return add_time(self.out, stage, seconds, self.warn)

    # -- JSON rows ------------------------------------------------------------------

    def _edits(self, method: str) -> Records:
        return self._records(self.out / "edits" / method, ("scores", "seconds", "params_changed"), EditRow,
                             name=lambda k: f"{k[0]}-{k[1]}", parse=lambda s: (int(s.split("-")[0]), s.split("-", 1)[1]))

    def edit(self, method: str, case_id: int, lang: str) -> EditRow | None:
        d = self._edits(method).get((case_id, lang))
        return None if d is None else EditRow.from_json(d)

    def put_edit(self, row: EditRow) -> None:
        self._edits(row.method).put((row.case_id, row.edit_lang), row.to_json())

    def _unedited(self) -> Records:
        return self._records(self.out / "unedited", ("case_id", "measure"), UneditedRow, parse=int)

    def unedited(self, case_id: int) -> UneditedRow | None:
        d = self._unedited().get(case_id)
        return None if d is None else UneditedRow.from_json(d)

    def put_unedited(self, row: UneditedRow) -> None:
        self._unedited().put(row.case_id, row.to_json())

    def unrelated(self) -> Unrelated | None:
        """The unedited unrelated-text NLL stored by an earlier session (None: not there, or damaged)."""
        path = self.out / "unrelated.json"
        d = read_json(path, need=("langs", "nll", "digest"), root=self.out, warn=self.warn)
        why = None if d is None else _reads_as(Unrelated)(d)
        if why is not None:
            move_aside(path, why, root=self.out, warn=self.warn)
            return None
        return None if d is None else Unrelated.from_json(d)

    def put_unrelated(self, row: Unrelated) -> None:
        write_json(self.out / "unrelated.json", row.to_json(), **DUMPS)

    def _neurons(self) -> Records:
        return self._records(self.out / "neurons", ("neurons", "seconds"), FactNeurons,
                             name=lambda k: f"{k[0]}.{k[1]}", parse=lambda s: tuple(s.rsplit(".", 1)))

    def neurons(self, fact_id: str, lang: str) -> FactNeurons | None:
        d = self._neurons().get((fact_id, lang))
        return None if d is None else FactNeurons.from_json(d)

    def put_neurons(self, fact_id: str, lang: str, row: FactNeurons) -> None:
        self._neurons().put((fact_id, lang), row.to_json())

    def put_common(self, common: dict) -> None:
        """neurons/common.json: {"<relation>.<lang>": CommonNeurons}."""
        write_json(self.out / "neurons" / "common.json", {k: v.to_json() for k, v in common.items()}, **DUMPS)

    def sweep(self, method: str = "rome") -> Sweep | None:
        """A method's layer sweep (``<method>-sweep.json``), where an earlier session stored it."""
        path = self.out / f"{method}-sweep.json"
        d = read_json(path, need=("layers", "best"), root=self.out, warn=self.warn)
        why = None if d is None else _reads_as(Sweep)(d)
        if why is not None:
            move_aside(path, why, root=self.out, warn=self.warn)
            return None
        return None if d is None else Sweep.from_json(d)

    def put_sweep(self, sweep: Sweep, method: str = "rome") -> None:
        write_json(self.out / f"{method}-sweep.json", sweep.to_json(), **DUMPS)

    def _sweep_parts(self, method: str, what: str) -> Records:
        folder = f"{method}-sweep" if what == "layer" else f"{method}-{what}-sweep"
        return self._records(self.out / folder, name=lambda k: f"{k[0]:g}-{k[1]}",
                             parse=lambda s: (float(s.rsplit("-", 1)[0]), int(s.rsplit("-", 1)[1])))

    def sweep_part(self, method: str, at: float, case_id: int, what: str = "layer") -> dict | None:
        """One edit of a sweep under way: its record scores at layer (``what`` "bound": L∞ bound) ``at``
        (``<method>-sweep/<layer>-<case>.json``, ``<method>-bound-sweep/<bound>-<case>.json``)."""
        return self._sweep_parts(method, what).get((at, case_id))

    def put_sweep_part(self, method: str, at: float, case_id: int, scores: dict, what: str = "layer") -> None:
        self._sweep_parts(method, what).put((at, case_id), scores)

    def _checkpoints(self, method: str) -> Records:
        return self._records(self.out / "sequential", ("k", "scores"), Checkpoint,
                             name=lambda k: f"{method}-{k[0]}-k{k[1]}", parse=lambda s: s)

    def checkpoint(self, method: str, lang: str, k: int) -> Checkpoint | None:
        d = self._checkpoints(method).get((lang, k))
        return None if d is None else Checkpoint.from_json(d)

    def put_checkpoint(self, method: str, row: Checkpoint) -> None:
        self._checkpoints(method).put((row.lang, row.k), row.to_json())

    def put_results(self, res: dict) -> None:
        write_json(self.out / "results.json", res, **DUMPS)

    # -- kept edits (torch blobs) ----------------------------------------------------------

    def _blobs(self, folder: str, method: str, lang: str, handle) -> Records:
        return self._records(self.out / folder / f"{method}-{lang}", name=str, parse=int, codec=_torch_blob(),
                             cls=None, check=lambda state: _edit_problem(handle, method, state))

    def chain(self, handle, method: str, lang: str) -> list[Edit]:
        """The sequential chain's kept edits (not applied), in order, up to the first that does not read
        back (moved to damaged/: it and those after it are redone)."""
        rec, kept = self._blobs("sequential", method, lang, handle), []
        while rec.path(len(kept)).is_file():
            state = rec.get(len(kept))
            if state is None:
                break
            kept.append(edit_of(handle, method, state))
        return kept

    def put_chain(self, method: str, lang: str, i: int, e: Edit) -> None:
        """The chain's ``i``-th kept edit (written last: the commit marker of that step), compact: a
        low-rank change as its factors (it reads back only on top of step i - 1), and of a subclass's
        tensors only the keys of a method whose later edits read them (AlphaEdit's K_p)."""
        keep = ("keys",) if "kept" in getattr(lookup(e.method), "context", ()) else ()
        self._blobs("sequential", method, lang, e.handle).put(i, e.state(compact=True, keep=keep))

    def batch_member(self, handle, method: str, lang: str, case_id: int) -> Edit | None:
        """A batch member computed earlier (not applied), or None (not there, or damaged: moved aside and
        redone)."""
        state = self._blobs("batch", method, lang, handle).get(case_id)
        return None if state is None else edit_of(handle, method, state)

    def put_batch_member(self, lang: str, case_id: int, e: Edit) -> None:
        self._blobs("batch", e.method, lang, e.handle).put(case_id, e.state())

    def _joint(self, method: str, lang: str, handle) -> Records:
        return self._records(self.out / "batch" / f"{method}-{lang}", name=str, parse=str, codec=_torch_blob(),
                             check=lambda state: _edit_problem(handle, method, state))

    def joint(self, handle, method: str, lang: str) -> Edit | None:
        """A joint method's batch edit computed earlier (not applied), or None (not there, or damaged)."""
        state = self._joint(method, lang, handle).get("joint")
        return None if state is None else edit_of(handle, method, state)

    def put_joint(self, lang: str, e: Edit) -> None:
        self._joint(e.method, lang, e.handle).put("joint", e.state())


def edit_of(handle, method: str, state) -> Edit:
    """A kept edit read back: ``Edit.state()``'s dict, or the formats the bench wrote before it (a chain
    step: the list of its changes; a batch member: its changes, info and seconds)."""
    if isinstance(state, list):
        return Edit(handle, method, None, [Change(**c) for c in state])
    if "method" not in state:
        return Edit(handle, method, None, [Change(**c) for c in state["changes"]], state["info"],
                    float(state["seconds"]))
    cls = getattr(lookup(method), "edit_class", Edit)     # memit, alphaedit: a JointEdit, its keys kept
    return cls.from_state(handle, state)


def _edit_problem(handle, method: str, state) -> str | None:
    """Why a kept edit's file does not read back as an edit (None: it does)."""
    try:
        edit_of(handle, method, state)
    except (EditError, KeyError, TypeError, ValueError, AttributeError) as e:
        return f"not an edit ({type(e).__name__}: {e})"
    return None


__all__ = ["BenchDir"]
