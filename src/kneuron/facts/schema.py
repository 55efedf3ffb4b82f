"""The fact: one (fact id, language) with its subject, object and templates; FactError for bad input."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from kneuron.errors import KneuronError
from .templates import Query, usable_queries

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

    def queries(self, kind: str, skip_invalid: bool = False) -> list[Query]:
        """The fact's queries for a ``kind`` ("masked" | "causal") model, one per usable template, in
        template order (``kneuron.facts.templates.usable_queries``). QueryError, one line naming the
        fact's file, line and field: a template a causal model cannot use ([Y] not last, nothing before
        it) unless ``skip_invalid`` drops it, or no template left. Never empty."""
        return usable_queries(self, kind, skip_invalid)

    def first_query(self, kind: str) -> Query:
        """The fact's first query a ``kind`` model can use (the prompt its single-prompt measures read):
        ``queries(kind, skip_invalid=True)[0]``; QueryError (one line) when no template is usable."""
        return self.queries(kind, skip_invalid=True)[0]

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


class FactError(KneuronError, ValueError):
    """Bad fact input; str(e) is one line: '<file>:<line>: field "<field>": <problem>'."""

    def __init__(self, path: str | os.PathLike, line: int, field: str | None, problem: str):
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = f'field "{field}": ' if field else ""
        msg = f"{self.path}:{line}: {where}{problem}"
        super().__init__(msg.replace("\r", " ").replace("\n", " "))



def relation_key(relation: str) -> tuple:
    """Natural order of relation ids: P17 < P36 < P101 < P1376."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.findall(r"\d+|\D+", relation))
