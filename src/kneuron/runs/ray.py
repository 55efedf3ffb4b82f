"""`--engine ray`: the executor that attributes a run's facts on Ray workers (one model per worker:
per GPU where there are GPUs, else per CPU worker), all writing into one run directory.

    locate(model, facts, cfg, out, executor=RayExecutor(workers=4))

The driver (``kneuron.runs.locate.locate``) opens (or resumes) the run, and this executor hands the
groups of unfinished facts out to whichever worker is free. Each worker writes each finished fact as
its own atomic part (``store.write_part``), so nothing is lost when a worker dies: Ray restarts the
worker (reloading the model) and retries the group it was working on, whose parts are then written
once. A whole job that is stopped resumes like a local run (``resume=True``): finished facts are not
redone. The results equal the local executor's: the same function localizes each group.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kneuron.attribution import Execution
from kneuron.facts import Fact
from kneuron.errors import ConfigError, KneuronError
from kneuron.models.load import ModelHandle
from kneuron.runs.locate import (Checked, LocateConfig, check_fact, check_facts, fact_row, load_by_name,
                                 locate_facts, neuron_rows, query_rows, run_meta)


class RayError(KneuronError, RuntimeError):
    """The Ray executor cannot run as asked (one-line message)."""


def _ray():
    try:
        import ray
    except ImportError:
        raise RayError("--engine ray needs Ray: pip install 'kneuron[ray]' (or pip install ray)") from None
    return ray


class _Worker:
    """One model, localizing one group of facts per call into the run directory."""

    def __init__(self, model: str, load: dict, cfg: LocateConfig, execution: Execution, out: str):
        self.h = load_by_name(model, load)
        self.cfg, self.execution, self.out = cfg, execution, out

    def meta(self, facts_path, facts_hash, lang, limit) -> dict:
        return run_meta(self.h, self.cfg, facts_path, facts_hash, lang, limit)

    def check(self, facts: list[Fact], skip_invalid: bool) -> Checked:
        return check_facts(self.h, facts, skip_invalid)

    def locate(self, group: list[tuple[int, Fact]], skip_invalid: bool) -> int:
        from kneuron.runs.store import write_part
        for order, _ in group:
            _fault_injection(order)
        queries = [check_fact(self.h, f, skip_invalid) for _, f in group]   # the driver kept only usable facts
        results = locate_facts(self.h, [(f, q) for (_, f), q in zip(group, queries)], self.cfg, self.execution)
        for (order, _), r in zip(group, results):
            write_part(self.out, fact_row(order, r), neuron_rows(r), query_rows(r))
        return len(group)


def _fault_injection(order: int) -> None:
    """Tests: KNEURON_DIE_AT=<order>:<marker file> kills this worker once, when it starts that fact."""
    spec = os.environ.get("KNEURON_DIE_AT")
    if not spec:
        return
    at, marker = spec.split(":", 1)
    if int(at) == order and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)


@dataclass(frozen=True)
class RayExecutor:
    """Attribute the facts on ``workers`` Ray actors, each loading the model (by name, or by the
    name, kind, neuron site and dtype of a loaded model), on a local Ray cluster unless ``address``
    (or one already started). ``gpus_per_worker``: default 1 where there is a GPU, else 0."""
    workers: int = 2
    gpus_per_worker: float | None = None
    address: str | None = None

    def __post_init__(self):
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"workers must be an integer >= 1, got {self.workers!r}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ConfigError(f"gpus-per-worker must be >= 0, got {self.gpus_per_worker}")

    def open(self, model: ModelHandle | str, cfg: LocateConfig, execution: Execution, out, load: dict) -> "_Ray":
        if isinstance(model, ModelHandle):
            if load:
                raise ConfigError(f"load options ({', '.join(load)}) apply to a model name, not a loaded model")
            model, load = model.name, {"kind": model.kind, "site": model.site.proj_path,
                                       "layers": model.site.layers_path, "dtype": model.dtype}
        return _Ray(self, model, load, cfg, execution, str(Path(out).resolve()))


def _unwrap(e: BaseException) -> BaseException:
    """A worker's exception as itself (a QueryError stays a QueryError), else one line."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, Exception) else RayError(str(e).strip().splitlines()[-1])


class _Ray:
    def __init__(self, ex: RayExecutor, model: str, load: dict, cfg: LocateConfig, execution: Execution, out: str):
        self.ex, self.model, self.load, self.cfg, self.execution, self.out = ex, model, load, cfg, execution, out
        self.skip_invalid = False

    def __enter__(self):
        ray = self.ray = _ray()
        self.started = not ray.is_initialized()
        if self.started:
            kw = {} if self.ex.address else {"num_cpus": self.ex.workers, "object_store_memory": 256 * 2**20}
            ray.init(address=self.ex.address, include_dashboard=False, log_to_driver=False, **kw)
        try:
            import torch
            env = {k: v for k, v in os.environ.items()
                   if k.startswith(("HF_", "TRANSFORMERS_", "TOKENIZERS_", "KNEURON_", "OMP_"))}
            gpus = self.ex.gpus_per_worker
            gpus = gpus if gpus is not None else (1 if torch.cuda.is_available() else 0)
            Actor = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=-1, max_task_retries=-1)(_Worker)
            self.actors = [Actor.options(runtime_env={"env_vars": env}).remote(self.model, self.load, self.cfg,
                                                                              self.execution, self.out)
                           for _ in range(self.ex.workers)]
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        if self.started:
            self.ray.shutdown()
        return False

    def _first(self, call):
        """One call on the first worker (bad input, or an unloadable model, fails here in one line)."""
        ray = self.ray
        try:
            return ray.get(call(self.actors[0]))
        except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as e:
            raise _unwrap(e) from None

    def check(self, facts, skip_invalid):
        self.skip_invalid = skip_invalid
        return self._first(lambda a: a.check.remote(facts, skip_invalid))

    def meta(self, facts_path, facts_hash, lang, limit):
        meta = self._first(lambda a: a.meta.remote(facts_path, facts_hash, lang, limit))
        meta["engine"] = {"name": "ray", "workers": self.ex.workers}
        return meta

    def run(self, groups, store):
        ray = self.ray
        pool = ray.util.ActorPool(self.actors)
        it = pool.map_unordered(lambda a, g: a.locate.remote(g, self.skip_invalid), groups)
        while True:
            try:
                n = next(it)
            except StopIteration:
                return
            except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as e:
                raise _unwrap(e) from None
            yield n
