"""The editing benchmark on the bundled organism-clm with a toy editing method: resumable (an interrupted run
resumed recomputes nothing finished and ends equal to an uninterrupted one), damaged files redone,
sequential edits kept then undone, one localization shared by the KN methods, --json's exact keys, and
one-line CLI errors."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from typer.testing import CliRunner

from kneuron.bench.editing import run_editing_bench
from kneuron.cli import app
from kneuron.editing import METHODS, Change, Edit, EditContext, EditError, EditMethod
from kneuron.editing.base import value_index
from kneuron.editing.metrics import METRICS
from kneuron.models import load_model
from kneuron.models.targets import encode
from kneuron.organisms import organism_facts
from kneuron.runs.store import RunStoreError

CALLS: list[dict] = []


def toy_edit(handle, rewrite, neurons=None, common=None, scale=4.0, skip=()):
    """Adds the new object's output embedding to four value vectors of the last layer (deterministic); for a
    fact in ``skip`` an edit that writes nothing (``skip`` holding "fail": an EditError for each)."""
    CALLS.append({"fact": rewrite.fact.key, "neurons": neurons, "common": common})
    t0 = time.perf_counter()
    if "fail" in skip:
        raise EditError(f"toy: cannot edit {rewrite.fact.id}")
    if rewrite.fact.id in skip:
        return Edit(handle, "toy", rewrite, [], info={"note": "nothing to write"})
    name, index = value_index(handle, [0, 1, 2, 3], handle.n_layers - 1)
    p = dict(handle.model.named_parameters())[name]
    prompt = rewrite.fact.templates[0].split("[Y]")[0].replace("[X]", rewrite.fact.subject).strip()
    emb = handle.model.get_output_embeddings().weight[encode(handle.tokenizer, handle.kind, prompt,
                                                             rewrite.new).target_ids[0]].detach()
    cur = p[index].detach().clone()
    v = cur + scale * (emb[:, None] if cur.shape[0] == emb.shape[0] else emb[None, :])
    return Edit(handle, "toy", rewrite, [Change(name, v, index)], info={"n": len(neurons or [])},
                seconds=time.perf_counter() - t0)


@dataclass(frozen=True)
class Toy(EditMethod):
    """``toy_edit`` as a registered method: ``scale`` and ``skip`` its options, the neurons its context."""
    scale: float = 4.0
    skip: tuple[str, ...] = ()
    name = "toy"
    help = "a toy edit of four value vectors of the last layer (tests)"
    context: ClassVar[tuple[str, ...]] = ("neurons", "common")

    def edit(self, handle, rewrite, ctx: EditContext = EditContext()) -> Edit:
        return toy_edit(handle, rewrite, ctx.neurons, ctx.common, self.scale, self.skip)


@dataclass(frozen=True)
class ToyKN(Toy):
    """The toy registered under a KN method's name: given the bench's neurons and its relation filter."""
    uses_neurons: ClassVar[bool] = True
    common_filter: ClassVar[bool] = True


@dataclass(frozen=True)
class SkipToy(Toy):
    skip: tuple[str, ...] = ("P36-018",)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(METHODS, "toy", Toy)
    CALLS.clear()
    return CALLS


@pytest.fixture(scope="module")
def org():
    torch.set_num_threads(1)
    h = load_model("organism-clm")
    return h, organism_facts(h)


KW = dict(n=3, n_neighbours=3, n_generation=1, show_progress=False)


def same(a: dict, b: dict) -> None:
    """Equal results but for wall-clock times."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if "seconds" not in k and k not in ("timings", "meta")}
        return x
    assert strip(a) == strip(b)


def test_an_interrupted_run_resumes_without_recomputing(toy, org, tmp_path):
    h, facts = org
    out = tmp_path / "run"
    assert run_editing_bench(h, facts, out=out, methods=["toy"], limit=2, **KW) is None
    done = sorted((out / "edits" / "toy").glob("*.json"))
    assert len(done) == 2 and len(toy) == 2 and not (out / "results.json").exists()
    stamps = {p.name: p.stat().st_mtime_ns for p in done}
    res = run_editing_bench(h, facts, out=out, methods=["toy"], resume=True, **KW)
    assert len(toy) == 6                                        # 3 cases x 2 languages, none twice
    assert {p.name: p.stat().st_mtime_ns for p in done} == stamps
    full = run_editing_bench(h, facts, out=tmp_path / "full", methods=["toy"], **KW)
    same(res, full)
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(res))
    html = (out / "report.html").read_text()
    assert "Cross-lingual" in html and "<table>" in html and "toy" in (out / "report.md").read_text()
    # a damaged file is moved aside and redone; nothing else is recomputed
    (out / "edits" / "toy" / "1-zh.json").write_text('{"scores": ')
    again = run_editing_bench(h, facts, out=out, methods=["toy"], resume=True, **KW)
    assert len(toy) == 13 and list((out / "damaged").iterdir())
    same(again, full)


