"""`kneuron locate | intervene | evaluate`: make a run and test its neurons."""
from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Optional

import typer

from kneuron.attribution import OBJECTIVES, PRECISIONS, RULES
from kneuron.attribution.methods import PATHS, PREFACTORS
from kneuron.neurons import SELECTS
from kneuron.cli._common import (MODEL_HELP, STEPS_HELP, Engine, Method, _errors, _executor, _fail, _load,
                                 _one_line_errors, _print_json, _quiet_hf, parse_steps)

# choices of `locate`'s options, from the library's own lists
Rule = StrEnum("Rule", {r: r for r in RULES})
Objective = StrEnum("Objective", {o: o for o in OBJECTIVES})
PathsChoice = StrEnum("PathsChoice", {p: p for p in PATHS})
Prefactor = StrEnum("Prefactor", {p: p for p in PREFACTORS})
Precision = StrEnum("Precision", {p: p for p in PRECISIONS})
Select = StrEnum("Select", {s: s for s in SELECTS})

SKIP_HELP = ("skip each fact that cannot be used (no template a causal model can use, an answer the tokenizer "
             "cannot encode, a prompt longer than the model's context) instead of failing, and drop the templates a "
             "causal model cannot use; the skipped facts and why are listed in run.json "
             "(--skip-invalid-templates: deprecated alias)")


