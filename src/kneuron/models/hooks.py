"""The one hook and forward primitive for plain Hugging Face models: capture, patch, forward, pad.

Every read of a module's input or output, every replacement of one, and every forward pass that
needs more than ``model(input_ids=...)`` goes through here, so that a feature never registers hooks by
hand and only this module knows transformers' argument and output names:

* ``capture(h, inputs={...}, outputs={...}, at=positions, stop_after=module)`` -- TransformerLens'
  ``run_with_cache`` / nnsight's ``.save()``: inside the ``with`` block, the forward passes fill the
  cache (name -> one tensor per module, as [batch, seq, ...] at ``at``); ``stop_after`` ends the
  forward pass once that module has run (nothing above it is computed);
* ``patch(h, module, fn, on="input" | "output")`` -- TransformerLens' ``hooks()``: the module's
  input (or output) x becomes ``fn(x)`` for every forward pass inside the block;
* ``forward(h, ids, attention_mask=..., past=..., position_ids=..., logits_at=...)`` -- the model
  run with the argument names this model's ``forward`` takes (``cache`` or ``past_key_values``:
  transformers renamed it during 5.x), position ids only where it takes them, and the logits at
  chosen positions only (``logits_to_keep``, or the output layer run on the chosen cells alone);
* ``pad(h, [ids, ...])`` -- right padding with ONE pad-id rule (``pad_id``) and an attention mask.

Hooks are removed when the ``with`` block ends, also on an exception: the model is untouched after
it. ``hook`` is the low-level form the others (and the attribution engine's specialised hooks) use;
``replaced_forward`` swaps a module's ``forward`` for the block (the engine's layer staircase).

Activations of families that flatten the MLP's tensors to [batch x seq, n] (e.g. OPT) are shaped
[batch, seq, n] for ``at`` and for ``patch``'s ``fn`` (seq from the model's input; batch = rows / seq,
so a block that runs on a subset of the rows is shaped right too), and shaped back afterwards.
"""
from __future__ import annotations

import functools
import inspect
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

ON = ("input", "output")


# ----------------------------------------------------------------------------- the low-level hook

@contextmanager
def hook(module: nn.Module, fn: Callable, *, on: str = "input", with_kwargs: bool = False) -> Iterator[None]:
    """``fn`` as a forward hook of ``module`` for the block: on="input", ``fn(module, args[, kwargs])``
    before its forward (may return new args); on="output", ``fn(module, args, out)`` after it (may
    return a new output). Removed on exit, also on an exception."""
    if on not in ON:
        raise ValueError(f"on must be one of {', '.join(ON)}, not {on!r}")
    if on == "input":
        handle = module.register_forward_pre_hook(fn, with_kwargs=with_kwargs)
    else:
        handle = module.register_forward_hook(fn, with_kwargs=with_kwargs)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def replaced_forward(module: nn.Module, forward: Callable) -> Iterator[None]:
    """``module.forward`` is ``forward`` for the block (hooks registered on the module still run);
    the module's own forward afterwards, also on an exception."""
    had = "forward" in module.__dict__
    old = module.__dict__.get("forward")
    module.forward = forward
    try:
        yield
    finally:
        if had:
            module.forward = old
        else:
            del module.forward


def hidden(out):
    """The hidden state of a module's output (blocks may return a tuple: hidden first)."""
    return out[0] if isinstance(out, tuple) else out


def like(out, x: torch.Tensor):
    """``x`` in the structure of the output ``out``: (x, *out[1:]) for a tuple, else x."""
    return (x,) + tuple(out[1:]) if isinstance(out, tuple) else x


