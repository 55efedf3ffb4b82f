"""Edit records read from the files users already have, each record one ``Case`` (one language) of the kind
``records.build_cases`` draws from a fact set, so the editing benchmark measures them the same way.

Formats (``FORMATS``; told from the first record's fields, or named):

    counterfact   ROME's counterfact.json, and MEMIT's multi_counterfact.json, which has the same shape:
                  [{case_id, requested_rewrite: {prompt ("{}" for the subject), subject, relation_id,
                  target_new: {str}, target_true: {str}}, paraphrase_prompts, neighborhood_prompts,
                  attribute_prompts, generation_prompts}]
    zsre          EasyEdit's / MEND's zsRE (zsre_mend_eval.json): [{subject, src, pred, rephrase, alt,
                  answers, loc, loc_ans, cond}]: alt is the new object and answers[0] the true one (pred, the
                  MEND model's own answer, and cond are not read)
    knowedit      KnowEdit's JSON (EasyEdit's KnowEditDataset): [{subject, prompt, target_new,
                  ground_truth, rephrase | rephrase_prompt, portability: {key: [{prompt, ground_truth}]},
                  locality: {key: [{prompt, ground_truth}]}}]; an answer may be a string, a list of them or
                  a list of alias lists (the first is read)

What a record becomes (``Record``):

    rewrite       the record's prompt with the subject in it, true object -> new object
    paraphrases   paraphrase_prompts / rephrase (rephrase_prompt)
    neighbours    as the file gives them. CounterFact's neighborhood_prompts are other subjects that share
                  the record's *true* object (NS asks that they keep it), so each gets target_true as its
                  answer (a {prompt, target} item, as MEMIT's zsRE conversion writes, its own). zsRE's loc
                  is an unrelated NQ question with its answer loc_ans; KnowEdit's locality prompts carry
                  their own answers
    generation    CounterFact's generation_prompts (the bench keeps the first --generation of them)
    probes        CounterFact's attribute_prompts (other subjects whose true object is the new one) and the
                  portability questions: stored on the record for a later metric; none reads them yet
    fact          what KN methods localize and every method edits: the subject, the rewrite prompt as its
                  one template ("[X], which is located in [Y]") and the true object. Relation: CounterFact's
                  relation_id; zsRE and KnowEdit name none, so their records are one relation, the format's
                  name, and Dai et al.'s common-neuron filter counts over them together

The language is "en" unless a record has "lang"; a file holds one. Prompts are causal (text before the
answer); ``RecordsFile.take`` gives a masked model each one with [Y] after it. A record that lacks a field
or holds the wrong type is one ``RecordsError`` line naming the file, the record (its index in the file's
list, and its case_id where it has one) and the field, e.g.
``counterfact.json: record 3 (case_id 17): requested_rewrite.target_new.str missing``. zsRE records with
an empty alt are skipped, as EasyEdit's ZsreDataset skips them (``RecordsFile.skipped``).

Not read: KnowEdit's WikiBio (text / labels / concept: long-form, no true object) and records without a true
object (WikiData_recent): ES and PS compare the new object with the true one.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, NoReturn

from kneuron.facts.schema import Fact
from kneuron.facts.templates import QueryError, check_kind, is_cjk
from kneuron.models.targets import encode

from .base import EditError
from .records import N_GENERATION, Case, Neighbour, Probe, Prompt, Record

FORMATS = ("counterfact", "zsre", "knowedit")
LANG = "en"
FILE = -1                  # Prompt.template / Neighbour.template of a prompt the file gives (no template)


class RecordsError(EditError):
    """A records file that cannot be read; str(e) is one line naming the file, the record and the field."""


def _type(v: Any) -> str:
    return "null" if v is None else type(v).__name__


Key = str | int


def _name(path: tuple[Key, ...]) -> str:
    """A field's name as the error says it: requested_rewrite.target_new.str, neighborhood_prompts[3]."""
    out = ""
    for k in path:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else k)
    return out


