"""The `kneuron` command line, end to end, on tiny random-weight models saved to temp directories.

Offline and fast: the real smollm2-135m is never loaded. Most commands run in-process through
typer's CliRunner (stdout and stderr captured separately); a couple run the installed console script.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from kneuron.cli import app
from support.tiny import tiny_model, word_tokenizer

KNEURON = Path(sys.executable).parent / "kneuron"
TEMPLATE_CAPITAL = "the capital of [X] is [Y] ."
TEMPLATE_LANGUAGE = "the language spoken in [X] is [Y] ."


def fact(id, relation, subject, obj, *templates):
    return {"id": id, "relation": relation, "lang": "en", "subject": subject, "object": obj,
            "templates": list(templates)}


# two relations, so that evaluate draws unrelated partners from the other relation
FACTS = [
    fact("c1", "capital", "france", "paris", TEMPLATE_CAPITAL),
    fact("c2", "capital", "italy", "rome", TEMPLATE_CAPITAL, "[X] capital is [Y]"),
    fact("l1", "language", "germany", "german", TEMPLATE_LANGUAGE),
    fact("l2", "language", "spain", "spanish", TEMPLATE_LANGUAGE),
]


def write_facts(path: Path, facts=FACTS) -> Path:
    path.write_text("".join(json.dumps(f) + "\n" for f in facts), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- fixtures and helpers

@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, str]:
    """Tiny gpt2 (causal) and bert (masked) models saved as Hugging Face directories."""
    out = {}
    for family in ("gpt2", "bert"):
        d = tmp_path_factory.mktemp(f"tiny-{family}")
        model, kind = tiny_model(family, dtype=torch.float32)
        model.save_pretrained(d)
        word_tokenizer(kind).save_pretrained(d)
        out[family] = str(d)
    return out


@pytest.fixture(scope="session")
def facts_file(tmp_path_factory) -> Path:
    return write_facts(tmp_path_factory.mktemp("facts") / "facts.jsonl")


def cli(*args):
    """Invoke the CLI in-process; stdout and stderr are kept apart (click >= 8.2)."""
    return CliRunner().invoke(app, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


def one_line_error(result, *needles) -> str:
    """A failed command: nonzero exit, nothing on stdout, one 'kneuron: error:' line on stderr."""
    assert result.exit_code != 0, result.stdout
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        f"uncaught {result.exception!r}"
    err = result.stderr
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert err.startswith("kneuron: error: "), err
    assert result.stdout == ""
    for n in needles:
        assert n in err, (n, err)
    return err


def locate_args(facts, out, model, *extra, steps=3):
    return ["locate", "-f", facts, "-o", out, "-m", model, "--steps", steps, "--json", *extra]


def run_locate(facts, out, model, *extra):
    r = ok(cli(*locate_args(facts, out, model, *extra)))
    return json.loads(r.stdout)


def tables(run_dir: Path):
    return pq.read_table(run_dir / "facts.parquet"), pq.read_table(run_dir / "neurons.parquet")


def assert_same_tables(a: Path, b: Path):
    (fa, na), (fb, nb) = tables(a), tables(b)
    assert fa.num_rows > 0 and na.num_rows > 0
    assert fa.equals(fb), (fa.to_pylist(), fb.to_pylist())
    assert na.equals(nb)


@pytest.fixture(scope="module")
def gpt2_run(models, facts_file, tmp_path_factory) -> Path:
    """An uninterrupted reference run of all facts on the tiny gpt2 (not modified by the tests)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    run_locate(facts_file, out, models["gpt2"])
    return out


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- probe

def check_probe_json(j, prompt, k):
    assert set(j) == {"prompt", "top", "target"}
    assert j["prompt"] == prompt
    ps = [t["p"] for t in j["top"]]
    assert len(ps) == k
    assert all(isinstance(t["token"], str) for t in j["top"])
    assert all(0.0 < p <= 1.0 for p in ps)
    assert ps == sorted(ps, reverse=True)
    assert sum(ps) <= 1.0 + 1e-6


