"""One edit shown before and after (``kneuron edit``, the explorer's Edit view): the rewrite prompt, a
paraphrase, a neighbour and the other languages' rewrites, each with p(new), p(old) and the top-1 token,
all read from ``metrics.measure``."""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

from kneuron.facts.schema import Fact
from kneuron.models.load import ModelHandle

from . import edit, named_options
from .base import Edit
from .localize import common_neurons, fact_neurons
from .metrics import measure
from .records import Case, case_for


@dataclass
class Shown:
    """An edit (computed, not applied) of one fact and its prompts measured before it."""
    handle: ModelHandle
    case: Case
    lang: str
    edit: Edit
    before: dict                  # lang -> metrics.measure of that language's record
    own_seconds: float = 0.0      # localizing the fact's own neurons (kn methods with the common filter)
    filter_seconds: float = 0.0   # localizing the other facts of the relation for the filter

    def measure(self) -> dict:
        """The case's records measured on the model as it is now (edited or not)."""
        return dict(zip(self.case.records, measure(self.handle, list(self.case.records.values()), generation=False)))

    def report(self, after: dict) -> dict:
        """The edit and its lines, each with p(want), p(rival) and the top-1 token before and after."""
        e, r = self.edit, self.case.records[self.lang]
        lines = []
        for x, y in zip(_lines(self.case, self.lang, self.before), _lines(self.case, self.lang, after)):
            pair = x.pop("pair")
            lines.append({**x, "before": _state(self.handle.tokenizer, pair),
                          "after": _state(self.handle.tokenizer, y["pair"])})
        return {"method": e.method, "fact_id": r.fact.id, "lang": self.lang, "old": r.old, "new": r.new,
                "seconds": e.seconds + self.own_seconds, "filter_seconds": self.filter_seconds,
                "params_changed": e.params_changed, "lines": lines, "neurons": e.info.get("neurons"),
                "filtered": e.info.get("filtered"), "layer": e.info.get("layer"), "note": e.info.get("note")}


def prepare(h: ModelHandle, facts: list[Fact], pool: list[Fact], fact_id: str, new: str, *, method: str = "kn",
            lang: str = "en", layer: int | None = None, common_facts: int = 10) -> Shown:
    """Measure fact ``fact_id``'s prompts and compute its edit to ``new`` (not applied). ``pool``: the facts
    neighbours and the kn methods' common-neuron filter (``common_facts`` facts; 0: none) come from."""
    case = case_for(facts, fact_id, new, lang=lang, kind=h.kind, tokenizer=h.tokenizer, pool=pool, n_generation=0)
    shown = Shown(h, case, lang, None, {})
    shown.before = shown.measure()
    opts: dict = {} if layer is None else {"layer": layer}
    if method in ("kn", "kn-eai", "kn-erase", "kn-opt") and common_facts > 0:
        named = named_options(method)
        mine, common, shown.own_seconds, shown.filter_seconds = relation_neurons(h, case.records[lang].fact, pool, common_facts)
        opts.update({k: v for k, v in (("neurons", mine), ("common", common)) if k in named})
    other = next((o for o in case.records if o != lang), None)
    if method == "likn" and other is not None:
        opts.update(other=case.records[other].edit_fact, other_new=case.records[other].new)
    shown.edit = edit(h, case.records[lang].edit_fact, new, method=method, **opts)
    return shown


def relation_neurons(h: ModelHandle, fact: Fact, pool: list[Fact], n: int):
    """The fact's neurons and the neurons found for more than 10 % of ``n`` facts of its relation (the fact
    and others drawn from ``pool``, seeded; with fewer than 10, for more than one), and the
    seconds the fact's own localization and the others' took."""
    others = sorted((f for f in pool if f.relation == fact.relation and f.lang == fact.lang and f.id != fact.id),
                    key=lambda f: f.id)
    random.Random(f"0:{fact.relation}:common").shuffle(others)
    t0 = time.perf_counter()
    mine = fact_neurons(h, fact)
    t1 = time.perf_counter()
    sets = [mine] + [fact_neurons(h, f) for f in others[: n - 1]]
    found = common_neurons(sets, share=max(0.1, 1 / len(sets)))
    return mine, found, t1 - t0, time.perf_counter() - t1


def _lines(case: Case, lang: str, ms: dict) -> list[dict]:
    """The lines shown: the rewrite, a paraphrase, a neighbour and the other languages' rewrites, each with
    the object that should win (``want``: new, or the neighbour's true object) and its rival."""
    r, m = case.records[lang], ms[lang]
    out = [dict(what="rewrite", lang=lang, prompt=r.prompt, want=r.new, rival=r.old, pair=m["rewrite"])]
    if r.paraphrases:
        out.append(dict(what="paraphrase", lang=lang, prompt=r.paraphrases[0].text, want=r.new, rival=r.old,
                        pair=m["paraphrases"][0]))
    if r.neighbours:
        nb, x = r.neighbours[0], m["neighbours"][0]
        out.append(dict(what="neighbour", lang=lang, prompt=nb.prompt, want=nb.target, rival=r.new,
                        pair={"new": x["true"], "old": x["new"]}))
    for other, o in case.records.items():
        if other != lang:
            out.append(dict(what="other language", lang=other, prompt=o.prompt, want=o.new, rival=o.old,
                            pair=ms[other]["rewrite"]))
    return out


def _state(tok, pair: dict) -> dict:
    return {"p_want": math.exp(-pair["new"]["nll"]), "p_rival": math.exp(-pair["old"]["nll"]),
            "top1": tok.decode([pair["new"]["argmax"][0]]).strip()}
