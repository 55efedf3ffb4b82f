"""The "counterfact" protocol's parts of a record that need the model (``records`` draws the rest, model-free).

    with_model(handle, cases, seed)   each record's paraphrases behind a prefix the model wrote, and its
                                      essence texts, fixed once (the bench calls it on the unedited model,
                                      before storing the cases, so a resumed run reads them back)
    neighbour_shortfall(cases, n)     how many records have fewer same-object neighbours than asked, or none

Prefixes: CounterFact puts each paraphrase behind a random generated text ("<text>. <paraphrase>"). Here the
prefix is one of the model's own short texts (``objective.prefixes``, ROME's context templates) written with
the seed ``prefix_seed(seed)``, whose sampling seeds are not those of an edit method's prefixes (its
``seed`` option, 0 by default), so a paraphrase is never given the context an edit was made in; each
paraphrase's prefix is a seeded choice per (fact id, language, template). Masked models cannot write: their
paraphrases stay bare.

Essence: ROME's essence score is the perplexity of the subject's Wikipedia text. Offline there is none, so a
record's essence texts are ``ESSENCE_TEXTS`` texts of ``ESSENCE_TOKENS`` tokens the unedited model samples
(top-k as GE's) after the subject alone and "{subject} is" (the language's first openers,
``counterfact.neutral_prompts``), seeded per (seed, fact id, language); ``metrics`` scores their mean token NLL.
Causal models only.
"""
from __future__ import annotations

import random
import zlib
from dataclasses import replace

from kneuron.models.load import ModelHandle

from .objective import in_context, prefixes
from .counterfact import neutral_prompts
from .records import Case, Prompt, Record

PREFIX_SEED = 1000               # the test prefixes' seed is this + the run's seed (far from a method's seed)
ESSENCE_TEXTS, ESSENCE_TOKENS = 2, 40


def prefix_seed(seed: int) -> int:
    """The seed of the paraphrases' prefixes: ``objective.prefixes`` samples each opener with the seed plus
    its index, so an offset of ``PREFIX_SEED`` keeps them apart from an edit method's prefixes (its ``seed``
    option, 0 by default)."""
    return PREFIX_SEED + seed


def _seed(seed: int, *key) -> int:
    return zlib.crc32(":".join(map(str, (seed,) + key)).encode()) % 1_000_000


def essence_prompts(rec: Record) -> list[str]:
    """The prompts a record's essence texts continue: the subject alone, then "{subject} is" (or the
    language's second opener)."""
    return neutral_prompts(rec.fact)[:ESSENCE_TEXTS]


def essence_texts(handle: ModelHandle, rec: Record, seed: int) -> tuple[str, ...]:
    """``ESSENCE_TEXTS`` seeded texts the model writes about the record's subject (prompt included); ()
    for a masked model."""
    from .metrics import GEN_TOP_K, generate
    if handle.kind != "causal":
        return ()
    out = []
    for k, p in enumerate(essence_prompts(rec)):
        n = len(handle.tokenizer(p)["input_ids"])
        out += generate(handle, [p], _seed(seed, rec.fact.id, rec.lang, k), length=n + ESSENCE_TOKENS, top_k=GEN_TOP_K)
    return tuple(out)


def with_model(handle: ModelHandle, cases: list[Case], seed: int) -> list[Case]:
    """``cases`` (drawn with protocol "counterfact") with their paraphrases behind seeded model-written
    prefixes and their essence texts (causal models; a masked model's records are returned unchanged)."""
    if handle.kind != "causal":
        return cases
    pool = prefixes(handle, prefix_seed(seed))
    out = []
    for c in cases:
        recs = {}
        for lang, r in c.records.items():
            paras = tuple(Prompt(in_context(random.Random(f"{seed}:{r.fact.id}:{lang}:{p.template}:prefix")
                                            .choice(pool), p.text), p.template) for p in r.paraphrases)
            recs[lang] = replace(r, paraphrases=paras, essence=essence_texts(handle, r, seed))
        out.append(replace(c, records=recs))
    return out


def neighbour_shortfall(cases: list[Case], n_neighbours: int) -> dict:
    """How many records (of every language) have fewer neighbours than ``n_neighbours``, and how many none
    (run.json's ``neighbour_shortfall``, the report)."""
    recs = [r for c in cases for r in c.records.values()]
    return {"records": len(recs), "n_neighbours": n_neighbours,
            "fewer": sum(len(r.neighbours) < n_neighbours for r in recs),
            "none": sum(not r.neighbours for r in recs)}


__all__ = ["ESSENCE_TEXTS", "ESSENCE_TOKENS", "PREFIX_SEED", "essence_prompts", "essence_texts", "neighbour_shortfall",
           "prefix_seed", "with_model"]
