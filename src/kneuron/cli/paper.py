"""`kneuron likn | dkn | factcheck | consistency | cas-effect | reproduce`: the paper's Modules 2-3, Tables 1-3 and what
is checked beside them."""
from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Optional

import typer

from kneuron.cli._common import (MODEL_HELP, Engine, Method, _executor, _fail, _load, _one_line_errors, _print_json,
                                 _quiet_hf)
from kneuron.cli.runs import SKIP_HELP


class DKNMethod(StrEnum):
    pairs = "pairs"
    clusters = "clusters"


class DKNDistance(StrEnum):
    value = "value"
    key = "key"


def likn(facts: str = typer.Option(..., "--facts", "-f", help="fact set with the same fact ids in several languages (e.g. en-zh)"),
         out: Path = typer.Option(..., "--out", "-o", help="run directory to write"),
         model: str = typer.Option("smollm2-135m", "--model", "-m", help=MODEL_HELP),
         langs: str = typer.Option("en,zh", "--langs", help="comma-separated languages to intersect"),
         method: Method = typer.Option("amig", "--method", help="ig or amig"),
         steps: int = typer.Option(20, "--steps", min=1, help="integration steps"),
         limit: Optional[int] = typer.Option(None, "--limit", min=1, help="only the first N fact ids"),
         skip_invalid: bool = typer.Option(False, "--skip-invalid", "--skip-invalid-templates", help=SKIP_HELP),
         resume: bool = typer.Option(False, "--resume", help="continue an interrupted run in --out"),
         as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Module 2: localize each fact in every language (tau per language), then intersect the sets."""
    from kneuron.facts import fact_file_hash, load_facts, resolve_facts
    from kneuron.paper.likn import likn_from_run
    from kneuron.runs.locate import LocateConfig
    from kneuron.runs.locate import locate as run_locate
    from kneuron.organisms.known import facts_for, paper_rule, trained_on
    lang_list = tuple(x.strip() for x in langs.split(",") if x.strip())
    with _one_line_errors(interrupted=f"every finished fact is kept in {out}: continue with --resume"):
        every = load_facts(facts)                           # a bad fact file fails before the model loads
        cfg = LocateConfig(method=method, steps=steps)
        cfg.validate()
        h = _load(model)
        trained = trained_on(h)
        if trained is not None:    # an organism only knows (and can spell) the facts it was trained on
            typer.echo(f"{model} is an organism: using the {len(trained[0])} fact ids it was trained on", err=True)
        fs = facts_for(h, every, lang_list, limit, name=facts, rule=paper_rule(h))   # the paper: known or not
        path = resolve_facts(facts)
        run_locate(h, fs, cfg, out, resume=resume, facts_path=str(Path(path).resolve()), facts_hash=fact_file_hash(path),
                   lang=",".join(lang_list), skip_invalid=skip_invalid, show_progress=not as_json)
        res = likn_from_run(out, lang_list)
        res.save(out)
    j = res.to_json()
    if as_json:
        return _print_json(j)
    typer.echo(f"{j['n_with_likn']} of {j['n_facts']} facts ({j['share_nonempty']:.1%}) have language-independent "
               f"neurons ({j['mean_likn_per_fact']:.2f} per fact); by layer: {j['layers']}; in {out}/likn.parquet")


def dkn(run: Path = typer.Option(..., "--run", "-r", help="run directory made by `kneuron locate` (AMIG in the paper)"),
        top_n: int = typer.Option(20, "--top-n", help="candidates: the top-n knowledge neurons of each fact (0: all)"),
        t_low: float = typer.Option(0.2, "--t-low", help="a proper part of a group may cost at most this (clusters: each cluster left on alone)"),
        t_high: float = typer.Option(0.25, "--t-high", help="the whole group must cost more than this (clusters: the kept clusters suppressed together)"),
        absolute: bool = typer.Option(False, "--absolute", help="costs as absolute drops of p (paper text), not relative (released code)"),
        max_size: int = typer.Option(2, "--max-size", help="pairs: largest group size (2 = Algorithm 1)"),
        max_evals: int = typer.Option(5000, "--max-evals", help="pairs: ablations per fact at most"),
        method: DKNMethod = typer.Option(DKNMethod.pairs, "--method", help="pairs: Algorithm 1 (the AAAI paper); clusters: persistent clusters of the neurons' weights, each alone keeping the fact (ACL 2025)"),
        distance: DKNDistance = typer.Option(DKNDistance.value, "--distance", help="clusters: cosine distance of the neurons' value vectors or key rows"),
        horizon: float = typer.Option(1.0, "--horizon", help="clusters: the radius beyond which neurons are unrelated (cosine distance; 1 = orthogonal)"),
        batch_size: int = typer.Option(64, "--batch-size", help="ablations per forward pass (speed only)"),
        facts: Optional[Path] = typer.Option(None, "--facts", help="fact file (default: the run's own facts.jsonl)"),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="another copy of the run's model (refused if its shape differs)"),
        device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if present)"),
        as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Module 3: degenerate knowledge neurons of each fact in a run (resumable; dkn.jsonl, dkn.json; the
    clusters rule: dkn-clusters.jsonl, dkn-clusters.json)."""
    from kneuron.paper.dkn import DKNConfig, dkn_from_run, files
    from kneuron.cli._common import LOAD
    from kneuron.runs.reopen import load_run, open_model
    cfg = DKNConfig(top_n=top_n or None, t_low=t_low, t_high=t_high, relative=not absolute, max_size=max_size,
                    max_evals=max_evals, batch_size=batch_size, method=method.value, distance=distance.value,
                    horizon=horizon)
    rows_file, summary_file = files(cfg.method)
    with _one_line_errors(interrupted=f"every finished fact is kept in {run}/{rows_file}: run the same command again "
                                      "to continue"):
        cfg.validate()
        _quiet_hf()
        h = open_model(load_run(run, facts), model, device=device or "auto", dtype=LOAD.dtype,
                       offline=LOAD.offline or None, device_map=LOAD.device_map)   # the run's model and neuron site
        res = dkn_from_run(h, run, cfg, facts, show_progress=not as_json)
    if as_json:
        return _print_json(res.to_json())
    for lang, x in res.to_json()["langs"].items():
        typer.echo(f"{lang}: {x['n_with_dkn']} of {x['n_facts']} facts have degenerate groups "
                   f"({x['groups_per_fact']:.2f} per fact, sizes {x['sizes'] or '-'}); "
                   f"{x['forward_passes_per_fact']:.1f} forward passes and {x['ablations_per_fact']:.0f} ablations per fact"
                   + (f"; {x['clusters_per_fact']:.1f} persistent clusters per fact, {x['kept_clusters_per_fact']:.1f} "
                      "of them alone keeping the fact" if "clusters_per_fact" in x else ""))
    typer.echo(f"groups in {run}/{rows_file}, summary in {run}/{summary_file}")


def factcheck(run: Path = typer.Option(..., "--run", "-r", help="run directory made by `kneuron locate`, its DKNs found by `kneuron dkn`"),
              langs: Optional[str] = typer.Option(None, "--langs", help="comma-separated languages (default: every language of the run)"),
              out: Optional[Path] = typer.Option(None, "--out", "-o", help="directory for factcheck-<lang>.json (default: the run)"),
              method: Optional[str] = typer.Option(None, "--method", help="attribution scoring the items (default: the run's)"),
              steps: Optional[int] = typer.Option(None, "--steps", min=1, help="integration steps (default: the run's)"),
              dkn: list[DKNMethod] = typer.Option([DKNMethod.pairs], "--dkn", help="the DKN rule of the dkn scorer: "
                                                "pairs (the paper's; files factcheck-<lang>.*) or clusters (`kneuron dkn "
                                                "--method clusters`; files factcheck-clusters-<lang>.*); repeat it for "
                                                "both (each item attributed once; --json then keyed by rule, then language)"),
              seed: int = typer.Option(42, "--seed", help="seed of the splits, the wrong objects and the bootstrap"),
              n_boot: int = typer.Option(1000, "--n-boot", min=1, help="bootstrap resamples for the AUROC intervals"),
              restart: bool = typer.Option(False, "--restart", help="score every item again (the run's factcheck-<lang>.jsonl is started over)"),
              model: Optional[str] = typer.Option(None, "--model", "-m", help="another copy of the run's model (refused if its shape differs)"),
              device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if present)"),
              as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Fact-checking beside baselines: DKN, KN, log p and a linear probe, on held-out facts and held-out relations."""
    from kneuron.cli._common import LOAD
    from kneuron.paper.factcheck import factcheck_from_run, load_dkn, run_langs
    from kneuron.runs.reopen import load_run, open_model
    target = out if out is not None else run
    with _one_line_errors(interrupted=f"every scored item is kept in {run}/factcheck-<lang>.jsonl: run the same command "
                                      "again to continue"):
        if method is not None:                              # a bad method fails before the model loads
            from kneuron.attribution import make_method
            make_method(method)
        contents = load_run(run)
        todo = run_langs(contents.facts, [x.strip() for x in langs.split(",") if x.strip()] if langs else None, run)
        rules = list(dict.fromkeys(d.value for d in dkn))
        dkn_runs = {rule: load_dkn(run, rule) for rule in rules}       # every rule's rows, before the model loads
        _quiet_hf()
        h = open_model(contents, model, device=device or "auto", dtype=LOAD.dtype, offline=LOAD.offline or None,
                       device_map=LOAD.device_map)
        results = []
        for lang in todo:
            memo: dict = {}                                  # the rules share the items' attributions
            for rule in rules:
                res = factcheck_from_run(h, run, lang, dkn_runs[rule], method, steps, seed=seed, n_boot=n_boot,
                                         resume=not restart, show_progress=not as_json, memo=memo)
                res.save(target)
                results.append(res)
    if as_json:
        if len(rules) == 1:
            return _print_json({r.lang: r.to_json() for r in results})
        return _print_json({rule: {r.lang: r.to_json() for r in results if r.dkn == rule} for rule in rules})
    from kneuron.report.render import show
    for r in results:
        show(r.table())
    typer.echo("results in " + ", ".join(f"{target}/{'factcheck' if rule == 'pairs' else 'factcheck-' + rule}-<lang>.json"
                                          for rule in rules))


class Metric(StrEnum):
    jaccard = "jaccard"
    pairwise = "pairwise"


def consistency(runs: list[Path] = typer.Option(..., "--run", "-r", help="run directory made by `kneuron locate` (repeat for several models or methods)"),
                metric: Metric = typer.Option(Metric.jaccard, "--metric", help="jaccard: shared by every query / union; pairwise: mean Jaccard of query pairs"),
                static_threshold: float = typer.Option(0.1, "--static-threshold", min=0.0, max=1.0, help="a fact is consistent (KC) when its score reaches this; Otsu's threshold is found as well"),
                query_test: bool = typer.Option(False, "--query-test", help="also suppress each query's own neurons and another query's (needs the run's model; resumable)"),
                out: Optional[Path] = typer.Option(None, "--out", "-o", help="JSON file to write (default: <run>/consistency.json; required with several runs)"),
                facts: Optional[Path] = typer.Option(None, "--facts", help="fact file (default: the run's own facts.jsonl)"),
                model: Optional[str] = typer.Option(None, "--model", "-m", help="--query-test: another copy of the run's model (refused if its shape differs)"),
                device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if present)"),
                as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Localization consistency (Chen et al., ICLR 2025): are a fact's queries localized to the same neurons?"""
    from kneuron.cli._common import LOAD
    from kneuron.paper.consistency import SUMMARY_FILE, ConsistencyConfig, consistency_from_runs
    from kneuron.runs.reopen import open_model
    if len(runs) > 1 and out is None:
        _fail("--out is needed with several runs (the report covers them all)")
    target = out if out is not None else runs[0] / SUMMARY_FILE
    handles = None
    if query_test:
        def handles(run):
            _quiet_hf()
            return open_model(run, model, device=device or "auto", dtype=LOAD.dtype, offline=LOAD.offline or None,
                              device_map=LOAD.device_map)     # the run's model, on the run's neuron site
    with _one_line_errors(interrupted="the query-neuron test keeps each finished fact in <run>/consistency.jsonl: run the "
                                      "same command again to continue"):
        cfg = ConsistencyConfig(metric=metric.value, static_threshold=static_threshold)
        cfg.validate()
        res = consistency_from_runs(runs, cfg, handles, facts, show_progress=not as_json)
        res.save(target)
    if as_json:
        return _print_json(res.to_dict())
    from kneuron.report.render import show
    show(res.table())
    typer.echo(f"report in {target}")


class UpdateMethod(StrEnum):
    kn_eai = "kn-eai"
    kn = "kn"


def cas_effect(run: Path = typer.Option(..., "--run", "-r", help="run directory made by `kneuron locate` (it keeps each query's neurons)"),
               beta1: Optional[float] = typer.Option(None, "--beta1", help="CAS: weight of the mean score (default: the run's own with --select cas, else 1)"),
               beta2: Optional[float] = typer.Option(None, "--beta2", help="CAS: weight of the spread (default: the run's own with --select cas, else 1)"),
               method: UpdateMethod = typer.Option(UpdateMethod.kn_eai, "--method", help="the update's KN edit through each set"),
               unrelated: int = typer.Option(10, "--unrelated", min=1, help="unrelated facts (other relations) Loc is measured on"),
               seed: int = typer.Option(0, "--seed", help="seed of the new objects and the unrelated facts"),
               n_boot: int = typer.Option(1000, "--n-boot", min=1, help="bootstrap resamples for the intervals"),
               restart: bool = typer.Option(False, "--restart", help="measure every fact again (<run>/cas_effect.jsonl is started over)"),
               out: Optional[Path] = typer.Option(None, "--out", "-o", help="JSON file to write (default: <run>/cas_effect.json)"),
               facts: Optional[Path] = typer.Option(None, "--facts", help="fact file (default: the run's own facts.jsonl)"),
               model: Optional[str] = typer.Option(None, "--model", "-m", help="another copy of the run's model (refused if its shape differs)"),
               device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if present)"),
               as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """CAS neurons against each query's own and their union, on erasure and update (Chen et al., ICLR 2025)."""
    from kneuron.cli._common import LOAD
    from kneuron.paper.cas_effect import ROWS_FILE, SUMMARY_FILE, CasEffectConfig, cas_effect_from_run, stored_scores
    from kneuron.runs.reopen import load_run, open_model
    target = out if out is not None else run / SUMMARY_FILE
    with _one_line_errors(interrupted=f"every finished fact is kept in {run}/{ROWS_FILE}: run the same command again to "
                                      "continue"):
        cfg = CasEffectConfig(beta1=beta1, beta2=beta2, method=method.value, n_unrelated=unrelated, seed=seed,
                              n_boot=n_boot)
        cfg.validate()
        contents = load_run(run, facts)                     # a bad run fails before the model loads
        stored_scores(contents.store)
        _quiet_hf()
        h = open_model(contents, model, device=device or "auto", dtype=LOAD.dtype, offline=LOAD.offline or None,
                       device_map=LOAD.device_map)
        res = cas_effect_from_run(h, run, cfg, facts, resume=not restart, show_progress=not as_json)
        res.save(target)
    if as_json:
        return _print_json(res.to_json())
    from kneuron.report.render import show
    show(res.table())
    typer.echo(f"report in {target}")


def reproduce(model: str = typer.Option(..., "--model", "-m", help=MODEL_HELP),
              facts: str = typer.Option("en-zh", "--facts", "-f", help="fact set with the same ids in several languages"),
              out: Path = typer.Option(..., "--out", "-o", help="directory for every run, table, figure and the report"),
              langs: str = typer.Option("en,zh", "--langs", help="comma-separated languages (two for Module 2 / Table 2)"),
              limit: Optional[int] = typer.Option(None, "--limit", min=1, help="fact ids to use (each in every language), spread over relations"),
              relations: Optional[int] = typer.Option(None, "--relations", min=1, help="only the first N relations of the fact set"),
              steps: int = typer.Option(20, "--steps", min=1, help="integration steps"),
              prompts: int = typer.Option(1, "--prompts", min=0, help="templates per fact (the paper: 1); 0 = all"),
              dkn_max_size: int = typer.Option(2, "--dkn-max-size", min=2, help="largest degenerate group (2 = Algorithm 1)"),
              dkn_absolute: bool = typer.Option(False, "--dkn-absolute", help="DKN costs as absolute drops of p"),
              n_boot: int = typer.Option(1000, "--n-boot", min=1, help="bootstrap resamples for the intervals"),
              resume: bool = typer.Option(False, "--resume", help="continue an interrupted reproduce in --out"),
              engine: Engine = typer.Option("local", "--engine", help="local or ray (Module 1 sharded over Ray workers)"),
              workers: int = typer.Option(2, "--workers", min=1, help="--engine ray: number of workers"),
              prompts_per_batch: int = typer.Option(1, "--prompts-per-batch", min=1, help="Module 1: prompts of several facts sharing batches (speed only; for GPUs)"),
              next_questions: bool = typer.Option(False, "--next-questions", help="also the authors' next questions: DKN clusters, fact-checking beside baselines, and (facts with several queries) consistency and CAS; a finished run can be resumed with it")):
    """Modules 1-3 and Tables 1-3 of the paper end to end; writes report.md and report.html in --out."""
    from kneuron.paper.dkn import DKNConfig
    from kneuron.paper.reproduce import ReproduceConfig
    from kneuron.paper.reproduce import reproduce as run_reproduce
    cfg = ReproduceConfig(model=model, facts=facts, langs=tuple(x.strip() for x in langs.split(",") if x.strip()),
                          limit=limit, relations=relations, steps=steps, n_boot=n_boot, prompts=prompts or None,
                          dkn=DKNConfig(max_size=dkn_max_size, relative=not dkn_absolute))
    with _one_line_errors(interrupted=f"finished work is kept in {out}: continue with --resume"):
        cfg.validate()
        load_facts_check(facts)
        h = _load(model)
        res = run_reproduce(h, cfg, out, resume=resume, log=lambda s: typer.echo(s, err=True),
                            executor=_executor(engine, workers), prompts_per_batch=prompts_per_batch,
                            next_questions=next_questions)
    typer.echo(f"report: {res.report['md']} and {res.report['html']}")


def load_facts_check(facts: str) -> None:
    """Fail on a bad fact file before the model is loaded."""
    from kneuron.facts import load_facts
    load_facts(facts)