def bsn(x: torch.Tensor, seq: int | None) -> torch.Tensor:
    """A module's tensor as [batch, seq, n]: families that flatten it to [batch x seq, n] (e.g. OPT)
    viewed back (batch = rows / seq). ``seq`` None: the forward pass did not go through ``h.model``
    (a submodule run on its own), which only a flattened tensor cannot do without."""
    if x.dim() != 2:
        return x
    if seq is None:
        raise ValueError("a flattened [rows, n] activation needs the forward pass of the whole model "
                         "(h.model) to know its sequence length")
    return x.view(x.shape[0] // seq, seq, x.shape[-1])


@contextmanager
def model_input(h) -> Iterator[dict]:
    """Inside: a dict whose "ids" is the input of the latest forward pass of ``h.model`` (input_ids,
    or the first channel of inputs_embeds) and "seq" its length."""
    seen: dict = {}

    def grab(mod, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None and kwargs.get("inputs_embeds") is not None:
            ids = kwargs["inputs_embeds"][..., 0]
        seen["ids"] = ids
        seen["seq"] = ids.shape[1] if ids is not None and ids.dim() >= 2 else None

    with hook(h.model, grab, on="input", with_kwargs=True):
        yield seen


# ----------------------------------------------------------------------------- capture

class _Stop(Exception):
    """Raised by ``capture``'s ``stop_after`` to end a forward pass early (caught by ``capture``)."""


def _modules(points) -> dict[str, tuple[bool, list[nn.Module]]]:
    return {name: (isinstance(m, nn.Module), [m] if isinstance(m, nn.Module) else list(m))
            for name, m in dict(points or {}).items()}


@contextmanager
def capture(h, *, inputs: Mapping[str, nn.Module | Sequence[nn.Module]] | None = None,
            outputs: Mapping[str, nn.Module | Sequence[nn.Module]] | None = None, at=None,
            stop_after: nn.Module | None = None, detach: bool = True) -> Iterator[dict]:
    """Read modules' inputs (their first argument) and outputs (the hidden state) in the forward
    passes run inside the block.

    ``inputs`` / ``outputs``: name -> a module or a list of modules. The yielded dict maps each name
    to the tensor read (a single module) or a list of them (one per module, None where a module did not
    run); a later forward pass overwrites it. ``at``: positions (an int, a list or a tensor) to keep,
    read as [batch, seq, ...][:, at]; None keeps the whole tensor as the module gave it. ``stop_after``:
    the forward pass ends once that module has run (the rest of the model is not computed; code after
    the forward inside the ``with`` block is skipped)."""
    ins, outs = _modules(inputs), _modules(outputs)
    cache: dict = {name: (None if single else [None] * len(ms)) for name, (single, ms) in {**ins, **outs}.items()}

    def put(name, single, i, x, seen):
        if at is not None:
            x = bsn(x, seen.get("seq"))[:, at]
        x = x.detach() if detach else x
        if single:
            cache[name] = x
        else:
            cache[name][i] = x

    with ExitStack() as stack:
        seen = stack.enter_context(model_input(h))
        for name, (single, ms) in ins.items():
            for i, m in enumerate(ms):
                stack.enter_context(hook(m, lambda mod, args, n=name, s=single, i=i: put(n, s, i, args[0], seen)))
        for name, (single, ms) in outs.items():
            for i, m in enumerate(ms):
                stack.enter_context(hook(m, lambda mod, args, out, n=name, s=single, i=i:
                                         put(n, s, i, hidden(out), seen), on="output"))
        if stop_after is not None:
            def stop(mod, args, out):
                raise _Stop
            stack.enter_context(hook(stop_after, stop, on="output"))
        try:
            yield cache
        except _Stop:
            pass


# ----------------------------------------------------------------------------- patch

@contextmanager
def patch(h, module: nn.Module, fn: Callable, *, on: str = "input", with_input: bool = False) -> Iterator[None]:
    """Inside the block, ``module``'s input (on="input": its first argument) or output (on="output":
    its hidden state) x becomes ``fn(x)`` in every forward pass; with ``with_input`` (on="output"),
    ``fn(input, output)``. Tensors reach ``fn`` as [batch, seq, ...] (see the module docstring);
    a flattened input or output is flattened back."""
    if on not in ON:
        raise ValueError(f"on must be one of {', '.join(ON)}, not {on!r}")
    with ExitStack() as stack:
        seen = stack.enter_context(model_input(h))

        def pre(mod, args):
            x = args[0]
            return (fn(bsn(x, seen.get("seq"))).view(x.shape),) + tuple(args[1:])

        def post(mod, args, out):
            y = hidden(out)
            y3 = bsn(y, seen.get("seq"))
            new = fn(bsn(args[0], seen.get("seq")), y3) if with_input else fn(y3)
            return like(out, new.reshape(y.shape) if y.dim() == 2 else new)

        stack.enter_context(hook(module, pre if on == "input" else post, on=on))
        yield


# ----------------------------------------------------------------------------- forward

@functools.lru_cache(maxsize=None)
def _parameters(forward) -> frozenset[str]:
    return frozenset(inspect.signature(forward).parameters)


def takes(model: nn.Module, name: str) -> bool:
    """Whether ``model.forward`` takes the argument ``name`` (read once per forward function)."""
    return name in _parameters(getattr(model.forward, "__func__", model.forward))


def cache_argument(model: nn.Module) -> str:
    """The name under which ``model.forward`` takes a key/value cache: transformers renamed
    ``past_key_values`` to ``cache`` during 5.x."""
    return "cache" if takes(model, "cache") else "past_key_values"


def cache_of(out):
    """The key/value cache a forward pass returned (None where it returned none), under its 5.x name
    ``cache`` or the older ``past_key_values`` (read only where the new name is missing: it warns)."""
    return getattr(out, "cache", None) or getattr(out, "past_key_values", None)


@dataclass
class Output:
    logits: torch.Tensor | None   # as ``logits_at`` asks (None: ``head=False``)
    raw: object                   # the model's own output

    @property
    def cache(self):
        """The key/value cache the forward pass returned, if any."""
        return cache_of(self.raw)


@contextmanager
def _head_on(model: nn.Module, rows: torch.Tensor, cols: torch.Tensor) -> Iterator[dict]:
    """Inside: the output layer sees only the hidden states at (rows, cols) ([1, N, hidden]); the
    dict's "gathered" says whether that happened (a model without output embeddings: full logits)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    state = {"gathered": False}
    if head is None:
        yield state
        return

    def pre(mod, args):
        x = args[0]
        if x.dim() != 3:
            return None
        state["gathered"] = True
        return (x[rows, cols].unsqueeze(0),) + tuple(args[1:])

    with hook(head, pre):
        yield state


def forward(h, ids, *, attention_mask: torch.Tensor | None = None, past=None,
            position_ids: torch.Tensor | None = None, use_cache: bool | None = None, logits_at=None,
            head: bool = True) -> Output:
    """Run ``h.model`` on ``ids`` [B, T] (or a ``Padded`` batch, mask included).

    ``past``: a key/value cache the rows continue (passed under the name the model takes, with
    use_cache); ``position_ids``: passed where the model takes them (ALiBi models derive positions
    from the mask); ``use_cache``: passed when given. ``logits_at``: None, every position's logits
    [B, T, V]; positions (a 1-D tensor or list), those of every row [B, k, V] (the output layer runs
    on them alone where the model takes ``logits_to_keep``); a pair (rows, cols), those cells only
    [N, V] (the output layer runs on them alone). ``head=False``: the decoder without its output
    layer (``base_model``; no logits)."""
    if isinstance(ids, Padded):
        ids, attention_mask = ids.ids, ids.attention_mask if attention_mask is None else attention_mask
    model = h.model if head else getattr(h.model, "base_model", h.model)
    kwargs: dict = {"input_ids": ids}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if position_ids is not None and takes(model, "position_ids"):
        kwargs["position_ids"] = position_ids
    if use_cache is not None:
        kwargs["use_cache"] = use_cache
    if past is not None:
        kwargs[cache_argument(model)] = past
        kwargs["use_cache"] = True
    if not head:
        out = model(**kwargs)
        return Output(None, out)
    if isinstance(logits_at, tuple):
        rows, cols = logits_at
        with _head_on(model, rows, cols) as got:
            out = model(**kwargs)
        logits = out.logits[0] if got["gathered"] else out.logits[rows, cols]
        return Output(logits, out)
    if logits_at is not None:
        pos = torch.as_tensor(logits_at, device=ids.device)
        if takes(model, "logits_to_keep"):
            out = model(**kwargs, logits_to_keep=pos)
            return Output(out.logits, out)
        out = model(**kwargs)
        return Output(out.logits[:, pos, :], out)
    out = model(**kwargs)
    return Output(out.logits, out)


# ----------------------------------------------------------------------------- pad

@dataclass
class Padded:
    ids: torch.Tensor              # [B, T] long, right-padded with ``pad_id``
    attention_mask: torch.Tensor   # [B, T] long: 1 on each row's own tokens
    lengths: list[int]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.ids.shape)


def pad_id(h) -> int:
    """The id right padding writes: the tokenizer's pad token, else the model config's, else 0. Behind
    an attention mask it changes no number at the rows' own positions (tests/unit/models/test_hooks.py);
    the config's pad id keeps RoBERTa-style position ids (counted from non-pad tokens) in range."""
    for v in (getattr(h.tokenizer, "pad_token_id", None), getattr(getattr(h.model, "config", None), "pad_token_id", None)):
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return 0


def pad(h, rows: Sequence[Sequence[int] | torch.Tensor], *, device=None, value: int | None = None) -> Padded:
    """Right-pad token id lists (or 1-D tensors) to one [B, T] batch on ``device`` (default the
    model's), with ``pad_id(h)`` (or ``value``) and the attention mask."""
    lengths = [len(r) for r in rows]
    T = max(lengths)
    fill = pad_id(h) if value is None else value
    ids = torch.full((len(rows), T), fill, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :lengths[i]] = r.detach().cpu() if isinstance(r, torch.Tensor) else torch.tensor(list(r), dtype=torch.long)
        mask[i, :lengths[i]] = 1
    dev = h.device if device is None else device
    return Padded(ids.to(dev), mask.to(dev), lengths)
