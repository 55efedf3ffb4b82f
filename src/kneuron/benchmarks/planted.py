"""Localization scored against a planted ground truth.

Counterfactual facts are planted as new neurons of one layer (``kneuron.organisms.plant``); each attribution
method then scores every neuron of every layer for each planted fact, and we report the planted
neuron's rank (1 = best), recall@1/@5 and the median rank.

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

import json
import random
import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from kneuron.attribution import attribute
from kneuron.facts.sampling import round_robin
from kneuron.facts import Fact, load_facts
from kneuron.errors import ConfigError
from kneuron.models.load import ModelHandle
from kneuron.facts.templates import QueryError
from kneuron.models.targets import encode
from kneuron.organisms import organism_facts
from kneuron.organisms.plant import Control, Planted, PlantError, PlantSpec, plant
from kneuron.organisms.prompts import (BACKGROUND_TEMPLATES, CONTROL_FACTS, CONTROL_TEMPLATES, GENERIC, LANDMARKS,
                                      OTHER_COUNTRIES, RELATIONS, background_prompts)

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


# ---------------------------------------------------------------- the benchmark
def rank_of(scores: torch.Tensor, neuron: tuple[int, int]) -> int:
    """1 = best, among all neurons of all layers; ties count against the neuron."""
    return int((scores >= scores[neuron]).sum())


def _method_scores(handle: ModelHandle, prompt: str, target: str, method: str, steps: int,
                   gen: torch.Generator) -> torch.Tensor:
    if method == "random":
        return torch.rand(handle.n_layers, handle.n_neurons, generator=gen)
    return attribute(handle, prompt, target, method=method, steps=steps).scores


def _summary(ranks: list[int]) -> dict:
    n = len(ranks)
    return {"recall@1": sum(r <= 1 for r in ranks) / n, "recall@5": sum(r <= 5 for r in ranks) / n,
            "median_rank": statistics.median(ranks), "ranks": ranks}


def localization_bench(handle: ModelHandle, k: int = 5, layer: int | None = None, steps: int = 20,
                       methods: tuple[str, ...] = ("ig", "amig", "random"), seed: int = 0,
                       progress=None, facts: list[Fact] | None = None) -> dict:
    """Plant k counterfactual facts + a degenerate pair + a shared neuron, localize each with every
    method, and score the planted neurons' ranks. A fact's rank is its best neuron's on its prompt.

    ``facts``: facts the model knows; the planted facts, controls and background are drawn from them
    (default: the training facts of a bundled organism, else the built-in English prompts)."""
    t0 = time.perf_counter()
    if facts is None:
        facts = organism_facts(handle)
    cfs = None
    if facts is None:
        planted = plant_counterfactuals(handle, k, layer, seed=seed)
    else:
        planted, cfs, n_bg = plant_fact_counterfactuals(handle, facts, k, layer, seed=seed)
    h, gen = planted.handle, torch.Generator().manual_seed(seed)
    rows, pairs, shared, by_lang = [], [], [], defaultdict(lambda: defaultdict(list))
    for j, f in enumerate(planted.facts):
        cf = cfs[j] if cfs is not None else None
        prompts = (f.spec.prompt, *f.spec.extra_prompts)
        langs = [cf.fact.lang] + ([cf.extra.lang] if cf.extra is not None else []) if cf else None
        ranks, top = {}, {}
        for m in methods:
            per_prompt = []
            for p in prompts:
                s = _method_scores(h, p, f.spec.new_object, m, steps, gen)
                per_prompt.append([rank_of(s, n) for n in f.neurons])
                top.setdefault(m, []).append([(l, i) for l, i, _ in _top(s, 3)])
                if progress:
                    progress(f"{m}: {p!r} -> {per_prompt[-1]}")
            ranks[m] = per_prompt
            if langs:
                for lang, r in zip(langs, per_prompt):
                    by_lang[lang][m].append(min(r))
        row = {"prompt": f.spec.prompt, "new_object": f.spec.new_object, "kind": f.spec.kind,
               "neurons": f.neurons, "p_before": f.p_before, "p_after": f.p_after, "top1": f.top1,
               "rank": {m: min(r[0]) for m, r in ranks.items()}, "ranks": ranks, "top3": top}
        if cf:
            row.update({"fact_id": cf.fact.id, "relation": cf.fact.relation, "lang": cf.fact.lang,
                        "object": cf.fact.object, "wrong_object": cf.wrong_object, "first_token": cf.first_token})
        rows.append(row)
        if f.spec.kind == "pair":
            pairs.append({"prompt": f.spec.prompt, "p_alone": f.p_alone, "top1_alone": f.top1_alone,
                          "p_both_suppressed": f.p_both_suppressed, "top1_both_suppressed": f.top1_both_suppressed,
                          "ranks": {m: r[0] for m, r in ranks.items()},
                          "both_top5": {m: max(r[0]) <= 5 for m, r in ranks.items()}})
            if cf:
                pairs[-1]["lang"] = cf.fact.lang
        if f.spec.kind == "shared":
            shared.append({"prompts": list(prompts), "p_after": [c.p_after for c in f.prompts],
                           "top1": [c.is_top1 for c in f.prompts],
                           "ranks": {m: [r[0] for r in rs] for m, rs in ranks.items()},
                           "top1_in_all": {m: all(r[0] == 1 for r in rs) for m, rs in ranks.items()}})
            if cf:
                shared[-1].update({"langs": langs, "fact_id": cf.fact.id, "new_object": cf.new_object})
    out = {"model": handle.name, "layer": planted.layer, "n_planted": len(rows),
           "n_neurons_total": h.n_layers * h.n_neurons, "steps": steps, "seed": seed,
           "methods": {m: _summary([r["rank"][m] for r in rows]) for m in methods},
           "collateral": asdict(planted.collateral), "facts": rows, "pairs": pairs, "shared": shared,
           "paraphrases": [{"prompt": c.prompt, "new_object": f.spec.new_object, "p_before": c.p_before,
                            "p_after": c.p_after, "is_top1": c.is_top1} for f in planted.facts for c in f.paraphrases],
           "key_fit": planted.key_fit}
    if cfs is not None:
        # per language: the planted neuron's rank on every keyed prompt of that language
        # (singles and pair: their prompt; shared: each of its prompts)
        out["languages"] = ({lang: {"n": len(next(iter(d.values()))),
                                    **{m: {"recall@1": sum(r <= 1 for r in d[m]) / len(d[m]),
                                           "recall@5": sum(r <= 5 for r in d[m]) / len(d[m]),
                                           "median_rank": statistics.median(d[m])} for m in methods}}
                             for lang, d in sorted(by_lang.items())} if len(by_lang) > 1 else {})
        out["prompt_sets"] = {"known_facts": len(facts), "controls": planted.collateral.n_prompts, "background": n_bg,
                              "first_token_objects": sorted({c.fact.lang for c in cfs if c.first_token})}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _top(scores: torch.Tensor, k: int) -> list[tuple[int, int, float]]:
    v, i = scores.flatten().topk(k)
    n = scores.shape[1]
    return [(int(j) // n, int(j) % n, float(x)) for x, j in zip(v, i)]

