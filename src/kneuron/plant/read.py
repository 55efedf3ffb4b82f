"""Reading the model for planting: MLP inputs at every position, and (prompt, answer) log-probs and top-1s.

Batches are right-padded with an attention mask (``models.hooks.pad``); the MLP-input read stops the
forward pass at the layer (``capture(stop_after=...)``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import torch

from kneuron.intervene import answer_positions
from kneuron.models import hooks
from kneuron.models.load import ModelHandle
from kneuron.models.targets import Encoded, encode
from kneuron.plant.surgery import layout_for
from kneuron.plant.types import PlantError


def token_ids(handle: ModelHandle, prompt: str) -> list[int]:
    tok = handle.tokenizer
    if handle.kind == "masked":
        return tok(prompt.replace("[Y]", tok.mask_token))["input_ids"]
    return tok(prompt.rstrip())["input_ids"]


def mlp_inputs(handle: ModelHandle, layer: int, ids: list[list[int]], batch: int = 32) -> list[torch.Tensor]:
    """Per prompt [T, hidden]: the input of the layer's MLP (its first input projection) at every
    position. Right-padded batches with an attention mask; the forward stops at that projection."""
    proj = handle.layers[layer].get_submodule(layout_for(handle).inputs[0])
    out: list[torch.Tensor] = []
    for s in range(0, len(ids), batch):
        chunk = ids[s:s + batch]
        padded = hooks.pad(handle, chunk)
        T = padded.shape[1]
        with torch.no_grad(), hooks.capture(handle, inputs={"x": proj}, stop_after=proj) as got:
            hooks.forward(handle, padded)
        xs = got["x"].reshape(len(chunk), T, -1).double().cpu()
        out += [xs[j, :len(i)] for j, i in enumerate(chunk)]
    return out


@dataclass
class Read:
    logp: float                   # log p(answer), all its tokens (teacher forcing)
    top1: int                     # top token id at the first answer position
    acts: torch.Tensor | None     # [n_new] max |activation| of the planted neurons over positions


def read_many(handle: ModelHandle, items: Sequence[tuple[str, str]], watch: tuple[int, int] | None = None,
              batch: int = 16) -> list[Read]:
    """Right-padded batched forwards: each (prompt, answer)'s gold log-prob and top-1, and with
    ``watch=(layer, n_old)`` the planted neurons' largest |activation| over the prompt's positions.
    A single item runs alone with its answer positions declared, so interventions apply to it."""
    encs = [encode(handle.tokenizer, handle.kind, p, a) for p, a in items]
    out: list[Read] = []
    for s in range(0, len(encs), batch):
        chunk = encs[s:s + batch]
        padded = hooks.pad(handle, [e.input_ids for e in chunk])
        T = padded.shape[1]
        points = {"a": handle.sites[watch[0]]} if watch is not None else {}
        with torch.no_grad(), hooks.capture(handle, inputs=points) as got, \
                (answer_positions(chunk[0].positions) if len(chunk) == 1 else contextlib.nullcontext()):
            logits = hooks.forward(handle, padded).logits
        if watch is not None:
            got["a"] = got["a"][..., watch[1]:].abs().reshape(len(chunk), T, -1)
        for j, e in enumerate(chunk):
            lp = torch.log_softmax(logits[j, e.positions].double(), -1)
            logp = float(lp[torch.arange(len(e.target_ids)), torch.tensor(e.target_ids)].sum())
            acts = got["a"][j, :len(e.input_ids)].amax(0).double().cpu() if watch else None
            out.append(Read(logp, int(lp[0].argmax()), acts))
    return out


def read_one(handle: ModelHandle, prompt: str, answer: str) -> Read:
    return read_many(handle, [(prompt, answer)])[0]


def one_token(handle: ModelHandle, prompt: str, obj: str) -> Encoded:
    enc = encode(handle.tokenizer, handle.kind, prompt, obj)
    if len(enc.target_ids) != 1:
        raise PlantError(f"new object {obj!r} is {len(enc.target_ids)} tokens for this tokenizer; "
                         f"planting needs a one-token object")
    return enc