class _At:
    """One record of a file: its values by path (keys and list indexes), each problem one RecordsError line
    naming the file, the record and the field."""

    def __init__(self, path: str, index: int, d: dict, case_id: Any = None):
        self.d = d
        self.head = f"{path}: record {index}" + ("" if case_id is None else f" (case_id {case_id})")

    def fail(self, path: tuple[Key, ...] | str, problem: str) -> NoReturn:
        raise RecordsError(f"{self.head}: {path if isinstance(path, str) else _name(path)} {problem}")

    def get(self, *path: Key, need: bool = True) -> Any:
        cur: Any = self.d
        for i, k in enumerate(path):
            if isinstance(k, int):
                if not isinstance(cur, list):
                    self.fail(path[:i], f"is not a list (got {_type(cur)})")
                cur = cur[k] if k < len(cur) else None
            else:
                if not isinstance(cur, dict):
                    self.fail(path[:i], f"is not an object (got {_type(cur)})")
                cur = cur.get(k)
            if cur is None:
                if need:
                    self.fail(path[:i + 1], "missing")
                return None
        return cur

    def text(self, *path: Key, need: bool = True) -> str | None:
        v = self.get(*path, need=need)
        if v is None:
            return None
        if not isinstance(v, str):
            self.fail(path, f"is not a string (got {_type(v)})")
        if not v.strip():
            self.fail(path, "is empty")
        return v

    def items(self, *path: Key) -> list:
        """A list (one string: a list of it; missing: empty)."""
        v = self.get(*path, need=False)
        if v is None:
            return []
        if isinstance(v, str):
            return [v]
        if not isinstance(v, list):
            self.fail(path, f"is not a list (got {_type(v)})")
        return v

    def texts(self, *path: Key) -> list[str]:
        """Prompts: a list of non-empty strings (one string: a list of it; missing: empty)."""
        v = self.get(*path, need=False)
        if v is None:
            return []
        if not isinstance(v, (list, str)):
            self.fail(path, f"is not a list of prompts (got {_type(v)})")
        return [self.text(*path, i) for i in range(len(v))] if isinstance(v, list) else [self.text(*path)]

    def answer(self, *path: Key) -> str:
        """An answer as KnowEdit writes one: a string, a list of them or of alias lists; the first."""
        v = self.get(*path)
        while isinstance(v, list) and v:
            v, path = v[0], path + (0,)
        if not isinstance(v, str) or not v.strip():
            self.fail(path, "holds no answer (a non-empty string, or a list whose first item is one)")
        return v

    def prompt(self, *path: Key) -> str:
        """A prompt: a string, or a list whose first item is one (KnowEdit)."""
        v = self.get(*path)
        return self.text(*path, 0) if isinstance(v, list) else self.text(*path)


# ----------------------------------------------------------------------------- one record of each format

@dataclass(frozen=True)
class _Parsed:
    relation: str
    subject: str
    prompt: str                # the rewrite prompt, the subject in it at ``at``
    at: int
    field: str                 # the prompt's field name (for errors)
    new: str
    true: str
    paraphrases: list[str]
    neighbours: list[tuple[str, str]]      # (prompt, its answer)
    generation: list[str] = ()
    probes: list[Probe] = ()


def _find(r: _At, field: str, prompt: str, subject: str) -> tuple[str, int]:
    """Where ``subject`` is in ``prompt`` (case-insensitively at worst: then the prompt's spelling)."""
    i = prompt.find(subject)
    if i < 0:
        i = prompt.lower().find(subject.lower())
        if i < 0:
            r.fail("subject", f"{subject!r} is not in {field} {prompt!r}")
        subject = prompt[i:i + len(subject)]
    return subject, i


def _counterfact(r: _At) -> _Parsed:
    rw: tuple[Key, ...] = ("requested_rewrite",)
    got = r.get(*rw)
    if isinstance(got, list):                      # a list of rewrites: one per record is read
        if len(got) != 1:
            r.fail(rw, f"holds {len(got)} rewrites (one per record is read)")
        rw += (0,)
    prompt, subject = r.text(*rw, "prompt"), r.text(*rw, "subject")
    if prompt.count("{}") != 1:
        r.fail(rw + ("prompt",), f"needs one {{}} for the subject, got {prompt!r}")
    new, true = r.text(*rw, "target_new", "str"), r.text(*rw, "target_true", "str")
    neighbours = []
    for i, x in enumerate(r.items("neighborhood_prompts")):
        if isinstance(x, dict):                    # {prompt, target}, as MEMIT's zsRE conversion writes
            nb = ("neighborhood_prompts", i)
            neighbours.append((r.text(*nb, "prompt"), r.answer(*nb, "target")))
        else:                                      # another subject with the same true object
            neighbours.append((r.text("neighborhood_prompts", i), true))
    return _Parsed(r.text(*rw, "relation_id", need=False) or "counterfact", subject, prompt.replace("{}", subject), prompt.index("{}"),
                   _name(rw + ("prompt",)), new, true, r.texts("paraphrase_prompts"), neighbours,
                   r.texts("generation_prompts"), [Probe("attribute", p, new) for p in r.texts("attribute_prompts")])


