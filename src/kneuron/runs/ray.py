"""`--engine ray`: localize facts on Ray workers (one model per worker: per GPU where there are GPUs,
else per CPU worker), all writing into one run directory.

The driver opens (or resumes) the run, hands the unfinished facts out one at a time to whichever
worker is free, and compacts the run at the end. Each worker writes each finished fact as its own
atomic part (``store.write_part``), so nothing is lost when a worker dies: Ray restarts the worker
(reloading the model) and retries the fact it was working on, whose part is then written once. A
whole job that is stopped resumes like a local run (``--resume``): finished facts are not redone.
The results equal the local engine's: the same function localizes each fact.
"""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from kneuron.facts import Fact
from kneuron.runs.locate import LocateConfig, check_facts, fact_row, locate_fact, neuron_rows, run_meta
from kneuron.runs.store import RunStore


class EngineError(RuntimeError):
    """The Ray engine cannot run as asked (one-line message)."""


def _ray():
    try:
        import ray
    except ImportError:
        raise EngineError("--engine ray needs Ray: pip install 'kneuron[ray]' (or pip install ray)") from None
    return ray


class _Worker:
    """One model, localizing one fact per call into the run directory."""

    def __init__(self, model: str, site: str | None, cfg: dict, out: str, device: str | None = None):
        import torch

        from kneuron.models.load import load_model
        device = device or ("cuda" if torch.cuda.is_available() else None)
        self.h = load_model(model, site=site, device=device) if device else load_model(model, site=site)
        self.cfg, self.out = LocateConfig(**cfg), out

    def meta(self, facts_path, facts_hash, lang, limit) -> dict:
        return run_meta(self.h, self.cfg, facts_path, facts_hash, lang, limit)

    def check(self, facts: list[Fact], skip_invalid: bool):
        check_facts(self.h, facts, skip_invalid)
        return True

    def locate(self, order: int, fact: Fact, skip_invalid: bool) -> tuple[str, str]:
        from kneuron.runs.store import write_part
        _fault_injection(order)
        qs = check_facts(self.h, [fact], skip_invalid)[0]
        r = locate_fact(self.h, fact, qs, self.cfg)
        write_part(self.out, fact_row(order, r), neuron_rows(r))
        return fact.key


def _fault_injection(order: int) -> None:
    """Tests: KNEURON_DIE_AT=<order>:<marker file> kills this worker once, when it starts that fact."""
    spec = os.environ.get("KNEURON_DIE_AT")
    if not spec:
        return
    at, marker = spec.split(":", 1)
    if int(at) == order and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)


def locate_ray(model: str, facts: list[Fact], cfg: LocateConfig, out, resume: bool = False,
               facts_path: str | None = None, facts_hash: str | None = None, lang: str | None = None,
               limit: int | None = None, skip_invalid_templates: bool = False, workers: int = 2,
               site: str | None = None, gpus_per_worker: float | None = None, address: str | None = None,
               show_progress: bool = True) -> RunStore:
    """Like ``localize.locate`` but on ``workers`` Ray actors (a local cluster unless ``address``)."""
    ray = _ray()
    cfg.validate()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    facts = facts[:limit] if limit else facts
    started = not ray.is_initialized()
    if started:
        kw = {} if address else {"num_cpus": max(workers, 1), "object_store_memory": 256 * 2**20}
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **kw)
    env = {k: v for k, v in os.environ.items() if k.startswith(("HF_", "TRANSFORMERS_", "TOKENIZERS_", "KNEURON_", "OMP_"))}
    try:
        import torch
        gpus = gpus_per_worker if gpus_per_worker is not None else (1 if torch.cuda.is_available() else 0)
        Actor = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=-1, max_task_retries=-1)(_Worker)
        cfg_d = asdict(cfg)
        actors = [Actor.options(runtime_env={"env_vars": env}).remote(model, site, cfg_d, str(Path(out).resolve()))
                  for _ in range(workers)]
        try:                                   # bad input (or an unloadable model) fails before any work
            ray.get(actors[0].check.remote(facts, skip_invalid_templates))
            meta = ray.get(actors[0].meta.remote(facts_path, facts_hash, lang, limit))
        except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as e:
            cause = getattr(e, "cause", None)
            raise (cause if isinstance(cause, Exception) else EngineError(str(e).splitlines()[-1])) from None
        meta["engine"] = {"name": "ray", "workers": workers}
        store = RunStore(out, meta=meta, resume=resume)
        done = store.done()
        todo = [(i, f) for i, f in enumerate(facts) if f.key not in done]
        import time

        from kneuron.runs.locate import _progress
        t0 = time.perf_counter()
        with _progress(show_progress, len(facts), len(facts) - len(todo)) as advance:
            pool = ray.util.ActorPool(actors)
            for _ in pool.map_unordered(lambda a, v: a.locate.remote(v[0], v[1], skip_invalid_templates), todo):
                advance()
        store = RunStore(out, meta=meta, resume=True)        # re-read the parts the workers wrote
        store.finalize()
        store.n_new, store.seconds = len(todo), time.perf_counter() - t0
        return store
    finally:
        if started:
            ray.shutdown()