def locate(facts: str = typer.Option(..., "--facts", "-f", help="bundled set (demo-en, en-zh), canonical JSONL file, or mLAMA / X-FACTR / ParaRel directory"),
           out: Path = typer.Option(..., "--out", "-o", help="run directory to write"),
           model: str = typer.Option("smollm2-135m", "--model", "-m", help=MODEL_HELP),
           lang: Optional[str] = typer.Option(None, "--lang", help="only facts in this language"),
           method: Method = typer.Option(Method.ig, "--method", help="ig (Dai et al.) or amig (Chen et al.)"),
           steps: str = typer.Option("20", "--steps", callback=parse_steps, help=STEPS_HELP),
           threshold: Optional[float] = typer.Option(None, "--threshold", min=0.0, max=1.0, help="tau: keep score > tau x max (default: en 0.3, zh 0.2, others 0.3)"),
           top_k: Optional[int] = typer.Option(None, "--top-k", min=1, help="keep at most this many neurons per prompt"),
           refine_p: float = typer.Option(0.3, "--refine-p", min=0.0, help="with several templates: keep neurons found in > p of them (below 1)"),
           select: Select = typer.Option(Select.refine, "--select", help="how a fact's templates are combined: refine (Dai et al.) or cas (Consistency-Aware Score: beta1 x mean - beta2 x std over them, then > tau x max)"),
           cas_beta1: float = typer.Option(1.0, "--cas-beta1", help="--select cas: weight of the mean attribution over the templates (> 0)"),
           cas_beta2: float = typer.Option(1.0, "--cas-beta2", help="--select cas: weight of its standard deviation over the templates (>= 0)"),
           objective: Objective = typer.Option(Objective.prob, "--objective", help="prob (the paper) or logprob"),
           rule: Rule = typer.Option(Rule.left, "--rule", help="integration rule"),
           paths: PathsChoice = typer.Option(PathsChoice.mean, "--paths", help="amig: mean (released code) or per-word (paper Eqs. 3-5)"),
           prefactor: Prefactor = typer.Option(Prefactor.activation, "--prefactor", help="amig: activation (paper Eq. 4) or difference (proper IG)"),
           batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="rows per batch (speed only)"),
           prompts_per_batch: int = typer.Option(1, "--prompts-per-batch", min=1, help="prompts of several facts sharing batches (speed only; for GPUs)"),
           precision: Precision = typer.Option(Precision.fp32, "--precision", help="fp32, or bf16 / fp16 autocast (for GPUs; recorded: a run resumes in its own)"),
           max_memory: Optional[str] = typer.Option(None, "--max-memory", help="memory budget of the batches, e.g. 512MB, 4GB, 4GiB (default: half of the available memory; on a GPU 80 % of the free memory)"),
           device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if present)"),
           limit: Optional[int] = typer.Option(None, "--limit", min=1, help="only the first N facts"),
           site: Optional[str] = typer.Option(None, "--site", help="name the output projection by hand, e.g. mlp.down_proj"),
           skip_invalid: bool = typer.Option(False, "--skip-invalid", "--skip-invalid-templates", help=SKIP_HELP),
           resume: bool = typer.Option(False, "--resume", help="continue an interrupted run in --out"),
           engine: Engine = typer.Option(Engine.local, "--engine", help="local (this process) or ray (facts sharded over Ray workers)"),
           workers: int = typer.Option(2, "--workers", min=1, help="--engine ray: number of workers (one model each)"),
           as_json: bool = typer.Option(False, "--json", help="print a JSON summary")):
    """Localize the knowledge neurons of each fact into a resumable run directory."""
    from kneuron.attribution import AMIG, IG, Execution
    from kneuron.cli._common import LOAD                # (set by the app's callback, per invocation)
    from kneuron.facts import fact_file_hash, load_facts, resolve_facts
    from kneuron.runs.locate import LocateConfig
    from kneuron.runs.locate import locate as run_locate
    from kneuron.runs.store import check_out
    store = None
    with _one_line_errors(interrupted=f"every finished fact is kept in {out}: continue with --resume"):
        m = AMIG(paths=paths.value, prefactor=prefactor.value) if method == Method.amig else IG()
        cfg = LocateConfig(method=m, steps=steps, threshold=threshold, top_k=top_k, refine_p=refine_p,
                           objective=objective.value, rule=rule.value, select=select.value, cas_beta1=cas_beta1,
                           cas_beta2=cas_beta2)   # bad settings fail before loading the model
        execution = Execution(batch_size=batch_size, prompts_per_batch=prompts_per_batch, precision=precision.value,
                              max_memory=max_memory)
        fs = load_facts(facts, lang=lang)                        # the one entry point: names, files, directories
        check_out(out, resume=resume)                            # before the model is loaded
        facts = resolve_facts(facts)
        common = dict(execution=execution, resume=resume, limit=limit, skip_invalid=skip_invalid,
                      facts_path=str(facts.resolve()), facts_hash=fact_file_hash(facts), lang=lang,
                      show_progress=not as_json)
        if engine == Engine.ray:                                 # the workers load the model
            _quiet_hf()
            load = {"site": site, "device": device, "dtype": LOAD.dtype, "device_map": LOAD.device_map}
            store = run_locate(model, fs, cfg, out, executor=_executor(engine, workers),
                               load={k: v for k, v in load.items() if v is not None}, **common)
        else:
            store = run_locate(_load(model, site, device), fs, cfg, out, **common)
    ft = store.facts()
    n = ft.num_rows
    summary = {"out": str(out), "n_facts": n, "new_facts": store.n_new, "skipped": len(store.skipped),
               "seconds": round(store.seconds, 2),
               "seconds_per_fact": round(store.seconds / max(store.n_new, 1), 3),
               "mean_neurons_per_fact": (sum(ft.column("n_neurons").to_pylist()) / n) if n else 0.0}
    if as_json:
        return _print_json(summary)
    _echo_skipped(store.skipped)
    typer.echo(f"{n} facts in {out} ({store.n_new} new, {summary['seconds_per_fact']} s/fact); "
               f"{summary['mean_neurons_per_fact']:.1f} knowledge neurons per fact"
               + (f"; {len(store.skipped)} facts skipped (reasons in {out / 'run.json'})" if store.skipped else ""))


def _echo_skipped(skipped: list[dict], show: int = 5) -> None:
    """The first few skipped facts' reasons on stderr (all of them are in run.json)."""
    for s in skipped[:show]:
        typer.echo(f"skipped: {s['reason']}", err=True)
    if len(skipped) > show:
        typer.echo(f"skipped: ... and {len(skipped) - show} more", err=True)


