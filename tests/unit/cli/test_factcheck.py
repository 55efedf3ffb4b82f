"""`kneuron factcheck` end to end on a tiny saved gpt2: `locate`, `dkn`, then the check (every scorer on
both splits, JSON and table, the result saved, a rerun that redoes nothing), and its bad input, each one
line and exit code 2."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from kneuron.paper.factcheck import SCORERS, SPLITS, FactCheckBaselines
from support.cli import cli, one_line_error
from support.factcheck import write_run_facts
from support.tiny import tiny_model, word_tokenizer


def ok(r):
    assert r.exit_code == 0, (r.exit_code, r.stdout, r.stderr, r.exception)
    return r


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny gpt2 saved, four relations of five facts, a `locate` run of them and its DKNs."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("factcheck-cli")
    model, kind = tiny_model("gpt2", dtype=torch.float32)
    model.save_pretrained(d / "m")
    word_tokenizer(kind).save_pretrained(d / "m")
    facts = write_run_facts(d / "facts.jsonl")
    ok(cli("locate", "-f", facts, "-o", d / "run", "-m", d / "m", "--steps", "2", "--json"))
    shutil.copytree(d / "run", d / "no-dkn")
    ok(cli("dkn", "--run", d / "run", "--top-n", "4", "--json"))
    return d


def test_factcheck_gives_every_scorer_on_both_splits_and_resumes(made, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(made / "run", run)
    j = json.loads(ok(cli("factcheck", "--run", run, "--n-boot", "50", "--json", "-o", tmp_path / "out")).stdout)
    assert list(j) == ["en"]
    en = j["en"]
    for split in SPLITS:
        sc = en["splits"][split]["scorers"]
        assert set(sc) == set(SCORERS) and all(sc[s] is not None for s in SCORERS), (split, en["splits"][split])
        assert all(0.0 <= sc[s]["auroc"] <= 1.0 and sc[s]["auroc_low"] <= sc[s]["auroc_high"] for s in SCORERS)
    rel = en["splits"]["relations"]["relations"]
    assert not set(rel["train"]) & (set(rel["val"]) | set(rel["test"])) and len(rel["train"]) == 2
    assert FactCheckBaselines.load(tmp_path / "out", "en").to_json() == en
    lines = (run / "factcheck-en.jsonl").read_text()
    again = json.loads(ok(cli("factcheck", "--run", run, "--n-boot", "50", "--json", "-o", tmp_path / "out")).stdout)
    assert again == j and (run / "factcheck-en.jsonl").read_text() == lines           # nothing scored again
    one_line_error(cli("factcheck", "--run", run, "--seed", "7"), "seed differs", "--restart")
    other = json.loads(ok(cli("factcheck", "--run", run, "--seed", "7", "--restart", "--json")).stdout)["en"]
    assert other["seed"] == 7 and other["splits"]["facts"]["ids"] != en["splits"]["facts"]["ids"]
    r = ok(cli("factcheck", "--run", run, "--n-boot", "50", "--langs", "en", "--restart"))
    assert "fact-checking beside baselines (en" in r.stdout and "relations" in r.stdout
    assert r.stdout.rstrip().endswith(f"results in {run}/factcheck-<lang>.json") and (run / "factcheck-en.json").is_file()


def test_factcheck_bad_input_is_one_line(made, tmp_path):
    one_line_error(cli("factcheck", "--run", tmp_path / "nothing"), "no run.json")
    one_line_error(cli("factcheck", "--run", made / "no-dkn"), "no DKN rows", "kneuron dkn --run")
    one_line_error(cli("factcheck", "--run", made / "run", "--langs", "en,fr"), "language 'fr' is not in run",
                   "its languages: en")
    one_line_error(cli("factcheck", "--run", made / "run", "--method", "bogus"), "unknown method 'bogus'")


def test_factcheck_with_the_clusters_rule_keeps_its_own_files(made, tmp_path):
    """--dkn clusters scores the dkn scorer on `kneuron dkn --method clusters`'s groups, in files of its own
    (the pairs rule's results untouched), and asks for those groups when they are not there."""
    run = tmp_path / "run"
    shutil.copytree(made / "run", run)
    one_line_error(cli("factcheck", "--run", run, "--dkn", "clusters"), "no DKN rows (dkn-clusters.json)",
                   "--method clusters")
    pairs = json.loads(ok(cli("factcheck", "--run", run, "--n-boot", "20", "--json")).stdout)["en"]
    before = (run / "factcheck-en.json").read_bytes()
    ok(cli("dkn", "--run", run, "--top-n", "4", "--method", "clusters", "--json"))
    cl = json.loads(ok(cli("factcheck", "--run", run, "--n-boot", "20", "--dkn", "clusters", "--json")).stdout)["en"]
    assert pairs["dkn"] == "pairs" and cl["dkn"] == "clusters"
    assert (run / "factcheck-clusters-en.jsonl").is_file() and (run / "factcheck-en.json").read_bytes() == before
    assert FactCheckBaselines.load(run, "en", "clusters").to_json() == cl
    for s in ("logp", "probe"):                         # the baselines do not depend on the DKN rule
        assert cl["splits"]["facts"]["scorers"][s] == pairs["splits"]["facts"]["scorers"][s]


def test_both_rules_in_one_command_attribute_each_item_once(made, tmp_path, monkeypatch):
    """--dkn pairs --dkn clusters: each rule's result as when it runs alone, with every item attributed once
    (the rules share the items; only the neuron sets they average over differ)."""
    import kneuron.paper.factcheck.check as check
    alone, both = tmp_path / "alone", tmp_path / "both"
    shutil.copytree(made / "run", alone)
    ok(cli("dkn", "--run", alone, "--top-n", "4", "--method", "clusters", "--json"))
    shutil.copytree(alone, both)
    want = {rule: json.loads(ok(cli("factcheck", "--run", alone, "--n-boot", "20", "--dkn", rule, "--json")).stdout)
            for rule in ("pairs", "clusters")}
    calls = []
    real = check.model_scorers

    def counting(*a, **kw):
        attr, prob = real(*a, **kw)
        return (lambda it: calls.append(it) or attr(it)), prob
    monkeypatch.setattr(check, "model_scorers", counting)
    got = json.loads(ok(cli("factcheck", "--run", both, "--n-boot", "20", "--dkn", "pairs", "--dkn", "clusters",
                            "--json")).stdout)
    assert got == want
    n_items = len((both / "factcheck-en.jsonl").read_text().splitlines()) - 1      # a settings line, then items
    assert len(calls) == n_items == len({(it.fact.id, it.candidate) for it in calls}) > 0
    assert (both / "factcheck-clusters-en.json").is_file() and (both / "factcheck-en.json").is_file()
