"""Attribution methods. Each one is a small frozen value that carries its own options; it only says
where its paths start (baselines) and what multiplies the integrated gradient (``multiplier``); the
engine does the rest and knows nothing of the method.

``params()`` is the method's options under the one name each has everywhere (the dataclass field,
the run's ``method_options`` in run.json, the command line's ``--<name>``)."""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from kneuron.attribution.local import LOCAL, Direct
from kneuron.attribution.mask import LearnedMask
from kneuron.attribution.passes import clean_pass
from kneuron.errors import ConfigError
from kneuron.models.load import ModelHandle

PATHS = ("mean", "per-word")
PREFACTORS = ("activation", "difference")


@dataclass(frozen=True)
class IG:
    """Dai et al. (2022): baseline 0, score = activation x mean gradient along the path."""
    name = "ig"

    def baselines(self, handle: ModelHandle, ids: torch.Tensor, positions: list[int],
                  n_prompt: int, acts: torch.Tensor) -> torch.Tensor:
        """-> [K, P, L, N] path starts for each answer token (P paths)."""
        return torch.zeros_like(acts).unsqueeze(1)

    def multiplier(self, acts: torch.Tensor, baselines: torch.Tensor) -> torch.Tensor:
        """What multiplies each path's integrated gradient: [K, P, L, N]."""
        return acts.unsqueeze(1) - baselines          # = activation, since the baseline is 0

    def proper(self) -> bool:
        """Whether the multiplier is (activation - baseline), so that completeness holds."""
        return True

    def params(self) -> dict:
        """The options, as recorded (run.json ``method_options``): one name per knob."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class AMIG(IG):
    """Chen et al. (AAAI 2024), Module 1: baselines = the prompt with each token in turn replaced
    by the mask token (masked LM) or EOS (causal LM).

    paths: "mean" — one path from the mean baseline (the released code);
           "per-word" — one path per replaced token, attributions summed (the paper's Eqs. 3-5).
    prefactor: "activation" — the paper's Eq. 4; "difference" — proper IG (activation - baseline).
    normalize: divide each layer's scores by their sum (a literal reading of Eq. 5; off by default).
    """
    paths: str = "mean"
    prefactor: str = "activation"
    normalize: bool = False
    name = "amig"

    def __post_init__(self):
        if self.paths not in PATHS:
            raise ConfigError(f"amig paths must be one of {', '.join(PATHS)}, not {self.paths!r}")
        if self.prefactor not in PREFACTORS:
            raise ConfigError(f"amig prefactor must be one of {', '.join(PREFACTORS)}, not {self.prefactor!r}")
        if not isinstance(self.normalize, bool):
            raise ConfigError(f"amig normalize must be true or false, not {self.normalize!r}")

    def baselines(self, handle, ids, positions, n_prompt, acts):
        tok = handle.tokenizer
        fill = tok.mask_token_id if handle.kind == "masked" else tok.eos_token_id
        if fill is None:
            raise ConfigError(f"{handle.name}: the tokenizer has no {'mask' if handle.kind == 'masked' else 'EOS'} "
                              "token, which AMIG's baselines need")
        special = set(tok.all_special_ids)
        # causal: the prompt's tokens (not the gold answer prefix); masked: every token but the
        # special ones ([CLS], [SEP], the answer's masks)
        span = n_prompt if handle.kind == "causal" else ids.shape[1]
        replace = [i for i in range(span) if int(ids[0, i]) not in special]
        if not replace:
            return torch.zeros_like(acts).unsqueeze(1)
        batch = ids.repeat(len(replace), 1)
        batch[torch.arange(len(replace)), torch.tensor(replace)] = fill
        b = clean_pass(handle, batch, positions).acts          # [m, K, L, N]
        b = b.transpose(0, 1)                                   # [K, m, L, N]
        return b.mean(dim=1, keepdim=True) if self.paths == "mean" else b

    def multiplier(self, acts, baselines):
        if self.prefactor == "activation":
            return acts.unsqueeze(1).expand_as(baselines)
        return acts.unsqueeze(1) - baselines

    def proper(self):
        return self.prefactor == "difference"


METHODS: dict[str, type[IG]] = {"ig": IG, "amig": AMIG}      # the path methods (runs, the CLI's --method)
# the baselines beside them (``local``, ``mask``): the same ``attribute``, no path
BASELINES: dict[str, type[Direct]] = {**LOCAL, LearnedMask.name: LearnedMask}


def make_method(method: str | IG | Direct = "ig", **options) -> IG | Direct:
    """A method object: ``method`` itself, or the method named ``method`` (METHODS: "ig", "amig";
    BASELINES: "activation", "gradient", "actgrad", "random", "mask") with ``options`` (as ``params()``
    names them, e.g. the ones a run recorded)."""
    if isinstance(method, (IG, Direct)):
        if options:
            raise ConfigError(f"options ({', '.join(options)}) go into the method object itself, "
                              f"e.g. AMIG(paths='per-word')")
        return method
    every = {**METHODS, **BASELINES}
    if method not in every:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(every)}")
    cls = every[method]
    known = {f.name for f in fields(cls)}
    unknown = [k for k in options if k not in known]
    if unknown:
        takes = f"takes {', '.join(sorted(known))}" if known else "takes no options"
        raise ConfigError(f"{method} {takes} ({', '.join(unknown)} given)")
    return cls(**options)
