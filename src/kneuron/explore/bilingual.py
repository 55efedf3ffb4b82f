"""The Prompt view's languages side by side: one fact of a multilingual fact set (en-zh) in each of its
languages -- the first query's predictions, logit lens and attribution heatmap, and the fact's knowledge
neurons as a ``locate`` run finds them (``kneuron.neurons.localize``) -- and the neurons found in every
language: the fact's language-independent knowledge neurons (LIKN, ``kneuron.paper.likn.language_independent``,
the intersection). Which facts the model knows is ``kneuron.organisms.known``'s rule, marked per language.

    Compare(model, fact, facts, langs, LocateConfig(...), prompts)   what /api/bilingual computes
    compare(handle, Compare, facts, job) -> dict                      the job's result (the page's JSON)
    offered(facts, per_relation) / known_marks(handle, facts)         the fact list and its known marks
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from kneuron.attribution import Execution
from kneuron.errors import ConfigError
from kneuron.explore.shape import attribution, name, prediction, rows
from kneuron.explore.state import Job
from kneuron.facts import Fact
from kneuron.facts.templates import QueryError
from kneuron.models.load import ModelHandle
from kneuron.models.registry import find_card
from kneuron.neurons import LocateConfig, localize
from kneuron.organisms.known import known_facts
from kneuron.paper.likn import language_independent

LANGS = ("en", "zh")
PER_RELATION = 10          # fact ids the list offers per relation (the first, in file order)


def default_facts(model: str) -> str:
    """The fact set a model is meant for (its card's), else the bundled en-zh."""
    card = find_card(model)
    return card.facts if card is not None else "en-zh"


@dataclass(frozen=True)
class Compare:
    """One side-by-side computation: fact ``fact`` of the fact set ``facts`` (a bundled name or a fact
    file) in each of ``langs``, localised with ``locate`` (its method, steps, threshold: tau per language
    unless set) over the first ``prompts`` queries of each language (None: all, as ``locate``)."""
    model: str
    fact: str
    facts: str
    langs: tuple[str, ...] = LANGS
    locate: LocateConfig = field(default_factory=LocateConfig)
    prompts: int | None = None
    k: int = 10

    def __post_init__(self):
        if len(set(self.langs)) < 2 or len(set(self.langs)) != len(self.langs):
            raise ConfigError(f"languages side by side needs two or more different languages, got {list(self.langs)}")
        if self.prompts is not None and self.prompts < 1:
            raise ConfigError(f"prompts must be at least 1 (or empty: all), not {self.prompts}")


def by_lang(facts: list[Fact], fact_id: str, where: str) -> dict[str, Fact]:
    """The fact ``fact_id`` in each language ``facts`` holds it in; ConfigError when it holds none."""
    found = {f.lang: f for f in facts if f.id == fact_id}
    if not found:
        raise ConfigError(f"{where}: no fact with id {fact_id!r}")
    return found


def offered(facts: list[Fact], per_relation: int | None = PER_RELATION) -> list[Fact]:
    """The facts the page lists: the first ``per_relation`` ids of each relation (None: all), in file
    order, each in every language it has."""
    ids: dict[str, list[str]] = {}
    for f in facts:
        have = ids.setdefault(f.relation, [])
        if f.id not in have and (per_relation is None or len(have) < per_relation):
            have.append(f.id)
    keep = {i for v in ids.values() for i in v}
    return [f for f in facts if f.id in keep]


def known_marks(h: ModelHandle, facts: list[Fact]) -> dict[str, dict[str, bool]]:
    """Fact id -> language -> whether the model knows it (``known_facts``). The caller holds the model."""
    known = {f.key for f in known_facts(h, facts)}
    out: dict[str, dict[str, bool]] = {}
    for f in facts:
        out.setdefault(f.id, {})[f.lang] = f.key in known
    return out


def listing(facts: list[Fact], known: dict[str, dict[str, bool]] | None) -> list[dict]:
    """The fact list as the page shows it: id, relation, each language's subject and object and, once
    computed, whether the model knows it."""
    out: dict[str, dict] = {}
    for f in facts:
        e = out.setdefault(f.id, {"id": f.id, "relation": f.relation, "langs": {}})
        e["langs"][f.lang] = {"subject": f.subject, "object": f.object,
                              "known": None if known is None else known.get(f.id, {}).get(f.lang)}
    return list(out.values())


def _neurons(ns) -> list[dict]:
    return [{"neuron": name(l, i), "layer": l, "index": i, **({"score": s} if s is not None else {})}
            for (l, i), s in ns]


def compare(h: ModelHandle, c: Compare, facts: list[Fact], job: Job) -> dict:
    """Each language's first query (predictions, logit lens, attribution) and knowledge neurons, and
    their intersection. A language the fact lacks, or whose query this model cannot take, is a side
    with a note, and then there is no intersection to show. The caller holds the model."""
    found = by_lang(facts, c.fact, c.facts)
    cfg = c.locate
    plans, sides = {}, {}
    for lang in c.langs:
        f = found.get(lang)
        if f is None:
            sides[lang] = {"lang": lang, "missing": True,
                           "note": f"{c.fact} has no {lang} version in {c.facts}: the other languages are shown alone"}
            continue
        try:
            qs = f.queries(h.kind, skip_invalid=True)[:c.prompts]
            total = sum(rows(h, q.prompt, q.target, cfg.steps) for q in qs)
        except QueryError as e:
            sides[lang] = {"lang": lang, "missing": True, "note": f"{lang}: this model cannot be asked it: {e}"}
            continue
        plans[lang] = (f, qs)
        job.total += total
    known = {f.key for f in known_facts(h, [f for f, _ in plans.values()])}
    neurons = {}
    for lang, (f, qs) in plans.items():
        q = qs[0]                                      # the fact's first query (fact.first_query)
        pred = prediction(h, c.model, q.prompt, q.target, c.k)
        atts: list = []                                # the first query's attribution is the heatmap
        ns = localize(h, f, cfg, execution=Execution(progress=job.advance), max_prompts=c.prompts,
                      attributions=atts)
        a = atts[0]
        neurons[f.key] = ns.neurons
        sides[lang] = {"lang": lang, "subject": f.subject, "object": f.object, "known": f.key in known,
                       "prompt": q.prompt, "answer": q.target, "n_prompts": len(qs), "prediction": pred,
                       "attribution": attribution(a, c.model, q.prompt, q.target, cfg.steps),
                       "neurons": _neurons(zip(ns.neurons, ns.scores))}
    shared = language_independent(neurons, set(neurons), c.langs).per_fact.get(c.fact)
    likn = None if shared is None else {
        "neurons": _neurons((n, None) for n in shared), "count": len(shared),
        "layers": {str(l): n for l, n in sorted(Counter(l for l, _ in shared).items())}}
    relation = next(iter(found.values())).relation
    return {"model": c.model, "fact": c.fact, "facts": c.facts, "relation": relation, "langs": list(c.langs),
            "method": cfg.method, "steps": cfg.steps, "prompts": c.prompts,
            "sides": [sides[lang] for lang in c.langs], "likn": likn,
            "note": None if likn is not None else "the language-independent neurons need the fact in every language"}