def _zsre(r: _At) -> _Parsed | None:
    if r.get("alt", need=False) == "":
        return None                                # EasyEdit's ZsreDataset skips these too
    src, new = r.text("src"), r.text("alt")
    if not isinstance(r.get("answers"), list):
        r.fail("answers", f"is not a list (got {_type(r.get('answers'))})")
    true = r.text("answers", 0)
    subject, at = _find(r, "src", src, r.text("subject"))
    loc = r.text("loc", need=False)
    probes = []
    if isinstance(r.get("portability", need=False), dict) and r.get("portability", "New Question", need=False):
        probes.append(Probe("portability.New Question", r.text("portability", "New Question"),
                            r.answer("portability", "New Answer")))
    return _Parsed("zsre", subject, src, at, "src", new, true, r.texts("rephrase"),
                   [(loc, r.answer("loc_ans"))] if loc else [], (), probes)


def _groups(r: _At, field: str) -> list[tuple[str, str, str]]:
    """KnowEdit's portability / locality: {key: [{prompt, ground_truth}]} as (key, prompt, answer)."""
    g = r.get(field, need=False)
    if g is None:
        return []
    if not isinstance(g, dict):
        r.fail(field, f"is not an object (got {_type(g)})")
    return [(key, r.prompt(field, key, i, "prompt"), r.answer(field, key, i, "ground_truth"))
            for key in g for i in range(len(r.items(field, key)))]


def _knowedit(r: _At) -> _Parsed:
    prompt, new = r.text("prompt"), r.text("target_new")
    true = r.answer("ground_truth")
    subject, at = _find(r, "prompt", prompt, r.text("subject"))
    return _Parsed(r.text("relation", need=False) or "knowedit", subject, prompt, at, "prompt", new, true,
                   r.texts("rephrase") + r.texts("rephrase_prompt"), [(p, a) for _, p, a in _groups(r, "locality")],
                   (), [Probe(f"portability.{k}", p, a) for k, p, a in _groups(r, "portability")])


PARSERS: dict[str, Callable[[_At], _Parsed | None]] = {"counterfact": _counterfact, "zsre": _zsre,
                                                       "knowedit": _knowedit}


def _template(prompt: str, at: int, subject: str) -> str:
    """The rewrite prompt as a fact template: [X] for the subject, [Y] after the text (no space for CJK)."""
    left = (prompt[:at] + "[X]" + prompt[at + len(subject):]).rstrip()
    return left + ("" if is_cjk(left[-1]) else " ") + "[Y]"


def _record(r: _At, p: _Parsed, fact_id: str, lang: str) -> Record:
    if "[X]" in p.prompt or "[Y]" in p.prompt:
        r.fail(p.field, "holds [X] or [Y], which kneuron's fact templates reserve")
    if p.new.strip() == p.true.strip():
        r.fail("the new object", f"{p.new!r} is the true object")
    fact = Fact(fact_id, p.relation, lang, p.subject, p.true, (_template(p.prompt, p.at, p.subject),),
                source=r.head)
    return Record(fact, p.new, None, 0, p.prompt.rstrip(), tuple(Prompt(q.rstrip(), FILE) for q in p.paraphrases),
                  tuple(Neighbour("", "", q.rstrip(), a, FILE, a.strip() == p.true.strip()) for q, a in p.neighbours),
                  tuple(g.rstrip() for g in p.generation), None, tuple(p.probes))


# ----------------------------------------------------------------------------- the file

@dataclass(frozen=True)
class RecordsFile:
    """A records file read: its format, its bytes' SHA-256 (a resumed run checks it), its cases (case_id:
    the position among those read) and how many records were skipped (zsRE's without a new object)."""
    path: str
    format: str
    sha256: str
    cases: tuple[Case, ...]
    skipped: int = 0

    @property
    def facts(self) -> list[Fact]:
        """Every record's fact: the pool Dai et al.'s common-neuron filter counts over."""
        return [r.fact for c in self.cases for r in c.records.values()]

    def meta(self) -> dict:
        """What run.json says of the file (a resume with another file or format is refused)."""
        return {"records_format": self.format, "records_sha256": self.sha256}

    def take(self, n: int | None = None, *, kind: str = "causal", n_generation: int = N_GENERATION) -> list[Case]:
        """The first ``n`` cases (None: all) as a ``kind`` model is given them: at most ``n_generation``
        generation prompts each (a masked model none), and for a masked model every prompt with [Y] after it,
        where a causal model's answer would be."""
        check_kind(kind)
        return [Case(c.case_id, c.fact_id, c.relation, {g: _for_kind(r, kind, n_generation)
                                                        for g, r in c.records.items()}) for c in self.cases[:n]]