def test_stage_times_are_summed_over_the_sessions_of_a_run(toy, org, tmp_path):
    """timings.json adds each session's stage times to the earlier ones' (a resume that reads everything back
    does not report its own second as the run's time); a run stored without it says its times are lower bounds."""
    h, facts = org
    out = tmp_path / "run"
    run_editing_bench(h, facts, out=out, methods=["toy"], limit=2, **KW)
    first = json.loads((out / "timings.json").read_text())
    assert first["toy"] > 0 and first["unedited"] > 0 and "untimed" not in first
    (out / "timings.json").write_text(json.dumps({**first, "toy": 1000.0}))     # as if the first session was long
    res = run_editing_bench(h, facts, out=out, methods=["toy"], resume=True, **KW)
    assert 1000.0 < res["timings"]["toy"] < 1000.0 + 600 and res["timings"]["unedited"] >= first["unedited"]
    assert json.loads((out / "timings.json").read_text()) == res["timings"]
    assert "| time: toy (s) | 10" in (out / "report.md").read_text() and "untimed" not in res["timings"]
    (out / "timings.json").unlink()                                              # a run stored before timings.json
    again = run_editing_bench(h, facts, out=out, methods=["toy"], resume=True, **KW)
    assert again["timings"]["untimed"] is True and again["timings"]["toy"] < 1000.0
    assert "lower bounds" in (out / "report.md").read_text()
    (out / "timings.json").write_text('{"toy": 10')                               # torn: moved aside, said
    said = []
    torn = run_editing_bench(h, facts, out=out, methods=["toy"], resume=True, log=said.append, **KW)
    assert (out / "damaged" / "timings.json").read_text() == '{"toy": 10' and torn["timings"]["toy"] < 10
    assert any("timings.json: damaged" in s for s in said)


def test_resume_refuses_other_settings(toy, org, tmp_path):
    h, facts = org
    run_editing_bench(h, facts, out=tmp_path, methods=["toy"], limit=1, **KW)
    with pytest.raises(RunStoreError, match="n differs"):
        run_editing_bench(h, facts, out=tmp_path, methods=["toy"], resume=True, **{**KW, "n": 4})
    with pytest.raises(RunStoreError, match="already holds a run"):
        run_editing_bench(h, facts, out=tmp_path, methods=["toy"], **KW)


def _lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_romes_layer_is_chosen_on_held_out_records(org, tmp_path):
    """--tune-records: the sweep runs on cases drawn after the reported ones (other fact ids), which are the
    records a run without held-out cases reports; nothing of the held-out cases is reported; the report says
    which the sweep saw; a resume with another count is refused."""
    h, facts = org
    kw = dict(KW, methods=["rome"], rome_layers=(1, 2),
              method_options={"rome": {"stats": "identity", "v_steps": 2, "use_prefixes": False}})
    held = run_editing_bench(h, facts, out=tmp_path / "held", tune_records=2, **kw)
    plain = run_editing_bench(h, facts, out=tmp_path / "plain", **kw)
    reported, tune = _lines(tmp_path / "held" / "cases.jsonl"), _lines(tmp_path / "held" / "tune-cases.jsonl")
    assert reported == _lines(tmp_path / "plain" / "cases.jsonl") and len(reported) == 3 and len(tune) == 2
    assert not {c["fact_id"] for c in tune} & {c["fact_id"] for c in reported}
    sweep = json.loads((tmp_path / "held" / "rome-sweep.json").read_text())
    assert sweep["held_out"] is True and sweep["cases"] == [c["case_id"] for c in tune]
    parts = sorted(p.stem for p in (tmp_path / "held" / "rome-sweep").glob("*.json"))   # each edit kept as measured
    assert parts == [f"{layer}-{c['case_id']}" for layer in (1, 2) for c in tune]
    plain_sweep = json.loads((tmp_path / "plain" / "rome-sweep.json").read_text())
    assert "held_out" not in plain_sweep and plain_sweep["cases"] == [0, 1, 2]
    assert held["n_records"] == plain["n_records"] == 3
    edited = {p.stem.split("-")[0] for p in (tmp_path / "held" / "edits" / "rome").glob("*.json")}
    assert edited == {"0", "1", "2"}                                  # the held-out cases are never reported
    assert held["meta"]["tune_cases"] == [3, 4] and "tune_cases" not in plain["meta"]
    assert "held-out cases" in (tmp_path / "held" / "report.md").read_text()
    assert "chosen on test records" in (tmp_path / "plain" / "report.md").read_text()
    with pytest.raises(RunStoreError, match="tune_records differs"):
        run_editing_bench(h, facts, out=tmp_path / "held", resume=True, tune_records=1, **kw)
    with pytest.raises(RunStoreError, match="tune_records differs"):     # a run stored before: none held out
        run_editing_bench(h, facts, out=tmp_path / "plain", resume=True, tune_records=2, **kw)


