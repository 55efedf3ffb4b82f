"""Re-open a finished (or partial) run on its own: its facts and the very model and neuron site it
was made with.

A run records its facts in ``<run>/facts.jsonl`` and its model in run.json's ``model_spec``
({name, kind, site, layers, n_layers, n_neurons, dtype}), so a run directory can be moved or copied
and still be evaluated without ``--facts``, on the same neurons. Runs made before either existed
fall back to the fact file path they recorded and to their display site ``layers[i].proj``.

    load_run(run_dir, facts_path=None) -> RunContents     the run's facts (in order) and neurons
    model_spec(meta) -> ModelSpec                          what run.json says about the model
    open_model(run, model=None, device=None) -> ModelHandle    that model, on that site, checked
    check_model(handle, run)                               refuse a handle of another shape or site
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kneuron.facts import Fact, fact_file_hash, load_facts
from kneuron.models.load import ModelHandle
from kneuron.runs.store import FACTS_FILE, RunStore, RunStoreError, open_run


class ModelMismatchError(RunStoreError):
    """The model given for a run is not the one it was made with (kind, layers, neurons or site)."""


# ----------------------------------------------------------------------------- facts and neurons

@dataclass
class RunContents:
    store: RunStore
    facts: list[Fact]                                   # in run order
    neurons: dict[tuple[str, str], list[tuple[int, int]]]


def _same_file(a, b: Path) -> bool:
    try:
        return b.is_file() and fact_file_hash(a) == fact_file_hash(b)
    except (OSError, ValueError):
        return False


def _run_facts(store: RunStore, run_dir, facts_path) -> list[Fact]:
    """The facts of a run: ``facts_path`` if given (it must be the recorded fact file, by hash), else
    the run's own facts.jsonl, else the fact file path the run recorded (runs made before facts.jsonl)."""
    own = store.path / FACTS_FILE
    want = store.meta.get("facts_hash")
    if facts_path is not None:
        if not Path(facts_path).exists():
            raise RunStoreError(f"{run_dir}: --facts {str(facts_path)!r} does not exist")
        if want and fact_file_hash(facts_path) != want and not _same_file(facts_path, own):
            raise RunStoreError(f"{facts_path}: not the fact file run {run_dir} was made from (hash differs)")
        return load_facts(facts_path)
    if own.is_file():
        return load_facts(own)
    path = store.meta.get("facts")
    if not path or not Path(path).exists():
        raise RunStoreError(f"{run_dir}: the run holds no {FACTS_FILE} and its fact file {path!r} is gone; "
                            "pass --facts")
    if want and fact_file_hash(path) != want:
        raise RunStoreError(f"{path}: the fact file changed since the run was made (hash differs)")
    return load_facts(path)


def load_run(run_dir, facts_path=None) -> RunContents:
    """A finished (or partial) run: its facts in run order, and each fact's neurons (by rank)."""
    store = open_run(run_dir)
    ft, nt = store.facts().to_pylist(), store.neurons().to_pylist()
    if not ft:
        raise RunStoreError(f"{run_dir}: the run has no finished facts")
    by_key = {f.key: f for f in _run_facts(store, run_dir, facts_path)}
    missing = [(r["fact_id"], r["lang"]) for r in ft if (r["fact_id"], r["lang"]) not in by_key]
    if missing:
        raise RunStoreError(f"{run_dir}: {len(missing)} finished facts are not in its fact file, "
                            f"e.g. {missing[0][0]!r} ({missing[0][1]})")
    neurons: dict = {}
    for r in nt:
        neurons.setdefault((r["fact_id"], r["lang"]), []).append((r["layer"], r["neuron"]))
    return RunContents(store, [by_key[(r["fact_id"], r["lang"])] for r in ft], neurons)


# ----------------------------------------------------------------------------- the model

@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str | None
    site: str | None            # the output projection inside one layer (load_model's site=)
    layers: str | None          # the layer list (load_model's layers=)
    n_layers: int | None
    n_neurons: int | None
    dtype: str | None = None

    @property
    def where(self) -> str:
        return f"{self.layers}[i].{self.site}" if self.layers and self.site else "the default site"

    def shape(self) -> str:
        return f"{self.kind}, {self.n_layers} layers x {self.n_neurons} neurons at {self.where}"


