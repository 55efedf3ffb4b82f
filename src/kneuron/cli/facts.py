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


@app.command()
def known(model: str = typer.Option(..., "--model", "-m", help="the model to ask (any: bundled name, directory, "
                                    ".gguf file or hub id)"),
          facts: str = typer.Option("en-zh", "--facts", "-f", help="bundled set (demo-en, en-zh) or fact file"),
          langs: Optional[str] = typer.Option(None, "--langs", help="languages, comma-separated (default: all)"),
          limit: Optional[int] = typer.Option(None, "--limit", min=1, help="only N fact ids (in every language "
                                              "asked), round-robin over relations, as reproduce takes them"),
          k: int = typer.Option(10, "--k", min=1, help="known: the gold answer's first token in the top K"),
          out: Optional[str] = typer.Option(None, "--out", "-o", help="also write the JSON (every fact's "
                                            "rank and p) to this file"),
          as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Which facts the model knows by the gold answer's rank (kneuron.organisms.known), per relation and
    language: facts, known (top-K), top-1, median rank; totals per language and the ids known in all."""
    from kneuron.cli._common import _errors, _fail, _load, _print_json
    from kneuron.facts import load_facts
    from kneuron.organisms.known import known_report
    from kneuron.paper.reproduce import spread_ids
    from kneuron.store import write_json
    try:
        fs = load_facts(facts)                              # a bad fact set fails before the model loads
        lang_list = tuple(x.strip() for x in langs.split(",") if x.strip()) if langs else \
            tuple(dict.fromkeys(f.lang for f in fs))
        fs = [f for f in fs if f.lang in lang_list]
        if limit is not None:
            ids = set(spread_ids(fs, lang_list, limit))
            fs = [f for f in fs if f.id in ids]
        if not fs:
            from kneuron.errors import ConfigError
            raise ConfigError(f"{facts}: no facts in {', '.join(lang_list)}")
        h = _load(model)
        rep = known_report(h, fs, k, show=not as_json)
        if out:
            write_json(out, rep, indent=2, ensure_ascii=False)
    except _errors() as e:
        _fail(str(e))
    if as_json:
        return _print_json(rep)
    from kneuron.report.render import show
    from kneuron.report.table import Column, Table
    s = rep["summary"]
    n = lambda name, fmt=None: Column(name, fmt, align="right")  # noqa: E731
    t = Table(["relation", "lang", n("facts"), n(f"known (top-{k})"), n("top-1"), n("median rank", lambda v: f"{v:g}")],
              title=f"{model} on {facts}: the gold answer's first token in the top {k}")
    for rel, per in s["relations"].items():
        for lg, c in per.items():
            t.add(rel, lg, c["facts"], c["known"], c["top1"], c["median_rank"])
    for lg, c in s["languages"].items():
        t.add("total", lg, c["facts"], c["known"], c["top1"], c["median_rank"])
    show(t)
    typer.echo(f"known in all languages: {s['known_in_all_languages']} of {s['ids']} fact ids")
