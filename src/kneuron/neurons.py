"""A fact's knowledge neurons: selecting them from attribution scores, combining them across prompts,
and ``localize`` -- fact -> queries -> attribution -> select -> refine (or CAS), with a ``LocateConfig``
-- the one definition that ``locate`` runs and the KN edit methods share.

    localize(handle, fact, LocateConfig(method="amig", steps=20)) -> NeuronSet
    localize(handle, fact, LocateConfig(select="cas", cas_beta1=1.0, cas_beta2=1.0)) -> NeuronSet

Two ways to combine a fact's queries (``LocateConfig.select``):
  "refine" (default; Dai et al.): threshold each query on its own (``select``: score > tau x the query's
      best), keep the neurons found in more than ``refine_p`` of the queries (``refine``).
  "cas" (Consistency-Aware Score, after Chen et al., ICLR 2025, "Knowledge Localization: Mission Not
      Accomplished? Enter Query Localization!"): per neuron, over the fact's queries q = 1..k,
          CAS = beta1 * mean_q A_q - beta2 * std_q A_q      (population std; one query: beta1 * A)
      on the raw attribution scores A_q, then the same relative threshold (CAS > tau x the best CAS) and
      ``top_k``. A neuron strong on average but unstable across the queries ranks below a steady one.
      The paper's exact equation (and its beta values) could not be read here: this form -- mean minus
      a multiple of the spread, beta1 = beta2 = 1 by default -- is this module's own reading of it.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
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
SELECTS = ("refine", "cas")  # how a fact's queries are combined (LocateConfig.select)
CAS_KEYS = ("select", "cas_beta1", "cas_beta2")   # recorded only when select is not "refine"


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


def cas_scores(scores: list[torch.Tensor], beta1: float = 1.0, beta2: float = 1.0) -> torch.Tensor:
    """The Consistency-Aware Score of every neuron from its queries' attribution scores (each [L, N]):
    beta1 x the mean over the queries minus beta2 x their population standard deviation."""
    if not scores:
        raise ConfigError("CAS needs the attribution scores of at least one query")
    a = torch.stack([s.double() for s in scores])
    return beta1 * a.mean(0) - beta2 * a.std(0, correction=0)


def cas(scores: list[torch.Tensor], tau: float, top_k: int | None = None, beta1: float = 1.0,
        beta2: float = 1.0) -> NeuronSet:
    """A fact's neurons by CAS (``cas_scores``): those above tau x the best CAS, at most ``top_k``,
    highest first (``select`` on the CAS table)."""
    return select(cas_scores(scores, beta1, beta2), tau, top_k)


@dataclass(frozen=True)
class LocateConfig:
    """What a localisation computes: the attribution method with its options, the integration, the
    selection of neurons. A run records it in run.json (``method`` by name, ``method_options`` one name
    per knob, as the method's ``params()``); a resumed run must have the same. How it runs is
    ``Execution``. ``select``: how the queries are combined, "refine" (Dai's, the default) or "cas"
    (``cas``, with ``cas_beta1`` / ``cas_beta2``); ``record()`` leaves the three out for "refine", so a
    default config is recorded exactly as before they existed.

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
    select: str = "refine"
    cas_beta1: float = 1.0
    cas_beta2: float = 1.0

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
        if self.select not in SELECTS:
            raise ConfigError(f"select must be one of {', '.join(SELECTS)}, got {self.select!r}")
        if not self.cas_beta1 > 0:
            raise ConfigError(f"cas-beta1 must be > 0, got {self.cas_beta1}")
        if not self.cas_beta2 >= 0:
            raise ConfigError(f"cas-beta2 must be >= 0, got {self.cas_beta2}")

    def record(self) -> dict:
        """The config as run.json and an edit's info record it: every field, but ``select`` and the CAS
        betas only when ``select`` is not "refine" (a default config reads as it did before CAS)."""
        d = asdict(self)
        return {k: v for k, v in d.items() if k not in CAS_KEYS} if self.select == "refine" else d


def query_sets(attributions: list, lang: str, cfg: LocateConfig) -> list[NeuronSet]:
    """Each prompt's own neurons (one ``Attribution`` per prompt): those above tau (``cfg.threshold``,
    else the language's) x its best score, at most ``cfg.top_k`` (``select``)."""
    tau = tau_for(lang, cfg.threshold)
    return [select(a.scores, tau, cfg.top_k) for a in attributions]


def neurons_of(attributions: list, lang: str, cfg: LocateConfig) -> NeuronSet:
    """A fact's neurons from its prompts' attributions (one ``Attribution`` per prompt). "refine": each
    prompt's own neurons (``query_sets``) refined over the prompts with ``cfg.refine_p`` (``refine``);
    "cas": the neurons above tau x the best Consistency-Aware Score over the prompts (``cas``)."""
    if cfg.select == "cas":
        return cas([a.scores for a in attributions], tau_for(lang, cfg.threshold), cfg.top_k, cfg.cas_beta1,
                   cfg.cas_beta2)
    return refine(query_sets(attributions, lang, cfg), cfg.refine_p)


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