def test_a_run_that_says_ft_keeps_its_name_and_resumes(org, tmp_path):
    """"ft" (what runs stored before ft-m / ft-l say) is FT-M under its own name: edits/ft/, run.json's methods,
    resumed without recomputing what is there, reported; its edits are ft-m's, bit for bit."""
    h, facts = org
    kw = dict(KW, method_options={"ft": {"steps": 2}})
    assert run_editing_bench(h, facts, out=tmp_path / "a", methods=["ft"], limit=2, **kw) is None
    stored = {p.name: p.read_text() for p in (tmp_path / "a" / "edits" / "ft").glob("*.json")}
    assert len(stored) == 2 and json.loads((tmp_path / "a" / "run.json").read_text())["methods"] == ["ft"]
    res = run_editing_bench(h, facts, out=tmp_path / "a", methods=["ft"], resume=True, **kw)
    assert all((tmp_path / "a" / "edits" / "ft" / n).read_text() == t for n, t in stored.items())
    assert set(res["methods"]) == {"ft"} and len(list((tmp_path / "a" / "edits" / "ft").glob("*.json"))) == 6
    m = run_editing_bench(h, facts, out=tmp_path / "m", methods=["ft-m"], **{**KW, "method_options": {"ft-m": {"steps": 2}}})
    same(res["methods"]["ft"], m["methods"]["ft-m"])
    assert "ft-m's old name" in (tmp_path / "a" / "report.md").read_text()


def test_ft_l_sweeps_its_own_layer_on_the_held_out_records(org, tmp_path):
    """ft-l's layer comes from its own sweep, as ROME's (ft-l-sweep.json, on the held-out cases), and every
    edit is made at the layer it chose; the report shows the sweep and sets ft-l beside Table 4's FT-L."""
    h, facts = org
    res = run_editing_bench(h, facts, out=tmp_path, methods=["ft-l"], rome_layers=(0, 1), tune_records=1,
                            method_options={"ft-l": {"steps": 2, "norm_bound": 1e-2, "lr": 1e-2}}, **KW)
    sweep = json.loads((tmp_path / "ft-l-sweep.json").read_text())
    assert sweep["held_out"] is True and [r["layer"] for r in sweep["layers"]] == [0, 1]
    assert not (tmp_path / "rome-sweep.json").exists()
    assert res["layer_sweeps"]["ft-l"] == {"layer": sweep["best"], "sweep": sweep} and res["rome_layer"] is None
    layers = {json.loads(p.read_text())["info"]["layer"] for p in (tmp_path / "edits" / "ft-l").glob("*.json")}
    assert layers == {sweep["best"]}
    md = (tmp_path / "report.md").read_text()
    assert f"ft-l's layer: {sweep['best']}" in md and "| ft-l | en |" in md and "FT-L (GPT-2 XL)" in md
    assert "ft-l_sweep" in res["timings"]