def _for_kind(r: Record, kind: str, n_generation: int) -> Record:
    if kind == "causal":
        return replace(r, generation=r.generation[:max(0, n_generation)])
    y = lambda t: t + ("" if is_cjk(t[-1]) else " ") + "[Y]"  # noqa: E731
    return replace(r, prompt=y(r.prompt), paraphrases=tuple(replace(p, text=y(p.text)) for p in r.paraphrases),
                   neighbours=tuple(replace(nb, prompt=y(nb.prompt)) for nb in r.neighbours), generation=())


def detect(data: list, path: str = "records") -> str:
    """The format, told from the first record's fields (requested_rewrite: CounterFact; target_new: KnowEdit;
    src or alt: zsRE)."""
    d = data[0] if data and isinstance(data[0], dict) else {}
    if "requested_rewrite" in d:
        return "counterfact"
    if "target_new" in d:                          # KnowEdit's own (zsRE never has it)
        return "knowedit"
    if "src" in d or "alt" in d:
        return "zsre"
    raise RecordsError(f"{path}: cannot tell the format from record 0's fields ({', '.join(sorted(d)) or 'none'}); "
                       f"name it with --records-format {'|'.join(FORMATS)}")


def read_records(path, fmt: str | None = None) -> RecordsFile:
    """Every record of the file at ``path`` (``fmt``: one of FORMATS; None: told from the content), checked
    and made a Case; RecordsError (one line) for the first problem."""
    name = str(path)
    if fmt is not None and fmt not in FORMATS:
        raise RecordsError(f"{name}: unknown records format {fmt!r} (expected one of {', '.join(FORMATS)})")
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise RecordsError(f"{name}: cannot read the records file ({e.strerror or e})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordsError(f"{name}: not a JSON file ({e})") from None
    if not isinstance(data, list):
        raise RecordsError(f"{name}: not a list of records (a JSON list of objects; got {_type(data)})")
    if not data:
        raise RecordsError(f"{name}: holds no records")
    fmt = fmt or detect(data, name)
    cases: list[Case] = []
    ids: dict[str, int] = {}
    lang0, skipped = None, 0
    for i, d in enumerate(data):
        if not isinstance(d, dict):
            raise RecordsError(f"{name}: record {i}: not an object (got {_type(d)})")
        cid = d.get("case_id")
        r = _At(name, i, d, cid)
        if cid is not None and (isinstance(cid, bool) or not isinstance(cid, int)):
            r.fail("case_id", f"is not an integer (got {_type(cid)})")
        p = PARSERS[fmt](r)
        if p is None:
            skipped += 1
            continue
        fid = f"{fmt}-{i if cid is None else cid}"
        if fid in ids:
            r.fail("case_id", f"is also record {ids[fid]}'s")
        ids[fid] = i
        lang = r.text("lang", need=False) or LANG
        if lang0 is not None and lang != lang0:
            r.fail("lang", f"is {lang!r}, the file's first record's {lang0!r} (a file holds one language)")
        lang0 = lang
        cases.append(Case(len(cases), fid, p.relation, {lang: _record(r, p, fid, lang)}))
    if not cases:
        raise RecordsError(f"{name}: no record has a new object (all {skipped} skipped)")
    return RecordsFile(name, fmt, hashlib.sha256(raw).hexdigest(), tuple(cases), skipped)


def check_encodes(cases: list[Case], tokenizer, kind: str) -> None:
    """RecordsError (one line, naming the record) for the first prompt and object the tokenizer cannot
    encode (an answer of unknown tokens, a prompt with no tokens): before the model measures anything."""
    for c in cases:
        for r in c.records.values():
            parts = [("the rewrite prompt", r.prompt, r.new), ("the rewrite prompt", r.prompt, r.old)]
            parts += [(f"paraphrase {i}", p.text, o) for i, p in enumerate(r.paraphrases) for o in (r.new, r.old)]
            parts += [(f"neighbour {i}", nb.prompt, o) for i, nb in enumerate(r.neighbours) for o in (nb.target, r.new)]
            for what, prompt, obj in parts:
                try:
                    encode(tokenizer, kind, prompt, obj)
                except QueryError as e:
                    raise RecordsError(f"{r.fact.source or c.fact_id}: {what} {prompt!r} with {obj!r}: {e}") from None


__all__ = ["FORMATS", "RecordsError", "RecordsFile", "check_encodes", "detect", "read_records"]