def test_probe_json_end_to_end(models):
    """The installed console script, in a fresh process: target.p is the library's answer_prob."""
    from kneuron.probe import answer_prob
    from kneuron import load_model
    prompt = "the capital of france is"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    p = subprocess.run([str(KNEURON), "probe", prompt, "--model", models["gpt2"], "--target", "paris",
                        "--top", "5", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    check_probe_json(j, prompt, 5)
    assert j["target"]["text"] == "paris"
    expected = answer_prob(load_model(models["gpt2"]), prompt, "paris").prob
    assert j["target"]["p"] == pytest.approx(expected, rel=1e-6)
    assert 0.0 < j["target"]["p"] < 1.0


@pytest.mark.parametrize("family,prompt", [("gpt2", "the capital of italy is"),
                                           ("bert", "the capital of italy is [Y] .")])
def test_probe_in_process(models, family, prompt):
    from kneuron.probe import answer_prob, predict
    from kneuron import load_model
    j = json.loads(ok(cli("probe", prompt, "-m", models[family], "-t", "rome", "-k", 4, "--json")).stdout)
    check_probe_json(j, prompt, 4)
    h = load_model(models[family])
    assert j["target"]["p"] == answer_prob(h, prompt, "rome").prob
    assert [t["p"] for t in j["top"]] == [p for _, p in predict(h, prompt, 4)]
    # without --target there is no target
    j2 = json.loads(ok(cli("probe", prompt, "-m", models[family], "-k", 4, "--json")).stdout)
    assert j2["target"] is None and j2["top"] == j["top"]


def test_probe_table_output(models):
    r = ok(cli("probe", "the capital of france is", "-m", models["gpt2"], "-t", "paris", "-k", 3))
    assert "p('paris') = " in r.stdout


# ----------------------------------------------------------------------------- locate, evaluate, intervene

def check_run(out: Path, facts, model_dir, kind):
    for name in ("facts.parquet", "neurons.parquet", "run.json"):
        assert (out / name).is_file(), name
    assert not (out / "parts").exists(), "finalize() leaves no parts behind"
    meta = json.loads((out / "run.json").read_text())
    assert meta["model"] == model_dir and meta["kind"] == kind and meta["steps"] == 3 and meta["method"] == "ig"
    ft, nt = tables(out)
    rows = ft.to_pylist()
    assert [r["fact_id"] for r in rows] == [f["id"] for f in facts]
    assert [r["order"] for r in rows] == list(range(len(facts)))
    assert all(0.0 < r["p_target"] < 1.0 for r in rows)
    assert [r["n_prompts"] for r in rows] == [len(f["templates"]) for f in facts]
    by_fact: dict = {}
    for r in nt.to_pylist():
        by_fact.setdefault(r["fact_id"], []).append(r)
    for r in rows:
        ns = by_fact.get(r["fact_id"], [])
        assert len(ns) == r["n_neurons"]
        assert [n["rank"] for n in ns] == list(range(len(ns))), "ranks start at 0, one per neuron"
        scores = [n["score"] for n in ns]
        assert scores == sorted(scores, reverse=True), "scores descend with rank"
        assert len({(n["layer"], n["neuron"]) for n in ns}) == len(ns)
        assert all(0 <= n["layer"] < meta["n_layers"] and 0 <= n["neuron"] < meta["n_neurons"] for n in ns)
    assert nt.num_rows > 0
    return ft, nt


@pytest.mark.parametrize("family,kind", [("gpt2", "causal"), ("bert", "masked")])
def test_locate_then_evaluate(models, facts_file, tmp_path, family, kind):
    out = tmp_path / "run"
    s = run_locate(facts_file, out, models[family])
    assert s["n_facts"] == s["new_facts"] == len(FACTS)
    ft, _ = check_run(out, FACTS, models[family], kind)
    assert s["mean_neurons_per_fact"] == pytest.approx(sum(ft["n_neurons"].to_pylist()) / len(FACTS))

    j = json.loads(ok(cli("evaluate", "--run", out, "--json")).stdout)
    assert j["n_facts"] == len(FACTS) and j["dropped"] == 0
    for op in ("suppress", "enhance"):
        assert {"related", "unrelated", "sr"} <= set(j[op])
        assert j[op]["n_related"] == j[op]["n_unrelated"] == len(FACTS)
    assert "sr" in j
    if j["sr"] is not None:
        assert j["sr"] == pytest.approx(abs(j["suppress"]["sr"]) + abs(j["enhance"]["sr"]))
    assert j["unrelated_same_relation"] == 0, "two relations: every partner is from the other one"
    assert (out / "evaluation.parquet").is_file()
    assert json.loads((out / "evaluation.json").read_text()) == j
    ev = pq.read_table(out / "evaluation.parquet").to_pylist()
    assert [r["fact_id"] for r in ev] == [f["id"] for f in FACTS]
    assert all(r["relation"] != r["unrelated_relation"] for r in ev)
    # p_before is the probability locate recorded for the first prompt
    assert [r["p_before"] for r in ev] == pytest.approx(ft["p_target"].to_pylist(), rel=1e-5)


def test_evaluate_table_output(gpt2_run, tmp_path):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(gpt2_run, run)
    r = ok(cli("evaluate", "--run", run))
    assert "SR = |SR_enhance| + |SR_suppress| = " in r.stdout


@pytest.mark.parametrize("op", ["suppress", "enhance"])
def test_intervene_json(gpt2_run, op):
    before = snapshot(gpt2_run)
    j = json.loads(ok(cli("intervene", "--run", gpt2_run, "--op", op, "--json")).stdout)
    assert j["op"] == op
    ft = pq.read_table(gpt2_run / "facts.parquet").to_pylist()
    assert [r["fact_id"] for r in j["facts"]] == [r["fact_id"] for r in ft], "one entry per fact, run order"
    for r, f in zip(j["facts"], ft):
        assert r["n_neurons"] == f["n_neurons"] and r["lang"] == "en"
        assert r["p_before"] == pytest.approx(f["p_target"], rel=1e-5)
        assert 0.0 < r["p_after"] <= 1.0
        assert r["relative_change"] == pytest.approx((r["p_after"] - r["p_before"]) / r["p_before"])
        if r["n_neurons"]:
            assert r["p_after"] != r["p_before"]
    assert snapshot(gpt2_run) == before, "intervene changes nothing on disk"


def test_intervene_bad_op(gpt2_run):
    one_line_error(cli("intervene", "--run", gpt2_run, "--op", "bogus"), "--op", "bogus")


def test_intervene_and_evaluate_on_missing_run(tmp_path):
    one_line_error(cli("intervene", "--run", tmp_path / "nope", "--op", "suppress"), "no run.json")
    one_line_error(cli("evaluate", "--run", tmp_path / "nope"), "no run.json")


def test_evaluate_refuses_changed_fact_file(models, tmp_path):
    facts = write_facts(tmp_path / "f.jsonl", FACTS[:2] + FACTS[2:3])
    run_locate(facts, tmp_path / "run", models["gpt2"])
    write_facts(facts, FACTS[:2] + FACTS[2:4])
    # given as --facts, a fact file that changed since the run is refused
    one_line_error(cli("evaluate", "--run", tmp_path / "run", "--facts", facts), str(facts), "hash differs")
    # the run keeps its own copy of its facts: it needs neither the file nor its old content
    facts.unlink()
    j = json.loads(ok(cli("evaluate", "--run", tmp_path / "run", "--json")).stdout)
    assert j["n_facts"] == 3
    moved = tmp_path / "moved.jsonl"
    write_facts(moved, FACTS[:2] + FACTS[2:3])
    j = json.loads(ok(cli("evaluate", "--run", tmp_path / "run", "--facts", moved, "--json")).stdout)
    assert j["n_facts"] == 3


# ----------------------------------------------------------------------------- determinism and resume

def test_locate_is_deterministic(models, facts_file, gpt2_run, tmp_path):
    run_locate(facts_file, tmp_path / "again", models["gpt2"])
    assert_same_tables(gpt2_run, tmp_path / "again")


def test_locate_resume_after_limit(models, facts_file, gpt2_run, tmp_path):
    out = tmp_path / "run"
    s1 = run_locate(facts_file, out, models["gpt2"], "--limit", 2)
    assert s1["n_facts"] == 2 and pq.read_table(out / "facts.parquet")["fact_id"].to_pylist() == ["c1", "c2"]
    s2 = run_locate(facts_file, out, models["gpt2"], "--resume")
    assert s2["n_facts"] == len(FACTS) and s2["new_facts"] == len(FACTS) - 2
    assert_same_tables(gpt2_run, out)
    # resuming a finished run does nothing new
    s3 = run_locate(facts_file, out, models["gpt2"], "--resume")
    assert s3["n_facts"] == len(FACTS) and s3["new_facts"] == 0
    assert_same_tables(gpt2_run, out)


def test_locate_refuses_existing_run_without_resume(models, facts_file, gpt2_run):
    before = snapshot(gpt2_run)
    one_line_error(cli(*locate_args(facts_file, gpt2_run, models["gpt2"])), str(gpt2_run), "--resume")
    assert snapshot(gpt2_run) == before


def test_resume_with_other_parameters_fails(models, facts_file, gpt2_run):
    before = snapshot(gpt2_run)
    one_line_error(cli(*locate_args(facts_file, gpt2_run, models["gpt2"], "--resume", steps=4)), "steps")
    assert snapshot(gpt2_run) == before


def test_resume_without_run_fails(models, facts_file, tmp_path):
    one_line_error(cli(*locate_args(facts_file, tmp_path / "none", models["gpt2"], "--resume")), "no run.json")


def test_interrupted_locate_keeps_finished_facts(models, facts_file, gpt2_run, tmp_path, monkeypatch):
    # patch locate_facts where the library's locate() looks it up (the module that defines it; the
    # package re-exports the function `locate`, which would shadow a submodule of that name)
    import kneuron
    mod = sys.modules[kneuron.locate.__module__]
    real, calls = mod.locate_facts, []

    def flaky(*a, **k):
        calls.append(a[1][0][0].id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    out = tmp_path / "run"
    monkeypatch.setattr(mod, "locate_facts", flaky)
    r = cli(*locate_args(facts_file, out, models["gpt2"]))
    assert r.exit_code == 130
    one_line_error(r, "interrupted", str(out), "--resume")
    assert calls == ["c1", "c2", "l1"]
    from kneuron import open_run
    assert open_run(out).facts()["fact_id"].to_pylist() == ["c1", "c2"]
    monkeypatch.setattr(mod, "locate_facts", real)

    s = run_locate(facts_file, out, models["gpt2"], "--resume")
    assert s["n_facts"] == len(FACTS) and s["new_facts"] == 2
    assert not (out / "parts").exists()
    assert_same_tables(gpt2_run, out)


# ----------------------------------------------------------------------------- bad input

def test_unknown_model(facts_file, tmp_path):
    one_line_error(cli("probe", "the capital of", "-m", "no-such-model-xyz"), "no-such-model-xyz", "downloads are off")
    one_line_error(cli(*locate_args(facts_file, tmp_path / "run", "no-such-model-xyz")), "downloads are off")
    assert not (tmp_path / "run").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(cli("probe", "the capital of", "-m", empty), str(empty), "not a Hugging Face model directory")


def bad_fact_file(tmp_path, lines, name="bad.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    return p


def locate_fails(models, facts, tmp_path, *needles, model="gpt2", extra=()):
    out = tmp_path / "out"
    err = one_line_error(cli(*locate_args(facts, out, models[model], *extra)), *needles)
    assert not out.exists(), "bad input fails before anything is written"
    return err


def test_template_without_y(models, tmp_path):
    f = bad_fact_file(tmp_path, [json.dumps(FACTS[0]), json.dumps(fact("x", "capital", "spain", "madrid",
                                                                         "the capital of [X] is madrid ."))])
    locate_fails(models, f, tmp_path, f"{f}:2:", 'field "templates[0]"', "[Y]")


def test_malformed_json_line(models, tmp_path):
    f = bad_fact_file(tmp_path, [json.dumps(FACTS[0]), "", '{"id": "x", "relation": '])
    locate_fails(models, f, tmp_path, f"{f}:3:", "malformed JSON")


@pytest.mark.parametrize("lines", [[], ["", "   "]])
def test_empty_fact_file(models, tmp_path, lines):
    f = bad_fact_file(tmp_path, lines)
    locate_fails(models, f, tmp_path, str(f), "no facts")


def test_missing_fact_file(models, tmp_path):
    locate_fails(models, tmp_path / "missing.jsonl", tmp_path, "missing.jsonl", "no such fact file")


@pytest.mark.parametrize("model", ["gpt2", "bert"])
def test_answer_not_in_vocabulary(models, tmp_path, model):
    f = bad_fact_file(tmp_path, [json.dumps(FACTS[0]), json.dumps(FACTS[2]),
                                 json.dumps(fact("x", "capital", "spain", "london", TEMPLATE_CAPITAL))])
    locate_fails(models, f, tmp_path, f"{f}:3:", 'field "object"', "london", "[UNK]", model=model)


def test_causal_template_with_y_inside(models, tmp_path):
    mid = "[Y] is the capital of [X] ."
    f = bad_fact_file(tmp_path, [json.dumps(FACTS[0]),
                                 json.dumps(fact("m", "capital", "spain", "madrid", mid, TEMPLATE_CAPITAL)),
                                 json.dumps(FACTS[2])])
    locate_fails(models, f, tmp_path, f"{f}:2:", "[Y] must end the template", "(or pass --skip-invalid)")
    # skipping the bad template: the fact keeps its usable one
    out = tmp_path / "skip"
    s = run_locate(f, out, models["gpt2"], "--skip-invalid-templates")
    assert s["n_facts"] == 3
    rows = {r["fact_id"]: r for r in pq.read_table(out / "facts.parquet").to_pylist()}
    assert rows["m"]["n_prompts"] == 1 and rows["m"]["prompt"] == "the capital of spain is"
    assert rows["m"]["target"] == "madrid"
    # a masked model can use [Y] anywhere: both templates count
    out = tmp_path / "masked"
    run_locate(f, out, models["bert"])
    rows = {r["fact_id"]: r for r in pq.read_table(out / "facts.parquet").to_pylist()}
    assert rows["m"]["n_prompts"] == 2


def test_no_usable_template_even_when_skipping(models, tmp_path):
    f = bad_fact_file(tmp_path, [json.dumps(fact("m", "capital", "spain", "madrid", "[Y] is the capital of [X] ."))])
    locate_fails(models, f, tmp_path, f"{f}:1:", "no template usable", extra=("--skip-invalid-templates",))


@pytest.mark.parametrize("option,value", [("--method", "nope"), ("--rule", "nope")])
def test_bad_method_or_rule(models, facts_file, tmp_path, option, value):
    err = locate_fails(models, facts_file, tmp_path, "'nope'", extra=(option, value))
    assert ("method" if option == "--method" else "rule") in err
    # checked before the model is loaded: a bad model name is not what is reported
    err = one_line_error(cli(*locate_args(facts_file, tmp_path / "o2", "no-such-model-xyz", option, value)))
    assert "no-such-model-xyz" not in err and "'nope'" in err


def test_bad_steps(models, facts_file, tmp_path):
    locate_fails(models, facts_file, tmp_path, "steps", extra=("--steps", 0))


# ----------------------------------------------------------------------------- regressions (bugs found by these tests, since fixed)

def test_bad_objective_fails_before_writing(models, facts_file, tmp_path):
    locate_fails(models, facts_file, tmp_path, "objective", "'nope'", extra=("--objective", "nope"))


def test_resume_with_other_selection_fails(models, facts_file, tmp_path):
    out = tmp_path / "run"
    run_locate(facts_file, out, models["gpt2"], "--limit", 2, "--top-k", 1, "--rule", "right")
    one_line_error(cli(*locate_args(facts_file, out, models["gpt2"], "--resume")), "differs")


def test_run_with_relative_model_path_evaluates_elsewhere(models, facts_file, tmp_path, monkeypatch):
    model = Path(models["gpt2"])
    monkeypatch.chdir(model.parent)
    run_locate(facts_file, tmp_path / "run", model.name, "--limit", 2)
    monkeypatch.chdir(tmp_path)
    ok(cli("evaluate", "--run", tmp_path / "run", "--json"))


def test_probe_top_larger_than_vocab(models):
    r = cli("probe", "the capital of", "-m", models["gpt2"], "-k", 100000, "--json")
    if r.exit_code == 0:
        assert len(json.loads(r.stdout)["top"]) < 100000
    else:
        one_line_error(r)


def test_negative_limit_is_rejected(models, facts_file, tmp_path):
    locate_fails(models, facts_file, tmp_path, "--limit", extra=("--limit", -1))


# ----------------------------------------------------------------------------- dkn and reproduce

def test_dkn_on_a_run_then_resume(gpt2_run, tmp_path):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(gpt2_run, run)
    j = json.loads(ok(cli("dkn", "--run", run, "--json")).stdout)
    n = pq.read_table(run / "facts.parquet").num_rows
    en = j["langs"]["en"]
    assert en["n_facts"] == n and 1 <= en["forward_passes_per_fact"] <= 6     # unablated + singles + pairs, batched
    lines = (run / "dkn.jsonl").read_text().splitlines()
    assert len(lines) == 1 + n
    again = json.loads(ok(cli("dkn", "--run", run, "--json")).stdout)
    assert again == j and (run / "dkn.jsonl").read_text().splitlines() == lines       # nothing redone
    one_line_error(cli("dkn", "--run", run, "--t-high", "0.5"), "other DKN settings")
    one_line_error(cli("dkn", "--run", run, "--t-low", "0.3", "--t-high", "0.2"), "t_low")
    one_line_error(cli("dkn", "--run", tmp_path / "nope"), "no run.json")


def test_reproduce_refuses_bad_input_in_one_line(models, facts_file, tmp_path):
    one_line_error(cli("reproduce", "-m", models["gpt2"], "-f", facts_file, "-o", tmp_path / "a", "--limit", "0"),
                   "--limit")
    one_line_error(cli("reproduce", "-m", models["gpt2"], "-f", tmp_path / "missing.jsonl", "-o", tmp_path / "b"),
                   "missing.jsonl")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("x")
    one_line_error(cli("reproduce", "-m", models["gpt2"], "-f", facts_file, "-o", tmp_path / "c", "--langs", "en"),
                   "--resume")


def test_locate_prompts_per_batch(models, facts_file, gpt2_run, tmp_path):
    """Several facts' prompts in shared batches: same facts and neurons as the one-at-a-time run
    (scores to float rounding); a bad value is a one-line error that writes nothing."""
    out = tmp_path / "grouped"
    run_locate(facts_file, out, models["gpt2"], "--prompts-per-batch", 4)
    (fa, na), (fb, nb) = tables(out), tables(gpt2_run)
    assert fa["fact_id"].to_pylist() == fb["fact_id"].to_pylist()
    assert fa["n_neurons"].to_pylist() == fb["n_neurons"].to_pylist()
    key = lambda t: [(r["fact_id"], r["layer"], r["neuron"]) for r in t.to_pylist()]  # noqa: E731
    assert key(na) == key(nb)
    assert na["score"].to_pylist() == pytest.approx(nb["score"].to_pylist(), rel=1e-4)
    one_line_error(cli(*locate_args(facts_file, tmp_path / "bad", models["gpt2"], "--prompts-per-batch", 0)),
                   "prompts-per-batch")
    assert not (tmp_path / "bad").exists()


def test_prompt_beyond_the_context_then_skip_invalid(models, tmp_path):
    """Issue 11: a subject of 1,100 words on a model of 1,024 positions is refused in one line (the file,
    the line, the length, the limit) before anything is written; --skip-invalid skips that fact, lists it
    in run.json and counts it in the summary."""
    subject = " ".join(["france"] * 1100)
    f = bad_fact_file(tmp_path, [json.dumps(FACTS[0]), json.dumps(fact("long", "capital", subject, "paris",
                                                                       TEMPLATE_CAPITAL)), json.dumps(FACTS[2])])
    locate_fails(models, f, tmp_path, f'{f}:2: field "subject": ', "1104 tokens", "context of 1024 tokens",
                 "--skip-invalid")
    out = tmp_path / "skip"
    s = run_locate(f, out, models["gpt2"], "--skip-invalid")
    assert s["n_facts"] == 2 and s["skipped"] == 1
    (skipped,) = json.loads((out / "run.json").read_text())["skipped"]
    assert skipped["fact_id"] == "long" and skipped["lang"] == "en"
    assert skipped["reason"].startswith(f"{f}:2: ") and "1104 tokens" in skipped["reason"]
    assert pq.read_table(out / "facts.parquet")["fact_id"].to_pylist() == ["c1", "l1"]
    assert run_locate(f, tmp_path / "strict-ok", models["gpt2"], "--limit", 1)["skipped"] == 0


def test_threads_option_sets_torchs_threads(models):
    import torch
    before = torch.get_num_threads()
    want = 2 if before == 1 else 1
    try:
        ok(cli("--threads", want, "probe", "the capital of italy is", "-m", models["gpt2"], "--json"))
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)
    r = cli("--threads", 0, "probe", "x", "-m", models["gpt2"])
    assert r.exit_code != 0 and "--threads" in r.output


def test_locate_steps_auto_records_auto_and_each_facts_steps(models, facts_file, tmp_path):
    """--steps auto runs and run.json keeps "auto" (a resume must ask for it again); a bad value is one line
    naming the option."""
    out = tmp_path / "auto"
    ok(cli(*locate_args(facts_file, out, models["gpt2"], "--limit", "2", steps="auto")))
    meta = json.loads((out / "run.json").read_text())
    assert json.dumps(meta).count('"auto"') >= 1
    one_line_error(cli(*locate_args(facts_file, tmp_path / "bad", models["gpt2"], steps="many")), "--steps")
    one_line_error(cli(*locate_args(facts_file, tmp_path / "zero", models["gpt2"], steps="0")), "--steps")