def intervene(run: Path = typer.Option(..., "--run", "-r", help="run directory made by `kneuron locate`"),
              op: str = typer.Option(..., "--op", help="suppress (set to 0) or enhance (x2)"),
              facts: Optional[Path] = typer.Option(None, "--facts", help="fact file (default: the run's own facts.jsonl)"),
              model: Optional[str] = typer.Option(None, "--model", "-m", help="another copy of the run's model (refused if its shape differs)"),
              device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if present)"),
              as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Suppress or enhance each fact's knowledge neurons and show its answer probability before/after."""
    from kneuron.paper.table1 import edit_effects
    from kneuron.cli._common import LOAD
    from kneuron.runs.reopen import load_run, open_model
    if op not in ("suppress", "enhance"):
        _fail(f"--op must be suppress or enhance, not {op!r}")
    try:
        rc = load_run(run, facts)
        _quiet_hf()
        h = open_model(rc, model, device=device or "auto", dtype=LOAD.dtype, offline=LOAD.offline or None,
                       device_map=LOAD.device_map)   # the run's model, on the run's neuron site (global options)
        rows = edit_effects(h, rc, ops=(op,), show_progress=not as_json)
    except _errors() as e:
        _fail(str(e))
    out = [{"fact_id": e.fact_id, "lang": e.lang, "n_neurons": e.n_neurons, "p_before": e.p_before,
            "p_after": getattr(e, f"p_{op}"), "relative_change": e.delta(op),
            "unrelated_relative_change": (getattr(e, f"p_{op}_unrelated") - e.p_before_unrelated) / e.p_before_unrelated}
           for e in rows]
    if as_json:
        return _print_json({"op": op, "facts": out})
    from kneuron.report.render import show
    from kneuron.report.table import Column, Table
    show(Table(["fact", "lang", "neurons", Column("p before", ".4g"), Column("p after", ".4g"), Column("change", "+.1%"),
                Column("unrelated change", "+.1%")],
               [[r["fact_id"], r["lang"], r["n_neurons"], r["p_before"], r["p_after"], r["relative_change"],
                 r["unrelated_relative_change"]] for r in out], title=f"{op} the knowledge neurons ({run})"))


def evaluate(run: Path = typer.Option(..., "--run", "-r", help="run directory made by `kneuron locate`"),
             facts: Optional[Path] = typer.Option(None, "--facts", help="fact file (default: the run's own facts.jsonl)"),
             model: Optional[str] = typer.Option(None, "--model", "-m", help="another copy of the run's model (refused if its shape differs)"),
             device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if present)"),
             seed: int = typer.Option(42, "--seed", help="seed of the unrelated-fact draw"),
             outlier_cut: bool = typer.Option(False, "--outlier-cut", help="the paper's cuts: drop suppress change > 20, enhance >= 250"),
             as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """The paper's Table 1 metric for a run: related vs unrelated probability change, SR."""
    from kneuron.paper.table1 import table1_from_run
    from kneuron.cli._common import LOAD
    from kneuron.runs.reopen import load_run, open_model
    try:
        rc = load_run(run, facts)
        meta = rc.store.meta
        _quiet_hf()
        h = open_model(rc, model, device=device or "auto", dtype=LOAD.dtype, offline=LOAD.offline or None,
                       device_map=LOAD.device_map)   # the run's model, on the run's neuron site (global options)
        ev = table1_from_run(h, run, facts, seed=seed, outlier_cut=outlier_cut, show_progress=not as_json)
        ev.save(run)
    except _errors() as e:
        _fail(str(e))
    j = ev.to_json()
    if as_json:
        return _print_json(j)
    from kneuron.report.render import show
    show(ev.table.to_table(f"Table 1 — {meta['model']}, {meta['method']}, {j['n_facts']} facts (dropped {j['dropped']})"))
    typer.echo(f"SR = |SR_enhance| + |SR_suppress| = {'n/a' if j['sr'] is None else round(j['sr'], 3)}")
