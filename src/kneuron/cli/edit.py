"""`kneuron edit`: rewrite one fact and show it before and after; `kneuron bench editing`: every method on
CounterFact-style records (registered in cli/bench.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kneuron.cli._common import MODEL_HELP, _errors, _fail, _load, _print_json

from kneuron.editing.registry import METHODS

METHOD_HELP = "; ".join(f"{name}: {cls.help}" for name, cls in METHODS.items())
METHOD_NAMES = ", ".join(METHODS)
FILTERED = ", ".join(name for name, cls in METHODS.items() if cls.common_filter)


def _check_method(method: str, say: bool = True) -> None:
    """An unknown method fails here (one line); an old name (``registry.ALIASES``) is said on stderr (``say``)."""
    from kneuron.editing.registry import ALIASES, deprecation, method_class
    method_class(method)
    if say and method in ALIASES and method not in METHODS:
        typer.echo(f"note: {deprecation(method)}", err=True)


def method_options(items: list[str], methods: list[str]) -> dict:
    """``--option METHOD.NAME=VALUE`` items as {method: {name: value}}, each VALUE checked against the
    option's type (``editing.registry.coerce``; ``kn.localize.steps=20`` sets one field of a nested
    configuration), then every method built with its options, so that a bad value fails here, one line."""
    from kneuron.editing.registry import coerce, method_for
    from kneuron.errors import ConfigError
    out: dict = {}
    for item in items:
        key, eq, raw = item.partition("=")
        method, dot, name = key.strip().partition(".")
        if not eq or not dot or not method or not name:
            raise ConfigError(f"--option {item!r}: expected METHOD.NAME=VALUE (e.g. rome.clamp_norm=8)")
        _check_method(method, say=False)
        if method not in methods:
            raise ConfigError(f"--option {item!r}: {method} is not among the methods ({', '.join(methods)})")
        path = name.split(".")
        value = coerce(method, path, raw)
        at = out.setdefault(method, {})
        for part in path[:-1]:
            at = at.setdefault(part, {})
        if isinstance(at.get(path[-1]), dict) and isinstance(value, dict):
            at[path[-1]].update(value)
        else:
            at[path[-1]] = value
    for method, opts in out.items():
        method_for(method, **opts)
    return out


def _facts_and_pool(h, facts: str, show: bool = False):
    """The facts, and the facts the records and neighbours come from: those the model knows
    (``kneuron.organisms.known``: an organism's training facts, by the rank rule those whose gold answer is
    in its top 10 (``show``: a progress bar while it probes), else all); all when it knows none of them."""
    from kneuron.facts import load_facts
    from kneuron.organisms.known import known_facts
    every = load_facts(facts)
    return every, (known_facts(h, every, show=show) or every)


def edit_cmd(model: str = typer.Option("smollm2-135m", "--model", "-m", help=MODEL_HELP),
             facts: str = typer.Option("en-zh", "--facts", "-f", help="fact set or file holding the fact"),
             fact_id: str = typer.Option(..., "--id", help="the fact's id (e.g. P36-001)"),
             new: str = typer.Option(..., "--new", help="the new object (e.g. Rome)"),
             method: str = typer.Option("kn", "--method", help=f"the editing method ({METHOD_HELP})"),
             lang: str = typer.Option("en", "--lang", help="the language of the fact and of --new"),
             layer: Optional[int] = typer.Option(None, "--layer", min=0, help="rome / ft-m / ft-l: the layer to edit"),
             common_facts: int = typer.Option(10, "--common-facts", min=0, help=f"{FILTERED}: drop the "
                                              "neurons found for more than 10 % of this many facts of the relation "
                                              "(Dai et al.); 0: no filter"),
             localize_prompts: str = typer.Option("all", "--localize-prompts", help="kn methods: localize on "
                                                  "every template (all) or on the rewrite prompt only (rewrite)"),
             save: Optional[str] = typer.Option(None, "--save", help="write the edited model here (a new or empty "
                                                "directory; `load_model` reads it back)"),
             as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Rewrite one fact (its object becomes --new) and show the rewrite prompt, a paraphrase, a neighbour
    and the other language before and after: p(new), p(old) and the top-1 token."""
    from kneuron.editing import EditError
    from kneuron.editing.show import prepare
    from kneuron.facts import resolve_facts
    try:
        from kneuron.editing.registry import method_for
        _check_method(method)
        method_for(method, **({} if layer is None else {"layer": layer}))   # a bad method or option: before loading
        from kneuron.editing.localize import prompt_limit
        prompt_limit(localize_prompts)
        if save is not None:
            d = Path(save)
            if d.exists() and (not d.is_dir() or any(d.iterdir())):
                raise EditError(f"{d}: not an empty directory; pass a new or empty one to --save")
        h = _load(model)
        every, pool = _facts_and_pool(h, facts, show=not as_json)
        if not any(f.id == fact_id for f in every):
            raise EditError(f"{resolve_facts(facts)}: no fact with id {fact_id!r}")
        shown = prepare(h, every, pool, fact_id, new, method=method, lang=lang, layer=layer, common_facts=common_facts,
                        prompts=localize_prompts)
        e, t_others = shown.edit, shown.filter_seconds
        with e:
            after = shown.measure()
        if save is not None:
            e.save(save)
    except _errors() as err:
        _fail(str(err))
    r = shown.report(after)
    lines = r["lines"]
    out = {"model": model, "method": method, "fact_id": fact_id, "lang": lang, "new": new,
           "seconds": r["seconds"], "filter_seconds": t_others, "params_changed": e.params_changed,
           "lines": lines, "saved": save, "neurons": r["neurons"], "filtered": r["filtered"], "layer": r["layer"],
           "note": r["note"]}
    if as_json:
        return _print_json(out)
    typer.echo(f"{model}: {method} edit of {fact_id} ({lang}): {r['old']!r} -> {new!r} "
               f"in {out['seconds']:.2f} s, {e.params_changed:,} weights changed"
               + (f" ({len(out['neurons'] or [])} neurons; {len(out['filtered'] or [])} dropped as common to the "
                  f"relation, {t_others:.1f} s localizing {common_facts - 1} other facts)" if t_others else ""))
    if r["note"]:
        typer.echo(f"note: {r['note']}")
    for ln in lines:
        typer.echo(f"\n{ln['what']} [{ln['lang']}]: {ln['prompt']!r}")
        for when in ("before", "after"):
            d = ln[when]
            typer.echo(f"  {when:6}  p({ln['want']!r}) {d['p_want']:.4f}  p({ln['rival']!r}) {d['p_rival']:.4f}  "
                       f"top-1 {d['top1']!r}")
    if save:
        typer.echo(f"\nsaved the edited model to {save}")


