"""`kneuron facts ...`: look at fact sets (bundled names, canonical files, mLAMA / X-FACTR / ParaRel directories)."""
from __future__ import annotations

import json
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True, help="Inspect fact sets: bundled (demo-en, en-zh), JSONL files or "
                                             "mLAMA / X-FACTR / ParaRel directories.")


@app.command()
def stats(name_or_path: str = typer.Argument(..., help="bundled set (demo-en, en-zh), .jsonl file or directory"),
          lang: Optional[str] = typer.Option(None, "--lang", help="only facts in this language"),
          as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Facts per relation and language (and templates, aligned ids, skipped input)."""
    from kneuron.facts import KneuronError, load_factset
    from kneuron.facts import stats as count
    try:
        fs = load_factset(name_or_path, lang=lang)
    except KneuronError as e:            # a bad fact set, or the 'data' extra missing
        typer.echo(f"kneuron: error: {e}", err=True)
        raise typer.Exit(2)
    out = {**count(fs.facts), "layout": fs.layout, "skipped": fs.report.to_json()}
    if as_json:
        typer.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    langs = list(out["languages"])
    t = Table(title=f"{name_or_path} ({fs.layout}): {len(out['relations'])} relations")
    t.add_column("relation")
    for lg in langs:
        t.add_column(lg, justify="right")
    for rel, per in out["relations"].items():
        t.add_row(rel, *(str(per[lg]) for lg in langs))
    t.add_row("total", *(str(out["languages"][lg]) for lg in langs), style="bold")
    t.add_row("templates", *(str(out["n_templates"][lg]) for lg in langs))
    Console().print(t)
    typer.echo(f"ids in every language: {out['aligned_ids']}")
    for line in fs.report.lines():
        typer.echo(f"skipped: {line}")