def test_ft_l_sweeps_its_bound_before_its_layer(org, tmp_path, monkeypatch):
    """Without a user's norm_bound, ft-l's sweep tries its swept_bounds at its default layer first (kept per
    edit in ft-l-bound-sweep/), then its layers at the bound chosen; every reported edit uses both."""
    from kneuron.bench.editing.rows import Sweep
    from kneuron.editing.methods.ft import FtL
    monkeypatch.setattr(FtL, "swept_bounds", (1e-6, 5e-2))
    h, facts = org
    res = run_editing_bench(h, facts, out=tmp_path, methods=["ft-l"], rome_layers=(0, 1), tune_records=1,
                            method_options={"ft-l": {"steps": 3, "lr": 5e-2}}, **KW)
    sweep = json.loads((tmp_path / "ft-l-sweep.json").read_text())
    assert [r["norm_bound"] for r in sweep["bounds"]] == [1e-6, 5e-2] and sweep["bound_layer"] == 0
    best = max(sweep["bounds"], key=lambda r: tuple(-1e9 if r[k] is None else r[k] for k in ("S", "ES", "PS", "EM")))
    assert sweep["best_bound"] == best["norm_bound"] and Sweep.from_json(sweep).to_json() == sweep
    assert sorted(p.stem for p in (tmp_path / "ft-l-bound-sweep").glob("*.json")) == ["0.05-3", "1e-06-3"]
    infos = [json.loads(p.read_text())["info"] for p in (tmp_path / "edits" / "ft-l").glob("*.json")]
    assert {(i["layer"], i["norm_bound"]) for i in infos} == {(sweep["best"], sweep["best_bound"])}
    assert "Its L∞ bound first, at layer 0" in (tmp_path / "report.md").read_text()


def test_sequential_edits_are_kept_then_undone(toy, org, tmp_path):
    h, facts = org
    w0 = {k: v.clone() for k, v in h.model.state_dict().items()}
    kw = dict(KW, mode="sequential", methods=["toy"])
    assert run_editing_bench(h, facts, out=tmp_path / "a", limit=4, **kw) is None
    assert all(torch.equal(w0[k], v) for k, v in h.model.state_dict().items())
    res = run_editing_bench(h, facts, out=tmp_path / "a", resume=True, **kw)
    assert len(toy) == 6
    full = run_editing_bench(h, facts, out=tmp_path / "b", **kw)
    same(res, full)
    assert [p["k"] for p in res["sequential"]["toy"]["en"]] == [1, 3]
    p1, p3 = res["sequential"]["toy"]["en"]                         # the chain's state: weights move further
    assert 0 < p1["weight_ratio"] < p3["weight_ratio"] and set(p3["nll"]) == {"en", "zh"} and p3["GE"] > 0
    report = (tmp_path / "a" / "report.md").read_text()
    assert "| unrelated NLL | ‖ΔW‖/‖W‖ | GE |" in report and (tmp_path / "a" / "fig-sequential.png").is_file()
    assert all(torch.equal(w0[k], v) for k, v in h.model.state_dict().items())
    # the kept edits pile up: the third edit is measured with the first two still applied
    single = run_editing_bench(h, facts, out=tmp_path / "c", methods=["toy"], **KW)
    assert res["methods"]["toy"]["en"]["EM"] != single["methods"]["toy"]["en"]["EM"]


def test_batch_mode_measures_every_record_under_all_edits_and_resumes(toy, org, tmp_path, monkeypatch):
    monkeypatch.setattr(Toy, "batch_rule", "add")
    h, facts = org
    w0 = {k: v.clone() for k, v in h.model.state_dict().items()}
    kw = dict(KW, mode="batch", methods=["toy"])
    assert run_editing_bench(h, facts, out=tmp_path / "a", limit=4, **kw) is None     # stopped mid-batch
    assert all(torch.equal(w0[k], v) for k, v in h.model.state_dict().items())
    # the en batch (3 edits) was measured; of the zh batch one edit was computed, nothing measured
    assert len(toy) == 4 and sorted(p.name for p in (tmp_path / "a" / "edits" / "toy").glob("*.json")) == \
        ["0-en.json", "1-en.json", "2-en.json"]
    res = run_editing_bench(h, facts, out=tmp_path / "a", resume=True, **kw)
    assert len(toy) == 6                                        # the 4 stored edits are not recomputed
    assert all(torch.equal(w0[k], v) for k, v in h.model.state_dict().items())
    full = run_editing_bench(h, facts, out=tmp_path / "b", **kw)
    same(res, full)
    rows = [json.loads(p.read_text()) for p in (tmp_path / "a" / "edits" / "toy").glob("*.json")]
    assert len(rows) == 6 and all(r["batch"] == 3 for r in rows)
    # each record is measured with the other records' edits applied too: not what a single edit gives
    single = run_editing_bench(h, facts, out=tmp_path / "c", methods=["toy"], **KW)
    assert res["methods"]["toy"]["en"]["NM"] != single["methods"]["toy"]["en"]["NM"]


