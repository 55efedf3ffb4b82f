"""ParaRel layout: <dir>/patterns/<relation>.jsonl (paraphrased templates, {"pattern", ...}) and
<dir>/trex/<relation>.jsonl (T-REx facts, {"sub_label", "obj_label", "uuid"}). English only; id = uuid.
Every fact gets all usable patterns of its relation, those ending in [Y] first."""

from __future__ import annotations

from pathlib import Path

from ..schema import Fact, relation_key
from .common import FactSet, Report, clean_templates, need_str, read_jsonl

LAYOUT = "pararel"


def detect(path: Path) -> bool:
    return (path / "patterns").is_dir() and (path / "trex").is_dir()


def files(path: Path) -> list[Path]:
    return sorted([*(path / "patterns").glob("*.jsonl"), *(path / "trex").glob("*.jsonl")])


def patterns(file: Path) -> list[str]:
    """The raw patterns of one relation file, in file order."""
    return [need_str(obj, "pattern", file, n) for n, obj in read_jsonl(file)]


def load(path: Path, lang: str | None = None) -> FactSet:
    report = Report()
    facts: list[Fact] = []
    if lang not in (None, "en"):
        return FactSet(facts, LAYOUT, path, ("en",), report)
    seen: dict[str, str] = {}
    for file in sorted((path / "trex").glob("*.jsonl"), key=lambda f: relation_key(f.stem)):
        rel = file.stem
        pfile = path / "patterns" / file.name
        if not pfile.is_file():
            report.add("relations without patterns (facts skipped)", rel)
            continue
        tpl = clean_templates(patterns(pfile), report, f"patterns/{pfile.name}")
        if not tpl:
            report.add("relations without a usable pattern (facts skipped)", rel)
            continue
        for n, obj in read_jsonl(file):
            sub, ob, uuid = (need_str(obj, k, file, n) for k in ("sub_label", "obj_label", "uuid"))
            where = f"{file}:{n}"
            if uuid in seen:
                report.add("duplicate uuids (first kept)", f"{where}: {uuid} (first at {seen[uuid]})")
                continue
            seen[uuid] = where
            facts.append(Fact(uuid, rel, "en", sub, ob, tpl, source=where))
    return FactSet(facts, LAYOUT, path, ("en",), report)
