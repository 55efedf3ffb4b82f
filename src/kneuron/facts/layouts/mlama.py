"""mLAMA layout: <dir>/<lang>/templates.jsonl ({"relation", "template"}) and <dir>/<lang>/<relation>.jsonl
({"sub_label", "obj_label", "uuid", ...}); a fact's uuid aligns it across languages (id = uuid).
Chinese names and templates are converted to simplified script."""

from __future__ import annotations

from pathlib import Path

from ..schema import Fact, relation_key
from .common import FactSet, Report, clean_templates, is_simplified_chinese, need_str, read_jsonl, to_simplified

LAYOUT = "mlama"
TEMPLATES = "templates.jsonl"


def detect(path: Path) -> bool:
    return bool(languages(path))


def languages(path: Path) -> list[str]:
    return sorted(d.name for d in path.iterdir() if d.is_dir() and (d / TEMPLATES).is_file())


def files(path: Path) -> list[Path]:
    return sorted(f for lang in languages(path) for f in (path / lang).glob("*.jsonl"))


def _templates(file: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for n, obj in read_jsonl(file):
        out.setdefault(need_str(obj, "relation", file, n), []).append(need_str(obj, "template", file, n))
    return out


def _load_language(path: Path, lang: str, report: Report) -> list[Fact]:
    conv = to_simplified if is_simplified_chinese(lang) else (lambda s: s)
    templates = _templates(path / lang / TEMPLATES)
    facts: list[Fact] = []
    seen: dict[str, str] = {}
    rel_files = [f for f in (path / lang).glob("*.jsonl") if f.name != TEMPLATES]
    for file in sorted(rel_files, key=lambda f: relation_key(f.stem)):
        rel = file.stem
        tpl = clean_templates([conv(t) for t in templates.get(rel, [])], report, f"{lang}/{rel}")
        if not tpl:
            report.add("relations without a usable template (facts skipped)", f"{lang}/{rel}")
            continue
        for n, obj in read_jsonl(file):
            sub, ob = (conv(need_str(obj, k, file, n)) for k in ("sub_label", "obj_label"))
            uuid = need_str(obj, "uuid", file, n)
            where = f"{file}:{n}"
            if uuid in seen:
                report.add("duplicate uuids (first kept)", f"{where}: {uuid} (first at {seen[uuid]})")
                continue
            seen[uuid] = where
            facts.append(Fact(uuid, rel, lang, sub, ob, tpl, source=where))
    return facts


def load(path: Path, lang: str | None = None) -> FactSet:
    langs = languages(path)
    report = Report()
    facts = [f for lg in langs if lang in (None, lg) for f in _load_language(path, lg, report)]
    if lang is None and len(langs) > 1:
        by_id: dict[str, set[str]] = {}
        for f in facts:
            by_id.setdefault(f.id, set()).add(f.lang)
        for f in facts:
            if len(by_id[f.id]) < len(langs) and f.lang == min(by_id[f.id]):
                missing = ", ".join(sorted(set(langs) - by_id[f.id]))
                report.add("facts missing in some language", f"{f.id} ({f.relation}) not in {missing}")
    return FactSet(facts, LAYOUT, path, tuple(langs), report)
