"""X-FACTR layout: <dir>/TREx_prompts.csv (pid, relation, one template column per language),
<dir>/triples/<relation>.jsonl ({"uuid", "sub_uri", "sub_label", "obj_uri", "obj_label", "count"}) and
<dir>/alias-<lang>.txt (QID<TAB>name<TAB>name...). id = uuid.

English names are the triples' labels. Other languages' names are chosen from alias-<lang>.txt by
kneuron.facts.layouts.names.choose_name (Chinese converted to simplified script); the other names become
the object's aliases. Facts whose subject or object has no name in a language are skipped there, and
templates with X-FACTR's inflection markup ([X.Nom], [a;b|c]) are skipped; both are counted."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from ..schema import Fact, FactError, relation_key
from .common import FactSet, Report, clean_templates, is_simplified_chinese, need_str, read_jsonl, to_simplified
from .names import Naming, choose_name, usable

LAYOUT = "xfactr"
PROMPTS = "TREx_prompts.csv"
QID = re.compile(r"^Q\d+$")


@dataclass(frozen=True)
class Triple:
    uuid: str
    relation: str
    sub_uri: str
    sub_label: str
    obj_uri: str
    obj_label: str
    count: int
    source: str                 # file:line


def detect(path: Path) -> bool:
    return (path / PROMPTS).is_file() and (path / "triples").is_dir()


def files(path: Path) -> list[Path]:
    return sorted([path / PROMPTS, *path.glob("alias-*.txt"), *(path / "triples").glob("*.jsonl")])


def read_prompts(file: Path) -> dict[str, dict[str, str]]:
    """relation -> language -> raw template (empty cells left out)."""
    try:
        with open(file, encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise FactError(file, 0, None, f"cannot read CSV: {e}") from e
    if not rows or "pid" not in rows[0]:
        raise FactError(file, 1, "pid", "missing required column")
    head = rows[0]
    out: dict[str, dict[str, str]] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(head):
            raise FactError(file, n, None, f"expected {len(head)} columns, found {len(row)}")
        cells = dict(zip(head, row))
        pid = cells["pid"].strip()
        if not pid:
            raise FactError(file, n, "pid", "must be a non-empty string")
        out[pid] = {k: v for k, v in cells.items() if k not in ("pid", "relation") and v.strip()}
    return out


def read_aliases(file: Path) -> dict[str, list[str]]:
    """QID -> names, in file order."""
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise FactError(file, 0, None, f"cannot read alias file: {e}") from e
    out: dict[str, list[str]] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        qid, *names = line.split("\t")
        if not QID.match(qid):
            raise FactError(file, n, "QID", f"expected a Wikidata id like Q42 before the first tab, got {qid[:40]!r}")
        out.setdefault(qid, []).extend(s.strip() for s in names if s.strip())
    return out


def read_triples(file: Path) -> list[Triple]:
    out = []
    for n, obj in read_jsonl(file):
        vals = {k: need_str(obj, k, file, n) for k in ("uuid", "sub_uri", "sub_label", "obj_uri", "obj_label")}
        count = obj.get("count", 0)
        if not isinstance(count, int) or isinstance(count, bool):
            raise FactError(file, n, "count", f"must be an integer, got {count!r}")
        out.append(Triple(relation=file.stem, count=count, source=f"{file}:{n}", **vals))
    return out


def languages(path: Path, prompts: dict[str, dict[str, str]] | None = None) -> list[str]:
    prompts = read_prompts(path / PROMPTS) if prompts is None else prompts
    columns = {lang for row in prompts.values() for lang in row}
    have = {f.name[len("alias-"):-len(".txt")] for f in path.glob("alias-*.txt")}
    return sorted({"en"} | (columns & have))


def namer(aliases: dict[str, list[str]], lang: str):
    """QID -> Naming or None, cached."""
    cache: dict[str, Naming | None] = {}

    def name(qid: str) -> Naming | None:
        if qid not in cache:
            cache[qid] = choose_name(aliases.get(qid, ()), chinese=is_simplified_chinese(lang))
        return cache[qid]
    return name


def _load_language(path: Path, lang: str, prompts, triples: list[list[Triple]], report: Report) -> list[Fact]:
    conv = to_simplified if is_simplified_chinese(lang) else (lambda s: s)
    alias_file = path / f"alias-{lang}.txt"
    aliases = read_aliases(alias_file) if alias_file.is_file() else {}
    name = namer(aliases, lang)
    facts: list[Fact] = []
    for rel_triples in triples:
        if not rel_triples:
            continue
        rel = rel_triples[0].relation
        raw = prompts.get(rel, {}).get(lang)
        tpl = clean_templates([conv(raw)] if raw else [], report, f"{PROMPTS} {rel} {lang}")
        if not tpl:
            report.add("relations without a usable template (facts skipped)", f"{lang} {rel}")
            continue
        for t in rel_triples:
            if lang == "en":
                sub, obj = t.sub_label, t.obj_label
                others = tuple(a for a in aliases.get(t.obj_uri, ()) if a != obj and usable(a))
            else:
                ns, no = name(t.sub_uri), name(t.obj_uri)
                if ns is None or no is None:
                    which = "subject" if ns is None else "object"
                    report.add(f"facts without a {lang} name for the {which} (skipped)",
                               f"{rel} {t.sub_uri if ns is None else t.obj_uri} ({t.sub_label if ns is None else t.obj_label})")
                    continue
                sub, obj, others = ns.name, no.name, no.others
            facts.append(Fact(t.uuid, rel, lang, sub, obj, tpl, aliases=others, source=t.source))
    return facts


def load(path: Path, lang: str | None = None) -> FactSet:
    prompts = read_prompts(path / PROMPTS)
    langs = languages(path, prompts)
    report = Report()
    triple_files = sorted((path / "triples").glob("*.jsonl"), key=lambda f: relation_key(f.stem))
    triples = [read_triples(f) for f in triple_files]
    seen: dict[str, str] = {}
    for i, rel_triples in enumerate(triples):
        kept = []
        for t in rel_triples:
            if t.uuid in seen:
                report.add("duplicate uuids (first kept)", f"{t.source}: {t.uuid} (first at {seen[t.uuid]})")
            else:
                seen[t.uuid] = t.source
                kept.append(t)
        triples[i] = kept
    facts = [f for lg in langs if lang in (None, lg) for f in _load_language(path, lg, prompts, triples, report)]
    return FactSet(facts, LAYOUT, path, tuple(langs), report)
