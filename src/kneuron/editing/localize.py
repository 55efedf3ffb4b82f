"""Which neurons an edit writes to: a fact's knowledge neurons, and the neurons a relation's facts share.

``fact_neurons`` is ``neurons.localize`` -- the one localisation, the same as a ``locate`` run's -- with
editing's default configuration (``LOCALIZE``: IG with 5 midpoint steps, cheaper than a run's 20 left
steps; BENCHMARKS.md, "Editing methods"), its errors as EditErrors. ``relation_filter`` is Dai et al.'s
intra-relation filter: the neurons found for more than 10 % of a relation's facts (all of them, or a
bounded draw), which a KN edit leaves out. ``PROMPTS``: which prompts a fact is localised on -- ``"all"``
its usable templates (Dai et al.'s KN bag; for an edited fact the paraphrases its PS is measured on
included), ``"rewrite"`` its first usable one only (for an edited fact, ``Record.edit_fact``'s: the rewrite
prompt), which keeps the paraphrases held out. ``relation_top_neurons`` are the ones relation erasure
zeroes. ``edit_neurons`` is what every KN method (kn, kn-eai, kn-erase, likn, likn-transfer, kn-opt) writes:
the given or localised neurons minus the common ones.
"""
from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterable

from kneuron.errors import ConfigError
from kneuron.facts.schema import Fact
from kneuron.facts.templates import Query, QueryError
from kneuron.models.load import ModelHandle
from kneuron.neurons import LocateConfig, Neuron, localize

from .base import EditError

# One edit's localisation: IG with 5 midpoint steps. ``LocateConfig()`` (20 left steps) gives exactly a
# locate run's neurons.
STEPS, RULE = 5, "midpoint"
LOCALIZE = LocateConfig(steps=STEPS, rule=RULE)
SHARE = 0.1                  # Dai et al.: common = found for more than 10 % of the relation's facts
PROMPTS = ("rewrite", "all")   # the prompts a fact is localised on: its first usable one, or every usable one


def prompt_limit(prompts: str) -> int | None:
    """``max_prompts`` for ``prompts`` (one of PROMPTS: "rewrite" 1, "all" None); ConfigError (one line)
    for another value."""
    if prompts not in PROMPTS:
        raise ConfigError(f"the localisation prompts must be {' or '.join(PROMPTS)}, not {prompts!r}")
    return 1 if prompts == "rewrite" else None


def first_query(handle: ModelHandle, fact: Fact) -> Query:
    """The fact's first prompt a ``handle.kind`` model can use (``Fact.first_query``); EditError (one line)
    when there is none."""
    try:
        return fact.first_query(handle.kind)
    except QueryError as e:
        raise EditError(str(e)) from None


def locate_config(cfg: LocateConfig | dict | None = None, **options) -> LocateConfig:
    """``cfg`` (a LocateConfig, or a dict of its fields over ``LOCALIZE``; None: ``LOCALIZE``) with the
    fields ``options`` over it; ConfigError (one line) for a name it does not have."""
    if isinstance(cfg, dict):
        options = {**cfg, **options}
        cfg = None
    base = LOCALIZE if cfg is None else cfg
    if not isinstance(base, LocateConfig):
        raise ConfigError(f"localize must be a LocateConfig or a dict of its fields, not {type(base).__name__}")
    known = set(asdict(base))
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"localize has no option {', '.join(unknown)} (it has: {', '.join(sorted(known))})")
    return replace(base, **options) if options else base


def fact_neurons(handle: ModelHandle, fact: Fact, cfg: LocateConfig | None = None, *,
                 max_prompts: int | None = None, execution=None) -> list[Neuron]:
    """The fact's knowledge neurons (layer, index), highest refined score first, as a ``locate`` run with
    the same ``cfg`` finds them (``neurons.localize``; default ``LOCALIZE``): its first ``max_prompts``
    usable prompts (None: all) attributed, each prompt's neurons above tau x its best score, kept when
    found in more than ``refine_p`` of the prompts. EditError (one line) for a fact with no usable prompt
    or an object the tokenizer cannot encode."""
    cfg = LOCALIZE if cfg is None else cfg
    first_query(handle, fact)                         # no usable template: EditError, as before any work
    try:
        return localize(handle, fact, cfg, execution=execution, max_prompts=max_prompts).neurons
    except QueryError as e:
        raise EditError(str(e)) from None


def _counts(neuron_sets: Iterable[Iterable[Neuron]]) -> tuple[Counter, int]:
    count: Counter = Counter()
    n = 0
    for ns in neuron_sets:
        count.update({(int(l), int(i)) for l, i in ns})       # a fact counts each neuron once
        n += 1
    return count, n