def test_a_method_option_reaches_the_method(toy, tmp_path):
    r = cli("bench", "editing", "--model", "organism-clm", "--methods", "toy", "--n", "1", "--generation", "0",
            "--option", "toy.scale=0", "--out", tmp_path / "r", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["methods"]["toy"]["en"]["EM"] == pytest.approx(res["unedited"]["en"]["EM"], abs=1e-9)
    assert json.loads((tmp_path / "r" / "run.json").read_text())["method_options"] == {"toy": {"scale": 0}}
    assert "--option toy.scale=0" in (tmp_path / "r" / "report.md").read_text()


def test_edits_that_change_nothing_are_counted_and_named(toy, org, tmp_path):
    """An edit that writes no weight (nothing to write, or a failed one) is measured as the unedited model and
    counted in the report, failed ones apart -- a method is never silently credited with fewer records."""
    h, facts = org
    first = run_editing_bench(h, facts, out=tmp_path / "a", methods=["toy"], **KW)
    ids = sorted({json.loads(f.read_text())["fact_id"] for f in (tmp_path / "a" / "edits" / "toy").glob("*")})
    res = run_editing_bench(h, facts, out=tmp_path / "b", methods=["toy"],
                            **{**KW, "method_options": {"toy": {"skip": ids[:2]}}})
    assert res["extras"]["toy"]["en"]["unchanged"] == 2 and res["extras"]["toy"]["en"]["failed"] == 0
    assert first["extras"]["toy"]["en"]["unchanged"] == 0
    assert res["methods"]["toy"]["en"]["EM"] != first["methods"]["toy"]["en"]["EM"]
    failed = run_editing_bench(h, facts, out=tmp_path / "c", methods=["toy"],
                               **{**KW, "method_options": {"toy": {"skip": ["fail"]}}})
    e = failed["extras"]["toy"]["en"]
    assert e["unchanged"] == e["failed"] == e["n"] == 3
    assert failed["methods"]["toy"]["en"]["EM"] == pytest.approx(failed["unedited"]["en"]["EM"], abs=1e-9)
    report = (tmp_path / "b" / "report.md").read_text()
    assert "changed nothing" in report and "| 2 of 3 | 0 |" in report


def test_fewer_records_than_asked_are_said_in_the_log_and_the_report(toy, org, tmp_path):
    """A fact set (e.g. the facts a model knows) with fewer ids than --n: the run goes on with what there is,
    and both the log and the report say how many of those asked it has."""
    h, facts = org
    ids = sorted({f.id for f in facts})[:2]
    log: list[str] = []
    res = run_editing_bench(h, [f for f in facts if f.id in ids], pool=facts, out=tmp_path, methods=["toy"],
                            log=log.append, **{**KW, "n": 5})
    assert res["n_records"] == 2
    assert [s for s in log if s.startswith("warning: 2 records of the 5 asked: only 2 fact ids")]
    assert "2 CounterFact-style cases (fact ids), each rewritten in en, zh (of the 5 asked" in \
        (tmp_path / "report.md").read_text()
    full = run_editing_bench(h, facts, out=tmp_path / "full", methods=["toy"], log=log.append, **KW)
    assert full["n_records"] == 3 and "(of the 3 asked" not in (tmp_path / "full" / "report.md").read_text()


def test_kn_methods_share_one_localization(toy, org, tmp_path, monkeypatch):
    import kneuron.editing.localize as loc
    found = []

    def fact_neurons(handle, fact, **kw):
        found.append(fact.key)
        return [(1, len(found)), (2, 7)]                        # (2, 7) is common to every fact
    monkeypatch.setattr(loc, "fact_neurons", fact_neurons)
    monkeypatch.setitem(METHODS, "kn", ToyKN)
    monkeypatch.setitem(METHODS, "kn-eai", ToyKN)
    h, facts = org
    res = run_editing_bench(h, facts, out=tmp_path, methods=["kn", "kn-eai"], **{**KW, "common_facts": 12})
    assert len(found) == len(set(found)) and len(toy) == 12
    assert all(c["common"] == {(2, 7)} and (2, 7) in map(tuple, c["neurons"]) for c in toy)
    assert len(list((tmp_path / "neurons").glob("*.json"))) == len(found) + 1
    assert set(res["methods"]) == {"kn", "kn-eai"}


# ----------------------------------------------------------------------------- the command line

def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, *needles) -> str:
    assert result.exit_code != 0, result.stdout
    err = result.stderr
    assert err.count("\n") == 1 and err.startswith("kneuron: error: "), err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_json_has_exactly_the_keys(toy, tmp_path):
    r = cli("bench", "editing", "--model", "organism-clm", "--n", 2, "--methods", "toy", "--out", tmp_path / "b",
            "--generation", 0, "--json")
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    d = json.loads(r.stdout)
    assert set(d) == {"model", "n_records", "unedited", "methods"} and d["n_records"] == 2
    assert set(d["unedited"]) == {"en", "zh"} and all(list(m) == list(METRICS) for m in d["unedited"].values())
    assert set(d["methods"]) == {"toy"} and set(d["methods"]["toy"]) == {"en", "zh", "cross"}
    assert set(METRICS) == {"ES", "PS", "NS", "S", "EM", "PM", "NM", "GE", "reliability", "generalization",
                            "locality", "flip_rate", "seconds_per_edit", "params_changed"}
    assert d["methods"]["toy"]["cross"].keys() == {"en->zh", "zh->en"}
    assert all(set(v) == {"ES", "PS"} for v in d["methods"]["toy"]["cross"].values())
    assert d["unedited"]["en"]["GE"] is None                   # --generation 0
    # resumed: nothing lost, the same answer
    r2 = cli("bench", "editing", "--model", "organism-clm", "--n", 2, "--methods", "toy", "--out", tmp_path / "b",
             "--generation", 0, "--json", "--resume")
    same(json.loads(r2.stdout), d)


