"""`kneuron plant`: plant counterfactual facts as new neurons of one layer and report them."""
from __future__ import annotations

from typing import Optional

import typer

from kneuron.cli._common import MODEL_HELP


def plant_cmd(model: str = typer.Option("smollm2-135m", "--model", "-m", help=MODEL_HELP),
              layer: Optional[int] = typer.Option(None, "--layer", "-l", min=0, help="layer to plant in (default: 2/3 of the depth)"),
              k: int = typer.Option(3, "--k", "-k", min=1, help="how many single counterfactual facts (1-8)"),
              pair: bool = typer.Option(False, "--pair", help="also plant a degenerate pair (two neurons, one fact)"),
              shared: bool = typer.Option(False, "--shared", help="also plant one neuron keyed on two prompts of a fact"),
              seed: int = typer.Option(0, "--seed", help="seed of the planting"),
              as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Plant K counterfactual facts as new neurons and report p(new object) before/after and the
    collateral on control prompts of other facts. Organisms: counterfactual versions of facts they were
    trained on (English and Chinese); other models: built-in English facts (demo-en subjects)."""
    from kneuron.cli._common import _errors, _fail, _load, _print_json
    from kneuron.plant.counterfactuals import plant_counterfactuals, plant_fact_counterfactuals
    from kneuron.organisms import organism_facts
    try:
        h = _load(model)
        known = organism_facts(h)
        if known:
            planted = plant_fact_counterfactuals(h, known, k=k, layer=layer, pair=pair, shared=shared, seed=seed)[0]
        else:
            planted = plant_counterfactuals(h, k=k, layer=layer, pair=pair, shared=shared, seed=seed)
    except _errors() as e:
        _fail(str(e))
    out = planted.to_json()
    if as_json:
        return _print_json(out)
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"{model}: planted in layer {planted.layer} (new neurons {planted.n_old}..{planted.handle.n_neurons - 1})")
    for c in ("prompt", "new object", "neurons", "p before", "p after", "top-1"):
        t.add_column(c)
    for f in planted.facts:
        t.add_row(f.spec.prompt, repr(f.spec.new_object), ", ".join(str(i) for _, i in f.neurons),
                  f"{f.p_before:.4f}", f"{f.p_after:.4f}", "yes" if f.top1 else "no")
    Console().print(t)
    c = planted.collateral
    typer.echo(f"collateral on {c.n_prompts} control prompts: top-1 changed {c.top1_changed:.1%}, "
               f"mean |Δ log p(gold)| {c.mean_abs_dlogp:.4f} (max {c.max_abs_dlogp:.3f})")