def model_spec(meta: dict) -> ModelSpec:
    """The model a run was made with, from its run.json (``model_spec``, or the older flat keys)."""
    s = meta.get("model_spec")
    if isinstance(s, dict):
        return ModelSpec(s.get("name") or meta.get("model"), s.get("kind"), s.get("site"), s.get("layers"),
                         s.get("n_layers"), s.get("n_neurons"), s.get("dtype"))
    layers = site = None
    text = meta.get("site")
    if isinstance(text, str) and "[i]." in text:          # the display text "model.layers[i].mlp.down_proj"
        layers, site = text.split("[i].", 1)
    return ModelSpec(meta.get("model"), meta.get("kind"), site, layers, meta.get("n_layers"),
                     meta.get("n_neurons"), meta.get("dtype"))


def _meta_and_name(run) -> tuple[dict, str]:
    if isinstance(run, RunContents):
        run = run.store
    if isinstance(run, RunStore):
        return run.meta, str(run.path)
    if isinstance(run, dict):
        return run, "the run"
    if isinstance(run, (str, os.PathLike)):
        return open_run(run).meta, str(run)
    raise TypeError(f"a run is a directory, a RunStore, RunContents or run.json's dict, not {type(run).__name__}")


def handle_spec(handle: ModelHandle) -> ModelSpec:
    """The spec of a loaded model, in the form run_meta records."""
    return ModelSpec(handle.name, handle.kind, handle.site.proj_path, handle.site.layers_path, handle.n_layers,
                     handle.n_neurons, str(handle.dtype))


def check_model(handle: ModelHandle, run) -> ModelHandle:
    """Refuse (one line: the run, the expected and the found shape) a model whose kind, number of
    layers, neurons per layer or neuron site differ from the run's; returns the handle."""
    return _check(handle, *_meta_and_name(run))


def _check(handle: ModelHandle, meta: dict, name: str) -> ModelHandle:
    want, have = model_spec(meta), handle_spec(handle)
    diffs = [k for k in ("kind", "n_layers", "n_neurons") if getattr(want, k) is not None
             and getattr(want, k) != getattr(have, k)]
    if want.site and want.layers and (want.site, want.layers) != (have.site, have.layers):
        diffs.append("site")
    if diffs:
        raise ModelMismatchError(f"{name}: model {have.name} does not fit the run ({', '.join(diffs)} differ): "
                                 f"the run has {want.shape()}, the model {have.shape()}")
    return handle


def _dtype(text: str | None):
    import torch
    d = getattr(torch, str(text).removeprefix("torch."), None) if text else None
    return d if isinstance(d, torch.dtype) else None


def open_model(run, model: str | None = None, device: str | None = None, dtype=None, **load_options) -> ModelHandle:
    """The model a run was made with, on its neuron site, checked against the run's shape.

    ``run``: a run directory, its RunStore or RunContents, or its run.json dict. ``model`` loads another
    copy or path instead (same neuron site; refused if its shape differs). ``device``: where to put it
    ("auto": cuda when present; None: where it loads). ``dtype``: default, the run's. ``load_options``
    (offline, device_map) go to load_model."""
    from kneuron.models.load import ModelLoadError, load_model
    from kneuron.models.sites import SiteError
    meta, name = _meta_and_name(run)
    spec = model_spec(meta)
    if not (model or spec.name):
        raise RunStoreError(f"{name}: run.json names no model; pass --model")
    if device == "auto":
        import torch
        device = "cuda" if torch.cuda.is_available() and load_options.get("device_map") is None else None
    try:       # another model: its kind is detected (and then checked), the neuron site is the run's
        h = load_model(model or spec.name, kind=None if model else spec.kind, site=spec.site, layers=spec.layers,
                       device=device, dtype=dtype or _dtype(spec.dtype), **load_options)
    except SiteError as e:
        raise ModelMismatchError(f"{name}: model {model or spec.name} has no neuron site {spec.where} like the "
                                 f"run ({e})") from None
    except ModelLoadError as e:
        if model:
            raise
        raise ModelLoadError(f"{e} (the model of run {name}; pass --model to use a copy of it)") from None
    return _check(h, meta, name)
