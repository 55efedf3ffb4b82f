"""An edit: new values for a few slices of a model's weights, applied and undone bit for bit.

Every editing method (kn, kn-eai, kn-erase, likn, likn-transfer, kn-opt, rome, ft-m, ft-l, memit, alphaedit)
computes a list of ``Change``s against the model as it is when the edit is made, and returns an ``Edit`` that is not
applied yet:

    e = kneuron.edit(h, fact, "Rome", method="rome")   # computes the edit
    with e:                                            # applied inside, undone (bit-exact) after
        ...
    e.apply(); ...; e.undo()                           # or by hand; e.save(dir) writes an HF model directory

Sequential editing is computing the next edit while the previous ones stay applied. ``e.state()`` is the
edit as plain values and tensors (``torch.save`` writes it), ``Edit.from_state(h, state)`` the same edit
again, bit for bit.

A method is an ``EditMethod``: a frozen dataclass whose fields are its hyper-parameters and whose class
attributes say what it can do (the registry, ``registry.py``, lists them). What one edit is given besides
(precomputed neurons, the other language's fact, ROME's statistics) is its ``EditContext``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Iterable

import torch

from kneuron.errors import KneuronError
from kneuron.facts.schema import Fact
from kneuron.models.fingerprint import tensor_fingerprint
from kneuron.models.load import ModelHandle
from kneuron.models.sites import is_conv1d
from kneuron.models.verbosity import quiet_dependencies
from kneuron.neurons import Neuron

from .lowrank import low_rank_add


class EditError(KneuronError, ValueError):
    """An edit that cannot be made or applied; the message is one line and names the problem."""


@dataclass(frozen=True)
class Rewrite:
    """What to change: ``fact``'s object becomes ``new`` (in the fact's language); ``new`` None for erasure."""
    fact: Fact
    new: str | None

    def __post_init__(self):
        if self.new is None:
            return
        if not isinstance(self.new, str) or not self.new.strip():
            raise EditError(f"{self.fact.where('new')}the new object is empty")
        if self.new.strip() == self.fact.object.strip():
            raise EditError(f"{self.fact.where('new')}the new object {self.new!r} equals the fact's object")


@dataclass(frozen=True)
class EditContext:
    """What one edit is given besides its method's hyper-parameters; each method reads the names in its
    ``context`` (another one given is an error).

    neurons     the neurons to write (e.g. from a ``locate`` run); None: the method localises them
    common      neurons to leave out (the relation's common neurons, ``localize.relation_filter``)
    other       likn, likn-transfer: the same fact in the other language (whose neurons the fact's are
                intersected with); ``other_new`` its new object (likn only: it rewrites both languages)
    moment      rome: the second moment C of the layer's keys, precomputed ([n, n])
    moments     memit, alphaedit: the second moments C0 of their layers' keys, precomputed ({layer: [n, n]};
                in a sequential chain, the unedited model's)
    kept        alphaedit: the edits made before this one and kept applied (sequential editing), oldest
                first; the keys they wrote (their ``keys``) are its previously edited keys K_p
    execution   how the localisation runs (``attribution.Execution``)
    progress    rome, memit, alphaedit: show a progress bar while it computes C"""
    neurons: Iterable[Neuron] | None = None
    common: Iterable[Neuron] | None = None
    other: Fact | None = None
    other_new: str | None = None
    moment: torch.Tensor | None = None
    moments: dict[int, torch.Tensor] | None = None
    kept: tuple["Edit", ...] = ()
    execution: Any = None
    progress: bool = True


CONTEXT = tuple(f.name for f in fields(EditContext))


@dataclass(frozen=True)
class EditMethod:
    """An editing method: its fields are its hyper-parameters (``params()``), its class attributes what it
    can do. ``edit`` computes the edit of one rewrite against the model as it is now (not applied)."""
    name: ClassVar[str]
    help: ClassVar[str]                        # one line, for the command line and the explorer
    causal_only: ClassVar[bool] = False        # masked models cannot be edited by it
    batch_rule: ClassVar[str | None] = None    # how a batch is made: batch_edit combines single edits by "add" or
                                               # "set"; "joint": one edit_batch of every rewrite; None: no batch
    uses_neurons: ClassVar[bool] = False       # writes knowledge neurons' value vectors (takes neurons=)
    common_filter: ClassVar[bool] = False      # Dai et al.'s relation filter applies (common=)
    languages: ClassVar[int] = 1               # languages one edit rewrites (likn: 2)
    shared_neurons: ClassVar[bool] = False     # writes the neurons the fact shares with its other language
    needs_new: ClassVar[bool] = True           # kn-erase: no new object
    context: ClassVar[tuple[str, ...]] = ()    # the EditContext names it reads
    sweeps_layer: ClassVar[bool] = False       # its ``layer`` is chosen by its own sweep in the bench (rome, ft-l),
                                               # not taken from ROME's
    swept_bounds: ClassVar[tuple[float, ...]] = ()   # the ``norm_bound`` values its sweep tries first (ft-l)

    def edit(self, handle: ModelHandle, rewrite: "Rewrite", ctx: EditContext = EditContext()) -> "Edit":
        raise NotImplementedError

    def edit_batch(self, handle: ModelHandle, rewrites: list["Rewrite"], ctx: EditContext = EditContext(),
                   on_error=None) -> "Edit":
        """batch_rule "joint" (memit, alphaedit): ONE edit of every rewrite, computed together against the
        model as it is now (not applied). ``on_error(i, rewrite, err)``: a rewrite that cannot be edited is
        left out and said (None: its EditError is raised)."""
        raise NotImplementedError

    def check(self, handle: ModelHandle, rewrite: "Rewrite") -> None:
        """What the class attributes ask of an edit, checked before any work (a one-line EditError): a new
        object (``needs_new``), a causal model (``causal_only``). ``registry.edit`` checks every edit; a
        method whose ``edit`` may be called directly checks first too."""
        fact = rewrite.fact
        if self.needs_new and rewrite.new is None:
            raise EditError(f"{fact.where('new')}method {self.name} needs a new object")
        if self.causal_only and handle.kind != "causal":
            raise EditError(f"{fact.where()}{self.name} supports causal models only")

    def params(self) -> dict:
        """The hyper-parameters, one name per knob (nested configurations as dicts)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def capabilities(cls) -> dict:
        return {"causal_only": cls.causal_only, "batch_rule": cls.batch_rule, "uses_neurons": cls.uses_neurons,
                "common_filter": cls.common_filter, "languages": cls.languages, "shared_neurons": cls.shared_neurons,
                "needs_new": cls.needs_new}


def _plain(x):
    if hasattr(x, "__dataclass_fields__"):
        return {f.name: _plain(getattr(x, f.name)) for f in fields(x)}
    return x


@dataclass
class Change:
    """New values for ``param[index]`` (``index`` None: the whole parameter).

    A whole-parameter change may also carry its low-rank form ``low_rank`` = (A [rows, r], B [r, cols]) in
    the parameter's own layout (``lowrank``: float32 factors): ``value`` is then exactly ``low_rank_add(base,
    A, B)`` for the parameter ``base`` it was computed on (ROME: r = 1; MEMIT, AlphaEdit: r = the batch). It is
    stored compactly (``Edit.state(compact=True)``: the factors and ``base``'s fingerprint, not the value)
    and read back with ``value`` None, to be computed at ``apply`` from the weight it finds there -- refused
    unless that weight is ``base``, bit for bit."""
    param: str                     # name in model.named_parameters()
    value: torch.Tensor | None
    index: Any = None              # anything a tensor accepts in ``t[index] = value``
    low_rank: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    base: str | None = None        # a compact change read back: the fingerprint of the weight it applies to

    def new_value(self, current: torch.Tensor) -> torch.Tensor:
        """What the change writes where the weight is ``current`` (``value``, or computed from the factors)."""
        if self.value is not None:
            return self.value
        if self.low_rank is None:
            raise EditError(f"the change of {self.param} holds neither its values nor their low-rank form")
        if self.base is not None and tensor_fingerprint(current) != self.base:
            raise EditError(f"the change of {self.param} was computed on other weights than the model has now "
                            "(a chain step read back out of order, or another model)")
        return low_rank_add(current, *self.low_rank)

    @property
    def numel(self) -> int:
        if self.value is not None:
            return self.value.numel()
        a, b = self.low_rank
        return a.shape[0] * b.shape[1]


def value_index(handle: ModelHandle, neurons: list[int], layer: int) -> tuple[str, Any]:
    """(parameter name, index) that selects the value vectors of ``neurons`` in ``layer`` in the weight's own
    layout: columns of a Linear (weight [hidden, n]), rows of GPT-2's Conv1D (weight [n, hidden])."""
    proj = handle.sites[layer]
    name = param_name(handle, proj.weight)
    idx = torch.as_tensor(list(neurons), dtype=torch.long)
    return name, ((idx,) if is_conv1d(proj) else (slice(None), idx))


def param_name(handle: ModelHandle, param: torch.Tensor) -> str:
    for name, p in handle.model.named_parameters():
        if p is param:
            return name
    raise EditError("parameter not found in the model")


@dataclass
class Edit:
    """Computed changes to ``handle``'s weights; apply()/undo() restore every bit."""
    handle: ModelHandle = field(repr=False)
    method: str
    rewrite: Rewrite | None
    changes: list[Change] = field(repr=False)
    info: dict = field(default_factory=dict)      # what the method wants reported: neurons, layer, losses ...
    seconds: float = 0.0                          # time spent computing the edit (localization included)
    _saved: list[torch.Tensor] | None = field(default=None, repr=False)

    @property
    def applied(self) -> bool:
        return self._saved is not None

    @property
    def overwritten(self) -> list[torch.Tensor] | None:
        """The values the applied edit overwrote, one per change (what ``undo`` writes back); None when it
        is not applied (``health.weight_ratios`` reads them)."""
        return None if self._saved is None else list(self._saved)

    @property
    def params_changed(self) -> int:
        """Number of weight entries the edit writes."""
        return sum(c.numel for c in self.changes)

    def _params(self) -> dict[str, torch.nn.Parameter]:
        return dict(self.handle.model.named_parameters())

    def apply(self) -> "Edit":
        if self.applied:
            raise EditError(f"{self.method} edit is already applied")
        params, saved = self._params(), []
        missing = [c.param for c in self.changes if c.param not in params]
        if missing:
            raise EditError(f"{self.method} edit: the model has no parameter {missing[0]!r}")
        with torch.no_grad():
            for c in self.changes:
                p = params[c.param]
                view = p if c.index is None else p[c.index]
                saved.append(view.detach().clone())
            try:
                for c in self.changes:
                    p = params[c.param]
                    if c.value is None:                 # compact (read back): from the weight as it is now
                        if c.index is not None:
                            raise EditError(f"{self.method} edit: a low-rank change must write all of {c.param}")
                        c.value = c.new_value(p)
                    v = c.value.to(device=p.device, dtype=p.dtype)
                    if c.index is None:
                        p.copy_(v)
                    else:
                        p[c.index] = v
            except (RuntimeError, IndexError, ValueError) as e:     # e.g. a shape mismatch: nothing stays written
                self._saved = saved
                self.undo()
                if isinstance(e, EditError):
                    raise
                raise EditError(f"{self.method} edit cannot be applied to {c.param}: "
                                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        self._saved = saved
        return self

    def undo(self) -> None:
        if not self.applied:
            raise EditError(f"{self.method} edit is not applied")
        params = self._params()
        with torch.no_grad():
            for c, old in reversed(list(zip(self.changes, self._saved))):
                p = params[c.param]
                if c.index is None:
                    p.copy_(old)
                else:
                    p[c.index] = old
        self._saved = None

    def state(self, compact: bool = False, keep: Iterable[str] | None = None) -> dict:
        """The edit as plain values and CPU tensors (what ``torch.save`` writes; ``from_state`` reads it
        back bit for bit): method, rewrite, changes, info, seconds, and a subclass's own tensors.

        ``compact``: a change with a low-rank form is written as its factors and the fingerprint of the
        weight it applies to (the weight it overwrote if applied, else the model's now), and a subclass's
        own tensors only those named in ``keep`` (a sequential chain's step: ROME's is ~8 KB on smollm2-135m
        instead of 3.5 MB; read back, it applies only on top of the chain's step before it)."""
        extra = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _EDIT_FIELDS}
        if compact and keep is not None:
            extra = {k: v for k, v in extra.items() if k in set(keep)}
        params = self._params() if compact else {}
        changes = []
        for i, c in enumerate(self.changes):
            if compact and c.low_rank is not None and c.index is None:
                base = self._saved[i] if self.applied else params[c.param]
                changes.append({"param": c.param, "low_rank": [t.detach().cpu() for t in c.low_rank],
                                "base": tensor_fingerprint(base), "index": None})
            else:
                changes.append({"param": c.param, "value": c.value.detach().cpu(), "index": _index_state(c.index)})
        return {"method": self.method, "seconds": self.seconds, "info": self.info,
                "rewrite": None if self.rewrite is None else {"fact": self.rewrite.fact.to_json(),
                                                              "new": self.rewrite.new},
                "changes": changes, **({"extra": extra} if extra else {})}

    def release(self) -> None:
        """Forget what ``undo`` and a second ``apply`` need (the overwritten values; the values of changes
        that have a low-rank form): the weights stay as they are, the edit can no longer be undone. A long
        sequential chain keeps its edits this way and restores the weights from before its first."""
        self._saved = None
        for c in self.changes:
            if c.low_rank is not None:
                c.value = None

    @classmethod
    def from_state(cls, handle: ModelHandle, state: dict) -> "Edit":
        """The edit ``state()`` gave, on ``handle`` (not applied)."""
        try:
            rw = state["rewrite"]
            rewrite = None if rw is None else Rewrite(fact_from_json(rw["fact"]), rw["new"])
            changes = [Change(c["param"], None, None, tuple(c["low_rank"]), c["base"]) if "low_rank" in c else
                       Change(c["param"], c["value"], _index_from(c["index"])) for c in state["changes"]]
            own = {f.name for f in fields(cls)}
            extra = {k: v for k, v in (state.get("extra") or {}).items() if k in own}
            return cls(handle, state["method"], rewrite, changes, state["info"], float(state["seconds"]), **extra)
        except (KeyError, TypeError) as e:
            raise EditError(f"not an edit's state ({type(e).__name__}: {e})") from None

    def __enter__(self) -> "Edit":
        return self.apply()

    def __exit__(self, *exc) -> None:
        self.undo()

    def save(self, directory: str | Path) -> Path:
        """Write the edited model as a Hugging Face model directory (``load_model`` reads it back), with
        ``kneuron-edit.json`` describing the edit. Refuses a non-empty directory."""
        d = Path(directory)
        if d.exists() and (not d.is_dir() or any(d.iterdir())):
            raise EditError(f"{d}: not an empty directory; pass a new or empty one to --save")
        was = self.applied
        if not was:
            self.apply()
        try:
            d.mkdir(parents=True, exist_ok=True)
            quiet_dependencies()                     # transformers' "Writing model shards" bar: verbose only
            self.handle.model.save_pretrained(d)
            self.handle.tokenizer.save_pretrained(d)
            meta = {"method": self.method, "params_changed": self.params_changed,
                    "info": _jsonable(self.info)}
            if self.rewrite is not None:
                meta.update(fact=self.rewrite.fact.to_json(), new=self.rewrite.new)
            (d / "kneuron-edit.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1))
        finally:
            if not was:
                self.undo()
        return d


def fact_from_json(d: dict[str, Any]) -> Fact:
    """The Fact that ``Fact.to_json`` wrote."""
    return Fact(d["id"], d["relation"], d["lang"], d["subject"], d["object"], tuple(d["templates"]),
                tuple(d.get("aliases", ())), tuple(d.get("wrong_objects", ())))


_EDIT_FIELDS = ("handle", "method", "rewrite", "changes", "info", "seconds", "_saved")


def _index_state(index):
    """A Change's index as tensors, ints and tagged slices (no pickled objects)."""
    if isinstance(index, tuple):
        return {"tuple": [_index_state(i) for i in index]}
    if isinstance(index, slice):
        return {"slice": [index.start, index.stop, index.step]}
    return index.detach().cpu() if isinstance(index, torch.Tensor) else index


def _index_from(x):
    if isinstance(x, dict) and "tuple" in x:
        return tuple(_index_from(i) for i in x["tuple"])
    if isinstance(x, dict) and "slice" in x:
        return slice(*x["slice"])
    return x


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return x if isinstance(x, (str, int, float, bool, type(None))) else str(x)
