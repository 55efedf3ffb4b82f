"""`kneuron bench ...`: benchmarks. `localization`: recall of planted neurons per attribution method."""
from __future__ import annotations

from typing import Optional

import typer

from kneuron.cli._common import MODEL_HELP

app = typer.Typer(help="benchmarks", no_args_is_help=True)


@app.command("localization")
def localization_cmd(model: str = typer.Option("smollm2-135m", "--model", "-m", help=MODEL_HELP),
                     layer: Optional[int] = typer.Option(None, "--layer", "-l", min=0, help="layer to plant in (default: 2/3 of the depth)"),
                     k: int = typer.Option(5, "--k", "-k", min=1, help="single counterfactual facts to plant (1-8 with the built-in prompts), plus a pair and a shared neuron"),
                     facts: Optional[str] = typer.Option(None, "--facts", "-f", help="facts the model knows, to draw the prompts from: a fact set; for an organism, "
                                                         "the set its facts.txt ids come from (default: en-zh for organisms, else "
                                                         "built-in English prompts)"),
                     steps: int = typer.Option(20, "--steps", min=1, help="integration steps"),
                     seed: int = typer.Option(0, "--seed", help="seed of the planting and of the random baseline"),
                     as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Plant neurons with known facts, localize each fact with ig, amig and random scores, and report
    the planted neurons' ranks among all neurons (recall@1, recall@5, median rank) and the collateral.

    Organisms (organism-clm, organism-mlm, or a directory they were saved to) are benchmarked on the
    facts they were trained on, in both languages; --facts draws the prompts from another fact set."""
    from kneuron.cli._common import _errors, _fail, _load, _print_json
    from kneuron.benchmarks.planted import localization_bench
    from kneuron.organisms import organism_facts
    from kneuron.facts import ConfigError
    try:
        h = _load(model)
        known = None
        if facts is not None:
            from kneuron.facts import load_facts
            known = organism_facts(h, facts)
            if known == []:
                raise ConfigError(f"none of {model}'s training facts (facts.txt) is in {facts}")
            known = load_facts(facts) if known is None else known
        out = localization_bench(h, k=k, layer=layer, steps=steps, seed=seed, facts=known)
    except _errors() as e:
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


@app.command("speed")
def speed_cmd(prompts: int = typer.Option(4, "--prompts", min=1, help="prompts per model (11 words each)"),
              repeats: int = typer.Option(2, "--repeats", min=1, help="alternating repeats of each side"),
              steps: int = typer.Option(20, "--steps", min=1, help="integration steps (the peer's default is 20)"),
              curves: Optional[str] = typer.Option(None, "--curves", help="also measure scaling curves and save this PNG"),
              out: Optional[str] = typer.Option(None, "--out", help="also write the JSON here"),
              as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """kneuron beside the peer package knowledge-neurons 0.0.2 on base-size GPT-2 and BERT (random
    weights): facts per second at equal steps and at equal accuracy, peak memory, score agreement.
    Needs the peer: pip install --no-deps knowledge-neurons==0.0.2 einops (`make bench` does it)."""
    import json as _json

    from kneuron.cli._common import _errors, _fail, _print_json
    from kneuron.benchmarks.speed import curves as run_curves
    from kneuron.benchmarks.speed import plot_curves, speed_bench
    log = (lambda s: typer.echo(s, err=True))
    try:
        res = speed_bench(n_prompts=prompts, repeats=repeats, steps=steps, log=log)
        if curves:
            data = {k: run_curves(k, steps=steps, log=log) for k in ("causal", "masked")}
            plot_curves(data, curves)
            res["curves"] = {"png": curves, **data}
    except _errors() as e:
        _fail(str(e))
    if out:
        from pathlib import Path
        Path(out).write_text(_json.dumps(res, indent=2, default=str))
    if as_json:
        return _print_json(res)
    for kind in ("causal", "masked"):
        r = res[kind]
        typer.echo(f"{kind}: peer {r['peer_s_per_fact']:.2f} s/fact, kneuron {r['kneuron_s_per_fact']:.2f} s/fact "
                   f"(x{r['ratio']:.1f} at equal steps); kneuron gauss-{r['gauss_nodes']} "
                   f"{r['kneuron_equal_accuracy_s_per_fact']:.2f} s/fact (x{r['ratio_equal_accuracy']:.1f} at equal accuracy)")
    for kind, m in res["memory"].items():
        typer.echo(f"{kind} peak memory: peer {m['peer_peak_rss_mb']:.0f} MB, kneuron {m['kneuron_peak_rss_mb']:.0f} MB")
