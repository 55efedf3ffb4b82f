"""How attributions are computed, never what: batch sizes, caches, sharing, precision, progress."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from kneuron.attribution.budget import parse_size
from kneuron.errors import ConfigError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Execution:
    """Execution settings of ``attribute``, ``attribute_many`` and ``locate``. None of them changes
    the scores beyond float rounding, except ``precision`` (bf16 / fp16 autocast: slightly different
    numbers, so a run records it and refuses to resume in another precision); the rest is not part
    of a run's provenance.

    batch_size: rows per batch (None: sized from the model, the device and the prompt; out of
        memory halves it).
    prompts_per_batch: ``locate``: prompts (of one or several facts) attributed together, their rows
        sharing batches (for GPUs: keeps small models busy).
    share: ``attribute_many``: let the rows of several prompts share a batch, where the model allows it.
    prefix_cache: causal models: run each row as one token against the prompt's key/value cache.
    replay: rows patching layer l take the clean outputs of the blocks below l instead of computing them.
    precision: "fp32" (as loaded), or "bf16" / "fp16" autocast (GPU speed).
    max_memory: the memory budget of the batches, in bytes or as a size ("512MB", "4GB", "4GiB"; kept
        as bytes): rows per batch are planned to fit it (``budget.plan``; a ConfigError if one row does
        not). None: half of the memory available on a CPU, 80 % of the free memory on a GPU.
    progress: called with the number of rows done after each batch (not compared, not pickled to workers).
    """
    batch_size: int | None = None
    prompts_per_batch: int = 1
    share: bool = True
    prefix_cache: bool = True
    replay: bool = True
    precision: str = "fp32"
    max_memory: int | str | None = None
    progress: Callable[[int], None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ConfigError(f"batch-size must be an integer >= 1, got {self.batch_size!r}")
        if not isinstance(self.prompts_per_batch, int) or self.prompts_per_batch < 1:
            raise ConfigError(f"prompts-per-batch must be an integer >= 1, got {self.prompts_per_batch!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.max_memory is not None:
            object.__setattr__(self, "max_memory", parse_size(self.max_memory))

    def autocast(self, device: torch.device):
        """The model's matrix products in ``precision`` (fp32: as loaded; bf16/fp16: autocast, with
        softmax and the gradient sums kept in fp32 and fp64)."""
        if PRECISIONS[self.precision] is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=PRECISIONS[self.precision])

    def __getstate__(self):                       # a progress callback stays in its process
        state = dict(self.__dict__)
        state["progress"] = None
        return state

    def __setstate__(self, state):
        for k, v in state.items():
            object.__setattr__(self, k, v)
