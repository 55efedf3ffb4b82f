"""kneuron.cli.paper: `kneuron consistency` and `kneuron cas-effect` over a run made by `kneuron locate --select
cas` on a tiny saved model (table, JSON, the query-neuron test, resuming), and their bad input, each one line and
exit code 2."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from kneuron.paper.consistency import ConsistencyReport
from support.cli import cli, one_line_error
from support.tiny import tiny_model, word_tokenizer

TEMPLATES = ["the capital of [X] is [Y] .", "[X] capital city is [Y] .", "the city of [X] is [Y] ."]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny gpt2 saved, three facts of three templates, and a `locate --select cas` run of them."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("cons-cli")
    model, kind = tiny_model("gpt2", dtype=torch.float32)
    model.save_pretrained(d / "m")
    word_tokenizer(kind).save_pretrained(d / "m")
    facts = d / "facts.jsonl"
    facts.write_text("".join(json.dumps({"id": i, "relation": r, "lang": "en", "subject": s, "object": o,
                                         "templates": TEMPLATES}) + "\n"
                             for i, r, s, o in [("c1", "P36", "france", "paris"), ("c2", "P36", "italy", "rome"),
                                                ("c3", "P37", "spain", "madrid")]))
    r = cli("locate", "-f", facts, "-o", d / "run", "-m", d / "m", "--steps", "2", "--threshold", "0.5",
            "--select", "cas", "--cas-beta1", "1", "--cas-beta2", "2", "--json")
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    return d


def test_locate_select_cas_is_recorded(made):
    meta = json.loads((made / "run" / "run.json").read_text())
    assert (meta["select"], meta["cas_beta1"], meta["cas_beta2"]) == ("cas", 1.0, 2.0)
    assert meta["query_neurons"] is True and (made / "run" / "queries.parquet").is_file()


def test_consistency_prints_a_table_and_writes_the_report(made):
    r = cli("consistency", "--run", made / "run", "--static-threshold", "0.2")
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    assert "localization consistency" in r.stdout and "Otsu" in r.stdout and " m " in r.stdout   # the model, m
    assert r.stdout.rstrip().endswith(f"report in {made / 'run' / 'consistency.json'}")
    rep = ConsistencyReport.load(made / "run" / "consistency.json")
    assert rep.config.static_threshold == 0.2 and [f.fact_id for f in rep.facts] == ["c1", "c2", "c3"]
    assert all(f.n_queries == 3 for f in rep.facts) and not rep.tests
    assert set(rep.shares["static"]["relation"]) == {"P36", "P37"}


def test_consistency_query_test_as_json(made, tmp_path):
    out = tmp_path / "c.json"
    r = cli("consistency", "-r", made / "run", "--metric", "pairwise", "--query-test", "--json", "-o", out)
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    j = json.loads(r.stdout)
    assert j == json.loads(out.read_text()) and j["config"]["metric"] == "pairwise"
    assert j["tests"] and all(len(t["drops"]) == 3 for t in j["tests"])
    assert j["test_summary"]["all"]["n_pairs"] > 0
    assert (made / "run" / "consistency.jsonl").is_file()


def test_consistency_bad_input_is_one_line(made, tmp_path):
    one_line_error(cli("consistency", "--run", tmp_path / "nothing"), "holds no run")
    one_line_error(cli("consistency", "-r", made / "run", "-r", made / "run"), "--out is needed with several runs")
    one_line_error(cli("consistency", "-r", made / "run", "--static-threshold", "2"), "--static-threshold")
    one_line_error(cli("consistency", "-r", made / "run", "--metric", "overlap"), "--metric")
    old = tmp_path / "old"
    shutil.copytree(made / "run", old)
    meta = json.loads((old / "run.json").read_text())
    del meta["query_neurons"]
    (old / "run.json").write_text(json.dumps(meta))
    one_line_error(cli("consistency", "-r", old), "made before locate runs kept each query's neurons", "re-run it")


def test_locate_bad_selection_is_one_line_before_anything_is_written(made, tmp_path):
    base = ["locate", "-f", made / "facts.jsonl", "-o", tmp_path / "r", "-m", made / "m", "--steps", "2"]
    one_line_error(cli(*base, "--select", "union"), "--select")
    one_line_error(cli(*base, "--select", "cas", "--cas-beta1", "0"), "cas-beta1 must be > 0")
    one_line_error(cli(*base, "--select", "cas", "--cas-beta2", "-1"), "cas-beta2 must be >= 0")
    assert not (tmp_path / "r").exists()


def test_dkn_method_clusters_beside_pairs_and_bad_values_one_line(made, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(made / "run", run)
    r = cli("dkn", "--run", run, "--top-n", "4")
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    assert f"groups in {run / 'dkn.jsonl'}" in r.stdout and "persistent clusters" not in r.stdout
    pairs = (run / "dkn.jsonl").read_text()
    r = cli("dkn", "--run", run, "--top-n", "4", "--method", "clusters", "--distance", "key", "--horizon", "0.9")
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    assert "persistent clusters per fact" in r.stdout and f"groups in {run / 'dkn-clusters.jsonl'}" in r.stdout
    assert (run / "dkn.jsonl").read_text() == pairs                         # the pairs rows untouched
    j = json.loads((run / "dkn-clusters.json").read_text())
    assert j["config"] == {"top_n": 4, "t_low": 0.2, "t_high": 0.25, "relative": True, "method": "clusters",
                           "distance": "key", "horizon": 0.9}
    again = cli("dkn", "--run", run, "--top-n", "4", "--method", "clusters", "--distance", "key", "--horizon", "0.9",
                "--json")
    assert again.exit_code == 0 and json.loads(again.stdout) == j          # resumed: nothing redone
    one_line_error(cli("dkn", "--run", run, "--top-n", "4", "--method", "clusters"), "other DKN settings",
                   "distance")                                               # resuming with another distance
    one_line_error(cli("dkn", "--run", run, "--method", "triples"), "--method")
    one_line_error(cli("dkn", "--run", run, "--method", "clusters", "--distance", "l2"), "--distance")
    one_line_error(cli("dkn", "--run", run, "--method", "clusters", "--horizon", "0"), "horizon")


def test_cas_effect_end_to_end_and_as_json(made, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(made / "run", run)
    r = cli("cas-effect", "--run", run, "--unrelated", "2", "--n-boot", "20")
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    assert "CAS vs per-query and union sets" in r.stdout and "update" in r.stdout
    assert r.stdout.rstrip().endswith(f"report in {run / 'cas_effect.json'}")
    from kneuron.paper.cas_effect import CasEffectReport
    rep = CasEffectReport.load(run / "cas_effect.json")
    assert [f.fact_id for f in rep.facts] == ["c1", "c2", "c3"] and not rep.skipped
    assert (rep.config["beta1"], rep.config["beta2"]) == (1.0, 2.0)        # the run's own CAS betas
    out, rows = tmp_path / "c.json", (run / "cas_effect.jsonl").read_text()
    r = cli("cas-effect", "-r", run, "--unrelated", "2", "--n-boot", "20", "--json", "-o", out)   # resumed
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    assert (run / "cas_effect.jsonl").read_text() == rows and len(rows.splitlines()) == 4        # nothing redone
    j = json.loads(r.stdout)
    assert j == json.loads(out.read_text()) and set(j["summary"]["ops"]) == {"erase", "update"}
    assert [f["effects"] for f in j["facts"]] == [f.row()["effects"] for f in rep.facts]


def test_cas_effect_bad_input_is_one_line(made, tmp_path):
    one_line_error(cli("cas-effect", "--run", tmp_path / "nothing"), "holds no run")
    one_line_error(cli("cas-effect", "-r", made / "run", "--beta1", "0"), "beta1 must be > 0")
    one_line_error(cli("cas-effect", "-r", made / "run", "--method", "rome"), "--method")
    old = tmp_path / "old"
    shutil.copytree(made / "run", old)
    meta = json.loads((old / "run.json").read_text())
    del meta["query_neurons"]
    (old / "run.json").write_text(json.dumps(meta))
    one_line_error(cli("cas-effect", "-r", old), "made before locate runs kept each query's neurons", "re-run it")
    run = tmp_path / "run"
    shutil.copytree(made / "run", run)
    r = cli("cas-effect", "-r", run, "--unrelated", "2", "--n-boot", "20")        # then other settings
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    one_line_error(cli("cas-effect", "-r", run, "--unrelated", "3"), "other CAS effect settings")
