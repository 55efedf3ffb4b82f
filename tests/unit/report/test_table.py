"""report.table and report.render: one Table, formatted by its columns, rendered the same way as
Markdown, HTML (markdown-it-py) and a rich terminal table."""
import base64
import math

import pytest
from rich.console import Console

from kneuron.report import render
from kneuron.report.document import Document
from kneuron.report.table import NA, Column, Table, fixed, interval, number


def sample() -> Table:
    return Table(["method", Column("S", fixed(1), align="right"), Column("SR [95% CI]", interval(number(3))),
                  Column("change", "+.1%"), "note"],
                 [["rome", 89.25, (12.0, 10.5, 14.25), -0.0512, "a|b"],
                  ["kn", None, None, math.nan, "[bold]x"],
                  ["ft", 1234.5, {"value": 2.5e-4, "low": 1e-4, "high": 3e4}, 3, "<script>"]],
                 title="scores", notes=["95 % intervals."])


def test_columns_format_each_value_once():
    cells = sample().cells()
    assert cells[0] == ["rome", "89.2", "12.000 [10.500, 14.250]", "-5.1%", "a|b"]
    assert cells[1] == ["kn", NA, NA, NA, "[bold]x"]               # None and NaN are n/a in every column
    # fixed: no decimals from 1000 up; number: e-notation for tiny and large; a spec formats floats only
    assert cells[2] == ["ft", "1234", "0.00025 [0.0001, 3e+04]", "3", "<script>"]
    assert interval(fixed(1))((5.0, None, None)) == "5.0"           # no interval: the value alone
    assert number(2)(math.inf) == NA and fixed(2)(7) == "7" and number(2)(0.0) == "0.00"


def test_a_row_of_the_wrong_width_is_refused():
    with pytest.raises(ValueError, match="row 0 has 2 cells for 3 columns"):
        Table(["a", "b", "c"], [[1, 2]])
    with pytest.raises(ValueError, match="a row of 1 cells"):
        Table(["a", "b"]).add(1)
    with pytest.raises(ValueError, match="align"):
        Column("x", align="centre")


def test_markdown():
    md = render.markdown(sample())
    lines = md.splitlines()
    assert lines[0] == "**scores**" and lines[2] == "| method | S | SR [95% CI] | change | note |"
    assert lines[3] == "|---|---:|---|---|---|"
    assert lines[4] == "| rome | 89.2 | 12.000 [10.500, 14.250] | -5.1% | a\\|b |"   # a pipe cannot end the cell
    assert lines[-1] == "95 % intervals." and md.endswith("\n")


def test_html_is_the_markdown_rendered_by_markdown_it(tmp_path):
    png = tmp_path / "fig-x.png"
    png.write_bytes(b"\x89PNG fake")
    doc = (Document().heading(1, "Report").para("Chen et al., *Journey* and **bold**.").code("kneuron run --x")
           .table(sample()).figure(png, "a figure"))
    page = render.html(doc, "a <title>")
    assert page.startswith("<!DOCTYPE html>") and "<title>a &lt;title&gt;</title>" in page
    assert "<h1>Report</h1>" in page and "<em>Journey</em>" in page and "<strong>bold</strong>" in page
    assert "**" not in page and "<pre><code>kneuron run --x\n</code></pre>" in page
    assert "<th>method</th>" in page and '<td style="text-align:right">89.2</td>' in page
    assert "<td>a|b</td>" in page and "&lt;script&gt;" in page and "<script>" not in page
    assert f'src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}"' in page
    assert 'src="fig-x.png"' not in page
    md = render.markdown(doc)
    assert "![a figure](fig-x.png)\n\n*a figure*" in md and "```\nkneuron run --x\n```" in md
    paths = render.save(doc, tmp_path, "t")
    assert (tmp_path / "report.md").read_text() == md and (tmp_path / "report.html").read_text() == render.html(doc, "t")
    assert paths == {"md": str(tmp_path / "report.md"), "html": str(tmp_path / "report.html")}


def test_rich_shows_the_same_cells_as_plain_text():
    console = Console(record=True, width=200, color_system=None)
    render.show(sample(), console)
    text = console.export_text()
    assert "scores" in text and "95 % intervals." in text
    for row in sample().cells():
        for c in row:
            assert c in text, c                  # "[bold]x" is text, not rich markup
    rt = render.rich_table(sample())
    assert [c.justify for c in rt.columns] == ["left", "right", "left", "left", "left"]


def test_a_document_part_must_be_known():
    with pytest.raises(TypeError, match="report part"):
        render.markdown(Document(parts=["text"]))
