"""An edit: new values for a few slices of a model's weights, applied and undone bit for bit.

Every editing method (kn, kn-eai, kn-erase, likn, kn-opt, rome, ft) computes a list of ``Change``s
against the model as it is when the edit is made, and returns an ``Edit`` that is not applied yet:

    e = kneuron.edit(h, fact, "Rome", method="rome")   # computes the edit
    with e:                                            # applied inside, undone (bit-exact) after
        ...
    e.apply(); ...; e.undo()                           # or by hand; e.save(dir) writes an HF model directory

Sequential editing is computing the next edit while the previous ones stay applied.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kneuron.errors import KneuronError
from kneuron.facts.schema import Fact
from kneuron.models.load import ModelHandle
from kneuron.models.sites import is_conv1d


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


@dataclass
class Change:
    """New values for ``param[index]`` (``index`` None: the whole parameter)."""
    param: str                     # name in model.named_parameters()
    value: torch.Tensor
    index: Any = None              # anything a tensor accepts in ``t[index] = value``


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
    def params_changed(self) -> int:
        """Number of weight entries the edit writes."""
        return sum(c.value.numel() for c in self.changes)

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
                    v = c.value.to(device=p.device, dtype=p.dtype)
                    if c.index is None:
                        p.copy_(v)
                    else:
                        p[c.index] = v
            except (RuntimeError, IndexError, ValueError) as e:     # e.g. a shape mismatch: nothing stays written
                self._saved = saved
                self.undo()
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


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return x if isinstance(x, (str, int, float, bool, type(None))) else str(x)
