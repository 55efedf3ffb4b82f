"""`kneuron bench editing --records FILE` on the bundled organism-clm with the toy method of
test_bench_editing: the records are the file's first n (its prompts, neighbours and generation prompts),
the methods edit the file's facts, a resume needs the same file, and a bad record is the CLI's one-line error
before the model loads."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kneuron.bench.editing import run_editing_bench
from kneuron.editing.readers import read_records
from kneuron.models import load_model
from kneuron.runs.store import RunStoreError

from integration.test_bench_editing import cli, one_line_error, toy  # noqa: F401 (toy: the fixture, shared)

RECORDS = Path(__file__).parents[1] / "unit" / "editing" / "data" / "records"
CF = RECORDS / "counterfact.json"
KW = dict(n=2, methods=["toy"], n_generation=1, show_progress=False)


@pytest.fixture(scope="module")
def h():
    import torch
    torch.set_num_threads(1)
    return load_model("organism-clm")


def _lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_the_run_reads_its_records_from_the_file(toy, h, tmp_path):
    f = read_records(CF)
    raw = json.loads(CF.read_text())
    res = run_editing_bench(h, [], out=tmp_path, records=f, facts_name=str(CF), **KW)
    assert res["n_records"] == 2 and list(res["unedited"]) == ["en"]
    cases = _lines(tmp_path / "cases.jsonl")
    assert [c["fact_id"] for c in cases] == ["counterfact-17", "counterfact-4"]      # the file's first two
    for c, d in zip(cases, raw):
        r, rw = c["records"]["en"], d["requested_rewrite"]
        assert r["prompt"] == rw["prompt"].format(rw["subject"]) and r["new"] == rw["target_new"]["str"]
        assert r["fact"]["object"] == rw["target_true"]["str"]
        assert [p["text"] for p in r["paraphrases"]] == d["paraphrase_prompts"]
        assert r["generation"] == d["generation_prompts"][:1]                         # --generation 1
    assert [c["fact"] for c in toy] == [("counterfact-17", "en"), ("counterfact-4", "en")]   # the file's facts edited
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["records_sha256"] == f.sha256 and meta["records_format"] == "counterfact" and meta["facts"] == str(CF)
    # each record is measured on the file's own prompts: 2 paraphrases and 2 neighbours for record 0
    un = json.loads((tmp_path / "unedited" / "0.json").read_text())["measure"]["en"]
    assert len(un["paraphrases"]) == 2 and len(un["neighbours"]) == 2 and len(un["generation"]) == 1
    assert "--records " in (tmp_path / "report.md").read_text()


def test_a_resume_needs_the_same_file(toy, h, tmp_path):
    run_editing_bench(h, [], out=tmp_path / "run", records=read_records(CF), limit=1, **KW)
    other = tmp_path / "cf.json"
    data = json.loads(CF.read_text())
    data[1]["requested_rewrite"]["target_new"]["str"] = "Podgorica"
    other.write_text(json.dumps(data))
    with pytest.raises(RunStoreError, match="records_sha256 differs"):
        run_editing_bench(h, [], out=tmp_path / "run", records=read_records(other), resume=True, **KW)
    from kneuron.organisms import organism_facts
    with pytest.raises(RunStoreError, match="records_format differs"):          # a fact set's records instead
        run_editing_bench(h, organism_facts(h), out=tmp_path / "run", resume=True, **KW)
    res = run_editing_bench(h, [], out=tmp_path / "run", records=read_records(CF), resume=True, **KW)
    assert res["n_records"] == 2


def test_the_cli_reads_records_and_refuses_a_bad_one_before_loading(toy, tmp_path, monkeypatch):
    r = cli("bench", "editing", "--model", "organism-clm", "--records", CF, "--facts", "en-zh", "--n", 2,
            "--methods", "toy", "--generation", 0, "--out", tmp_path / "b")
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    assert "warning: --facts en-zh is not used" in r.stderr and "organism-clm: 2 records" in r.stdout
    assert [c["fact_id"] for c in _lines(tmp_path / "b" / "cases.jsonl")] == ["counterfact-17", "counterfact-4"]
    data = json.loads(CF.read_text())
    del data[2]["requested_rewrite"]["target_new"]["str"]
    bad = tmp_path / "counterfact.json"
    bad.write_text(json.dumps(data))

    def no_model(*a, **k):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr("kneuron.cli.edit._load", no_model)
    one_line_error(cli("bench", "editing", "--model", "organism-clm", "--records", bad, "--methods", "toy",
                       "--out", tmp_path / "c"),
                   f"{bad}: record 2 (case_id 9): requested_rewrite.target_new.str missing")
    one_line_error(cli("bench", "editing", "--records", RECORDS / "zsre.json", "--records-format", "knowedit",
                       "--methods", "toy", "--out", tmp_path / "d"), "zsre.json: record 0: prompt missing")
