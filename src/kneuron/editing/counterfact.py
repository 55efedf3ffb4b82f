"""The parts of a record that the "counterfact" protocol (``records``, ``protocol="counterfact"``) draws
differently, as far as a fact set allows CounterFact's construction (Meng et al. 2022):

    generation    at least ``N_CF_GENERATION`` prompts about the subject: the edited template cut after the
                  subject, the subject alone and relation-neutral openers (``OPENERS``), the other cuts
    attributes    the relation's prompt for up to ``N_ATTRIBUTES`` other subjects whose true object is the
                  record's new one (CounterFact's attribute prompts), in a seeded order

Pure functions of the facts: the record builder (``records``) gives them its usable prompts and seeded
generators; the parts that need the model (prefixed paraphrases, essence texts) are ``protocol``'s.
"""
from __future__ import annotations

import random
from typing import Callable, Iterable

from kneuron.facts.schema import Fact
from kneuron.facts.templates import is_cjk

N_CF_GENERATION, N_ATTRIBUTES = 5, 10               # at least / at most this many per record
# relation-neutral generation prompts about the subject, English and Chinese
OPENERS = {"en": ("{s}", "{s} is", "{s} was", "{s}'s", "The history of {s}"),
           "zh": ("{s}", "{s}是", "{s}的", "{s}在", "{s}的历史")}


def neutral_prompts(f: Fact) -> list[str]:
    """The subject alone and the relation-neutral openers about it (``OPENERS``: Chinese for a zh fact or a
    CJK subject, else English)."""
    zh = f.lang.startswith("zh") or any(is_cjk(ch) for ch in f.subject)
    return [o.format(s=f.subject) for o in OPENERS["zh" if zh else "en"]]


def generation(f: Fact, first: int, n_generation: int) -> tuple[str, ...]:
    """max(``n_generation``, N_CF_GENERATION) distinct prompts about the subject (none when ``n_generation``
    is 0): the edited template ``first`` cut after the subject, then ``neutral_prompts``, then the other
    templates' cuts."""
    if n_generation <= 0:
        return ()
    cuts = [(f.templates[i].split("[X]", 1)[0] + f.subject).strip()
            for i in [first] + [i for i in range(len(f.templates)) if i != first]]
    cuts = [c for c in cuts if c and "[Y]" not in c]
    out = list(dict.fromkeys(cuts[:1] + neutral_prompts(f) + cuts[1:]))
    return tuple(out[: max(n_generation, N_CF_GENERATION)])


def attributes(f: Fact, new: str, holders: Iterable[Fact], usable: Callable[[Fact, str], list[str]],
               rng: Callable[..., random.Random]) -> list[str]:
    """Up to N_ATTRIBUTES attribute prompts: for other subjects of ``holders`` (the relation's facts whose
    true object is ``new``), in a seeded order, one seeded prompt of those ``usable(g, new)`` gives."""
    cands = sorted((g for g in holders if g.id != f.id and g.subject != f.subject), key=lambda g: g.id)
    rng(f.id, "attributes").shuffle(cands)
    out, seen = [], set()
    for g in cands:
        if len(out) >= N_ATTRIBUTES:
            break
        if g.subject in seen:
            continue
        ps = usable(g, new)
        if ps:
            seen.add(g.subject)
            out.append(rng(f.id, g.id, g.lang, "attribute").choice(ps))
    return out


__all__ = ["N_ATTRIBUTES", "N_CF_GENERATION", "OPENERS", "attributes", "generation", "neutral_prompts"]
