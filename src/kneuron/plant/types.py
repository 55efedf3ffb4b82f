"""What planting takes and gives: the specs, the controls, and the per-fact, per-prompt and collateral reports."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from kneuron.errors import KneuronError
from kneuron.models.load import ModelHandle
from kneuron.neurons import Neuron

KINDS = ("single", "pair", "shared")


class PlantError(KneuronError, ValueError):
    """The model or a spec cannot be planted; the message says why."""


@dataclass(frozen=True)
class PlantSpec:
    prompt: str                              # causal: text before the answer; masked: with [Y]
    new_object: str                          # one token, e.g. " Rome"
    kind: str = "single"                     # "single" | "pair" (two neurons) | "shared" (one neuron, several prompts)
    extra_prompts: tuple[str, ...] = ()      # shared: the same fact's other prompts (e.g. another language)
    paraphrases: tuple[str, ...] = ()        # reported only: the fact under templates that are not keyed


@dataclass(frozen=True)
class Control:
    prompt: str
    answer: str                              # gold answer (may be several tokens)
    group: str = ""                          # e.g. "same-subject": summarised separately


@dataclass
class PromptCheck:
    prompt: str
    p_before: float                          # p(new object) on the original model
    p_after: float
    top1_after: str                          # the planted model's top token at the answer position
    is_top1: bool                            # new object is the planted model's top-1


@dataclass
class PlantedFact:
    spec: PlantSpec
    neurons: list[Neuron]
    prompts: list[PromptCheck]               # the keyed prompts: prompt, then extra_prompts
    paraphrases: list[PromptCheck]
    value_steps: list[int]                   # Adam steps per neuron
    p_alone: list[float] | None = None       # pair: p(new) with only neuron i (the other suppressed)
    top1_alone: list[bool] | None = None
    p_both_suppressed: float | None = None
    top1_both_suppressed: bool | None = None

    @property
    def p_before(self) -> float:
        return self.prompts[0].p_before

    @property
    def p_after(self) -> float:
        return self.prompts[0].p_after

    @property
    def top1(self) -> bool:
        return all(c.is_top1 for c in self.prompts)


@dataclass
class ControlRow:
    prompt: str
    answer: str
    group: str
    top1_before: str
    top1_after: str
    logp_before: float
    logp_after: float
    max_activation: float                    # largest planted activation at any position / own activation


@dataclass
class Collateral:
    n_prompts: int
    top1_changed: float                      # share of control prompts whose top-1 token changed
    mean_abs_dlogp: float                    # mean |log p(gold) after - before|
    max_abs_dlogp: float
    max_activation: float                    # largest planted activation on a control / own activation
    changed: list[str]                       # prompts whose top-1 changed
    by_group: dict[str, dict] = field(default_factory=dict)


@dataclass
class Planted:
    handle: ModelHandle
    layer: int
    n_old: int
    facts: list[PlantedFact]
    collateral: Collateral
    controls: list[ControlRow]
    key_fit: list[dict]                      # per neuron: margins of the key on its training data

    @property
    def neurons(self) -> list[Neuron]:
        return [n for f in self.facts for n in f.neurons]

    def to_json(self) -> dict:
        facts = [{**asdict(f), "p_before": f.p_before, "p_after": f.p_after, "top1": f.top1} for f in self.facts]
        return {"model": self.handle.name, "layer": self.layer, "n_old": self.n_old,
                "n_neurons": self.handle.n_neurons, "facts": facts, "collateral": asdict(self.collateral),
                "key_fit": self.key_fit}
