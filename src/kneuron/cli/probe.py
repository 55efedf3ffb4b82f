"""`kneuron probe`: what the model predicts."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from kneuron.cli._common import MODEL_HELP, _errors, _fail, _load, _print_json, _quiet_hf

def probe(prompt: str = typer.Argument(..., help="text before the answer (causal) or with [Y]/[MASK] (masked)"),
          model: str = typer.Option("smollm2-135m", "--model", "-m", help=MODEL_HELP),
          target: Optional[str] = typer.Option(None, "--target", "-t", help="gold answer to score"),
          top: int = typer.Option(10, "--top", "-k", min=1, help="how many top tokens to show"),
          as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """What the model predicts after PROMPT, and the probability of a gold --target."""
    try:
        h = _load(model)                  # before the library: a hub that cannot be reached fails first
        from kneuron.probe import answer_prob, predict
        out = {"prompt": prompt, "top": [{"token": t, "p": p} for t, p in predict(h, prompt, top)], "target": None}
        if target is not None:
            out["target"] = {"text": target, "p": answer_prob(h, prompt, target).prob}
    except _errors() as e:
        _fail(str(e))
    if as_json:
        return _print_json(out)
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"{model}: {prompt!r}")
    t.add_column("token")
    t.add_column("p", justify="right")
    for row in out["top"]:
        t.add_row(repr(row["token"]), f"{row['p']:.4f}")
    Console().print(t)
    if out["target"]:
        typer.echo(f"p({target!r}) = {out['target']['p']:.6g}")
