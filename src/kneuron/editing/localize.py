"""Which neurons an edit writes to: a fact's knowledge neurons, and the neurons a relation's facts share.

``fact_neurons`` is kneuron's usual localisation (the same as a ``locate`` run): every usable prompt of
the fact is attributed (``attribute_many``), each prompt's neurons are those above tau x its best score
(``select``, tau per language), and the fact keeps the neurons found in more than ``p`` of its prompts
(``refine``). ``common_neurons`` and ``relation_neurons`` count neurons over a relation's facts (Dai et
al.'s intra-relation filter and relation erasure). ``edit_neurons`` is what every KN method (kn, kn-eai,
kn-erase, likn, kn-opt) writes: the given or localised neurons minus the relation's common ones.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from kneuron.attribution import Execution, attribute_many
from kneuron.facts.schema import Fact
from kneuron.facts.templates import Query, QueryError, queries_for
from kneuron.models.load import ModelHandle
from kneuron.neurons import REFINE_P, Neuron, NeuronSet, refine, select, tau_for

from .base import EditError

# Defaults for one edit: IG with 5 midpoint steps. The cost of a localisation is steps x prompts x answer
# tokens; on smollm2-135m (CPU, one thread, a 5-prompt fact with a one-token object) 20 left steps -- a
# ``locate`` run's default -- take ~18 s, 5 midpoint steps ~7 s, and keep 70-96 % of the 20-step neurons
# (Jaccard 0.61-0.92 over 5 facts, EN and ZH); 5 *left* steps (alpha = 0 included) keep fewer (0.59-0.90).
# ``steps=20, rule="left"`` gives exactly a locate run's neurons.
METHOD, STEPS, RULE = "ig", 5, "midpoint"
LOCALIZE_OPTIONS = ("method", "steps", "threshold", "top_k", "p", "objective", "rule", "max_prompts", "execution")


def fact_queries(handle: ModelHandle, fact: Fact) -> list[Query]:
    """The fact's prompts a ``handle.kind`` model can use; EditError (one line) when there are none."""
    try:
        qs = queries_for(fact, handle.kind, skip_invalid=True)
    except QueryError as e:
        raise EditError(f"{fact.where('templates')}{e}") from None
    if not qs:
        raise EditError(f"{fact.where('templates')}no template usable by a {handle.kind} model")
    return qs


def fact_neuron_set(handle: ModelHandle, fact: Fact, *, method=METHOD, steps: int = STEPS,
                    threshold: float | None = None, top_k: int | None = None, p: float = REFINE_P,
                    objective: str = "prob", rule: str = RULE, max_prompts: int | None = None,
                    execution: Execution | None = None) -> NeuronSet:
    """``fact_neurons`` with the refined scores (a NeuronSet, highest score first)."""
    qs = fact_queries(handle, fact)[:max_prompts]
    try:
        found = attribute_many(handle, [(q.prompt, q.target) for q in qs], method=method, steps=steps,
                               objective=objective, rule=rule, execution=execution or Execution())
    except QueryError as e:
        raise EditError(f"{fact.where('object')}{e}") from None
    tau = tau_for(fact.lang, threshold)
    return refine([select(a.scores, tau, top_k) for a in found], p)


def fact_neurons(handle: ModelHandle, fact: Fact, *, method=METHOD, steps: int = STEPS,
                 threshold: float | None = None, top_k: int | None = None, p: float = REFINE_P,
                 objective: str = "prob", rule: str = RULE, max_prompts: int | None = None,
                 execution: Execution | None = None) -> list[Neuron]:
    """The fact's knowledge neurons (layer, index), highest refined score first, as a ``locate`` run with
    the same settings finds them: each of its usable prompts (the first ``max_prompts``; None: all)
    attributed by ``method`` ("ig", "amig" or a method object) with ``steps`` steps, neurons above
    ``threshold`` (None: the language's tau) x the prompt's best score (at most ``top_k`` per prompt),
    kept when found in more than ``p`` of the prompts. EditError (one line) for a fact with no usable
    prompt or an object the tokenizer cannot encode."""
    return fact_neuron_set(handle, fact, method=method, steps=steps, threshold=threshold, top_k=top_k, p=p,
                           objective=objective, rule=rule, max_prompts=max_prompts, execution=execution).neurons


def _counts(neuron_sets: Iterable[Iterable[Neuron]]) -> tuple[Counter, int]:
    count: Counter = Counter()
    n = 0
    for ns in neuron_sets:
        count.update({(int(l), int(i)) for l, i in ns})       # a fact counts each neuron once
        n += 1
    return count, n


def common_neurons(neuron_sets: Iterable[Iterable[Neuron]], share: float = 0.1) -> set[Neuron]:
    """Neurons found for more than ``share`` of the facts (one neuron set per fact of a relation): Dai et
    al. drop these from a fact's neurons before editing it (count > 0.1 x number of facts)."""
    count, n = _counts(neuron_sets)
    return {nrn for nrn, c in count.items() if c > share * n}


def relation_neurons(neuron_sets: Iterable[Iterable[Neuron]], k: int = 20) -> list[Neuron]:
    """The ``k`` neurons found for the most facts of a relation, most frequent first (ties: lowest
    (layer, index) first): Dai et al.'s relation erasure zeroes these."""
    count, _ = _counts(neuron_sets)
    return sorted(count, key=lambda nrn: (-count[nrn], nrn))[:k]


def check_options(options: dict, method: str) -> None:
    """EditError (one line) for an option that is neither the method's own nor a localisation option."""
    unknown = sorted(set(options) - set(LOCALIZE_OPTIONS))
    if unknown:
        raise EditError(f"{method}: unknown option(s) {', '.join(unknown)} (expected neurons, common, "
                        f"or localisation options {', '.join(LOCALIZE_OPTIONS)})")


def check_range(handle: ModelHandle, neurons: list[Neuron], what: str) -> None:
    for layer, idx in neurons:
        if not (0 <= layer < handle.n_layers and 0 <= idx < handle.n_neurons):
            raise EditError(f"{what}: neuron ({layer}, {idx}) is outside {handle.name} "
                            f"({handle.n_layers} layers x {handle.n_neurons} neurons)")


def edit_neurons(handle: ModelHandle, fact: Fact, neurons, common, localize: dict,
                 method: str) -> tuple[list[Neuron], dict]:
    """The neurons a KN method writes for ``fact`` -- ``neurons`` if given, else ``fact_neurons(**localize)``;
    duplicates dropped, minus ``common`` -- and the info recording them (with a ``note`` when none is left:
    the edit then changes nothing)."""
    check_options(localize, method)
    localized = neurons is None
    found = fact_neurons(handle, fact, **localize) if localized else neurons
    found = list(dict.fromkeys((int(l), int(i)) for l, i in found))
    check_range(handle, found, f"{fact.where()}{method}")
    drop = {(int(l), int(i)) for l, i in common or ()}
    used = [n for n in found if n not in drop]
    info = {"neurons": used, "filtered": [n for n in found if n in drop], "localized": localized,
            "common_filter": common is not None}
    if localized:
        info["localize"] = {k: v for k, v in localize.items() if k != "execution"}
    if not used:
        info["note"] = "no neurons to edit: the edit changes nothing"
    return used, info