def bench_editing(model: str = typer.Option("smollm2-135m", "--model", "-m", help=MODEL_HELP),
                  facts: Optional[str] = typer.Option(None, "--facts", "-f", help="fact set to draw the records "
                                                      "from (default en-zh; an organism: the facts it was trained "
                                                      "on); not used with --records"),
                  records: Optional[str] = typer.Option(None, "--records", help="read the records from this file "
                                                        "instead: ROME's counterfact.json (or multi_counterfact.json), "
                                                        "EasyEdit's zsRE JSON or a KnowEdit JSON, with the file's "
                                                        "own paraphrases, neighbours and generation prompts; --n "
                                                        "takes its first n"),
                  records_format: Optional[str] = typer.Option(None, "--records-format", help="the --records "
                                                               "file's format: counterfact, zsre or knowedit "
                                                               "(default: told from its content)"),
                  n: int = typer.Option(100, "--n", min=1, help="records (fact ids) per language"),
                  methods: str = typer.Option("kn,kn-eai,kn-opt,likn,rome,ft-m,ft-l", "--methods",
                                              help=f"comma-separated, of {METHOD_NAMES}"),
                  mode: str = typer.Option("single", "--mode", help="single (edit, measure, undo), sequential "
                                           "(edits kept; S after 1, 10, 50, 100, 250, 500, 1000 edits) or batch (every edit "
                                           "computed on the unedited model, applied at once; kn-family methods; memit and alphaedit "
                                           "compute the batch as one joint edit)"),
                  out: str = typer.Option(..., "--out", "-o", help="run directory (new or empty; --resume: an "
                                          "earlier run's)"),
                  resume: bool = typer.Option(False, "--resume", help="continue the run in --out"),
                  langs: Optional[str] = typer.Option(None, "--langs", help="languages, comma-separated (default: "
                                                      "all of the facts')"),
                  seed: int = typer.Option(0, "--seed", help="seed of the records' choices"),
                  generation: int = typer.Option(2, "--generation", min=0, help="generation prompts per record "
                                                 "(GE; 0: none)"),
                  common_facts: int = typer.Option(10, "--common-facts", min=1, help="--common-over cases: "
                                                   "facts per relation that Dai et al.'s 10 % filter counts over"),
                  common_over: Optional[str] = typer.Option(None, "--common-over", help="the facts Dai et al.'s "
                                                            "filter counts over: relation (every fact of the "
                                                            "record's relation, each localized once, cached) or "
                                                            "cases (the first --common-facts, the records' own "
                                                            "first); default: a resumed run's own (a run stored "
                                                            "before this option: cases), else relation"),
                  common_max: Optional[int] = typer.Option(None, "--common-max", min=1, help="--common-over "
                                                           "relation: at most this many facts per relation "
                                                           "(default: all)"),
                  localize_prompts: Optional[str] = typer.Option(None, "--localize-prompts", help="the prompts "
                                                                 "the KN methods' neurons are localized on: rewrite "
                                                                 "(the rewrite prompt only: the paraphrases PS "
                                                                 "measures stay unseen) or all (every template); "
                                                                 "default: a resumed run's own (a run stored "
                                                                 "before this option: all), else rewrite"),
                  rome_layer: Optional[int] = typer.Option(None, "--rome-layer", min=0, help="ROME's layer "
                                                           "(default: a sweep picks it)"),
                  tune_records: int = typer.Option(0, "--tune-records", min=0, help="records held out for the layer "
                                                   "sweeps (rome's, ft-l's), drawn after the --n reported ones and "
                                                   "never reported (0: the sweeps run on the first 4 reported "
                                                   "records)"),
                  option: Optional[list[str]] = typer.Option(None, "--option", help="a method's option, "
                                                             "METHOD.NAME=VALUE (repeatable; VALUE checked against "
                                                             "the option's type: JSON, else text), e.g. "
                                                             "rome.clamp_norm=8 or kn.lambda2=4"),
                  on_collapse: str = typer.Option("undo", "--on-collapse", help="--mode sequential: an edit "
                                                  "whose unrelated-text NLL rises by more than the health margin "
                                                  "(0.5 nats) against the chain before it is undone, bit for bit, "
                                                  "and the chain goes on (undo), or the chain stops there (stop); "
                                                  "keep: no guard"),
                  protocol: str = typer.Option("kneuron", "--protocol", help="how the records are drawn: "
                                               "kneuron (the fact set's templates and neighbours) or counterfact "
                                               "(CounterFact's construction: paraphrases behind model-written "
                                               "prefixes, same-object neighbours, attribute prompts, an essence "
                                               "score, at least 5 generation prompts)"),
                  as_json: bool = typer.Option(False, "--json", help="print the summary as JSON")):
    """Edit the same CounterFact-style records with every method, in every language, and measure ROME's
    ES/PS/NS/S, EasyEdit's reliability/generalization/locality, GE, flip rate, the other language and each
    edit's health (‖ΔW‖/‖W‖, unrelated-text NLL, greedy continuation; disabling edits listed);
    writes one JSON per edit, results.json, report.md and report.html into --out (resumable). With --records
    the records come from a file (``kneuron.editing.readers``), read and checked before the model loads."""
    from kneuron.bench.editing import EditingConfig, run_editing_bench, summary
    from kneuron.editing.readers import read_records
    from kneuron.runs.store import check_out
    try:
        ms = [m.strip() for m in methods.split(",") if m.strip()]
        for m in ms:
            _check_method(m)
        opts = method_options(option or [], ms)
        if rome_layer is not None:
            opts.setdefault("rome", {})["layer"] = rome_layer
        EditingConfig(n=n, methods=tuple(ms), mode=mode, method_options=opts, tune_records=tune_records,
                      common_over=common_over, common_max=common_max, localize_prompts=localize_prompts,
                      on_collapse=on_collapse, protocol=protocol).validate()
        check_out(out, resume=resume)                        # before the model is loaded
        from_file = read_records(records, records_format) if records else None     # so is a bad record
        log = (lambda s: None) if as_json else (lambda s: typer.echo(s, err=True))
        h = _load(model)
        if from_file is not None:
            if facts:
                log(f"warning: --facts {facts} is not used: the records, their neighbours and the facts Dai's "
                    f"filter counts over come from {records}")
            if from_file.skipped:
                log(f"{records}: {from_file.skipped} records without a new object skipped (as EasyEdit does)")
            pool, name = None, records
        else:
            name = facts or "en-zh"
            every, pool = _facts_and_pool(h, name, show=not as_json)
        res = run_editing_bench(h, pool or [], out=out, n=n, methods=ms, mode=mode, resume=resume, pool=pool,
                                seed=seed, langs=[x.strip() for x in langs.split(",")] if langs else None,
                                show_progress=not as_json, log=log, facts_name=name, n_generation=generation,
                                common_facts=common_facts, method_options=opts, tune_records=tune_records,
                                common_over=common_over, common_max=common_max, localize_prompts=localize_prompts,
                                records=from_file, on_collapse=on_collapse, protocol=protocol)
    except _errors() as err:
        _fail(str(err))
    if as_json:
        return _print_json(summary(res))
    from rich.console import Console

    from kneuron.bench.editing_report import scores_table
    from kneuron.report.render import show
    console = Console(width=max(Console().width, 120))        # the table's ~95 columns, never cut in a pipe
    for lang in res["unedited"]:
        show(scores_table(res, lang, BENCH_COLUMNS, intervals=False,
                          title=f"{model}: {res['n_records']} records, edited and measured in {lang} "
                                "(percent; GE x100)"), console)
    typer.echo("")
    for m, x in res["methods"].items():
        for pair, d in (x.get("cross") or {}).items():
            typer.echo(f"{m} {pair}: ES {_n(d['ES'])}, PS {_n(d['PS'])}")
    typer.echo(f"report: {Path(out) / 'report.html'}")


# the columns `kneuron bench editing` prints (the report has more: EM, PM, NM, params changed, intervals)
BENCH_COLUMNS = ("S", "ES", "PS", "NS", "GE", "reliability", "generalization", "locality", "flip_rate",
                 "seconds_per_edit")


def _n(v, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"