def common_neurons(neuron_sets: Iterable[Iterable[Neuron]], share: float = SHARE) -> set[Neuron]:
    """Neurons found for more than ``share`` of the facts (one neuron set per fact of a relation): Dai et
    al. drop these from a fact's neurons before editing it (count > 0.1 x number of facts)."""
    count, n = _counts(neuron_sets)
    return {nrn for nrn, c in count.items() if c > share * n}


def relation_top_neurons(neuron_sets: Iterable[Iterable[Neuron]], k: int = 20) -> list[Neuron]:
    """The ``k`` neurons found for the most facts of a relation, most frequent first (ties: lowest
    (layer, index) first): Dai et al.'s relation erasure zeroes these."""
    count, _ = _counts(neuron_sets)
    return sorted(count, key=lambda nrn: (-count[nrn], nrn))[:k]


# ----------------------------------------------------------------------------- the relation filter

def relation_facts(first: list[Fact], pool: Iterable[Fact], n: int | None, seed: int = 0) -> list[Fact]:
    """The facts the filter counts over for ``first``'s relation and language: the facts being edited
    (``first``, in order, each id once), then the relation's other facts in ``pool`` -- sorted by id and
    shuffled with the seed ``f"{seed}:{relation}:common"`` -- until there are ``n`` (None: all of them)."""
    rel, lang = first[0].relation, first[0].lang
    mine, ids = [], set()
    for f in first:
        if f.id not in ids:
            mine.append(f)
            ids.add(f.id)
    more = sorted((f for f in pool if f.relation == rel and f.lang == lang and f.id not in ids), key=lambda f: f.id)
    random.Random(f"{seed}:{rel}:common").shuffle(more)
    return mine + (more if n is None else more[: max(0, n - len(mine))])


def common_share(n_facts: int) -> float:
    """The share above which a neuron is common: 10 %, or more than one fact when there are fewer than 10
    (a neuron of one fact alone is not common)."""
    return max(SHARE, 1 / n_facts)


@dataclass
class RelationFilter:
    """Dai et al.'s filter for one relation and language: the facts counted (the edited ones first), each
    one's neurons and localisation seconds, the share and the common neurons (sorted)."""
    facts: list[Fact]
    sets: list[list[Neuron]]
    seconds: list[float]
    share: float
    common: list[Neuron]


def relation_filter(handle: ModelHandle, fact: Fact | list[Fact], pool: Iterable[Fact], n: int | None = None,
                    seed: int = 0, neurons_of: Callable[[Fact], list[Neuron]] | None = None,
                    prompts: str = "all") -> RelationFilter:
    """The common neurons of ``fact``'s relation (or of a list of facts of one relation and language,
    edited together): ``n`` facts (``relation_facts``; None: every fact of the relation in ``pool``)
    localised by ``neurons_of`` (default ``fact_neurons`` on each fact's ``prompts``: pass an edited fact as
    ``Record.edit_fact`` for "rewrite"), a neuron common when found for more than ``common_share`` of them."""
    first = [fact] if isinstance(fact, Fact) else list(fact)
    facts = relation_facts(first, pool, n, seed)
    limit = prompt_limit(prompts)
    get = neurons_of or (lambda f: fact_neurons(handle, f, max_prompts=limit))
    sets, seconds = [], []
    for f in facts:
        t0 = time.perf_counter()
        sets.append(list(get(f)))
        seconds.append(time.perf_counter() - t0)
    share = common_share(len(sets))
    return RelationFilter(facts, sets, seconds, share, sorted(common_neurons(sets, share=share)))


# ----------------------------------------------------------------------------- what a KN method writes


def edit_neurons(handle: ModelHandle, fact: Fact, neurons, common, method: str, cfg: LocateConfig = LOCALIZE,
                 max_prompts: int | None = None, execution=None) -> tuple[list[Neuron], dict]:
    """The neurons a KN method writes for ``fact`` -- ``neurons`` if given, else ``fact_neurons(cfg)``;
    duplicates dropped, minus ``common`` -- and the info recording them (with a ``note`` when none is left:
    the edit then changes nothing)."""
    localized = neurons is None
    found = fact_neurons(handle, fact, cfg=cfg, max_prompts=max_prompts, execution=execution) if localized else neurons
    found = list(dict.fromkeys((int(l), int(i)) for l, i in found))
    handle.check_neurons(found, f"{fact.where()}{method}", error=EditError)
    drop = {(int(l), int(i)) for l, i in common or ()}
    used = [n for n in found if n not in drop]
    info = {"neurons": used, "filtered": [n for n in found if n in drop], "localized": localized,
            "common_filter": common is not None}
    if localized:
        info["localize"] = localize_info(cfg, max_prompts)
    if not used:
        info["note"] = "no neurons to edit: the edit changes nothing"
    return used, info


def localize_info(cfg: LocateConfig, max_prompts: int | None) -> dict:
    """How an edit localised, as its info records it."""
    return {**cfg.record(), "max_prompts": max_prompts}
