"""One edit shown before and after (``kneuron edit``, the explorer's Edit view): the rewrite prompt, a
paraphrase, a neighbour and the other languages' rewrites, each with p(new), p(old) and the top-1 token,
all read from ``metrics.measure``."""
from __future__ import annotations

import math
from dataclasses import dataclass

from kneuron.facts.schema import Fact
from kneuron.models.load import ModelHandle

from .base import Edit, EditMethod
from .localize import prompt_limit, relation_filter
from .metrics import Measured, Scored, measure
from .records import Case, case_for
from .registry import edit, method_class, method_for

SEED = 0                          # the relation filter's draw of the other facts (as the editing bench's default)


@dataclass
class Shown:
    """An edit (computed, not applied) of one fact and its prompts measured before it."""
    handle: ModelHandle
    case: Case
    lang: str
    edit: Edit
    before: dict[str, Measured]   # lang -> that language's record measured before the edit
    own_seconds: float = 0.0      # localizing the fact's own neurons (kn methods with the common filter)
    filter_seconds: float = 0.0   # localizing the other facts of the relation for the filter

    def measure(self) -> dict[str, Measured]:
        """The case's records measured on the model as it is now (edited or not)."""
        return dict(zip(self.case.records, measure(self.handle, list(self.case.records.values()), generation=False)))

    def report(self, after: dict[str, Measured]) -> dict:
        """The edit and its lines, each with p(want), p(rival) and the top-1 token before and after."""
        e, r = self.edit, self.case.records[self.lang]
        lines = []
        for x, y in zip(_lines(self.case, self.lang, self.before), _lines(self.case, self.lang, after)):
            pair = x.pop("pair")
            lines.append({**x, "before": _state(self.handle.tokenizer, *pair),
                          "after": _state(self.handle.tokenizer, *y["pair"])})
        return {"method": e.method, "fact_id": r.fact.id, "lang": self.lang, "old": r.old, "new": r.new,
                "seconds": e.seconds + self.own_seconds, "filter_seconds": self.filter_seconds,
                "params_changed": e.params_changed, "lines": lines, "neurons": e.info.get("neurons"),
                "filtered": e.info.get("filtered"), "layer": e.info.get("layer"), "note": e.info.get("note")}


def prepare(h: ModelHandle, facts: list[Fact], pool: list[Fact], fact_id: str, new: str, *,
            method: str | EditMethod = "kn", lang: str = "en", layer: int | None = None,
            common_facts: int | None = 10, prompts: str = "all") -> Shown:
    """Measure fact ``fact_id``'s prompts and compute its edit to ``new`` (not applied) by ``method`` (a
    name or a method object; ``layer``: a name's layer option). ``pool``: the facts neighbours and Dai et
    al.'s filter (``common_facts`` facts of the relation; None: all of them; 0: none; methods with
    ``common_filter``) come from. ``prompts``: what a KN method's facts are localised on (``localize.PROMPTS``;
    "rewrite": the record's rewrite prompt, each other fact of the filter its first one)."""
    cls = method_class(method)
    prompt_limit(prompts)
    opts = {} if layer is None else {"layer": layer}
    if cls.uses_neurons and isinstance(method, str) and prompts != "all":
        opts["prompts"] = prompts
    m = method_for(method, **opts)
    case = case_for(facts, fact_id, new, lang=lang, kind=h.kind, tokenizer=h.tokenizer, pool=pool, n_generation=0)
    shown = Shown(h, case, lang, None, {})
    shown.before = shown.measure()
    ctx: dict = {}
    if cls.common_filter and (common_facts is None or common_facts > 0):
        r = case.records[lang]
        rf = relation_filter(h, r.edit_fact if prompts == "rewrite" else r.fact, pool, common_facts, seed=SEED,
                             prompts=prompts)
        ctx.update(neurons=rf.sets[0], common=set(rf.common))
        shown.own_seconds, shown.filter_seconds = rf.seconds[0], sum(rf.seconds[1:])
    other = next((o for o in case.records if o != lang), None)
    if (cls.shared_neurons or cls.languages == 2) and other is not None:
        ctx["other"] = case.records[other].edit_fact         # likn-transfer: only its neurons
        if cls.languages == 2:
            ctx["other_new"] = case.records[other].new
    shown.edit = edit(h, case.records[lang].edit_fact, new, method=m, **ctx)
    return shown


def _lines(case: Case, lang: str, ms: dict[str, Measured]) -> list[dict]:
    """The lines shown: the rewrite, a paraphrase, a neighbour and the other languages' rewrites, each with
    the object that should win (``want``: new, or the neighbour's true object) and its rival, and ``pair``:
    their scores (want's, rival's)."""
    r, m = case.records[lang], ms[lang]
    out = [dict(what="rewrite", lang=lang, prompt=r.prompt, want=r.new, rival=r.old,
                pair=(m.rewrite.new, m.rewrite.old))]
    if r.paraphrases:
        x = m.paraphrases[0]
        out.append(dict(what="paraphrase", lang=lang, prompt=r.paraphrases[0].text, want=r.new, rival=r.old,
                        pair=(x.new, x.old)))
    if r.neighbours:
        nb, x = r.neighbours[0], m.neighbours[0]
        out.append(dict(what="neighbour", lang=lang, prompt=nb.prompt, want=nb.target, rival=r.new,
                        pair=(x.true, x.new)))
    for other, o in case.records.items():
        if other != lang:
            x = ms[other].rewrite
            out.append(dict(what="other language", lang=other, prompt=o.prompt, want=o.new, rival=o.old,
                            pair=(x.new, x.old)))
    return out


def _state(tok, want: Scored, rival: Scored) -> dict:
    return {"p_want": math.exp(-want.nll), "p_rival": math.exp(-rival.nll),
            "top1": tok.decode([want.argmax[0]]).strip()}
