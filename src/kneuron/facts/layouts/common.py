"""Shared pieces of the fact-set loaders: JSON Lines reading with file:line errors, template
clean-up and checks, skip reports, and traditional -> simplified Chinese conversion."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

from kneuron.errors import MissingDependencyError
from ..schema import Fact, FactError
from ..templates import y_ends_template

MARKUP = re.compile(r"\[(?!X\]|Y\])[^\]]*\]")        # X-FACTR inflection markup: [X.Nom], [a;b|c]
SPACE_BEFORE_PUNCT = re.compile(r"\s+(?=[.,;:!?。，；：！？])")


@dataclass
class Tally:
    """How often one kind of input was skipped, with the first few examples."""
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str, keep: int = 3) -> None:
        self.count += 1
        if len(self.examples) < keep:
            self.examples.append(example)


@dataclass
class Report:
    """Skipped or changed input, by reason (insertion order kept)."""
    tallies: dict[str, Tally] = field(default_factory=dict)

    def add(self, reason: str, example: str) -> None:
        self.tallies.setdefault(reason, Tally()).add(example)

    def count(self, reason: str) -> int:
        return self.tallies[reason].count if reason in self.tallies else 0

    def to_json(self) -> dict[str, dict[str, Any]]:
        return {k: {"count": t.count, "examples": list(t.examples)} for k, t in self.tallies.items()}

    def lines(self) -> list[str]:
        return [f"{k}: {t.count}" + (f" (e.g. {'; '.join(t.examples)})" if t.examples else "")
                for k, t in self.tallies.items()]


@dataclass
class FactSet:
    """What a loader read: the facts, the languages in the source, and what it skipped."""
    facts: list[Fact]
    layout: str                   # jsonl, mlama, xfactr or pararel
    path: Path
    languages: tuple[str, ...]
    report: Report = field(default_factory=Report)


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; bad JSON stops with file:line."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise FactError(path, 0, None, f"cannot read fact file: {e}") from e
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise FactError(path, n, None, f"malformed JSON: {e}") from e
        if not isinstance(obj, dict):
            raise FactError(path, n, None, f"line is not a JSON object (got {type(obj).__name__})")
        yield n, obj


def need_str(obj: dict[str, Any], key: str, path: Path, n: int) -> str:
    """obj[key] as a stripped non-empty string, or a one-line FactError naming file, line and field."""
    if key not in obj:
        raise FactError(path, n, key, "missing required field")
    v = obj[key]
    if not isinstance(v, str) or not v.strip():
        raise FactError(path, n, key, f"must be a non-empty string, got {json.dumps(v, ensure_ascii=False)}")
    return v.strip()


def normalize_template(t: str) -> str:
    """Collapse whitespace and drop the space before punctuation: '[X] was born in [Y] .' -> '... [Y].'"""
    return SPACE_BEFORE_PUNCT.sub("", " ".join(t.split()))


def template_problem(t: str) -> str | None:
    """Why a template cannot be used (markup, not exactly one [X] and one [Y]), or None."""
    if MARKUP.search(t):
        return "inflection markup"
    for mark in ("[X]", "[Y]"):
        if t.count(mark) != 1:
            return f"{mark} {t.count(mark)} times"
    return None


def clean_templates(raw: list[str], report: Report, where: str) -> tuple[str, ...]:
    """Normalized usable templates, deduplicated, those ending in [Y] first (causal models use the
    first template as the main prompt); unusable ones are counted in `report`."""
    kept: list[str] = []
    for t in raw:
        t = normalize_template(t)
        problem = template_problem(t)
        if problem:
            report.add(f"templates skipped ({problem})", f"{where}: {t!r}")
        elif t not in kept:
            kept.append(t)
    return tuple(sorted(kept, key=lambda t: not y_ends_template(t)))


@lru_cache(maxsize=1)
def _t2s() -> Callable[[str], str]:
    try:
        from opencc import OpenCC
    except ImportError as e:
        raise MissingDependencyError("Chinese script conversion needs the 'data' extra: "
                                     "pip install 'kneuron[data]' (opencc-python-reimplemented)") from e
    return OpenCC("t2s").convert


def to_simplified(s: str) -> str:
    """Traditional -> simplified Chinese (OpenCC t2s)."""
    return _t2s()(s)


def is_simplified_chinese(lang: str) -> bool:
    """Languages whose names and templates are converted to simplified script."""
    return lang.lower().replace("_", "-") in ("zh", "zh-cn", "zh-hans", "zh-sg")
