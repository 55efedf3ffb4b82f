"""Bilingual model organisms: small models trained here on the bundled facts, so that the masked-LM
path and the cross-lingual modules run for real on models that truly hold the facts."""
from __future__ import annotations

import random
from collections import defaultdict

from kneuron.facts.sampling import round_robin
from kneuron.facts import Fact, load_facts
from kneuron.models.load import ModelHandle
from kneuron.models.registry import ORGANISMS_DIR as BUNDLED_DIR
from kneuron.organisms.known import known_facts, trained_on


def training_facts(facts: list[Fact], n_ids: int | None, langs=("en", "zh"), seed: int = 0) -> list[Fact]:
    """The facts an organism learns: ids present in every language of ``langs`` whose first-template
    prompt has a single answer (no other fact of the relation with the same subject and another
    object, in any language), sampled evenly across relations with ``seed``."""
    by_id: dict = defaultdict(dict)
    answers: dict = defaultdict(set)
    for f in facts:
        if f.lang in langs:
            by_id[f.id][f.lang] = f
            answers[(f.relation, f.lang, f.subject)].add(f.object)
    ok = [i for i, d in by_id.items() if len(d) == len(langs)
          and all(len(answers[(g.relation, g.lang, g.subject)]) == 1 for g in d.values())]
    by_rel: dict = defaultdict(list)
    for i in sorted(ok):
        by_rel[by_id[i][langs[0]].relation].append(i)
    rng = random.Random(seed)
    for ids in by_rel.values():
        rng.shuffle(ids)
    chosen = round_robin({r: by_rel[r][::-1] for r in sorted(by_rel)}, n_ids)
    keep = set(chosen)
    return [f for f in facts if f.id in keep and f.lang in langs]


def organism_facts(handle: ModelHandle | str, facts: str | None = None) -> list[Fact] | None:
    """The facts an organism was trained on (ids in its ``facts.txt``, languages in its
    ``training.json``: ``known.known_facts``), for a bundled organism name or an organism directory;
    else None. ``facts``: the fact set it was trained from (default en-zh)."""
    if trained_on(handle) is None:
        return None
    return known_facts(handle, load_facts(facts or "en-zh"))
