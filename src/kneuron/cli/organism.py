"""`kneuron organism train`: train a bilingual model organism on a fact set."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from kneuron.cli._common import OrganismKind

app = typer.Typer(help="Bilingual model organisms: small models trained on the bundled facts.", no_args_is_help=True)


@app.command()
def train(kind: OrganismKind = typer.Option("clm", "--kind", help="clm (GPT-2 architecture) or mlm (BERT architecture)"),
          out: Path = typer.Option(..., "--out", "-o", help="directory to write the organism into"),
          facts: str = typer.Option("en-zh", "--facts", "-f", help="fact set (bundled name or path)"),
          n_facts: Optional[int] = typer.Option(800, "--n-facts", min=1, help="fact ids to learn (each in every language)"),
          langs: str = typer.Option("en,zh", "--langs", help="comma-separated languages"),
          layers: int = typer.Option(4, "--layers", min=1), hidden: int = typer.Option(256, "--hidden", min=1),
          heads: int = typer.Option(4, "--heads", min=1), intermediate: int = typer.Option(1024, "--intermediate", min=1),
          vocab_size: int = typer.Option(12000, "--vocab-size", min=1), epochs: int = typer.Option(40, "--epochs", min=1),
          lr: Optional[float] = typer.Option(None, "--lr", min=0.0, help="default 2e-3 (clm), 1e-3 (mlm)"), seed: int = typer.Option(0, "--seed"),
          max_templates: Optional[int] = typer.Option(2, "--max-templates", min=1, help="templates per fact and language used in training (first ones)"),
          target_acc: float = typer.Option(0.97, "--target-acc", min=0.0, max=1.0, help="stop once every language reaches this top-1"),
          time_budget: Optional[float] = typer.Option(None, "--time-budget", min=0.0, help="stop after this many seconds"),
          name: Optional[str] = typer.Option(None, "--name", help="name in the model card (default organism-<kind>)"),
          as_json: bool = typer.Option(False, "--json", help="print the training report as JSON")):
    """Train an organism; writes weights (fp16 safetensors), tokenizer, facts.txt, training.json and a model card."""
    from kneuron.facts import ConfigError, load_facts
    from kneuron.organisms import training_facts
    from kneuron.organisms.train import OrganismConfig, model_card, save_organism, train_organism
    from kneuron.cli._common import _errors, _fail, _quiet_hf
    _quiet_hf()
    try:
        lang_list = tuple(x.strip() for x in langs.split(",") if x.strip())
        chosen = training_facts(load_facts(facts), n_facts, lang_list, seed)
        if not chosen:
            raise ConfigError(f"{facts}: no facts present in all of {', '.join(lang_list)}")
        cfg = OrganismConfig(kind=kind.value, layers=layers, hidden=hidden, heads=heads, intermediate=intermediate,
                             vocab_size=vocab_size, epochs=epochs, lr=lr, seed=seed, target_acc=target_acc,
                             max_templates=max_templates, time_budget_s=time_budget)
        log = (lambda s: typer.echo(s, err=True)) if as_json else typer.echo
        model, tok, report = train_organism(chosen, cfg, log=log)
    except _errors() as e:
        _fail(str(e))
    command = "kneuron " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    ids = sorted({f.id for f in chosen})
    save_organism(model, tok, report, out, ids, model_card(name or f"organism-{kind}", report, facts, command))
    if as_json:
        from dataclasses import asdict
        typer.echo(json.dumps(asdict(report), indent=2, ensure_ascii=False))
    else:
        typer.echo(f"wrote {out}: top-1 {report.accuracy} after {report.epochs_run} epochs, {report.seconds:.0f} s")
