"""Self-contained runs: a run keeps its facts and its model spec, so that intervene, evaluate and dkn
re-open it on the very neurons it was made with, from anywhere, and refuse a model of another shape.

Tiny random-weight gpt2 models saved to temp directories, driven through the CLI in-process."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import transformers as T
from typer.testing import CliRunner

from kneuron.cli import app
from kneuron.models import load_model
from kneuron.runs import reopen
from kneuron.runs.reopen import ModelMismatchError, check_model, load_run, model_spec, open_model
from support.tiny import HEADS, H, I, NL, V, tiny_model, word_tokenizer

SITE = "mlp.c_fc"          # not gpt2's default (mlp.c_proj): its input is H wide, the default's I wide
FACTS = [
    {"id": "c1", "relation": "capital", "lang": "en", "subject": "france", "object": "paris",
     "templates": ["the capital of [X] is [Y] ."]},
    {"id": "c2", "relation": "capital", "lang": "en", "subject": "italy", "object": "rome",
     "templates": ["the capital of [X] is [Y] .", "[X] capital is [Y]"]},
    {"id": "l1", "relation": "language", "lang": "en", "subject": "germany", "object": "german",
     "templates": ["the language spoken in [X] is [Y] ."]},
    {"id": "l2", "relation": "language", "lang": "en", "subject": "spain", "object": "spanish",
     "templates": ["the language spoken in [X] is [Y] ."]},
]
assert H != I


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def ok(r):
    assert r.exit_code == 0, (r.exit_code, r.stdout, r.stderr, r.exception)
    return r


def one_line_error(r, *needles) -> str:
    assert r.exit_code != 0, r.stdout
    assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit), f"uncaught {r.exception!r}"
    err = r.stderr
    assert err.startswith("kneuron: error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    assert r.stdout == ""
    for n in needles:
        assert n in err, (n, err)
    return err


def write_facts(path: Path) -> Path:
    path.write_text("".join(json.dumps(f) + "\n" for f in FACTS), encoding="utf-8")
    return path


def save(model, d: Path) -> str:
    model.save_pretrained(d)
    word_tokenizer("causal").save_pretrained(d)
    return str(d)


def gpt2(**over):
    torch.manual_seed(0)
    kw = {"vocab_size": V, "n_embd": H, "n_layer": NL, "n_head": HEADS, "n_inner": I, "pad_token_id": 0,
          "eos_token_id": 5, "bos_token_id": 6, **over}
    cfg = T.GPT2Config(**kw)
    return T.AutoModelForCausalLM.from_config(cfg).float().eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """The tiny gpt2, a byte copy of it, and two of other shapes (fewer layers; a wider MLP)."""
    root = tmp_path_factory.mktemp("models")
    model, _ = tiny_model("gpt2", dtype=torch.float32)
    out = {"gpt2": save(model, root / "gpt2")}
    out["copy"] = str(shutil.copytree(root / "gpt2", root / "copy"))
    out["fewer_layers"] = save(gpt2(n_layer=NL - 1), root / "fewer-layers")
    out["wider"] = save(gpt2(n_inner=I + 8), root / "wider")
    return out


def locate(facts: Path, out: Path, model: str, *extra):
    ok(cli("locate", "-f", facts, "-o", out, "-m", model, "--steps", 3, "--device", "cpu", "--json", *extra))
    return out


@pytest.fixture(scope="module")
def site_run(models, tmp_path_factory) -> Path:
    """A run made with a non-default --site (not modified by the tests: they copy it)."""
    d = tmp_path_factory.mktemp("site")
    return locate(write_facts(d / "facts.jsonl"), d / "run", models["gpt2"], "--site", SITE)


@pytest.fixture(scope="module")
def default_run(models, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("default")
    return locate(write_facts(d / "facts.jsonl"), d / "run", models["gpt2"])


@pytest.fixture
def opened(monkeypatch) -> list:
    """Every handle the CLI re-opens a run with (the commands import open_model at call time)."""
    seen = []

    def spy(*a, **k):
        h = real(*a, **k)
        seen.append(h)
        return h

    real = reopen.open_model
    monkeypatch.setattr(reopen, "open_model", spy)
    return seen


def copy_run(run: Path, where: Path) -> Path:
    return Path(shutil.copytree(run, where))


# ----------------------------------------------------------------------------- what a run records

def test_run_records_its_model_spec_and_facts(site_run, default_run, models):
    meta = json.loads((site_run / "run.json").read_text())
    spec = meta["model_spec"]
    assert {k: spec[k] for k in ("name", "kind", "site", "layers", "n_layers", "n_neurons")} == {
        "name": models["gpt2"], "kind": "causal", "site": SITE, "layers": "transformer.h", "n_layers": NL,
        "n_neurons": H}
    # the old flat keys are kept for older readers
    assert meta["site"] == f"transformer.h[i].{SITE}" and meta["n_neurons"] == H and meta["model"] == models["gpt2"]
    assert json.loads((default_run / "run.json").read_text())["model_spec"]["n_neurons"] == I
    # load_model(site=, layers=) with the spec's fields gives back exactly this site
    h = load_model(spec["name"], site=spec["site"], layers=spec["layers"])
    assert (h.site.layers_path, h.site.proj_path, h.n_layers, h.n_neurons) == ("transformer.h", SITE, NL, H)
    # the run keeps its own copy of its facts, in order
    own = [json.loads(line) for line in (site_run / "facts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert own == FACTS
    # and the neurons it found are the site's: indices below H, some of them in use
    nt = pq.read_table(site_run / "neurons.parquet").to_pylist()
    assert nt and max(r["neuron"] for r in nt) < H


def test_model_spec_of_an_older_run_is_read_from_its_display_site():
    old = {"model": "/m", "kind": "causal", "site": "model.layers[i].mlp.down_proj", "n_layers": 2, "n_neurons": 8}
    s = model_spec(old)
    assert (s.name, s.kind, s.layers, s.site, s.n_layers, s.n_neurons) == (
        "/m", "causal", "model.layers", "mlp.down_proj", 2, 8)
    assert model_spec({"model": "/m"}).site is None


def test_open_model_uses_the_run_site(site_run, models):
    h = open_model(site_run)
    assert (h.site.proj_path, h.site.layers_path, h.n_neurons, h.n_layers) == (SITE, "transformer.h", H, NL)
    assert h.name == models["gpt2"] and h.device.type == "cpu"
    assert load_model(models["gpt2"]).n_neurons == I, "loading by name alone gives other neurons"
    # a byte copy of the model is accepted as --model, on the run's site
    c = open_model(site_run, model=models["copy"])
    assert c.name == models["copy"] and c.site.proj_path == SITE


def test_check_model_refuses_the_default_site_for_a_site_run(site_run, models):
    from kneuron.paper.dkn import dkn_from_run
    from kneuron.paper.table1 import edit_effects, table1_from_run
    plain = load_model(models["gpt2"])                    # what the CLI used to do: the model by name only
    with pytest.raises(ModelMismatchError) as e:
        check_model(plain, site_run)
    msg = str(e.value)
    assert "\n" not in msg and str(site_run) in msg and "n_neurons" in msg and "site" in msg
    assert f"{NL} layers x {H} neurons at transformer.h[i].{SITE}" in msg      # expected
    assert f"{NL} layers x {I} neurons at transformer.h[i].mlp.c_proj" in msg   # found
    assert check_model(open_model(site_run), site_run) is not None
    # the library entry points check the handle they are given, before writing anything
    run = copy_run(site_run, site_run.parent / "lib-copy")
    try:
        with pytest.raises(ModelMismatchError):
            edit_effects(plain, load_run(run))
        with pytest.raises(ModelMismatchError):
            table1_from_run(plain, run)
        with pytest.raises(ModelMismatchError):
            dkn_from_run(plain, run)
        assert not (run / "evaluation.json").exists() and not (run / "dkn.jsonl").exists()
    finally:
        shutil.rmtree(run)


# ----------------------------------------------------------------------------- the CLI re-opens the run's site

def test_intervene_reopens_the_run_site(site_run, models, opened):
    from kneuron.paper.table1 import edit_effects
    j = json.loads(ok(cli("intervene", "--run", site_run, "--op", "suppress", "--device", "cpu", "--json")).stdout)
    (h,) = opened
    assert (h.site.proj_path, h.n_neurons) == (SITE, H)
    expected = edit_effects(load_model(models["gpt2"], site=SITE), load_run(site_run), ops=("suppress",))
    assert [r["fact_id"] for r in j["facts"]] == [f["id"] for f in FACTS]
    assert [r["p_after"] for r in j["facts"]] == pytest.approx([e.p_suppress for e in expected], rel=1e-6)
    assert any(r["n_neurons"] and r["p_after"] != r["p_before"] for r in j["facts"])


def test_evaluate_reopens_the_run_site(site_run, models, opened, tmp_path):
    from kneuron.paper.table1 import edit_effects
    run = copy_run(site_run, tmp_path / "run")
    j = json.loads(ok(cli("evaluate", "--run", run, "--device", "cpu", "--json")).stdout)
    (h,) = opened
    assert (h.site.proj_path, h.n_neurons) == (SITE, H)
    assert j["n_facts"] == len(FACTS)
    ev = pq.read_table(run / "evaluation.parquet").to_pylist()
    expected = edit_effects(load_model(models["gpt2"], site=SITE), load_run(run))
    for r, x in zip(ev, expected):
        assert r["fact_id"] == x.fact_id and r["n_neurons"] == x.n_neurons
        assert r["p_suppress"] == pytest.approx(x.p_suppress, rel=1e-6)
        assert r["p_enhance"] == pytest.approx(x.p_enhance, rel=1e-6)


def test_dkn_reopens_the_run_site(site_run, opened, tmp_path):
    run = copy_run(site_run, tmp_path / "run")
    ok(cli("dkn", "--run", run, "--top-n", 4, "--max-evals", 50, "--device", "cpu", "--json"))
    (h,) = opened
    assert (h.site.proj_path, h.n_neurons) == (SITE, H)
    rows = [json.loads(x) for x in (run / "dkn.jsonl").read_text().splitlines()[1:]]
    kn = {}
    for r in pq.read_table(run / "neurons.parquet").to_pylist():
        kn[r["fact_id"]] = kn.get(r["fact_id"], 0) + 1
    assert [r["fact_id"] for r in rows] == [f["id"] for f in FACTS]
    assert [r["n_kn"] for r in rows] == [kn.get(f["id"], 0) for f in FACTS]


# ----------------------------------------------------------------------------- a moved run needs no --facts

def test_moved_run_works_without_facts(default_run, models, tmp_path):
    src = tmp_path / "a"
    src.mkdir()
    facts = write_facts(src / "f.jsonl")
    run = locate(facts, src / "run", models["gpt2"])
    ref = json.loads(ok(cli("intervene", "--run", run, "--op", "enhance", "--device", "cpu", "--json")).stdout)
    moved = Path(shutil.move(str(run), str(tmp_path / "b" / "elsewhere")))
    facts.unlink()
    shutil.rmtree(src)
    assert json.loads((moved / "run.json").read_text())["facts"] == str(facts), "the recorded path is gone"
    j = json.loads(ok(cli("intervene", "--run", moved, "--op", "enhance", "--device", "cpu", "--json")).stdout)
    assert j == ref
    e = json.loads(ok(cli("evaluate", "--run", moved, "--device", "cpu", "--json")).stdout)
    assert e["n_facts"] == len(FACTS) and (moved / "evaluation.parquet").is_file()
    d = json.loads(ok(cli("dkn", "--run", moved, "--top-n", 3, "--max-evals", 20, "--device", "cpu",
                          "--json")).stdout)
    assert d["langs"]["en"]["n_facts"] == len(FACTS)
    # --facts still wins when given, but must be the fact file the run was made from
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(f) + "\n" for f in FACTS[:3]), encoding="utf-8")
    one_line_error(cli("evaluate", "--run", moved, "--facts", other), str(other), "hash differs")
    same = write_facts(tmp_path / "same.jsonl")
    ok(cli("evaluate", "--run", moved, "--facts", same, "--device", "cpu", "--json"))
    # the run's own copy is accepted as --facts too
    ok(cli("intervene", "--run", moved, "--op", "suppress", "--facts", moved / "facts.jsonl", "--json"))


def test_older_run_without_facts_jsonl_or_spec(default_run, tmp_path):
    """Runs made before this change: the fact file path they recorded, and their display site."""
    run = copy_run(default_run, tmp_path / "old")
    meta = json.loads((run / "run.json").read_text())
    del meta["model_spec"]
    (run / "run.json").write_text(json.dumps(meta))
    (run / "facts.jsonl").unlink()
    rc = load_run(run)
    assert [f.id for f in rc.facts] == [f["id"] for f in FACTS]
    h = open_model(run)
    assert (h.site.proj_path, h.n_neurons) == ("mlp.c_proj", I)
    Path(meta["facts"]).rename(tmp_path / "gone.jsonl")
    try:
        one_line_error(cli("evaluate", "--run", run), "facts.jsonl", "--facts")
        ok(cli("evaluate", "--run", run, "--facts", tmp_path / "gone.jsonl", "--device", "cpu", "--json"))
        changed = Path(meta["facts"])
        changed.write_text("".join(json.dumps(f) + "\n" for f in FACTS[::-1]), encoding="utf-8")
        one_line_error(cli("evaluate", "--run", run), str(changed), "changed")
    finally:
        (tmp_path / "gone.jsonl").replace(meta["facts"])


# ----------------------------------------------------------------------------- a model of another shape is refused

@pytest.mark.parametrize("other,what,found", [("fewer_layers", "n_layers", f"{NL - 1} layers x {I} neurons"),
                                              ("wider", "n_neurons", f"{NL} layers x {I + 8} neurons")])
def test_model_of_another_shape_is_refused(default_run, models, tmp_path, other, what, found):
    run = copy_run(default_run, tmp_path / "run")
    before = sorted(p.name for p in run.iterdir())
    for args in (("intervene", "--op", "suppress"), ("evaluate",), ("dkn",)):
        err = one_line_error(cli(*args, "--run", run, "--model", models[other], "--device", "cpu"),
                             str(run), what, models[other])
        assert f"the run has causal, {NL} layers x {I} neurons at transformer.h[i].mlp.c_proj" in err
        assert f"the model causal, {found}" in err
    assert sorted(p.name for p in run.iterdir()) == before, "nothing written"


def test_run_whose_model_is_gone_says_to_pass_model(models, tmp_path):
    d = Path(shutil.copytree(models["gpt2"], tmp_path / "model"))
    run = locate(write_facts(tmp_path / "f.jsonl"), tmp_path / "run", str(d), "--site", SITE)
    shutil.rmtree(d)
    one_line_error(cli("evaluate", "--run", run), str(d), "--model")
    j = json.loads(ok(cli("intervene", "--run", run, "--op", "suppress", "--model", models["copy"],
                          "--device", "cpu", "--json")).stdout)
    assert len(j["facts"]) == len(FACTS)


def test_override_with_another_architecture_is_refused(site_run, tmp_path):
    model, _ = tiny_model("llama", dtype=torch.float32)
    d = save(model, tmp_path / "llama")
    one_line_error(cli("evaluate", "--run", site_run, "--model", d), str(site_run), SITE)


def test_resume_with_a_larger_limit_extends_the_run_facts(models, tmp_path):
    facts = write_facts(tmp_path / "f.jsonl")
    run = locate(facts, tmp_path / "run", models["gpt2"], "--limit", 2)
    own = run / "facts.jsonl"
    assert [json.loads(x)["id"] for x in own.read_text().splitlines()] == ["c1", "c2"]
    locate(facts, run, models["gpt2"], "--resume")
    assert [json.loads(x) for x in own.read_text().splitlines()] == FACTS
    facts.unlink()
    assert [f.id for f in load_run(run).facts] == [f["id"] for f in FACTS]
