"""Canonical fact files: JSON Lines, one line per (fact id, language).

    {"id": "P36-0001", "relation": "P36", "lang": "en", "subject": "France",
     "object": "Paris", "templates": ["The capital of [X] is [Y]."]}

Optional: "aliases" (other accepted names of the object) and "wrong_objects"
(wrong objects of the same relation). (id, lang) is the unique key.

load_facts() is the one entry point: a bundled set's name, a canonical file, or a directory in the
mLAMA, X-FACTR or ParaRel layout (read by kneuron.facts.layouts). stats() counts a fact list.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable

from kneuron.store.atomic import write_text

from .layouts import FactSet, directory_files, load_directory
from .layouts.common import read_jsonl
from .schema import OPTIONAL, REQUIRED, Fact, FactError, relation_key

log = logging.getLogger("kneuron.facts")

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


def load_factset(name_or_path: str | os.PathLike, lang: str | None = None) -> FactSet:
    """Like load_facts, but also says which layout was read, its languages and what was skipped."""
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
    write_text(path, "".join(lines))


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
    h = hashlib.sha256()
    for f in directory_files(path):
        h.update(f"{f.relative_to(path).as_posix()}\0{_sha256(f)}\n".encode())
    return h.hexdigest()


BUNDLED_DIR = Path(__file__).resolve().parent.parent / "data"


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
