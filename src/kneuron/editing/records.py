"""Edit records in CounterFact's shape, built from any fact set and aligned across languages by fact id.

A ``Case`` is one fact id with one ``Record`` per language. A record holds what ROME's CounterFact holds:

    rewrite        the fact, its new object (one of its ``wrong_objects``) and the prompt the edit is made on
                   (one of the fact's templates, seeded)
    paraphrases    the fact's other templates (never the edited one, never one that gives the same prompt text)
    neighbours     other subjects of the same relation with the same true object where the set has them, else
                   other facts of the relation; each with its own true object
    generation     free-text prompts about the subject (each template cut after the subject; causal only)
    symmetry       P36 <-> P1376 only: the reverse prompt about the new object ("Rome is the capital of"),
                   whose answer after a generalizing edit is the subject (Niu et al., ICLR 2024)
    probes         a records file's attribute / portability prompts (``kneuron.editing.readers``), or the
                   attribute prompts of the "counterfact" protocol
    essence        "counterfact" protocol: text the unedited model wrote about the subject (set by the bench,
                   ``kneuron.editing.protocol``, which has the model)

Protocols (``protocol``): "kneuron" (the records above, what every run stored before the option had) or
"counterfact", CounterFact's construction as far as a fact set allows: neighbours only among subjects of
the relation with the record's true object (fewer where the pool has fewer), and the generation and
attribute prompts ``kneuron.editing.counterfact`` draws. Its paraphrases behind model-written prefixes and its essence texts need the model: the bench adds
them (``kneuron.editing.protocol.with_model``).

Alignment: the new object is the wrong object at the same index in every language (the bundled en-zh set
lists the same entities in the same order in both; see data/en-zh.md), so the zh record rewrites the same
entity the en record does. Every choice is seeded per fact id, so a case does not depend on which other
facts were drawn.

Prompts are texts for ``handle.kind``: causal (text before the answer; templates whose [Y] is not last are
left out, ``Fact.queries``) or masked (the sentence with ``[Y]``). With a tokenizer, anything a prompt
cannot encode (its object, the new object) is left out, and a fact none of whose wrong objects encodes is
not drawn.
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Iterable

from kneuron.facts.sampling import round_robin
from kneuron.facts.schema import Fact, relation_key
from kneuron.facts.templates import QueryError, check_kind
from kneuron.models.targets import encode

from .base import EditError, fact_from_json
from .counterfact import attributes as cf_attributes, generation as cf_generation

SYMMETRIC = {"P36": "P1376", "P1376": "P36"}        # relation -> its reverse
N_NEIGHBOURS, N_GENERATION = 10, 2                  # CounterFact has 10 neighbourhood prompts per record
PROTOCOLS = ("kneuron", "counterfact")


@dataclass(frozen=True)
class Prompt:
    text: str                  # causal: the text before the answer; masked: the sentence with [Y]
    template: int              # index in its fact's templates (-1: a prompt a records file gives, ``readers``)

    def to_json(self) -> dict:
        return {"text": self.text, "template": self.template}

    @classmethod
    def from_json(cls, d: dict) -> "Prompt":
        return cls(d["text"], int(d["template"]))


@dataclass(frozen=True)
class Neighbour:
    fact_id: str
    subject: str
    prompt: str
    target: str                # the neighbour's own true object
    template: int              # (-1, fact_id and subject "": a neighbour prompt a records file gives)
    same_object: bool          # its true object is the edited fact's true object (CounterFact's kind)

    def to_json(self) -> dict:
        return dict(fact_id=self.fact_id, subject=self.subject, prompt=self.prompt, target=self.target,
                    template=self.template, same_object=self.same_object)

    @classmethod
    def from_json(cls, d: dict) -> "Neighbour":
        return cls(d["fact_id"], d["subject"], d["prompt"], d["target"], int(d["template"]), bool(d["same_object"]))


@dataclass(frozen=True)
class Symmetry:
    relation: str              # the reverse relation
    prompt: str                # its template with [X] = the new object
    target: str                # the edited subject: the answer once the edit generalizes
    true: str | None           # the reverse prompt's true answer where the fact set knows it

    def to_json(self) -> dict:
        return dict(relation=self.relation, prompt=self.prompt, target=self.target, true=self.true)

    @classmethod
    def from_json(cls, d: dict | None) -> "Symmetry | None":
        return None if d is None else cls(d["relation"], d["prompt"], d["target"], d.get("true"))


@dataclass(frozen=True)
class Probe:
    """A prompt beyond ROME's tests: CounterFact's attribute prompts (``kind`` "attribute": other subjects
    whose true object is the new one, ``target`` the new object; a records file's, or the "counterfact"
    protocol's; ``metrics`` scores their P(new)) and KnowEdit's / zsRE's portability questions
    ("portability.<key>", kept for a later metric)."""
    kind: str
    prompt: str
    target: str

    def to_json(self) -> dict:
        return {"kind": self.kind, "prompt": self.prompt, "target": self.target}

    @classmethod
    def from_json(cls, d: dict) -> "Probe":
        return cls(d["kind"], d["prompt"], d["target"])


@dataclass(frozen=True)
class Record:
    """One language's rewrite of a fact: ``fact.object`` -> ``new`` on ``prompt``, with its test prompts."""
    fact: Fact
    new: str
    new_index: int | None      # index of ``new`` in fact.wrong_objects (None: given by hand)
    template: int              # the edited template
    prompt: str
    paraphrases: tuple[Prompt, ...] = ()
    neighbours: tuple[Neighbour, ...] = ()
    generation: tuple[str, ...] = ()
    symmetry: Symmetry | None = None
    probes: tuple[Probe, ...] = ()    # a records file's (``readers``) or the "counterfact" protocol's
    essence: tuple[str, ...] = ()     # "counterfact" protocol: the unedited model's text about the subject

    @property
    def lang(self) -> str:
        return self.fact.lang

    @property
    def old(self) -> str:
        return self.fact.object

    @property
    def edit_fact(self) -> Fact:
        """The fact as an editing method is given it: the edited template first, so that a method that
        edits on the fact's first prompt (rome, ft-m, ft-l, kn's token ids) edits on this record's rewrite prompt."""
        t = self.fact.templates
        return replace(self.fact, templates=(t[self.template],) + t[: self.template] + t[self.template + 1:])

    def to_json(self) -> dict:
        return {"fact": self.fact.to_json(), "new": self.new, "new_index": self.new_index,
                "template": self.template, "prompt": self.prompt,
                "paraphrases": [p.to_json() for p in self.paraphrases],
                "neighbours": [n.to_json() for n in self.neighbours],
                "generation": list(self.generation),
                "symmetry": self.symmetry.to_json() if self.symmetry else None,
                **({"probes": [p.to_json() for p in self.probes]} if self.probes else {}),   # none: as before
                **({"essence": list(self.essence)} if self.essence else {})}

    @classmethod
    def from_json(cls, d: dict) -> "Record":
        return cls(fact_from_json(d["fact"]), d["new"], d.get("new_index"), int(d["template"]), d["prompt"],
                   tuple(Prompt.from_json(p) for p in d.get("paraphrases", ())),
                   tuple(Neighbour.from_json(n) for n in d.get("neighbours", ())),
                   tuple(d.get("generation", ())), Symmetry.from_json(d.get("symmetry")),
                   tuple(Probe.from_json(p) for p in d.get("probes", ())), tuple(d.get("essence", ())))


@dataclass
class Case:
    """One fact id, rewritten in every language it has (``records``: language -> Record, in order)."""
    case_id: int
    fact_id: str
    relation: str
    records: dict[str, Record] = field(default_factory=dict)

    @property
    def langs(self) -> list[str]:
        return list(self.records)

    def to_json(self) -> dict:
        return {"case_id": self.case_id, "fact_id": self.fact_id, "relation": self.relation,
                "records": {lang: r.to_json() for lang, r in self.records.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "Case":
        return cls(int(d["case_id"]), d["fact_id"], d["relation"],
                   {lang: Record.from_json(r) for lang, r in d["records"].items()})


# ----------------------------------------------------------------------------- building

class _Pool:
    """The facts neighbours and reverse prompts are drawn from, indexed."""

    def __init__(self, facts: Iterable[Fact]):
        self.by_rel: dict = defaultdict(list)         # (relation, lang) -> facts
        self.by_subject: dict = defaultdict(list)     # (relation, lang, subject) -> facts
        self.by_object: dict = defaultdict(list)      # (relation, lang, object) -> facts
        for f in facts:
            self.by_rel[(f.relation, f.lang)].append(f)
            self.by_subject[(f.relation, f.lang, f.subject)].append(f)
            self.by_object[(f.relation, f.lang, f.object)].append(f)


class _Builder:
    def __init__(self, pool: Iterable[Fact], kind: str, tokenizer, seed: int, n_neighbours: int,
                 n_generation: int, protocol: str = "kneuron"):
        check_kind(kind)
        if protocol not in PROTOCOLS:
            raise EditError(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
        self.pool, self.kind, self.tok, self.seed = _Pool(pool), kind, tokenizer, seed
        self.n_neighbours, self.n_generation, self.cf = n_neighbours, n_generation, protocol == "counterfact"

    def rng(self, *key) -> random.Random:
        return random.Random(":".join(map(str, (self.seed,) + key)))

    def ok(self, prompt: str, *objects: str) -> bool:
        """Whether the tokenizer encodes each object after ``prompt`` (always, without a tokenizer)."""
        if self.tok is None:
            return True
        try:
            for o in objects:
                encode(self.tok, self.kind, prompt, o)
        except QueryError:
            return False
        return True

    def prompts(self, f: Fact) -> list[Prompt]:
        """The fact's prompts a model of this kind can use, one per distinct text, in template order."""
        try:
            qs = f.queries(self.kind, skip_invalid=True)
        except QueryError:                           # no template usable: no prompts
            return []
        out, seen = [], set()
        for q in qs:
            if q.prompt not in seen:
                seen.add(q.prompt)
                out.append(Prompt(q.prompt, q.template_index))
        return out

    def new_index(self, facts: list[Fact]) -> int | None:
        """The seeded wrong-object index, else the next one (cyclically) that is a usable new object in
        every language: not a name of the true object, encodable after the fact's first prompt."""
        n = min(len(f.wrong_objects) for f in facts)
        if n == 0:
            return None
        start = self.rng(facts[0].id, "new").randrange(n)
        for k in range(n):
            i = (start + k) % n
            if all(self.usable_new(f, f.wrong_objects[i]) for f in facts):
                return i
        return None

    def usable_new(self, f: Fact, new: str) -> bool:
        if new.strip() in {f.object.strip(), *(a.strip() for a in f.aliases)}:
            return False
        ps = self.prompts(f)
        return bool(ps) and self.ok(ps[0].text, new, f.object)

    def record(self, f: Fact, new: str, new_index: int | None) -> Record:
        ps = [p for p in self.prompts(f) if self.ok(p.text, new, f.object)]
        if not ps:
            raise EditError(f"{f.where('templates')}no template usable by a {self.kind} model with the objects "
                            f"{f.object!r} and {new!r}")
        rewrite = self.rng(f.id, f.lang, "template").choice(ps)
        paraphrases = tuple(p for p in ps if p.template != rewrite.template and p.text != rewrite.text)
        if self.cf:
            return Record(f, new, new_index, rewrite.template, rewrite.text, paraphrases,
                          self.neighbours(f, new, same_only=True), self.cf_generation(f, rewrite.template),
                          self.symmetry(f, new), self.attributes(f, new))
        return Record(f, new, new_index, rewrite.template, rewrite.text, paraphrases, self.neighbours(f, new),
                      self.generation(f, rewrite.template), self.symmetry(f, new))

    def neighbours(self, f: Fact, new: str, same_only: bool = False) -> tuple[Neighbour, ...]:
        """Other subjects of the relation: those with the same true object first, then the others (each
        group in a seeded order that depends on the fact id, so languages with the same ids agree);
        ``same_only`` (CounterFact's): the first group only."""
        cands = [g for g in self.pool.by_rel[(f.relation, f.lang)]
                 if g.id != f.id and g.subject != f.subject and g.object.strip() != new.strip()]
        same = sorted((g for g in cands if g.object == f.object), key=lambda g: g.id)
        other = sorted((g for g in cands if g.object != f.object), key=lambda g: g.id)
        rng = self.rng(f.id, "neighbours")
        rng.shuffle(same)
        rng.shuffle(other)
        out, seen = [], set()
        for g in same + ([] if same_only else other):
            if len(out) >= self.n_neighbours:
                break
            if g.subject in seen:
                continue
            ps = [p for p in self.prompts(g) if self.ok(p.text, g.object, new)]
            if not ps:
                continue
            p = self.rng(f.id, g.id, g.lang, "neighbour").choice(ps)
            seen.add(g.subject)
            out.append(Neighbour(g.id, g.subject, p.text, g.object, p.template, g.object == f.object))
        return tuple(out)

    def generation(self, f: Fact, first: int) -> tuple[str, ...]:
        """Causal only: each template cut right after the subject ("The capital of Denmark"), the edited
        template's first, distinct texts."""
        if self.kind != "causal" or self.n_generation <= 0:
            return ()
        order = [first] + [i for i in range(len(f.templates)) if i != first]
        out: list[str] = []
        for i in order:
            text = (f.templates[i].split("[X]", 1)[0] + f.subject).strip()
            if text and "[Y]" not in text and text not in out:
                out.append(text)
        return tuple(out[: self.n_generation])

    def cf_generation(self, f: Fact, first: int) -> tuple[str, ...]:
        """"counterfact" (causal only): ``counterfact.generation``."""
        return cf_generation(f, first, self.n_generation) if self.kind == "causal" else ()

    def attributes(self, f: Fact, new: str) -> tuple[Probe, ...]:
        """"counterfact": ``counterfact.attributes`` over the relation's subjects whose true object is ``new``."""
        usable = lambda g, o: [p.text for p in self.prompts(g) if self.ok(p.text, o)]   # noqa: E731
        texts = cf_attributes(f, new, self.pool.by_object[(f.relation, f.lang, new)], usable, self.rng)
        return tuple(Probe("attribute", t, new) for t in texts)

    def symmetry(self, f: Fact, new: str) -> Symmetry | None:
        rev = SYMMETRIC.get(f.relation)
        if rev is None:
            return None
        templates = next((g for g in self.pool.by_rel[(rev, f.lang)] if self.prompts(g)), None)
        if templates is None:
            return None
        probe = Fact(f.id, rev, f.lang, new, f.subject, templates.templates)
        ps = self.prompts(probe)
        true = [g.object for g in self.pool.by_subject[(rev, f.lang, new)]] + \
               [g.subject for g in self.pool.by_object[(f.relation, f.lang, new)]]
        true = next((t for t in true if t != f.subject), None)
        p = next((p for p in ps if self.ok(p.text, f.subject, *([true] if true else []))), None)
        return None if p is None else Symmetry(rev, p.text, f.subject, true)


def _by_id(facts: Iterable[Fact], langs: list[str] | None) -> tuple[dict[str, dict[str, Fact]], list[str]]:
    by_id: dict = defaultdict(dict)
    order: list[str] = []
    for f in facts:
        if langs is None or f.lang in langs:
            by_id[f.id][f.lang] = f
            if f.lang not in order:
                order.append(f.lang)
    return by_id, (list(langs) if langs is not None else order)


def build_cases(facts: Iterable[Fact], n: int | None = None, *, kind: str = "causal", tokenizer=None,
                langs: list[str] | None = None, seed: int = 0, pool: Iterable[Fact] | None = None,
                n_neighbours: int = N_NEIGHBOURS, n_generation: int = N_GENERATION,
                protocol: str = "kneuron") -> list[Case]:
    """Up to ``n`` cases (all when None) from ``facts``: ids that have every language of ``langs`` (default:
    all the facts' languages), a usable new object in each and a usable template; drawn round-robin over
    relations (relations in natural order, ids in a seeded order), so a small sample covers many.
    ``pool``: the facts neighbours and reverse prompts come from (default: ``facts``); ``tokenizer``
    (optional): drop what it cannot encode; ``protocol``: PROTOCOLS (see the module)."""
    facts = list(facts)
    b = _Builder(facts if pool is None else pool, kind, tokenizer, seed, n_neighbours, n_generation, protocol)
    by_id, langs = _by_id(facts, langs)
    if not langs:
        raise EditError("no facts to build edit records from")
    groups: dict = defaultdict(list)
    for fid in sorted(by_id):
        if all(lang in by_id[fid] for lang in langs):
            groups[by_id[fid][langs[0]].relation].append(fid)
    for rel, ids in groups.items():
        b.rng(rel, "order").shuffle(ids)
    order = round_robin({r: groups[r] for r in sorted(groups, key=relation_key)})
    cases: list[Case] = []
    for fid in order:
        if n is not None and len(cases) >= n:
            break
        fs = [by_id[fid][lang] for lang in langs]
        i = b.new_index(fs)
        if i is None:
            continue
        try:
            records = {f.lang: b.record(f, f.wrong_objects[i], i) for f in fs}
        except EditError:
            continue
        cases.append(Case(len(cases), fid, fs[0].relation, records))
    return cases


def case_for(facts: Iterable[Fact], fact_id: str, new: str, *, lang: str = "en", kind: str = "causal",
             tokenizer=None, seed: int = 0, pool: Iterable[Fact] | None = None, n_neighbours: int = N_NEIGHBOURS,
             n_generation: int = N_GENERATION, protocol: str = "kneuron") -> Case:
    """The case that rewrites fact ``fact_id`` in ``lang`` to ``new`` (given by hand). Where ``new`` is one of
    the fact's wrong objects, the other languages get the wrong object at the same index; else the case
    holds ``lang`` only. EditError (one line) for an unknown id or a new object equal to the old one."""
    facts = list(facts)
    by_id, langs = _by_id(facts, None)
    if fact_id not in by_id:
        raise EditError(f"no fact with id {fact_id!r}")
    here = by_id[fact_id]
    if lang not in here:
        have = ", ".join(here)
        raise EditError(f"fact {fact_id!r} has no {lang!r} version (languages: {have})")
    f = here[lang]
    if new.strip() in {f.object.strip(), *(a.strip() for a in f.aliases)}:
        raise EditError(f"{f.where('new')}the new object {new!r} is the fact's own object")
    b = _Builder(facts if pool is None else pool, kind, tokenizer, seed, n_neighbours, n_generation, protocol)
    try:
        first = f.first_query(kind)
    except QueryError as e:
        raise EditError(str(e)) from None
    if tokenizer is not None:
        try:
            encode(tokenizer, kind, first.prompt, new)
        except QueryError as e:
            raise EditError(f"{f.where('new')}{e}") from None
    i = f.wrong_objects.index(new) if new in f.wrong_objects else None
    records = {lang: b.record(f, new, i)}
    for other in langs:
        g = here.get(other)
        if other == lang or g is None or i is None or i >= len(g.wrong_objects):
            continue
        if b.usable_new(g, g.wrong_objects[i]):
            records[other] = b.record(g, g.wrong_objects[i], i)
    return Case(0, fact_id, f.relation, records)


__all__ = ["Case", "N_GENERATION", "N_NEIGHBOURS", "Neighbour", "PROTOCOLS", "Probe", "Prompt", "Record",
           "SYMMETRIC", "Symmetry", "build_cases", "case_for", "fact_from_json"]