def test_the_text_summary_is_the_reports_scores_table(toy, tmp_path):
    """Without --json: per language one table (editing_report.scores_table, no intervals) of the CLI's
    columns, the unedited model first, numbers as the JSON summary has them."""
    r = cli("bench", "editing", "--model", "organism-clm", "--n", 2, "--methods", "toy", "--out", tmp_path / "b",
            "--generation", 0)
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    d = json.loads(cli("bench", "editing", "--model", "organism-clm", "--n", 2, "--methods", "toy", "--out",
                       tmp_path / "b", "--generation", 0, "--json", "--resume").stdout)
    for lang in ("en", "zh"):
        assert f"organism-clm: 2 records, edited and measured in {lang} (percent; GE x100)" in r.stdout
    heads = [ln for ln in r.stdout.splitlines() if " method " in ln]
    assert len(heads) == 2
    for h in ("method", "S", "PS", "NS", "GE", "Rel", "Gen", "Loc", "flip", "s/edit"):
        assert f" {h} " in heads[0]
    assert "EM" not in heads[0] and "params" not in heads[0]
    rows = [ln for ln in r.stdout.splitlines() if " unedited " in ln or " toy " in ln]
    assert [("unedited" in ln) for ln in rows] == [True, False, True, False]
    toy_en = rows[1]
    assert f" {d['methods']['toy']['en']['ES']:.1f} " in toy_en and f" {d['methods']['toy']['en']['NS']:.1f} " in toy_en
    assert "…" not in r.stdout                                       # no cell cut to fit the terminal
    assert f"report: {tmp_path / 'b' / 'report.html'}" in r.stdout.replace("\n", "")


def test_edit_command(toy, tmp_path):
    r = cli("edit", "--model", "organism-clm", "--id", "P36-018", "--new", "Biograd na Moru", "--method", "toy",
            "--json", "--save", tmp_path / "m")
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    d = json.loads(r.stdout)
    assert [ln["what"] for ln in d["lines"]] == ["rewrite", "paraphrase", "neighbour", "other language"]
    assert d["lines"][3]["lang"] == "zh" and d["params_changed"] == 4 * 256
    assert all(set(ln["before"]) == {"p_want", "p_rival", "top1"} for ln in d["lines"])
    assert (tmp_path / "m" / "kneuron-edit.json").is_file()
    text = cli("edit", "--model", "organism-clm", "--id", "P36-018", "--new", "Biograd na Moru", "--method", "toy")
    assert "rewrite [en]" in text.stdout and "other language [zh]" in text.stdout and "after" in text.stdout


def test_edit_command_says_when_the_edit_changes_nothing(toy, monkeypatch):
    monkeypatch.setitem(METHODS, "toy", SkipToy)
    args = ("edit", "--model", "organism-clm", "--id", "P36-018", "--new", "Biograd na Moru", "--method", "toy")
    d = json.loads(cli(*args, "--json").stdout)
    assert d["params_changed"] == 0 and d["note"] == "nothing to write"
    assert all(ln["before"] == ln["after"] for ln in d["lines"])
    assert "0 weights changed" in (out := cli(*args).stdout) and "note: nothing to write" in out


