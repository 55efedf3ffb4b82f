"""`kneuron bench ...`: benchmarks. `localization`: recall of planted neurons per attribution method."""
from __future__ import annotations

from enum import Enum
from typing import Optional

import typer

from kneuron.bench.ground_truth import DIFFICULTIES
from kneuron.bench.ground_truth import METHODS as GT_METHODS
from kneuron.cli._common import MODEL_HELP, STEPS_HELP, parse_steps

app = typer.Typer(help="benchmarks", no_args_is_help=True)


@app.command("localization")
def localization_cmd(model: str = typer.Option("smollm2-135m", "--model", "-m", help=MODEL_HELP),
                     layer: Optional[int] = typer.Option(None, "--layer", "-l", min=0, help="layer to plant in (default: 2/3 of the depth)"),
                     k: int = typer.Option(5, "--k", "-k", min=1, help="single counterfactual facts to plant (1-8 with the built-in prompts), plus a pair and a shared neuron"),
                     facts: Optional[str] = typer.Option(None, "--facts", "-f", help="facts the model knows, to draw the prompts from: a fact set; for an organism, "
                                                         "the set its facts.txt ids come from (default: en-zh for organisms, else "
                                                         "built-in English prompts)"),
                     steps: str = typer.Option("20", "--steps", callback=parse_steps, help=STEPS_HELP),
                     seed: int = typer.Option(0, "--seed", help="seed of the planting and of the random baseline"),
                     truth: str = typer.Option("planted", "--truth", help="planted (new neurons grown beside the "
                                               "model's) or injected (facts taught to sets of its own neurons, "
                                               "by difficulty; kneuron.bench.ground_truth)"),
                     difficulties: Optional[str] = typer.Option(None, "--difficulties", help="--truth injected: "
                                                                "comma-separated, of " + ", ".join(DIFFICULTIES)
                                                                + " (default: all)"),
                     methods: Optional[str] = typer.Option(None, "--methods", help="--truth injected: comma-separated "
                                                           "attribution methods (default: " + ", ".join(GT_METHODS) + ")"),
                     seeds: str = typer.Option("0", "--seeds", help="--truth injected: comma-separated seeds (each a "
                                               "new draw of facts and sets)"),
                     per_set: int = typer.Option(8, "--per-set", min=1, help="--truth injected: neurons per trained set"),
                     tune_seeds: str = typer.Option("", "--tune-seeds", help="--truth injected: seeds the mask's L1 is "
                                                    "chosen on (disjoint from --seeds; empty: its default)"),
                     out: Optional[str] = typer.Option(None, "--out", "-o", help="--truth injected: write rows.jsonl, "
                                                       "summary.json and report.md here; a rerun resumes"),
                     fresh: bool = typer.Option(False, "--fresh", help="--truth injected: start --out over"),
                     as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Plant neurons with known facts, localize each fact with ig, amig and random scores, and report
    the planted neurons' ranks among all neurons (recall@1, recall@5, median rank) and the collateral.

    Organisms (organism-clm, organism-mlm, or a directory they were saved to) are benchmarked on the
    facts they were trained on, in both languages; --facts draws the prompts from another fact set.

    --truth injected: k facts per difficulty (their wrong objects) taught to sets of the model's own
    neurons; every method scored by recall and precision at 0.1 / 0.5 / 1 % of the neurons, deletion
    damage and seconds per fact, with 95 % intervals."""
    from kneuron.cli._common import _errors, _fail, _load, _print_json
    from kneuron.bench.planted import localization_bench
    from kneuron.organisms.known import known_facts
    from kneuron.facts import ConfigError
    if truth not in ("planted", "injected"):
        _fail(f"--truth must be planted or injected, not {truth!r}")
    if truth == "injected":
        return _injected(model, facts or "en-zh", k, steps, seeds, tune_seeds, difficulties, methods, per_set, out,
                         fresh, as_json)
    try:
        h = _load(model)
        known = None
        if facts is not None:
            from kneuron.facts import load_facts
            known = known_facts(h, load_facts(facts), show=not as_json)
            if not known:
                raise ConfigError(f"none of {model}'s training facts (facts.txt) is in {facts}")
        res = localization_bench(h, k=k, layer=layer, steps=steps, seed=seed, facts=known)
    except _errors() as e:
        _fail(str(e))
    if as_json:
        return _print_json(res)
    from kneuron.report.render import show
    from kneuron.report.table import Column, Table
    two = lambda v: f"{v:.2f}"  # noqa: E731
    show(Table(["method", Column("recall@1", two), Column("recall@5", two), Column("median rank", lambda v: f"{v:g}"),
                Column("ranks", lambda v: " ".join(map(str, v)))],
               [[m, r["recall@1"], r["recall@5"], r["median_rank"], r["ranks"]] for m, r in res["methods"].items()],
               title=f"{model}: {res['n_planted']} planted facts in layer {res['layer']}, "
                     f"ranks among {res['n_neurons_total']} neurons"))
    for p in res["pairs"]:
        typer.echo(f"pair {p['prompt']!r}: ranks {p['ranks']}")
    for s in res["shared"]:
        typer.echo(f"shared {s['prompts']}: ranks {s['ranks']}")
    for lang, r in res.get("languages", {}).items():
        typer.echo(f"{lang} ({r['n']} prompts): recall@1 " + ", ".join(f"{m} {r[m]['recall@1']:.2f}"
                                                                      for m in res["methods"]))
    c = res["collateral"]
    typer.echo(f"collateral on {c['n_prompts']} control prompts: top-1 changed {c['top1_changed']:.1%}, "
               f"mean |Δ log p(gold)| {c['mean_abs_dlogp']:.4f}")


def _csv(value: str | None, allowed, what: str) -> list[str]:
    from kneuron.cli._common import _fail
    items = [x.strip() for x in (value or "").split(",") if x.strip()] or list(allowed)
    bad = [x for x in items if x not in allowed]
    if bad:
        _fail(f"--{what}: {bad[0]!r} is not one of {', '.join(allowed)}")
    return items


def _seeds(text: str, option: str) -> list[int]:
    from kneuron.cli._common import _fail
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        _fail(f"{option} must be comma-separated integers, not {text!r}")


def _injected(model, facts, k, steps, seeds, tune_seeds, difficulties, methods, per_set, out, fresh, as_json):
    """`bench localization --truth injected`: the table method x difficulty (kneuron.bench.ground_truth_run)."""
    from kneuron.attribution import BASELINES, METHODS
    from kneuron.bench.ground_truth_run import ground_truth_bench, report_md
    from kneuron.cli._common import _errors, _fail, _load, _print_json
    from kneuron.facts import load_facts
    ds = _csv(difficulties, DIFFICULTIES, "difficulties")
    auto = [f"{m}@auto" for m in METHODS]
    ms = _csv(methods, (*METHODS, *auto, *BASELINES), "methods") if methods else list(GT_METHODS)
    try:
        fs = load_facts(facts)
        h = _load(model)
        res = ground_truth_bench(h, fs, difficulties=ds, methods=ms, seeds=_seeds(seeds, "--seeds"),
                                 tune_seeds=_seeds(tune_seeds, "--tune-seeds"), k=k, per_set=per_set,
                                 steps=steps, out=out, fresh=fresh,
                                 progress=None if as_json else typer.echo)
    except _errors() as e:
        _fail(str(e))
    if as_json:
        return _print_json(res)
    typer.echo(report_md(res))
    if out:
        typer.echo(f"written: {out}/report.md, summary.json, rows.jsonl")


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
    from kneuron.cli._common import _errors, _fail
    from kneuron.bench.speed import curves as run_curves
    from kneuron.bench.speed import plot_curves, speed_bench
    log = (lambda s: typer.echo(s, err=True))
    try:
        res = speed_bench(n_prompts=prompts, repeats=repeats, steps=steps, log=log)
        if curves:
            data = {k: run_curves(k, steps=steps, log=log) for k in ("causal", "masked")}
            plot_curves(data, curves)
            res["curves"] = {"png": curves, **data}
    except _errors() as e:
        _fail(str(e))
    if _written(res, out, as_json):
        return
    for kind in ("causal", "masked"):
        r = res[kind]
        typer.echo(f"{kind}: peer {r['peer_s_per_fact']:.2f} s/fact, kneuron {r['kneuron_s_per_fact']:.2f} s/fact "
                   f"(x{r['ratio']:.1f} at equal steps); kneuron gauss-{r['gauss_nodes']} "
                   f"{r['kneuron_equal_accuracy_s_per_fact']:.2f} s/fact (x{r['ratio_equal_accuracy']:.1f} at equal accuracy)")
    for kind, m in res["memory"].items():
        typer.echo(f"{kind} peak memory: peer {m['peer_peak_rss_mb']:.0f} MB, kneuron {m['kneuron_peak_rss_mb']:.0f} MB")


def _written(res: dict, out: Optional[str], as_json: bool) -> bool:
    """Write ``res`` to ``out`` (if given) and print it as JSON (if asked); True when printed."""
    import json
    from pathlib import Path

    from kneuron.cli._common import _print_json
    if out:
        Path(out).write_text(json.dumps(res, indent=2, default=str))
    if as_json:
        _print_json(res)
    return as_json


class BenchMethod(str, Enum):
    ig = "ig"
    amig = "amig"


@app.command("memory")
def memory_cmd(model: str = typer.Option("smollm2-135m", "--model", "-m", help="smollm2-135m (or another name load_model knows), "
                                         "or gpt2-base: a base-size GPT-2 with random weights, which the peer can run"),
               lengths: str = typer.Option("8,32,128,512,1024,2048", "--lengths", help="prompt lengths in tokens, comma-separated"),
               method: BenchMethod = typer.Option(BenchMethod.ig, "--method", help="attribution method"),
               steps: int = typer.Option(20, "--steps", min=1, help="integration steps"),
               max_memory: Optional[str] = typer.Option(None, "--max-memory", help="kneuron's memory budget (default: its own default)"),
               peer: bool = typer.Option(False, "--peer", help="also run knowledge-neurons 0.0.2 (GPT-2 / BERT only: use --model gpt2-base)"),
               peer_path: Optional[str] = typer.Option(None, "--peer-path", help="a folder holding the peer's install "
                                                       "(pip install --no-deps --target DIR knowledge-neurons==0.0.2 einops)"),
               peer_lengths: Optional[str] = typer.Option(None, "--peer-lengths", help="the peer's lengths (default: --lengths)"),
               timeout: Optional[float] = typer.Option(None, "--timeout", min=1, help="seconds per point before it is given up"),
               out: Optional[str] = typer.Option(None, "--out", help="also write the JSON here"),
               as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Peak memory and time per fact against the prompt's length, each point in a fresh process
    (its own peak, the model's loading excluded), beside the prompt's own forward pass."""
    from kneuron.cli._common import _errors, _fail
    from kneuron.attribution.budget import parse_size
    from kneuron.bench.memory import memory_bench, parse_lengths
    try:
        if max_memory is not None:
            parse_size(max_memory)
        res = memory_bench(model, parse_lengths(lengths), method=method.value, steps=steps, max_memory=max_memory,
                           peer=peer, peer_path=peer_path, peer_lengths=parse_lengths(peer_lengths) if peer_lengths else None,
                           timeout=timeout, log=lambda s: typer.echo(s, err=True))
    except _errors() as e:
        _fail(str(e))
    if _written(res, out, as_json):
        return
    typer.echo(f"{model}, {method.value}, {steps} steps: side, tokens, s/fact, forward s, peak MB of the attribution "
               f"and of the forward pass (the model included, its loading excluded)")
    for r in res["points"]:
        if "error" in r:
            typer.echo(f"{r['side']:8} {r['tokens']:6}  failed: {r['error']}")
        else:
            typer.echo(f"{r['side']:8} {r['tokens']:6}  {r['s_per_fact']:8.2f}  {r['forward_s']:8.3f}  {r['peak_rss_mb']:8.0f}"
                       f"  {r['forward_peak_rss_mb']:8.0f}")


from kneuron.cli.edit import bench_editing  # noqa: E402

app.command("editing")(bench_editing)
