"""Bilingual model organisms: small models trained here on the bundled facts, so that the masked-LM
path and the cross-lingual modules run for real on models that truly hold the facts."""
from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from ..facts import Fact

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "data" / "organisms"
NAMES = {"organism-mlm": "mlm", "organism-clm": "clm"}


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
    chosen, rels = [], sorted(by_rel)
    while rels and (n_ids is None or len(chosen) < n_ids):      # round-robin over relations
        for r in list(rels):
            if by_rel[r]:
                chosen.append(by_rel[r].pop())
                if n_ids is not None and len(chosen) == n_ids:
                    break
            else:
                rels.remove(r)
    keep = set(chosen)
    return [f for f in facts if f.id in keep and f.lang in langs]
