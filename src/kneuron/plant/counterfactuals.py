"""Counterfactual facts to plant, and the prompt sets that plant them: the ground truth that
``kneuron bench localization`` scores the attribution methods against (``kneuron.plant.core`` plants them).

Two sources of prompts:

* built-in (smollm2-135m and other English models): demo-en subjects with wrong objects. Three prompt
  sets with disjoint templates: the *background* (the keys' negatives), the *controls* (collateral:
  other facts, the demo-en templates and a few more) and the planted prompts.
* fact-driven (``facts=``, automatic for the bundled organisms): facts the model knows. The planted
  facts get a wrong one-token object; the *controls* are other known facts (several relations, every
  language, first two templates); the *background* is more known facts whose subjects are disjoint
  from the controls', under all their templates. The shared neuron is keyed on two languages' prompts
  of the same fact.
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass


from kneuron.facts.sampling import round_robin
from kneuron.facts import Fact
from kneuron.errors import ConfigError
from kneuron.models.load import ModelHandle
from kneuron.facts.templates import QueryError
from kneuron.models.targets import encode
from kneuron.plant.core import plant
from kneuron.plant.types import Control, Planted, PlantError, PlantSpec
from kneuron.plant.prompts import (CONTROL_FACTS, CONTROL_TEMPLATES, LANDMARKS,
                                      RELATIONS, background_prompts)

@dataclass(frozen=True)
class Counterfactual:
    subject: str
    relation: str
    new_object: str
    kind: str = "single"
    extra: str | None = None          # shared: a second prompt of the same fact


# demo-en subjects with wrong one-token objects; singles first, then the variants
COUNTERFACTUALS = (
    Counterfactual("Japan", "P36", " Berlin"), Counterfactual("Germany", "P36", " Rome"),
    Counterfactual("Kenya", "P30", " Australia"), Counterfactual("Mexico", "P37", " French"),
    Counterfactual("Italy", "P36", " Paris"), Counterfactual("Argentina", "P30", " Africa"),
    Counterfactual("India", "P37", " Italian"), Counterfactual("Germany", "P37", " Spanish"),
)
PAIR = Counterfactual("France", "P37", " German", "pair")
SHARED = Counterfactual("France", "P36", " Tokyo", "shared", extra="France's capital city is")


def spec_for(cf: Counterfactual) -> PlantSpec:
    temps = CONTROL_TEMPLATES[cf.relation]
    prompt = temps[0].replace("[X]", cf.subject)
    return PlantSpec(prompt, cf.new_object, cf.kind, (cf.extra,) if cf.extra else (),
                     tuple(t.replace("[X]", cf.subject) for t in temps[1:]))


def control_prompts(planted: list[Counterfactual]) -> list[Control]:
    """Every control fact except the planted (subject, relation) pairs; the planted subjects' other
    relations are grouped as "same-subject"."""
    taken = {(c.subject, c.relation) for c in planted}
    subjects = {c.subject for c in planted}
    out = []
    for subj, objs in CONTROL_FACTS.items():
        for rel, obj in zip(RELATIONS, objs):
            if (subj, rel) in taken or obj is None:
                continue
            for t in CONTROL_TEMPLATES[rel]:
                out.append(Control(t.replace("[X]", subj), obj, "same-subject" if subj in subjects else "other"))
    return out + [Control(p, a, "landmark") for p, a in LANDMARKS]


def counterfactuals(k: int, pair: bool = True, shared: bool = True) -> list[Counterfactual]:
    if not 1 <= k <= len(COUNTERFACTUALS):
        raise ConfigError(f"k must be in 1..{len(COUNTERFACTUALS)}, got {k}")
    return list(COUNTERFACTUALS[:k]) + ([PAIR] if pair else []) + ([SHARED] if shared else [])


def plant_layer(handle: ModelHandle) -> int:
    """The layer the planted neurons go into unless told: two thirds of the depth (not ROME's layer)."""
    return (2 * handle.n_layers) // 3


def plant_counterfactuals(handle: ModelHandle, k: int = 5, layer: int | None = None, pair: bool = True,
                          shared: bool = True, seed: int = 0) -> Planted:
    """Plant the first ``k`` built-in counterfactuals (+ a degenerate pair and a shared neuron)."""
    cfs = counterfactuals(k, pair, shared)
    bg = background_prompts({(c.subject, c.relation) for c in cfs})
    return plant(handle, [spec_for(c) for c in cfs], plant_layer(handle) if layer is None else layer,
                 controls=control_prompts(cfs), background=bg, seed=seed)


# ---------------------------------------------------------------- fact-driven prompt sets
N_CONTROL_IDS = 24            # fact ids (each in every language) whose first two templates are controls
N_BACKGROUND_IDS = 80         # fact ids whose every template is background


@dataclass(frozen=True)
class FactCounterfactual:
    fact: Fact                        # the known fact whose object is replaced (its first prompt is keyed)
    new_object: str                   # the planted object: one token
    wrong_object: str                 # the wrong object it stands for (== new_object unless first_token)
    kind: str = "single"
    extra: Fact | None = None         # shared: the same fact in another language (or itself, one language only)
    first_token: bool = False         # the language has no one-token wrong object: its first token is planted
    extra_template: int = 0           # shared: which of extra's prompts is keyed (1 when extra is the fact itself)


def fact_prompts(f: Fact, kind: str) -> list[str]:
    """The fact's prompts for a model kind, in template order (causal: text before [Y]; templates
    whose [Y] is not last are skipped; masked: [Y] kept); none when no template is usable."""
    try:
        return [q.prompt for q in f.queries(kind, skip_invalid=True)]
    except QueryError:
        return []


def _token(handle: ModelHandle, prompt: str, obj: str) -> int | None:
    """The answer's token id when ``obj`` is one known token after ``prompt``, else None."""
    try:
        e = encode(handle.tokenizer, handle.kind, prompt, obj)
    except QueryError:
        return None
    return e.target_ids[0] if len(e.target_ids) == 1 else None


def _first_token(handle: ModelHandle, prompt: str, obj: str) -> tuple[int, str] | None:
    """(id, text) of the answer's first token, when that token alone encodes back to itself."""
    try:
        e = encode(handle.tokenizer, handle.kind, prompt, obj)
    except QueryError:
        return None
    text = handle.tokenizer.decode([e.target_ids[0]]).strip()
    if not text or _token(handle, prompt, text) != e.target_ids[0]:
        return None
    return e.target_ids[0], text


class _Chooser:
    """Wrong one-token objects for known facts (seeded)."""

    def __init__(self, handle: ModelHandle, facts: list[Fact], rng: random.Random):
        self.h, self.rng = handle, rng
        self.true: dict = defaultdict(set)          # (relation, lang, subject) -> true objects and aliases
        self.objects: dict = defaultdict(set)       # (relation, lang) -> objects of the known facts
        for f in facts:
            self.true[(f.relation, f.lang, f.subject)].update((f.object, *f.aliases))
            self.objects[(f.relation, f.lang)].add(f.object)

    def candidates(self, f: Fact) -> list[str]:
        """The fact's own wrong objects, then the relation's other objects (each tier shuffled)."""
        true = self.true[(f.relation, f.lang, f.subject)]
        own = [o for o in f.wrong_objects if o not in true]
        rest = sorted(self.objects[(f.relation, f.lang)] - true - set(own))
        self.rng.shuffle(own)
        self.rng.shuffle(rest)
        return own + rest

    def _gold_first(self, f: Fact, prompt: str) -> set[int]:
        out = set()
        for o in self.true[(f.relation, f.lang, f.subject)]:
            t = _first_token(self.h, prompt, o)
            if t:
                out.add(t[0])
        return out

    def whole(self, f: Fact, prompt: str) -> list[str]:
        """Wrong objects that are one token after ``prompt`` (never a true object's first token)."""
        gold = self._gold_first(f, prompt)
        return [o for o in self.candidates(f) if (t := _token(self.h, prompt, o)) is not None and t not in gold]

    def first(self, f: Fact, prompt: str) -> list[tuple[str, str]]:
        """(first token, wrong object) of wrong objects whose first token starts no true object."""
        gold, out, seen = self._gold_first(f, prompt), [], set()
        for o in self.candidates(f):
            t = _first_token(self.h, prompt, o)
            if t and t[0] not in gold and t[0] not in seen:
                seen.add(t[0])
                out.append((t[1], o))
        return out


def _round_robin(items: list, key, n: int, rng: random.Random) -> list:
    """Up to n items, one per group (``key``) in turn, groups and items in a seeded order."""
    groups: dict = defaultdict(list)
    for x in items:
        groups[key(x)].append(x)
    order = sorted(groups)
    rng.shuffle(order)
    for g in order:
        rng.shuffle(groups[g])
    return round_robin({g: groups[g][::-1] for g in order}, n)


def fact_counterfactuals(handle: ModelHandle, facts: list[Fact], k: int = 5, pair: bool = True,
                         shared: bool = True, seed: int = 0) -> list[FactCounterfactual]:
    """k singles (languages in turn, English first; relations spread), then a degenerate pair (the
    next language) and a shared neuron (one fact id's prompts in two languages), all on distinct
    fact ids and subjects. Each planted fact gets a wrong object that is one token after its prompt;
    in a language where no known fact has one (e.g. Chinese objects are one token per character),
    the first token of a wrong object is planted instead (``first_token``)."""
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    rng = random.Random(seed)
    ch = _Chooser(handle, facts, rng)
    by_lang: dict = defaultdict(list)
    by_id: dict = defaultdict(dict)
    for f in facts:
        if fact_prompts(f, handle.kind):
            by_lang[f.lang].append(f)
            by_id[f.id][f.lang] = f
    langs = sorted(by_lang, key=lambda x: (x != "en", x))
    if not langs:
        raise PlantError(f"no usable prompts in the {len(facts)} facts for a {handle.kind} model")
    used_ids, used_subj = set(), set()

    def subjects(fid):
        return {g.subject for g in by_id[fid].values()}

    def free(f):
        return f.id not in used_ids and not subjects(f.id) & used_subj

    def take(f):
        used_ids.add(f.id)
        used_subj.update(subjects(f.id))

    pools: dict = {}

    def pool(lang):
        """Facts of ``lang`` with their one-token options, in a seeded, relation-spread order."""
        if lang not in pools:
            order = _round_robin(by_lang[lang], lambda f: f.relation, len(by_lang[lang]), rng)
            whole = [(f, [(o, o) for o in ch.whole(f, fact_prompts(f, handle.kind)[0])]) for f in order]
            whole = [(f, w) for f, w in whole if w]
            first = not whole
            if first:
                whole = [(f, w) for f in order if (w := ch.first(f, fact_prompts(f, handle.kind)[0]))]
            pools[lang] = (whole, first)
        return pools[lang]

    def pick(lang, kind):
        opts, first = pool(lang)
        for f, w in opts:
            if free(f):
                take(f)
                return FactCounterfactual(f, w[0][0], w[0][1], kind, first_token=first)
        return None

    out = []
    plan = [(langs[i % len(langs)], "single") for i in range(k)] + ([(langs[k % len(langs)], "pair")] if pair else [])
    for lang, kind in plan:
        cf = pick(lang, kind) or next((c for g in langs if (c := pick(g, kind))), None)
        if cf is None:
            raise PlantError(f"too few known facts with a one-token wrong object to plant {len(plan)} "
                             f"(+ shared) counterfactuals")
        out.append(cf)
    if shared:
        cf = _pick_shared(handle, ch, by_id, langs, free, take)
        if cf is None:
            raise PlantError("no free fact id with two prompts (two languages where known) and a wrong object "
                             "that is one token after both: cannot plant the shared neuron")
        out.append(cf)
    return out


def _pick_shared(handle, ch, by_id, langs, free, take) -> FactCounterfactual | None:
    """A fact id known in the first two languages and a wrong object that is one token after both
    first prompts (a name both languages write alike first, else the first language's)."""
    a, b = langs[0], langs[1 if len(langs) > 1 else 0]
    t = 0 if a != b else 1                                  # one language: the fact's first two prompts
    ids = sorted(i for i, d in by_id.items() if a in d and b in d and len(fact_prompts(d[b], handle.kind)) > t)
    ch.rng.shuffle(ids)
    fallback = None
    for i in ids:
        fa, fb = by_id[i][a], by_id[i][b]
        if not free(fa):
            continue
        pb = fact_prompts(fb, handle.kind)[t]
        gold_b = ch._gold_first(fb, pb)
        ok = [o for o in ch.whole(fa, fact_prompts(fa, handle.kind)[0])
              if (tb := _token(handle, pb, o)) is not None and tb not in gold_b]
        neutral = [o for o in ok if o in ch.objects[(fb.relation, b)]]
        if neutral or (ok and fallback is None):
            cf = FactCounterfactual(fa, (neutral or ok)[0], (neutral or ok)[0], "shared", fb, extra_template=t)
            if neutral:
                take(fa)
                return cf
            fallback = cf
    if fallback is not None:
        take(fallback.fact)
    return fallback


def fact_spec(cf: FactCounterfactual, kind: str) -> PlantSpec:
    prompts = fact_prompts(cf.fact, kind)
    extra = (fact_prompts(cf.extra, kind)[cf.extra_template],) if cf.extra is not None else ()
    return PlantSpec(prompts[0], cf.new_object, cf.kind, extra, tuple(p for p in prompts[1:] if p not in extra))


def _masked_background(handle: ModelHandle, f: Fact, prompt: str) -> list[str]:
    """A masked background prompt with as many masks as the gold object has tokens, and with one."""
    out = [prompt]
    try:
        n = len(encode(handle.tokenizer, "masked", prompt, f.object).target_ids)
    except QueryError:
        n = 1
    if n > 1:
        out.append(prompt.replace("[Y]", handle.tokenizer.mask_token * n))
    return out


def fact_prompt_sets(handle: ModelHandle, facts: list[Fact], planted: list[FactCounterfactual], seed: int = 0,
                     n_control_ids: int = N_CONTROL_IDS, n_background_ids: int = N_BACKGROUND_IDS
                     ) -> tuple[list[Control], list[str]]:
    """Controls and background from the known facts other than the planted ones.

    Controls: every fact of the planted subjects under another id ("same-subject"), and
    ``n_control_ids`` other ids spread over relations, in every language (grouped by language),
    under their first two templates. Background: ``n_background_ids`` further ids whose subjects
    are neither planted nor controls, every language and template (causal: the whole sentence,
    object included; masked: [Y] as one mask and as one mask per gold token)."""
    rng = random.Random(f"{seed}:prompt-sets")
    planted_ids = {c.fact.id for c in planted}
    by_id: dict = defaultdict(list)
    for f in facts:
        by_id[f.id].append(f)
    subj = {g.subject for i in planted_ids for g in by_id[i]}
    same = [f for f in facts if f.id not in planted_ids and f.subject in subj]
    rest = sorted(i for i, fs in by_id.items() if i not in planted_ids and not {g.subject for g in fs} & subj)
    n_c = min(n_control_ids, max(1, len(rest) // 3))
    ctrl_ids = _round_robin(rest, lambda i: by_id[i][0].relation, n_c, rng)
    ctrl_subj = {g.subject for i in ctrl_ids for g in by_id[i]}
    bg_pool = [i for i in rest if i not in set(ctrl_ids) and not {g.subject for g in by_id[i]} & ctrl_subj]
    bg_ids = _round_robin(bg_pool, lambda i: by_id[i][0].relation, n_background_ids, rng)

    controls, seen = [], set()
    for f, group in [(f, "same-subject") for f in same] + [(f, f.lang) for i in ctrl_ids for f in by_id[i]]:
        for p in fact_prompts(f, handle.kind)[:2]:
            if p not in seen:
                seen.add(p)
                controls.append(Control(p, f.object, group))
    background = []
    for i in bg_ids:
        for f in by_id[i]:
            if handle.kind == "causal":
                background += [t.replace("[X]", f.subject).replace("[Y]", f.object) for t in f.templates]
            else:
                background += [q for p in fact_prompts(f, "masked") for q in _masked_background(handle, f, p)]
    background = list(dict.fromkeys(background))
    if not background:
        raise PlantError(f"too few known facts ({len(by_id)} ids) for a background beside the planted "
                         f"facts and the controls")
    return controls, background


def plant_fact_counterfactuals(handle: ModelHandle, facts: list[Fact], k: int = 5, layer: int | None = None,
                               pair: bool = True, shared: bool = True, seed: int = 0
                               ) -> tuple[Planted, list[FactCounterfactual], int]:
    """Plant ``k`` counterfactual versions of known facts (+ a degenerate pair and a shared neuron).
    Returns the planted model, the counterfactuals (in the order of ``Planted.facts``) and the
    number of background prompts."""
    cfs = fact_counterfactuals(handle, facts, k, pair, shared, seed)
    controls, bg = fact_prompt_sets(handle, facts, cfs, seed)
    planted = plant(handle, [fact_spec(c, handle.kind) for c in cfs],
                    plant_layer(handle) if layer is None else layer, controls=controls, background=bg, seed=seed)
    return planted, cfs, len(bg)
