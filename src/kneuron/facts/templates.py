"""Templates -> queries: a fact's prompts with the gold answer, for masked and causal models (text
work only; turning them into token ids is ``kneuron.models.targets``)."""
from __future__ import annotations

from dataclasses import dataclass

from kneuron.errors import KneuronError

# ``fact`` below is a kneuron.facts.schema.Fact, named only: Fact.queries / Fact.first_query call into this
# module, so it does not import schema.py (one direction, no cycle).

KINDS = ("masked", "causal")
END_PUNCT = ".。?!．？！"
OPENERS = "([{<\"'“‘«‹「『（【〈《〔［｛"


class QueryError(KneuronError, ValueError):
    """A fact/prompt/answer that cannot be turned into a model query."""


@dataclass(frozen=True)
class Query:
    fact_id: str
    lang: str
    relation: str
    template_index: int
    prompt: str  # causal: text before the answer (right-stripped); masked: sentence with "[Y]"
    target: str  # gold answer text (the fact's object)


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise QueryError(f"unknown model kind {kind!r} (expected one of {', '.join(KINDS)})")


def is_cjk(ch: str) -> bool:
    """Chinese/Japanese characters and CJK punctuation: written without spaces."""
    o = ord(ch)
    return (
        0x3000 <= o <= 0x30FF  # CJK symbols & punctuation, hiragana, katakana
        or 0x31F0 <= o <= 0x31FF  # katakana phonetic extensions
        or 0x3400 <= o <= 0x4DBF  # CJK ext A
        or 0x4E00 <= o <= 0x9FFF  # CJK unified ideographs
        or 0xF900 <= o <= 0xFAFF  # CJK compatibility ideographs
        or 0xFF00 <= o <= 0xFFEF  # half/full-width forms
        or 0x20000 <= o <= 0x3FFFF  # CJK ext B and later
    )


def y_ends_template(template: str) -> bool:
    """True if [Y] is last, ignoring trailing whitespace and final punctuation."""
    tail = template.split("[Y]", 1)[1] if "[Y]" in template else "x"
    return tail.strip().strip(END_PUNCT + " \t") == ""


def queries_for(fact: "Fact", kind: str, skip_invalid: bool = False) -> list[Query]:
    """One Query per template of `fact`; causal needs [Y] at the end of the template."""
    check_kind(kind)
    out = []
    for i, t in enumerate(fact.templates):
        if kind == "masked":
            prompt = t.replace("[X]", fact.subject)
        else:
            prompt = t.split("[Y]", 1)[0].replace("[X]", fact.subject).rstrip()
            problem = None
            if not y_ends_template(t):
                problem = f"for causal models [Y] must end the template, got {t!r}"
            elif not prompt:
                problem = f"empty prompt: nothing before [Y] in {t!r}"
            if problem:
                if skip_invalid:
                    continue
                raise QueryError(f"fact {fact.id} ({fact.lang}) template {i}: {problem}")
        out.append(Query(fact.id, fact.lang, fact.relation, i, prompt, fact.object))
    return out


def usable_queries(fact: "Fact", kind: str, skip_invalid: bool = False) -> list[Query]:
    """``queries_for`` for a model: its errors prefixed with where the fact was read (file, line, field
    "templates"), and a QueryError when no template is left, which says why the first one fails. The one
    definition of "the fact's prompts a model can use" (``Fact.queries`` / ``Fact.first_query``)."""
    where = fact.where("templates")
    try:
        qs = queries_for(fact, kind, skip_invalid=skip_invalid)
    except QueryError as e:
        raise QueryError(f"{where}{e}") from None
    if not qs:
        try:                                 # say why: the first template's problem
            queries_for(fact, kind)
            why = ""
        except QueryError as e:
            why = f" ({e})"
        raise QueryError(f"{where}no template usable by a {kind} model{why}")
    return qs


def separator(prompt: str, answer: str) -> str:
    """Space between a causal prompt and its answer, none for CJK or after an opening bracket."""
    last = prompt[-1]
    return "" if is_cjk(last) or is_cjk(answer[0]) or last in OPENERS else " "


