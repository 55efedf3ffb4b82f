"""Loaders for fact-set directories in the layouts of public probing data sets: mLAMA, X-FACTR and
ParaRel. kneuron.facts.load_facts() detects the layout; each loader returns a FactSet (the facts, the
languages in the source and a report of what was skipped)."""

from __future__ import annotations

from pathlib import Path

from ..schema import FactError
from . import mlama, pararel, xfactr
from .common import FactSet, Report, Tally

LAYOUTS = {"xfactr": xfactr, "pararel": pararel, "mlama": mlama}     # detection order
EXPECTED = ("an mLAMA directory (<lang>/templates.jsonl and <lang>/<relation>.jsonl), "
            "an X-FACTR directory (TREx_prompts.csv, triples/P*.jsonl, alias-<lang>.txt) "
            "or a ParaRel directory (patterns/P*.jsonl, trex/P*.jsonl)")


def detect(path: Path) -> str:
    """The layout name of a fact directory, or a one-line FactError saying what was expected."""
    for name, module in LAYOUTS.items():
        if module.detect(path):
            return name
    raise FactError(path, 0, None, f"not a fact directory: expected {EXPECTED}")


def load_directory(path: Path, lang: str | None = None) -> FactSet:
    return LAYOUTS[detect(path)].load(path, lang)


def directory_files(path: Path) -> list[Path]:
    """The files a directory's facts are read from, sorted."""
    return LAYOUTS[detect(path)].files(path)


__all__ = ["FactSet", "Report", "Tally", "detect", "load_directory", "directory_files", "EXPECTED"]
