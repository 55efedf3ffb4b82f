"""Canonical fact files: JSON Lines, one line per (fact id, language).

    {"id": "P36-0001", "relation": "P36", "lang": "en", "subject": "France",
     "object": "Paris", "templates": ["The capital of [X] is [Y]."]}

Optional: "aliases" (other accepted names of the object) and "wrong_objects"
(wrong objects of the same relation). (id, lang) is the unique key.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

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


def load_facts(path: str | os.PathLike, lang: str | None = None) -> list[Fact]:
    """Read and validate a canonical fact file (file order kept), optionally one language."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise FactError(path, 0, None, f"cannot read fact file: {e}") from e
    facts: list[Fact] = []
    seen: dict[tuple[str, str], int] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise FactError(path, n, None, f"malformed JSON: {e}") from e
        fact = _check_line(obj, path, n)
        if fact.key in seen:
            raise FactError(path, n, "id", f"duplicate key (id={fact.id!r}, lang={fact.lang!r}), first seen on line {seen[fact.key]}")
        seen[fact.key] = n
        facts.append(fact)
    if not facts:
        raise FactError(path, 0, None, "the file has no facts")
    if lang is not None:
        kept = [f for f in facts if f.lang == lang]
        if not kept:
            present = ", ".join(sorted({f.lang for f in facts}))
            raise FactError(path, 0, "lang", f"no facts in language {lang!r} (languages present: {present})")
        facts = kept
    return facts


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


def fact_file_hash(path: str | os.PathLike) -> str:
    """sha256 hex digest of the file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


BUNDLED_DIR = Path(__file__).parent / "data"


def resolve_facts(name_or_path: str | os.PathLike) -> Path:
    """A path, or the name of a fact set bundled with kneuron (e.g. ``demo-en``)."""
    p = Path(name_or_path)
    if p.exists():
        return p
    bundled = BUNDLED_DIR / f"{name_or_path}.jsonl"
    if bundled.exists():
        return bundled
    names = ", ".join(sorted(q.stem for q in BUNDLED_DIR.glob("*.jsonl")))
    raise FactError(p, 0, None, f"no such fact file, and not a bundled fact set ({names})")
