"""--engine ray: a local Ray cluster on CPU gives the local engine's results, survives a worker that
dies mid-run (its fact is redone, none lost or duplicated) and resumes a stopped job."""
import json

import pyarrow.parquet as pq
import pytest
import torch

from kneuron import LocateConfig, load_facts, load_model, locate
from kneuron.runs.ray import RayExecutor
from support.tiny import tiny_model, word_tokenizer

ray = pytest.importorskip("ray")

FACTS = [("france", "paris"), ("italy", "rome"), ("germany", "berlin"), ("spain", "madrid"), ("tanzania", "dodoma"),
         ("france", "french")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    model, kind = tiny_model("gpt2", dtype=torch.float32)
    model.save_pretrained(d / "model")
    word_tokenizer(kind).save_pretrained(d / "model")
    lines = [{"id": f"f{i}", "relation": "P36" if i % 2 else "P37", "lang": "en", "subject": s, "object": o,
              "templates": ["the capital of [X] is [Y]", "the city of [X] was [Y]"]} for i, (s, o) in enumerate(FACTS)]
    (d / "facts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=128 * 2**20)
    yield str(d / "model"), str(d / "facts.jsonl")
    ray.shutdown()


def _tables(run):
    return pq.read_table(run / "facts.parquet"), pq.read_table(run / "neurons.parquet")


@pytest.fixture(scope="module")
def local_run(setup, tmp_path_factory):
    model, facts = setup
    out = tmp_path_factory.mktemp("local") / "run"
    n = torch.get_num_threads()
    torch.set_num_threads(1)                  # as a Ray worker with one CPU: the same float sums
    try:
        locate(load_model(model), load_facts(facts), LocateConfig(steps=4), out, show_progress=False)
    finally:
        torch.set_num_threads(n)
    return out


@pytest.mark.slow
def test_ray_equals_local_and_survives_a_dying_worker(setup, local_run, tmp_path, monkeypatch):
    model, facts = setup
    marker = tmp_path / "died"
    monkeypatch.setenv("KNEURON_DIE_AT", f"3:{marker}")          # a worker dies as it starts fact 3
    out = tmp_path / "ray"
    store = locate(model, load_facts(facts), LocateConfig(steps=4), out, executor=RayExecutor(workers=2),
                   show_progress=False)
    assert marker.exists(), "the worker did not die: the test proves nothing"
    (fa, na), (fb, nb) = _tables(local_run), _tables(out)
    assert fa.num_rows == len(FACTS) and na.num_rows > 0
    assert fa.equals(fb) and na.equals(nb)                          # same facts, same neurons, no duplicates
    assert store.n_new == len(FACTS) and not (out / "parts").exists()
    assert json.loads((out / "run.json").read_text())["engine"] == {"name": "ray", "workers": 2}


@pytest.mark.slow
def test_ray_resumes_a_stopped_job(setup, local_run, tmp_path):
    model, facts = setup
    out = tmp_path / "ray"
    ray2 = RayExecutor(workers=2)
    locate(model, load_facts(facts), LocateConfig(steps=4), out, limit=2, executor=ray2, show_progress=False)
    assert _tables(out)[0].num_rows == 2
    store = locate(model, load_facts(facts), LocateConfig(steps=4), out, resume=True, executor=ray2,
                   show_progress=False)
    assert store.n_new == len(FACTS) - 2
    (fa, na), (fb, nb) = _tables(local_run), _tables(out)
    assert fa.equals(fb) and na.equals(nb)
    with pytest.raises(Exception, match="resume"):
        locate(model, load_facts(facts), LocateConfig(steps=4), out, executor=RayExecutor(workers=1),
               show_progress=False)


def test_bad_input_fails_in_one_line_before_work(setup, tmp_path):
    from kneuron.facts import Fact
    from kneuron.facts.templates import QueryError
    model, _ = setup
    bad = [Fact("x", "P1", "en", "france", "paris", ("[X] is the [Y] capital",))]     # [Y] not last: causal
    with pytest.raises(QueryError, match="must end the template"):
        locate(model, bad, LocateConfig(steps=4), tmp_path / "run", executor=RayExecutor(workers=1),
               show_progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_ray_groups_prompts_and_takes_a_loaded_model(setup, local_run, tmp_path):
    """Groups of several facts' prompts per worker call (execution.prompts_per_batch), and a loaded
    handle (the workers load the same name, site and dtype): the local run's facts and neurons."""
    from kneuron import Execution
    model, facts = setup
    out = tmp_path / "ray"
    store = locate(load_model(model), load_facts(facts), LocateConfig(steps=4), out, executor=RayExecutor(workers=2),
                   execution=Execution(prompts_per_batch=4), show_progress=False)
    (fa, na), (fb, nb) = _tables(local_run), _tables(out)
    assert store.n_new == len(FACTS)
    assert fa["fact_id"].to_pylist() == fb["fact_id"].to_pylist()
    key = lambda t: [(r["fact_id"], r["layer"], r["neuron"]) for r in t.to_pylist()]  # noqa: E731
    assert key(na) == key(nb)
    assert nb["score"].to_pylist() == pytest.approx(na["score"].to_pylist(), rel=1e-4)


def test_ray_executor_options_are_checked():
    from kneuron.errors import ConfigError
    with pytest.raises(ConfigError, match="workers"):
        RayExecutor(workers=0)


def test_cli_engine_ray_equals_local(setup, local_run, tmp_path):
    from typer.testing import CliRunner
    from kneuron.cli import app
    model, facts = setup
    out = tmp_path / "cli"
    r = CliRunner().invoke(app, ["locate", "-f", facts, "-o", str(out), "-m", model, "--steps", "4",
                                 "--engine", "ray", "--workers", "2", "--json"])
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    (fa, na), (fb, nb) = _tables(local_run), _tables(out)
    assert fa.equals(fb) and na.equals(nb)
    assert json.loads(r.stdout)["new_facts"] == len(FACTS)
