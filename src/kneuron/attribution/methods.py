"""Attribution methods. Each one only says where its paths start (baselines) and what multiplies
the integrated gradient (prefactor); the engine does the rest and knows nothing of the method."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kneuron.models.load import ModelHandle
from kneuron.attribution.engine import clean_pass


@dataclass
class IG:
    """Dai et al. (2022): baseline 0, score = activation x mean gradient along the path."""
    name = "ig"

    def baselines(self, handle: ModelHandle, ids: torch.Tensor, positions: list[int],
                  n_prompt: int, acts: torch.Tensor) -> torch.Tensor:
        """-> [K, P, L, N] path starts for each answer token (P paths)."""
        return torch.zeros_like(acts).unsqueeze(1)

    def prefactor(self, acts: torch.Tensor, baselines: torch.Tensor) -> torch.Tensor:
        return acts.unsqueeze(1) - baselines          # = activation, since the baseline is 0

    def proper(self) -> bool:
        """Whether the prefactor is (activation - baseline), so that completeness holds."""
        return True

    def params(self) -> dict:
        return {}


@dataclass
class AMIG(IG):
    """Chen et al. (AAAI 2024), Module 1: baselines = the prompt with each token in turn replaced
    by the mask token (masked LM) or EOS (causal LM).

    paths: "mean" — one path from the mean baseline (the released code);
           "per-word" — one path per replaced token, attributions summed (the paper's Eqs. 3-5).
    prefactor: "activation" — the paper's Eq. 4; "difference" — proper IG (activation - baseline).
    normalize: divide each layer's scores by their sum (a literal reading of Eq. 5; off by default).
    """
    paths: str = "mean"
    prefactor_kind: str = "activation"
    normalize: bool = False
    name = "amig"

    def __post_init__(self):
        if self.paths not in ("mean", "per-word"):
            raise ValueError(f"amig paths must be 'mean' or 'per-word', not {self.paths!r}")
        if self.prefactor_kind not in ("activation", "difference"):
            raise ValueError(f"amig prefactor must be 'activation' or 'difference', not {self.prefactor_kind!r}")

    def baselines(self, handle, ids, positions, n_prompt, acts):
        tok = handle.tokenizer
        fill = tok.mask_token_id if handle.kind == "masked" else tok.eos_token_id
        if fill is None:
            raise ValueError(f"{handle.name}: the tokenizer has no {'mask' if handle.kind == 'masked' else 'EOS'} "
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

    def prefactor(self, acts, baselines):
        if self.prefactor_kind == "activation":
            return acts.unsqueeze(1).expand_as(baselines)
        return acts.unsqueeze(1) - baselines

    def proper(self):
        return self.prefactor_kind == "difference"

    def params(self):
        return {"paths": self.paths, "prefactor": self.prefactor_kind, "normalize": self.normalize}