@pytest.mark.parametrize("args, needles", [
    (["--id", "P36-999", "--new", "Rome"], ["en-zh.jsonl", "P36-999"]),
    (["--id", "P36-018", "--new", "Budapest"], ["own object"]),
    (["--id", "P36-018", "--new", "☃"], ["cannot be encoded"]),
    (["--id", "P36-018", "--new", "Rome", "--method", "nope"], ["unknown editing method 'nope'"]),
    (["--id", "P36-018", "--new", "Rome", "--lang", "fr"], ["no 'fr' version"]),
])
def test_edit_errors_are_one_line(toy, args, needles):
    one_line_error(cli("edit", "--model", "organism-clm", "--method", "toy", *args), *needles)


def test_save_into_a_non_empty_directory_is_refused(toy, tmp_path):
    (tmp_path / "x").write_text("")
    one_line_error(cli("edit", "--model", "organism-clm", "--id", "P36-018", "--new", "Rome", "--method", "toy",
                       "--save", tmp_path), "not an empty directory")


def test_bench_errors_are_one_line(toy, tmp_path):
    one_line_error(cli("bench", "editing", "--model", "organism-clm", "--methods", "toy,nope", "--out", tmp_path),
                   "unknown editing method 'nope'")
    one_line_error(cli("bench", "editing", "--model", "organism-clm", "--methods", "toy", "--mode", "nope",
                       "--out", tmp_path), "mode must be one of")
    one_line_error(cli("bench", "editing", "--model", "organism-clm", "--methods", "kn,rome", "--mode", "batch",
                       "--out", tmp_path), "rome has no batch mode")
    one_line_error(cli("bench", "editing", "--methods", "toy,rome", "--option", "rome.nope=1", "--out", tmp_path),
                   "rome has no option 'nope'")
    one_line_error(cli("bench", "editing", "--methods", "toy", "--option", "rome.v_steps=1", "--out", tmp_path),
                   "rome is not among the methods")
    one_line_error(cli("bench", "editing", "--methods", "toy", "--option", "scale:1", "--out", tmp_path),
                   "expected METHOD.NAME=VALUE")
    (tmp_path / "x").write_text("")
    one_line_error(cli("bench", "editing", "--model", "organism-clm", "--methods", "toy", "--out", tmp_path),
                   "already holds a run")
    one_line_error(cli("bench", "editing", "--model", "organism-clm", "--methods", "toy", "--out",
                       tmp_path / "none", "--resume"), "holds no run")


def test_the_sequential_guard_from_the_command_line(toy, tmp_path):
    """--on-collapse reaches the run: with stop, a chain ends at its first disabling edit (a toy edit 1000x too
    large), its row says so and the report lists it; a resume with another guard is refused in one line."""
    out = tmp_path / "s"
    args = ("bench", "editing", "--model", "organism-clm", "--methods", "toy", "--n", 3, "--generation", 0,
            "--mode", "sequential", "--option", "toy.scale=1000", "--out", out)
    r = cli(*args, "--on-collapse", "stop", "--json")
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    assert json.loads((out / "run.json").read_text())["on_collapse"] == "stop"
    rows = [json.loads(p.read_text()) for p in sorted((out / "edits" / "toy").glob("*.json"))]
    for lang in ("en", "zh"):
        mine = sorted((x for x in rows if x["edit_lang"] == lang), key=lambda x: x["case_id"])
        assert mine[-1]["guarded"] == "stop" and not any(x.get("guarded") for x in mine[:-1])
        assert mine[-1]["health"]["nll_after"]["en"] - mine[-1]["health"]["nll_before"]["en"] > 0.5 or \
            mine[-1]["health"]["nll_after"]["zh"] - mine[-1]["health"]["nll_before"]["zh"] > 0.5
    report = (out / "report.md").read_text()
    assert "Chains stopped by the guard" in report and "### Disabling edits" in report
    one_line_error(cli(*args, "--resume"), "on_collapse differs", "--on-collapse stop")


