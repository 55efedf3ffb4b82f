"""A fact's knowledge neurons: selecting them from attribution scores, refining them across prompts,
and ``localize`` -- fact -> queries -> attribution -> select -> refine, with a ``LocateConfig`` -- the
one definition that ``locate`` runs and the KN edit methods share.

    localize(handle, fact, LocateConfig(method="amig", steps=20)) -> NeuronSet
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from kneuron.attribution import Execution, attribute_many, check_settings, make_method
from kneuron.attribution.methods import IG
from kneuron.errors import ConfigError
from kneuron.facts.templates import QueryError

if TYPE_CHECKING:
    from kneuron.facts.schema import Fact
    from kneuron.models.load import ModelHandle

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


@dataclass(frozen=True)
class LocateConfig:
    """What a localisation computes: the attribution method with its options, the integration, the
    selection of neurons. A run records it in run.json (``method`` by name, ``method_options`` one name
    per knob, as the method's ``params()``); a resumed run must have the same. How it runs is
    ``Execution``.

    ``method``: a method object (``IG()``, ``AMIG(paths=..., prefactor=..., normalize=...)``) or a
    name ("ig", "amig") with ``method_options``; either way it is kept as the name and its options."""
    method: str | IG = "ig"
    steps: int | str = 20                # or "auto" (``attribute``'s steps="auto")
    threshold: float | None = None       # None: tau per language (en 0.3, zh 0.2, else 0.3)
    top_k: int | None = None
    refine_p: float = REFINE_P
    objective: str = "prob"
    rule: str = "left"
    method_options: dict = field(default_factory=dict)

    def __post_init__(self):
        m = make_method(self.method, **dict(self.method_options))
        object.__setattr__(self, "method", m.name)
        object.__setattr__(self, "method_options", m.params())
        self.validate()

    @property
    def method_object(self) -> IG:
        """The attribution method, with its options."""
        return make_method(self.method, **self.method_options)

    def validate(self) -> None:
        """Raise ConfigError (one line) on a bad setting, before any work is done or written."""
        check_settings(self.method_object, self.steps, self.objective, self.rule)
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 0 <= self.refine_p < 1:
            raise ConfigError(f"refine-p must be in [0, 1), got {self.refine_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top-k must be >= 1, got {self.top_k}")


def neurons_of(attributions: list, lang: str, cfg: LocateConfig) -> NeuronSet:
    """A fact's neurons from its prompts' attributions (one ``Attribution`` per prompt): on each prompt
    those above tau (``cfg.threshold``, else the language's) x its best score, at most ``cfg.top_k``
    (``select``), then refined over the prompts with ``cfg.refine_p`` (``refine``)."""
    tau = tau_for(lang, cfg.threshold)
    return refine([select(a.scores, tau, cfg.top_k) for a in attributions], cfg.refine_p)


def localize(handle: "ModelHandle", fact: "Fact", cfg: LocateConfig | None = None, *,
             execution: Execution | None = None, max_prompts: int | None = None,
             skip_invalid: bool = True, attributions: list | None = None) -> NeuronSet:
    """The fact's knowledge neurons, highest refined score first, exactly as a ``locate`` run with the
    same ``cfg`` finds them: each of its queries (``fact.queries``; the first ``max_prompts``, None: all;
    ``skip_invalid``: templates a causal model cannot use are dropped) attributed with
    ``cfg.method_object`` (``attribute_many``), then ``neurons_of``. QueryError (one line naming the
    fact's file, line and field) for a fact with no usable template or an object the tokenizer cannot
    encode. ``attributions``: a list the queries' ``Attribution``s are appended to, in query order (for a
    caller that also shows them, so they are not computed twice)."""
    cfg = cfg if cfg is not None else LocateConfig()
    qs = fact.queries(handle.kind, skip_invalid=skip_invalid)[:max_prompts]
    try:
        found = attribute_many(handle, [(q.prompt, q.target) for q in qs], method=cfg.method_object,
                               steps=cfg.steps, objective=cfg.objective, rule=cfg.rule,
                               execution=execution if execution is not None else Execution())
    except QueryError as e:
        raise QueryError(f"{fact.where('object')}{e}") from None
    if attributions is not None:
        attributions.extend(found)
    return neurons_of(found, fact.lang, cfg)
