"""`kneuron bench ...`: benchmarks. `localization`: recall of planted neurons per attribution method."""
from __future__ import annotations

from typing import Optional

import typer

app = typer.Typer(help="benchmarks", no_args_is_help=True)
MODEL_HELP = "bundled name (smollm2-135m), local directory, .gguf file, or a hub id already in the local cache"


@app.command("localization")
def localization_cmd(model: str = typer.Option("smollm2-135m", "--model", "-m", help=MODEL_HELP),
                     layer: Optional[int] = typer.Option(None, "--layer", "-l", help="layer to plant in (default: 2/3 of the depth)"),
                     k: int = typer.Option(5, "--k", "-k", help="single counterfactual facts to plant (1-8 with the built-in prompts), plus a pair and a shared neuron"),
                     facts: Optional[str] = typer.Option(None, "--facts", "-f", help="facts the model knows, to draw the prompts from: a fact set; for an organism, "
                                                         "the set its facts.txt ids come from (default: en-zh for organisms, else "
                                                         "built-in English prompts)"),
                     steps: int = typer.Option(20, "--steps", help="integration steps"),
                     seed: int = typer.Option(0, "--seed", help="seed of the planting and of the random baseline"),
                     as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Plant neurons with known facts, localize each fact with ig, amig and random scores, and report
    the planted neurons' ranks among all neurons (recall@1, recall@5, median rank) and the collateral.

    Organisms (organism-clm, organism-mlm, or a directory they were saved to) are benchmarked on the
    facts they were trained on, in both languages; --facts draws the prompts from another fact set."""
    from . import _errors, _fail, _load, _print_json
    from ..experiments.plant_bench import localization_bench, organism_facts
    from ..plant import PlantError
    try:
        if steps < 1:
            raise ValueError(f"--steps must be >= 1, got {steps}")
        h = _load(model)
        known = None
        if facts is not None:
            from ..facts import load_facts
            known = organism_facts(h, facts)
            if known == []:
                raise ValueError(f"none of {model}'s training facts (facts.txt) is in {facts}")
            known = load_facts(facts) if known is None else known
        out = localization_bench(h, k=k, layer=layer, steps=steps, seed=seed, facts=known)
    except (PlantError, *_errors()) as e:
        _fail(str(e))
    if as_json:
        return _print_json(out)
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"{model}: {out['n_planted']} planted facts in layer {out['layer']}, "
                    f"ranks among {out['n_neurons_total']} neurons")
    for c in ("method", "recall@1", "recall@5", "median rank", "ranks"):
        t.add_column(c)
    for m, r in out["methods"].items():
        t.add_row(m, f"{r['recall@1']:.2f}", f"{r['recall@5']:.2f}", f"{r['median_rank']:g}", " ".join(map(str, r["ranks"])))
    Console().print(t)
    for p in out["pairs"]:
        typer.echo(f"pair {p['prompt']!r}: ranks {p['ranks']}")
    for s in out["shared"]:
        typer.echo(f"shared {s['prompts']}: ranks {s['ranks']}")
    for lang, r in out.get("languages", {}).items():
        typer.echo(f"{lang} ({r['n']} prompts): recall@1 " + ", ".join(f"{m} {r[m]['recall@1']:.2f}"
                                                                      for m in out["methods"]))
    c = out["collateral"]
    typer.echo(f"collateral on {c['n_prompts']} control prompts: top-1 changed {c['top1_changed']:.1%}, "
               f"mean |Δ log p(gold)| {c['mean_abs_dlogp']:.4f}")
