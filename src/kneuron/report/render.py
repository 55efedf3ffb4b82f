"""A `Table` or a `Document` as Markdown, as self-contained HTML (markdown-it-py renders the Markdown,
figures inlined) or as a terminal table (rich): one writer per format, so report.md and report.html
cannot drift apart."""
from __future__ import annotations

import base64
import html as _html
from pathlib import Path

from kneuron.report.document import Code, Document, Figure, Heading, Paragraph
from kneuron.report.table import Table

STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
         "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
         "pre{background:#f6f6f6;padding:.6em;overflow-x:auto}figcaption{font-size:90%;color:#444}")
_RULE = {None: "---", "left": ":---", "right": "---:"}


# ----------------------------------------------------------------------------- Markdown

def markdown(x: Document | Table) -> str:
    """The Markdown of a document (parts separated by a blank line) or of one table."""
    parts = x.parts if isinstance(x, Document) else [x]
    return "\n\n".join(_md(p) for p in parts) + "\n"


def _md(p) -> str:
    if isinstance(p, Heading):
        return "#" * p.level + " " + p.text
    if isinstance(p, Paragraph):
        return p.text
    if isinstance(p, Code):
        return "```\n" + p.text + "\n```"
    if isinstance(p, Figure):
        return f"![{p.caption}]({Path(p.path).name})\n\n*{p.caption}*"
    if isinstance(p, Table):
        return _md_table(p)
    raise TypeError(f"a report part must be a Heading, Paragraph, Code, Figure or Table, not {type(p).__name__}")


def _md_table(t: Table) -> str:
    row = lambda cells: "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"  # noqa: E731
    lines = [row(t.header), "|" + "".join(_RULE[c.align] + "|" for c in t.columns)] + [row(r) for r in t.cells()]
    out = "\n".join(lines)
    if t.title:
        out = f"**{t.title}**\n\n" + out
    return out + "".join("\n\n" + n for n in t.notes)


# ----------------------------------------------------------------------------- HTML

def html(doc: Document | Table, title: str) -> str:
    """A self-contained HTML page: the document's Markdown rendered by markdown-it-py (CommonMark and
    tables; raw HTML in the text is escaped, not passed through), each figure inlined as a data URI."""
    from markdown_it import MarkdownIt
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    figures = {Path(p.path).name: Path(p.path) for p in getattr(doc, "parts", []) if isinstance(p, Figure)}
    tokens = md.parse(markdown(doc))
    for tok in tokens:
        for child in tok.children or []:
            src = child.attrGet("src") if child.type == "image" else None
            if src in figures:
                data = base64.b64encode(figures[src].read_bytes()).decode()
                child.attrSet("src", f"data:image/png;base64,{data}")
    body = md.renderer.render(tokens, md.options, {})
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{_html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + body + "</body></html>\n")


def save(doc: Document, out, title: str) -> dict:
    """``doc`` as ``out``/report.md and a self-contained ``out``/report.html; their paths."""
    out = Path(out)
    (out / "report.md").write_text(markdown(doc), encoding="utf-8")
    (out / "report.html").write_text(html(doc, title), encoding="utf-8")
    return {"md": str(out / "report.md"), "html": str(out / "report.html")}


# ----------------------------------------------------------------------------- terminal

def rich_table(t: Table):
    """The table as a `rich.table.Table` (its notes as the caption); cells are plain text, never rich markup."""
    from rich.table import Table as RichTable
    from rich.text import Text
    rt = RichTable(title=t.title or None, caption="\n".join(t.notes) or None)
    for c in t.columns:
        rt.add_column(c.name, justify=c.align or "left")
    for r in t.cells():
        rt.add_row(*map(Text, r))
    return rt


def show(t: Table, console=None) -> None:
    """Print the table on the terminal (``console``: a rich Console; default stdout)."""
    from rich.console import Console
    (console or Console()).print(rich_table(t))


__all__ = ["STYLE", "html", "markdown", "rich_table", "save", "show"]
