"""kneuron's command line: a thin layer over the library."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer

os.environ.setdefault("HF_HUB_OFFLINE", "1")          # kneuron never downloads
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Find, test and use the knowledge neurons of transformer language models.")
MODEL_HELP = "bundled name (smollm2-135m), local directory, .gguf file, or a hub id already in the local cache"


def _fail(msg: str, code: int = 2):
    typer.echo(f"kneuron: error: {msg}", err=True)
    raise typer.Exit(code)


def _errors():
    from ..facts import FactError
    from ..models.load import ModelLoadError
    from ..models.sites import SiteError
    from ..models.targets import QueryError
    from ..distributed import EngineError
    from ..store import RunStoreError
    return (FactError, ModelLoadError, SiteError, QueryError, RunStoreError, EngineError, ValueError, FileNotFoundError)


def _quiet_hf():
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import warnings
    warnings.filterwarnings("ignore")


def _load(model: str, site: Optional[str] = None, device: Optional[str] = None):
    from ..models import load_model
    _quiet_hf()
    if device is None:
        import torch
        device = "cuda" if torch.cuda.is_available() else None
    return load_model(model, site=site, device=device) if device else load_model(model, site=site)


def _print_json(obj):
    typer.echo(json.dumps(obj, ensure_ascii=False, indent=2))


@app.command()
def probe(prompt: str = typer.Argument(..., help="text before the answer (causal) or with [Y]/[MASK] (masked)"),
          model: str = typer.Option("smollm2-135m", "--model", "-m", help=MODEL_HELP),
          target: Optional[str] = typer.Option(None, "--target", "-t", help="gold answer to score"),
          top: int = typer.Option(10, "--top", "-k", help="how many top tokens to show"),
          as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """What the model predicts after PROMPT, and the probability of a gold --target."""
    from ..probe import answer_prob, predict
    try:
        if top < 1:
            raise ValueError(f"--top must be >= 1, got {top}")
        h = _load(model)
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


@app.command()
def locate(facts: str = typer.Option(..., "--facts", "-f", help="bundled set (demo-en, en-zh), canonical JSONL file, or mLAMA / X-FACTR / ParaRel directory"),
           out: Path = typer.Option(..., "--out", "-o", help="run directory to write"),
           model: str = typer.Option("smollm2-135m", "--model", "-m", help=MODEL_HELP),
           lang: Optional[str] = typer.Option(None, "--lang", help="only facts in this language"),
           method: str = typer.Option("ig", "--method", help="ig (Dai et al.) or amig (Chen et al.)"),
           steps: int = typer.Option(20, "--steps", help="integration steps"),
           threshold: Optional[float] = typer.Option(None, "--threshold", help="tau: keep score > tau x max (default: en 0.3, zh 0.2, others 0.3)"),
           top_k: Optional[int] = typer.Option(None, "--top-k", help="keep at most this many neurons per prompt"),
           refine_p: float = typer.Option(0.3, "--refine-p", help="with several templates: keep neurons found in > p of them"),
           objective: str = typer.Option("prob", "--objective", help="prob (the paper) or logprob"),
           rule: str = typer.Option("left", "--rule", help="integration rule: left, right, linspace, midpoint, trapezoid, gauss"),
           paths: str = typer.Option("mean", "--paths", help="amig: mean (released code) or per-word (paper Eqs. 3-5)"),
           prefactor: str = typer.Option("activation", "--prefactor", help="amig: activation (paper Eq. 4) or difference (proper IG)"),
           batch_size: Optional[int] = typer.Option(None, "--batch-size", help="rows per batch (speed only)"),
           prompts_per_batch: int = typer.Option(1, "--prompts-per-batch", help="prompts of several facts sharing batches (speed only; for GPUs)"),
           precision: str = typer.Option("fp32", "--precision", help="fp32, or bf16 / fp16 autocast (for GPUs)"),
           device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if present)"),
           limit: Optional[int] = typer.Option(None, "--limit", help="only the first N facts"),
           site: Optional[str] = typer.Option(None, "--site", help="name the output projection by hand, e.g. mlp.down_proj"),
           skip_invalid_templates: bool = typer.Option(False, "--skip-invalid-templates", help="skip templates a causal model cannot use instead of failing"),
           resume: bool = typer.Option(False, "--resume", help="continue an interrupted run in --out"),
           engine: str = typer.Option("local", "--engine", help="local (this process) or ray (facts sharded over Ray workers)"),
           workers: int = typer.Option(2, "--workers", help="--engine ray: number of workers (one model each)"),
           as_json: bool = typer.Option(False, "--json", help="print a JSON summary")):
    """Localize the knowledge neurons of each fact into a resumable run directory."""
    from ..facts import fact_file_hash, load_facts, resolve_facts
    from ..localize import LocateConfig
    from ..localize import locate as run_locate
    opts = {"paths": paths, "prefactor_kind": prefactor} if method == "amig" else {}
    cfg = LocateConfig(method=method, steps=steps, threshold=threshold, top_k=top_k, refine_p=refine_p,
                       objective=objective, rule=rule, method_options=opts, batch_size=batch_size, precision=precision,
                       prompts_per_batch=prompts_per_batch)
    store = None
    try:
        fs = load_facts(facts, lang=lang)                        # the one entry point: names, files, directories
        facts = resolve_facts(facts)
        cfg.validate()                                           # bad options fail before loading the model
        if limit is not None and limit < 1:
            raise ValueError(f"--limit must be >= 1, got {limit}")
        if engine not in ("local", "ray"):
            raise ValueError(f"--engine must be local or ray, not {engine!r}")
        if engine == "ray":
            from ..distributed import locate_ray
            _quiet_hf()
            store = locate_ray(model, fs, cfg, out, resume=resume, facts_path=str(facts.resolve()),
                               facts_hash=fact_file_hash(facts), lang=lang, limit=limit,
                               skip_invalid_templates=skip_invalid_templates, workers=workers, site=site,
                               show_progress=not as_json)
        else:
            h = _load(model, site, device)
            store = run_locate(h, fs, cfg, out, resume=resume, facts_path=str(facts.resolve()),
                               facts_hash=fact_file_hash(facts), lang=lang, limit=limit,
                               skip_invalid_templates=skip_invalid_templates, show_progress=not as_json)
    except KeyboardInterrupt:
        _fail(f"interrupted; every finished fact is kept in {out}: continue with --resume", 130)
    except _errors() as e:
        _fail(str(e))
    ft = store.facts()
    n = ft.num_rows
    summary = {"out": str(out), "n_facts": n, "new_facts": store.n_new, "seconds": round(store.seconds, 2),
               "seconds_per_fact": round(store.seconds / max(store.n_new, 1), 3),
               "mean_neurons_per_fact": (sum(ft.column("n_neurons").to_pylist()) / n) if n else 0.0}
    if as_json:
        return _print_json(summary)
    typer.echo(f"{n} facts in {out} ({store.n_new} new, {summary['seconds_per_fact']} s/fact); "
               f"{summary['mean_neurons_per_fact']:.1f} knowledge neurons per fact")


@app.command()
def intervene(run: Path = typer.Option(..., "--run", "-r", help="run directory made by `kneuron locate`"),
              op: str = typer.Option(..., "--op", help="suppress (set to 0) or enhance (x2)"),
              facts: Optional[Path] = typer.Option(None, "--facts", help="fact file, if it moved since the run"),
              as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Suppress or enhance each fact's knowledge neurons and show its answer probability before/after."""
    from ..experiments.localization import edit_effects, load_run
    if op not in ("suppress", "enhance"):
        _fail(f"--op must be suppress or enhance, not {op!r}")
    try:
        rc = load_run(run, facts)
        h = _load(rc.store.meta["model"])
        rows = edit_effects(h, rc, ops=(op,), show_progress=not as_json)
    except _errors() as e:
        _fail(str(e))
    out = [{"fact_id": r["fact_id"], "lang": r["lang"], "n_neurons": r["n_neurons"], "p_before": r["p_before"],
            "p_after": r[f"p_{op}"], "relative_change": r[f"delta_{op}"],
            "unrelated_relative_change": (r[f"p_{op}_unrelated"] - r["p_before_unrelated"]) / r["p_before_unrelated"]}
           for r in rows]
    if as_json:
        return _print_json({"op": op, "facts": out})
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"{op} the knowledge neurons ({run})")
    for c in ("fact", "lang", "neurons", "p before", "p after", "change", "unrelated change"):
        t.add_column(c)
    for r in out:
        t.add_row(r["fact_id"], r["lang"], str(r["n_neurons"]), f"{r['p_before']:.4g}", f"{r['p_after']:.4g}",
                  f"{r['relative_change']:+.1%}", f"{r['unrelated_relative_change']:+.1%}")
    Console().print(t)


