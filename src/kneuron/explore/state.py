"""What the explorer's server holds between requests: the models (loaded on first use, one computation
at a time each) and the background jobs (attribution, index builds) with their progress."""
from __future__ import annotations

import itertools
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from kneuron.errors import KneuronError
from kneuron.models.load import ModelHandle, load_model

log = logging.getLogger("kneuron.explore")
BUSY_WAIT_S = 600          # how long a request waits for a model another computation holds
KEEP_JOBS = 16             # finished jobs kept for the page to read


class Busy(KneuronError):
    """The model stayed busy with another computation for too long."""


class Cancelled(Exception):
    """Raised inside a job's computation when the user cancelled it."""


@dataclass
class Model:
    name: str
    handle: ModelHandle | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)       # one computation at a time
    loading: threading.Lock = field(default_factory=threading.Lock)
    error: str | None = None


class Models:
    """The models offered in the page, by name; each is loaded on first use and kept."""

    def __init__(self, names: list[str], loader: Callable[[str], ModelHandle] | None = None):
        self._loader = loader or _load
        self._models = {n: Model(n) for n in dict.fromkeys(names)}
        self._guard = threading.Lock()

    def names(self) -> list[str]:
        return list(self._models)

    def add(self, name: str) -> None:
        with self._guard:
            self._models.setdefault(name, Model(name))

    def info(self) -> list[dict]:
        out = []
        for m in self._models.values():
            h = m.handle
            out.append({"name": m.name, "loaded": h is not None, "error": m.error,
                        **({"kind": h.kind, "n_layers": h.n_layers, "n_neurons": h.n_neurons} if h else {})})
        return out

    def handle(self, name: str) -> ModelHandle:
        """The loaded model (loading it now if needed); a KneuronError for a name not offered."""
        m = self._models.get(name)
        if m is None:
            raise KneuronError(f"model {name!r} is not offered here; start explore with --model {name}")
        with m.loading:
            if m.handle is None:
                t = time.time()
                try:
                    m.handle = self._loader(name)
                except KneuronError as e:
                    m.error = str(e)
                    raise
                m.error = None
                log.info("loaded %s in %.1f s", name, time.time() - t)
        return m.handle

    def preload(self, name: str) -> None:
        """Load ``name`` in the background (a failure is kept for the page and logged)."""
        def run():
            try:
                self.handle(name)
            except KneuronError as e:
                log.warning("%s", e)
        threading.Thread(target=run, name=f"explore-load-{name}", daemon=True).start()

    @contextmanager
    def use(self, name: str):
        """The model, held for one computation (others wait for it)."""
        h = self.handle(name)
        m = self._models[name]
        if not m.lock.acquire(timeout=BUSY_WAIT_S):
            raise Busy(f"{name} is busy with another computation; cancel it or try again")
        try:
            yield h
        finally:
            m.lock.release()


def _load(name: str) -> ModelHandle:
    return load_model(name)           # quiet: load_model keeps the dependencies' logs and bars out


@dataclass
class Job:
    id: str
    title: str
    total: int = 0
    done: int = 0
    state: str = "running"           # running | done | error | cancelled
    result: object = None
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def advance(self, n: int) -> None:
        """A progress callback: n more units done; raises Cancelled once the user cancelled."""
        if self.cancel.is_set():
            raise Cancelled
        self.done += n

    def to_json(self) -> dict:
        return {"id": self.id, "title": self.title, "state": self.state, "done": self.done, "total": self.total,
                "error": self.error, "result": self.result if self.state == "done" else None}


class Jobs:
    """Background computations the page polls: progress, result, cancel."""

    def __init__(self):
        self._jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)

    def start(self, title: str, work: Callable[[Job], object], total: int = 0) -> Job:
        job = Job(str(next(self._ids)), title, total)
        self._jobs[job.id] = job
        for old in [j for j in self._jobs.values() if j.state != "running"][:-KEEP_JOBS]:
            del self._jobs[old.id]             # finished results are kept for a while, not forever

        def run():
            try:
                job.result, job.state = work(job), "done"
            except Cancelled:
                job.state = "cancelled"
                log.info("job %s (%s) cancelled", job.id, title)
            except KneuronError as e:
                job.error, job.state = str(e), "error"
                log.warning("job %s (%s): %s", job.id, title, e)
            except Exception as e:                 # a bug: keep the server, show it, log the traceback
                job.error, job.state = f"internal error: {type(e).__name__}: {e}", "error"
                log.exception("job %s (%s) failed", job.id, title)
        threading.Thread(target=run, name=f"explore-job-{job.id}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job:
        if job_id not in self._jobs:
            raise KneuronError(f"no job {job_id!r}")
        return self._jobs[job_id]
