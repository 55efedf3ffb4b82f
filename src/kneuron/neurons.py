"""Selecting knowledge neurons from attribution scores, and refining them across prompts."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import torch

from kneuron.errors import ConfigError

Neuron = tuple[int, int]              # (layer, index): unit index of the input of layer's MLP output projection

# tau per language: neurons scoring above tau x (the query's max score) are knowledge neurons.
# The paper's values (en 0.3, zh 0.2); other languages default to DEFAULT_TAU.
TAU = {"en": 0.3, "zh": 0.2}
DEFAULT_TAU = 0.3
REFINE_P = 0.3          # keep neurons found in more than this share of a fact's prompts


def tau_for(lang: str, threshold: float | None = None) -> float:
    return threshold if threshold is not None else TAU.get(lang, DEFAULT_TAU)


@dataclass
class NeuronSet:
    neurons: list[tuple[int, int]]       # (layer, index), highest score first
    scores: list[float]

    def __len__(self) -> int:
        return len(self.neurons)

    def layers(self) -> Counter:
        return Counter(l for l, _ in self.neurons)


def select(scores: torch.Tensor, tau: float, top_k: int | None = None) -> NeuronSet:
    """Neurons with score > tau x max(scores) over all layers and neurons, sorted by score.
    A query whose best score is not positive has no knowledge neurons."""
    if not 0 <= tau <= 1:
        raise ConfigError(f"threshold must be in [0, 1], got {tau}")
    top = float(scores.max())
    if top <= 0:
        return NeuronSet([], [])
    flat = scores.flatten()
    idx = (flat > tau * top).nonzero().squeeze(1)
    order = torch.argsort(flat[idx], descending=True, stable=True)
    idx = idx[order][:top_k] if top_k else idx[order]
    n = scores.shape[1]
    return NeuronSet([(int(i) // n, int(i) % n) for i in idx], [float(flat[i]) for i in idx])


def refine(sets: list[NeuronSet], p: float = REFINE_P) -> NeuronSet:
    """Dai et al.'s refinement: keep neurons found in more than ``p`` of the prompts' sets;
    score = mean over the prompts that found it. One prompt: the set itself."""
    if len(sets) == 1:
        return sets[0]
    count: Counter = Counter()
    total: dict = defaultdict(float)
    for s in sets:
        for nrn, sc in zip(s.neurons, s.scores):
            count[nrn] += 1
            total[nrn] += sc
    kept = [n for n in count if count[n] > p * len(sets)]
    kept.sort(key=lambda n: (-total[n] / count[n], n))
    return NeuronSet(kept, [total[n] / count[n] for n in kept])
