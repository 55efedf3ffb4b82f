"""Canonical fact files: JSON Lines, one line per (fact id, language).

    {"id": "P36-0001", "relation": "P36", "lang": "en", "subject": "France",
     "object": "Paris", "templates": ["The capital of [X] is [Y]."]}

Optional: "aliases" (other accepted names of the object) and "wrong_objects"
(wrong objects of the same relation). (id, lang) is the unique key.

load_facts() is the one entry point: a bundled set's name, a canonical file, or a directory in the
mLAMA, X-FACTR or ParaRel layout (read by kneuron.factsets). stats() counts a fact list.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from .factsets import FactSet

log = logging.getLogger("kneuron.facts")

REQUIRED = ("id", "relation", "lang", "subject", "object", "templates")
OPTIONAL = ("aliases", "wrong_objects")


@dataclass(frozen=True)
class Fact:
    id: str
    relation: str
    lang: str
    subject: str
    object: str
    templates: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    wrong_objects: tuple[str, ...] = ()
    source: str = field(default="", compare=False, repr=False)   # "file:line" it was read from

    def where(self, field_name: str | None = None) -> str:
        """'file:line: field "x": ' prefix for one-line error messages about this fact."""
        head = self.source or f"fact {self.id} ({self.lang})"
        return f'{head}: field "{field_name}": ' if field_name else f"{head}: "

    def prompts(self) -> list[str]:
        """Each template with [X] filled by the subject ([Y] kept)."""
        return [t.replace("[X]", self.subject) for t in self.templates]

    @property
    def key(self) -> tuple[str, str]:
        return (self.id, self.lang)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: getattr(self, k) for k in REQUIRED}
        d["templates"] = list(self.templates)
        for k in OPTIONAL:
            if getattr(self, k):
                d[k] = list(getattr(self, k))
        return d


class FactError(ValueError):
    """Bad fact input; str(e) is one line: '<file>:<line>: field "<field>": <problem>'."""

    def __init__(self, path: str | os.PathLike, line: int, field: str | None, problem: str):
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = f'field "{field}": ' if field else ""
        msg = f"{self.path}:{line}: {where}{problem}"
        super().__init__(msg.replace("\r", " ").replace("\n", " "))


def _check_line(obj: Any, path: Path, n: int) -> Fact:
    """Validate one parsed JSON line and build its Fact."""
    def err(field: str | None, problem: str) -> FactError:
        return FactError(path, n, field, problem)

    if not isinstance(obj, dict):
        raise err(None, f"line is not a JSON object (got {type(obj).__name__})")
    unknown = sorted(set(obj) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise err(unknown[0], f"unknown field (allowed: {', '.join(REQUIRED + OPTIONAL)})")
    vals: dict[str, Any] = {}
    for k in REQUIRED[:5]:
        if k not in obj:
            raise err(k, "missing required field")
        v = obj[k]
        if not isinstance(v, str) or not v.strip():
            raise err(k, f"must be a non-empty string, got {json.dumps(v, ensure_ascii=False)}")
        vals[k] = v.strip() if k in ("subject", "object") else v
    for k in ("templates",) + OPTIONAL:
        if k not in obj:
            if k == "templates":
                raise err(k, "missing required field")
            continue
        v = obj[k]
        if not isinstance(v, list) or (k == "templates" and not v):
            raise err(k, "must be a non-empty list of strings" if k == "templates" else "must be a list of strings")
        for i, s in enumerate(v):
            if not isinstance(s, str) or not s.strip():
                raise err(f"{k}[{i}]", f"must be a non-empty string, got {json.dumps(s, ensure_ascii=False)}")
        vals[k] = tuple(s if k == "templates" else s.strip() for s in v)
    for i, t in enumerate(vals["templates"]):
        for mark in ("[X]", "[Y]"):
            if t.count(mark) != 1:
                raise err(f"templates[{i}]", f"must contain {mark} exactly once, found {t.count(mark)} in {t!r}")
    return Fact(**vals, source=f"{path}:{n}")


def _read_canonical(path: Path) -> list[Fact]:
    """Read and validate a canonical fact file (file order kept)."""
    from .factsets.common import read_jsonl
    facts: list[Fact] = []
    seen: dict[tuple[str, str], int] = {}
    for n, obj in read_jsonl(path):
        fact = _check_line(obj, path, n)
        if fact.key in seen:
            raise FactError(path, n, "id", f"duplicate key (id={fact.id!r}, lang={fact.lang!r}), first seen on line {seen[fact.key]}")
        seen[fact.key] = n
        facts.append(fact)
    if not facts:
        raise FactError(path, 0, None, "the file has no facts")
    return facts


def load_factset(name_or_path: str | os.PathLike, lang: str | None = None) -> "FactSet":
    """Like load_facts, but also says which layout was read, its languages and what was skipped."""
    from .factsets import FactSet, load_directory
    path = resolve_facts(name_or_path)
    if path.is_dir():
        fs = load_directory(path, lang)
    else:
        facts = _read_canonical(path)
        langs = tuple(sorted({f.lang for f in facts}))
        fs = FactSet([f for f in facts if lang in (None, f.lang)], "jsonl", path, langs)
    if fs.report.tallies:
        log.warning("%s: %s", path, "; ".join(f"{k}: {t.count}" for k, t in fs.report.tallies.items()))
    if not fs.facts:
        if lang is not None:
            present = ", ".join(fs.languages)
            raise FactError(path, 0, "lang", f"no facts in language {lang!r} (languages present: {present})")
        raise FactError(path, 0, None, "no facts found")
    return fs


def load_facts(name_or_path: str | os.PathLike, lang: str | None = None) -> list[Fact]:
    """The one entry point for facts: a bundled set's name (demo-en, en-zh), a canonical .jsonl file,
    or a directory in the mLAMA, X-FACTR or ParaRel layout (detected). Optionally one language."""
    return load_factset(name_or_path, lang).facts


def save_facts(facts: Iterable[Fact], path: str | os.PathLike) -> None:
    """Write facts as canonical JSONL (UTF-8, non-ASCII kept), atomically."""
    path = Path(path)
    lines, seen = [], set()
    for f in facts:
        if f.key in seen:
            raise ValueError(f"duplicate fact key {f.key}")
        seen.add(f.key)
        lines.append(json.dumps(f.to_json(), ensure_ascii=False) + "\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fact_file_hash(name_or_path: str | os.PathLike) -> str:
    """sha256 hex digest of a fact file's bytes; for a directory, of its sorted relevant files
    (relative path and sha256 of each)."""
    path = resolve_facts(name_or_path)
    if not path.is_dir():
        return _sha256(path)
    from .factsets import directory_files
    h = hashlib.sha256()
    for f in directory_files(path):
        h.update(f"{f.relative_to(path).as_posix()}\0{_sha256(f)}\n".encode())
    return h.hexdigest()


BUNDLED_DIR = Path(__file__).parent / "data"


def bundled_names() -> list[str]:
    return sorted(q.stem for q in BUNDLED_DIR.glob("*.jsonl"))


def resolve_facts(name_or_path: str | os.PathLike) -> Path:
    """A fact file or directory, or the path of a fact set bundled with kneuron (e.g. ``demo-en``)."""
    p = Path(name_or_path)
    if p.exists():
        return p
    bundled = BUNDLED_DIR / f"{name_or_path}.jsonl"
    if bundled.exists():
        return bundled
    raise FactError(p, 0, None, "cannot read fact file: no such fact file or directory, and not a "
                                f"bundled fact set ({', '.join(bundled_names())})")


def relation_key(relation: str) -> tuple:
    """Natural order of relation ids: P17 < P36 < P101 < P1376."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.findall(r"\d+|\D+", relation))


def stats(facts: Iterable[Fact]) -> dict[str, Any]:
    """Facts per language and per relation and language, distinct templates per language, and how
    many ids are present in every language."""
    facts = list(facts)
    langs = sorted({f.lang for f in facts})
    per_rel: dict[str, dict[str, int]] = {}
    templates: dict[str, set[str]] = {lg: set() for lg in langs}
    ids: dict[str, set[str]] = {}
    for f in facts:
        per_rel.setdefault(f.relation, dict.fromkeys(langs, 0))[f.lang] += 1
        templates[f.lang].update(f.templates)
        ids.setdefault(f.id, set()).add(f.lang)
    return {"languages": {lg: sum(r[lg] for r in per_rel.values()) for lg in langs},
            "relations": {r: per_rel[r] for r in sorted(per_rel, key=relation_key)},
            "n_templates": {lg: len(templates[lg]) for lg in langs},
            "aligned_ids": sum(1 for v in ids.values() if len(v) == len(langs))}