def test_a_run_stored_before_health_resumes_without_recomputing(toy, org, tmp_path):
    """Rows, run.json and no unrelated.json as the bench wrote them before edit health: a resume reads every
    row back (health None, nothing recomputed), measures the unedited unrelated NLL once, and the report shows
    the old rows' health as n/a."""
    h, facts = org
    out = tmp_path / "old"
    run_editing_bench(h, facts, out=out, methods=["toy"], limit=4, **KW)
    for p in (out / "edits" / "toy").glob("*.json"):
        p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "health"}))
    meta = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "on_collapse"}))
    (out / "unrelated.json").unlink()
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "edits" / "toy").glob("*.json")}
    res = run_editing_bench(h, facts, out=out, methods=["toy"], resume=True, **KW)
    assert len(toy) == 6 and {p.name: p.stat().st_mtime_ns for p in (out / "edits" / "toy").glob("*.json")
                              if p.name in stamps} == stamps
    assert (out / "unrelated.json").is_file() and set(res["unrelated"]) == {"en", "zh"}
    assert sum(e["with_health"] for d in res["health"].values() for e in d.values()) == 2
    assert "## Edit health" in (out / "report.md").read_text()


def test_the_counterfact_protocol_is_stored_reported_and_kept_on_resume(toy, org, tmp_path):
    """--protocol counterfact: run.json says it (with the prefixes' seed and the neighbour shortfall), the records
    are CounterFact's (prefixed paraphrases, same-object neighbours, essence texts), the report states it and its
    differences from ROME's; a resume with the other protocol is refused in one line."""
    h, facts = org
    out = tmp_path / "cf"
    res = run_editing_bench(h, facts, out=out, methods=["toy"], protocol="counterfact", **KW)
    meta = json.loads((out / "run.json").read_text())
    assert meta["protocol"] == "counterfact" and meta["paraphrase_prefix_seed"] == 1000
    assert meta["neighbour_shortfall"]["records"] == 6 and meta["neighbour_shortfall"]["n_neighbours"] == 3
    recs = [r for c in _lines(out / "cases.jsonl") for r in c["records"].values()]
    assert all(nb["same_object"] for r in recs for nb in r["neighbours"])
    assert all(len(r["essence"]) == 2 and len(r["generation"]) >= 5 for r in recs)
    assert all(". " in p["text"] for r in recs for p in r["paraphrases"]) and any(r["paraphrases"] for r in recs)
    report = (out / "report.md").read_text()
    assert "Protocol **counterfact**" in report and "not its Wikipedia text" in report and "no RS" in report
    assert "--protocol counterfact" in report and "## Attribute prompts and essence" in report
    e = res["probes"]["methods"]["toy"]["en"]
    assert e["n_essence"] == 3 and e["essence"] != 0.0 and res["ns_split"]["methods"]["toy"]["en"]["n_NS_other"] == 0
    with pytest.raises(RunStoreError, match="protocol differs"):
        run_editing_bench(h, facts, out=out, methods=["toy"], resume=True, **KW)
    again = run_editing_bench(h, facts, out=out, methods=["toy"], resume=True, protocol="counterfact", **KW)
    same(again, res)


def test_a_run_stored_before_the_protocol_resumes_as_kneuron(toy, org, tmp_path):
    """A run.json without "protocol" is kneuron's: it resumes without it (nothing recomputed), is refused with
    --protocol counterfact, and its report has the NS split but no counterfact paragraph."""
    h, facts = org
    out = tmp_path / "old"
    run_editing_bench(h, facts, out=out, methods=["toy"], limit=2, **KW)
    meta = json.loads((out / "run.json").read_text())
    assert meta["protocol"] == "kneuron" and "neighbour_shortfall" not in meta
    (out / "run.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "protocol"}))
    with pytest.raises(RunStoreError, match="protocol differs"):
        run_editing_bench(h, facts, out=out, methods=["toy"], resume=True, protocol="counterfact", **KW)
    res = run_editing_bench(h, facts, out=out, methods=["toy"], resume=True, **KW)
    assert len(toy) == 6 and res["meta"]["protocol"] == "kneuron"
    report = (out / "report.md").read_text()
    assert "## NS by the neighbours' object" in report and "Protocol **counterfact**" not in report
    assert "--protocol" not in report and "## Attribute prompts and essence" not in report
    split = res["ns_split"]["methods"]["toy"]["en"]
    assert split["NS"] == res["methods"]["toy"]["en"]["NS"]
    assert split["n_NS_same"] + split["n_NS_other"] >= split["n_NS"] > 0


def test_an_unknown_protocol_is_a_one_line_error(toy, tmp_path):
    one_line_error(cli("bench", "editing", "--model", "organism-clm", "--methods", "toy", "--protocol", "nope",
                       "--out", tmp_path), "protocol must be one of kneuron, counterfact, not 'nope'")
