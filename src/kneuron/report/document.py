"""A report as a list of parts (headings, paragraphs, code, tables, figures), written once and rendered
to Markdown and HTML by `kneuron.report.render`.

Paragraph text is Markdown (``*title*``, ``**bold**``, `` `code` ``); headings, code and table cells
are literal text.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kneuron.report.table import Table


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Figure:
    path: str        # a PNG beside the report (the HTML inlines it)
    caption: str


Part = Heading | Paragraph | Code | Table | Figure


@dataclass
class Document:
    """``doc.heading(1, "...").para("...").table(t)``: each method appends a part and returns the document."""
    parts: list[Part] = field(default_factory=list)

    def heading(self, level: int, text: str) -> "Document":
        self.parts.append(Heading(level, text))
        return self

    def para(self, text: str) -> "Document":
        self.parts.append(Paragraph(text))
        return self

    def code(self, text: str) -> "Document":
        self.parts.append(Code(text))
        return self

    def table(self, table: Table) -> "Document":
        self.parts.append(table)
        return self

    def figure(self, path, caption: str) -> "Document":
        self.parts.append(Figure(str(Path(path)), caption))
        return self

    def extend(self, other: "Document") -> "Document":
        self.parts.extend(other.parts)
        return self


__all__ = ["Code", "Document", "Figure", "Heading", "Paragraph", "Part"]
