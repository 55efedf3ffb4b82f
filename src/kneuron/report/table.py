"""One table model for every result: columns with their formats, rows of raw values, a title and notes.

Results produce a `Table` (numbers as numbers); `kneuron.report.render` turns it into a terminal table
(rich), Markdown or HTML, so a number is formatted once, by its column, the same way everywhere.
A missing value (None, NaN, inf) shows as ``n/a`` in every format.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

NA = "n/a"
Format = Union[str, Callable[[Any], str], None]   # a format spec for floats ("+.3f"), a function, or str()


@dataclass(frozen=True)
class Column:
    """A column: its header, how its values are written, and its alignment (None: the renderer's default)."""
    name: str
    fmt: Format = None
    align: str | None = None      # "left" | "right" | None

    def __post_init__(self):
        if self.align not in (None, "left", "right"):
            raise ValueError(f"column {self.name!r}: align must be 'left', 'right' or None, not {self.align!r}")

    def cell(self, v) -> str:
        """``v`` written for this column: a spec formats floats only (ints and text as they are); a
        function formats every present value."""
        if missing(v):
            return NA
        if callable(self.fmt):
            return self.fmt(v)
        if self.fmt and isinstance(v, float):
            return format(v, self.fmt)
        return str(v)


@dataclass
class Table:
    """``Table(["method", Column("S", ".1f")], rows, title=..., notes=[...])``; a plain string is a
    column written with str()."""
    columns: Sequence[Column | str]
    rows: list[Sequence] = field(default_factory=list)
    title: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.columns = [c if isinstance(c, Column) else Column(c) for c in self.columns]
        for i, r in enumerate(self.rows):
            if len(r) != len(self.columns):
                raise ValueError(f"table {self.title!r}: row {i} has {len(r)} cells for {len(self.columns)} columns")

    def add(self, *cells) -> "Table":
        if len(cells) != len(self.columns):
            raise ValueError(f"table {self.title!r}: a row of {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))
        return self

    @property
    def header(self) -> list[str]:
        return [c.name for c in self.columns]

    def cells(self) -> list[list[str]]:
        """Every row written by its columns' formats."""
        return [[c.cell(v) for c, v in zip(self.columns, r)] for r in self.rows]


def missing(v) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


# ----------------------------------------------------------------------------- formats shared by the reports

def number(digits: int = 3) -> Callable[[Any], str]:
    """``digits`` decimals, or ``digits`` significant digits in e-notation for |v| >= 1e4 or
    0 < |v| < 1e-3 (the paper report's numbers); ints and text as they are."""
    def fmt(v) -> str:
        if missing(v):
            return NA
        if isinstance(v, float):
            return f"{v:.{digits}g}" if abs(v) >= 1e4 or (v and abs(v) < 1e-3) else f"{v:.{digits}f}"
        return str(v)
    return fmt


def fixed(digits: int = 1, large: float | None = 1000) -> Callable[[Any], str]:
    """``digits`` decimals; no decimals from ``large`` up (the editing report's scores); ints and
    text as they are."""
    def fmt(v) -> str:
        if missing(v):
            return NA
        if isinstance(v, float):
            return f"{v:.0f}" if large is not None and abs(v) >= large else f"{v:.{digits}f}"
        return str(v)
    return fmt


def signed(digits: int = 3) -> Callable[[Any], str]:
    """A sign and ``digits`` decimals (``+0.125``), for changes."""
    def fmt(v) -> str:
        return NA if missing(v) else f"{v:+.{digits}f}"
    return fmt


def interval(fmt: Callable[[Any], str]) -> Callable[[Any], str]:
    """A ``(value, low, high)`` cell as ``value [low, high]``, or the value alone when the interval is
    missing; a dict ``{"value", "low", "high"}`` (an Interval's JSON) too."""
    def cell(v) -> str:
        if isinstance(v, dict):
            v = (v.get("value"), v.get("low"), v.get("high"))
        value, low, high = v
        if low is None and high is None:
            return fmt(value)
        return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"
    return cell


__all__ = ["NA", "Column", "Table", "fixed", "interval", "missing", "number", "signed"]
