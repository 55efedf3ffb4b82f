"""Training text for the bilingual model organisms, generated from facts."""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

from kneuron.facts import Fact


@dataclass(frozen=True)
class Statement:
    """One sentence stating a fact: ``prefix`` + ``answer`` + ``suffix``."""
    prefix: str
    answer: str
    suffix: str
    fact_id: str
    lang: str          # the template's language
    switched: bool     # the subject is named in the other language (code-switching)

    @property
    def text(self) -> str:
        return self.prefix + self.answer + self.suffix


def _fill(template: str, subject: str, obj: str) -> tuple[str, str, str]:
    before, after = template.replace("[X]", subject).split("[Y]")
    return before, obj, after


def statements(facts: list[Fact], switch_share: float = 0.2, seed: int = 0,
               max_templates: int | None = None) -> list[Statement]:
    """The first ``max_templates`` templates (all by default) of every fact, plus code-switched
    sentences: a template of one language whose subject is named in the other language of the same
    fact id (``switch_share`` of the facts)."""
    rng = random.Random(seed)
    by_id: dict[str, dict[str, Fact]] = defaultdict(dict)
    for f in facts:
        by_id[f.id][f.lang] = f
    out = []
    for f in facts:
        for t in f.templates[:max_templates]:
            out.append(Statement(*_fill(t, f.subject, f.object), f.id, f.lang, False))
        others = [g for lang, g in by_id[f.id].items() if lang != f.lang]
        if others and rng.random() < switch_share:
            g = rng.choice(others)
            out.append(Statement(*_fill(rng.choice(f.templates[:max_templates]), g.subject, f.object), f.id, f.lang, True))
    return out