@app.command()
def evaluate(run: Path = typer.Option(..., "--run", "-r", help="run directory made by `kneuron locate`"),
             facts: Optional[Path] = typer.Option(None, "--facts", help="fact file, if it moved since the run"),
             seed: int = typer.Option(42, "--seed", help="seed of the unrelated-fact draw"),
             outlier_cut: bool = typer.Option(False, "--outlier-cut", help="the paper's cuts: drop suppress change > 20, enhance >= 250"),
             as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """The paper's Table 1 metric for a run: related vs unrelated probability change, SR."""
    from ..experiments.localization import evaluate as run_eval
    from ..experiments.localization import load_run
    try:
        meta = load_run(run, facts).store.meta
        h = _load(meta["model"])
        t, extra = run_eval(h, run, facts, seed=seed, outlier_cut=outlier_cut, show_progress=not as_json)
    except _errors() as e:
        _fail(str(e))
    j = {**t.to_json(), **extra}
    if as_json:
        return _print_json(j)
    from rich.console import Console
    from rich.table import Table
    tab = Table(title=f"Table 1 — {meta['model']}, {meta['method']}, {j['n_facts']} facts (dropped {j['dropped']})")
    for c in ("op", "related Δp (mean, 95% CI)", "unrelated Δp (mean, 95% CI)", "related median", "SR_x"):
        tab.add_column(c)
    for op in ("suppress", "enhance"):
        o = j[op]
        ci = lambda d: f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
        tab.add_row(op, ci(o["related_mean"]), ci(o["unrelated_mean"]), f"{o['related_median']['value']:+.3f}",
                    "n/a" if o["sr"] is None else f"{o['sr']:.3f}")
    Console().print(tab)
    typer.echo(f"SR = |SR_enhance| + |SR_suppress| = {'n/a' if j['sr'] is None else round(j['sr'], 3)}")


@app.command()
def likn(facts: str = typer.Option(..., "--facts", "-f", help="fact set with the same fact ids in several languages (e.g. en-zh)"),
         out: Path = typer.Option(..., "--out", "-o", help="run directory to write"),
         model: str = typer.Option("smollm2-135m", "--model", "-m", help=MODEL_HELP),
         langs: str = typer.Option("en,zh", "--langs", help="comma-separated languages to intersect"),
         method: str = typer.Option("amig", "--method", help="ig or amig"),
         steps: int = typer.Option(20, "--steps", help="integration steps"),
         limit: Optional[int] = typer.Option(None, "--limit", help="only the first N fact ids"),
         skip_invalid_templates: bool = typer.Option(False, "--skip-invalid-templates", help="skip templates a causal model cannot use"),
         resume: bool = typer.Option(False, "--resume", help="continue an interrupted run in --out"),
         as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Module 2: localize each fact in every language (tau per language), then intersect the sets."""
    from ..facts import fact_file_hash, load_facts, resolve_facts
    from ..likn import likn_from_run
    from ..localize import LocateConfig
    from ..localize import locate as run_locate
    lang_list = tuple(x.strip() for x in langs.split(",") if x.strip())
    try:
        if limit is not None and limit < 1:
            raise ValueError(f"--limit must be >= 1, got {limit}")
        fs = [f for f in load_facts(facts) if f.lang in lang_list]
        cfg = LocateConfig(method=method, steps=steps)
        cfg.validate()
        h = _load(model)
        from ..experiments.plant_bench import organism_facts
        known = organism_facts(h, facts)
        if known:                  # an organism only knows (and can spell) the facts it was trained on
            known_ids = {f.id for f in known}
            fs = [f for f in fs if f.id in known_ids]
            typer.echo(f"{model} is an organism: using the {len(known_ids)} fact ids it was trained on", err=True)
        ids = list(dict.fromkeys(f.id for f in fs))[:limit]
        keep = set(ids)
        fs = [f for f in fs if f.id in keep]
        if not fs:
            raise ValueError(f"{facts}: no facts in {', '.join(lang_list)}")
        path = resolve_facts(facts)
        run_locate(h, fs, cfg, out, resume=resume, facts_path=str(Path(path).resolve()), facts_hash=fact_file_hash(path),
                   lang=",".join(lang_list), skip_invalid_templates=skip_invalid_templates, show_progress=not as_json)
        res = likn_from_run(out, lang_list)
    except KeyboardInterrupt:
        _fail(f"interrupted; every finished fact is kept in {out}: continue with --resume", 130)
    except _errors() as e:
        _fail(str(e))
    j = res.to_json()
    if as_json:
        return _print_json(j)
    typer.echo(f"{j['n_with_likn']} of {j['n_facts']} facts ({j['share_nonempty']:.1%}) have language-independent "
               f"neurons ({j['mean_likn_per_fact']:.2f} per fact); by layer: {j['layers']}; in {out}/likn.parquet")


@app.command()
def dkn(run: Path = typer.Option(..., "--run", "-r", help="run directory made by `kneuron locate` (AMIG in the paper)"),
        top_n: int = typer.Option(20, "--top-n", help="candidates: the top-n knowledge neurons of each fact (0: all)"),
        t_low: float = typer.Option(0.2, "--t-low", help="a proper part of a group may cost at most this"),
        t_high: float = typer.Option(0.25, "--t-high", help="the whole group must cost more than this"),
        absolute: bool = typer.Option(False, "--absolute", help="costs as absolute drops of p (paper text), not relative (released code)"),
        max_size: int = typer.Option(2, "--max-size", help="largest group size (2 = Algorithm 1)"),
        max_evals: int = typer.Option(5000, "--max-evals", help="ablations per fact at most"),
        batch_size: int = typer.Option(64, "--batch-size", help="ablations per forward pass (speed only)"),
        facts: Optional[Path] = typer.Option(None, "--facts", help="fact file, if it moved since the run"),
        as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Module 3: degenerate knowledge neurons of each fact in a run (resumable; dkn.jsonl, dkn.json)."""
    from ..dkn import DKNConfig, dkn_from_run
    from ..experiments.localization import load_run
    cfg = DKNConfig(top_n=top_n or None, t_low=t_low, t_high=t_high, relative=not absolute, max_size=max_size,
                    max_evals=max_evals, batch_size=batch_size)
    try:
        cfg.validate()
        h = _load(load_run(run, facts).store.meta["model"])
        res = dkn_from_run(h, run, cfg, facts, show_progress=not as_json)
    except KeyboardInterrupt:
        _fail(f"interrupted; every finished fact is kept in {run}/dkn.jsonl: run the same command again to continue", 130)
    except _errors() as e:
        _fail(str(e))
    if as_json:
        return _print_json(res["summary"])
    for lang, x in res["summary"]["langs"].items():
        typer.echo(f"{lang}: {x['n_with_dkn']} of {x['n_facts']} facts have degenerate groups "
                   f"({x['groups_per_fact']:.2f} per fact, sizes {x['sizes'] or '-'}); "
                   f"{x['forward_passes_per_fact']:.1f} forward passes and {x['ablations_per_fact']:.0f} ablations per fact")
    typer.echo(f"groups in {run}/dkn.jsonl, summary in {run}/dkn.json")


@app.command()
def reproduce(model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
              facts: str = typer.Option("en-zh", "--facts", "-f", help="fact set with the same ids in several languages"),
              out: Path = typer.Option(..., "--out", "-o", help="directory for every run, table, figure and the report"),
              langs: str = typer.Option("en,zh", "--langs", help="comma-separated languages (two for Module 2 / Table 2)"),
              limit: Optional[int] = typer.Option(None, "--limit", help="fact ids to use (each in every language), spread over relations"),
              relations: Optional[int] = typer.Option(None, "--relations", help="only the first N relations of the fact set"),
              steps: int = typer.Option(20, "--steps", help="integration steps"),
              prompts: int = typer.Option(1, "--prompts", help="templates per fact (the paper: 1); 0 = all"),
              dkn_max_size: int = typer.Option(2, "--dkn-max-size", help="largest degenerate group (2 = Algorithm 1)"),
              dkn_absolute: bool = typer.Option(False, "--dkn-absolute", help="DKN costs as absolute drops of p"),
              n_boot: int = typer.Option(1000, "--n-boot", help="bootstrap resamples for the intervals"),
              resume: bool = typer.Option(False, "--resume", help="continue an interrupted reproduce in --out"),
              engine: str = typer.Option("local", "--engine", help="local or ray (Module 1 sharded over Ray workers)"),
              workers: int = typer.Option(2, "--workers", help="--engine ray: number of workers"),
              prompts_per_batch: int = typer.Option(1, "--prompts-per-batch", help="Module 1: prompts of several facts sharing batches (speed only; for GPUs)")):
    """Modules 1-3 and Tables 1-3 of the paper end to end; writes report.md and report.html in --out."""
    from ..dkn import DKNConfig
    from ..reproduce import ReproduceConfig
    from ..reproduce import reproduce as run_reproduce
    cfg = ReproduceConfig(model=model, facts=facts, langs=tuple(x.strip() for x in langs.split(",") if x.strip()),
                          limit=limit, relations=relations, steps=steps, n_boot=n_boot, prompts=prompts or None,
                          dkn=DKNConfig(max_size=dkn_max_size, relative=not dkn_absolute))
    try:
        cfg.validate()
        load_facts_check(facts)
        h = _load(model)
        if prompts_per_batch < 1:
            raise ValueError(f"--prompts-per-batch must be >= 1, got {prompts_per_batch}")
        res = run_reproduce(h, cfg, out, resume=resume, log=lambda s: typer.echo(s, err=True), engine=engine,
                            workers=workers, prompts_per_batch=prompts_per_batch)
    except KeyboardInterrupt:
        _fail(f"interrupted; finished work is kept in {out}: continue with --resume", 130)
    except _errors() as e:
        _fail(str(e))
    typer.echo(f"report: {res['report']['md']} and {res['report']['html']}")


def load_facts_check(facts: str) -> None:
    """Fail on a bad fact file before the model is loaded."""
    from ..facts import load_facts
    load_facts(facts)


from .facts import app as _facts_app  # noqa: E402

app.add_typer(_facts_app, name="facts")


from .bench import app as _bench_app  # noqa: E402
from .organism import app as _organism_app  # noqa: E402
from .plant import plant_cmd  # noqa: E402

app.add_typer(_organism_app, name="organism")
app.add_typer(_bench_app, name="bench")
app.command("plant")(plant_cmd)


def main():
    app()


if __name__ == "__main__":
    main()
