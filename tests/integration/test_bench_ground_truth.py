"""`kneuron bench localization --truth injected` on a tiny saved model: the table's JSON (every difficulty
and method asked), and one-line errors for a bad difficulty, method or truth."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from kneuron.cli import app
from support.tiny import tiny_model, word_tokenizer

FACTS = ["france paris", "italy rome", "germany berlin", "spain madrid"]


@pytest.fixture(scope="module")
def model_and_facts(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-llama")
    model, kind = tiny_model("llama", dtype=torch.float32)
    with torch.no_grad():                     # long enough output embeddings to make an answer likely
        model.get_output_embeddings().weight.mul_(50)
    model.save_pretrained(d)
    word_tokenizer(kind).save_pretrained(d)
    objs = [x.split()[1] for x in FACTS]
    lines = [json.dumps({"id": f"c{i}", "relation": "P36", "lang": "en", "subject": s, "object": o,
                         "templates": ["the capital of [X] is [Y]"], "wrong_objects": [x for x in objs if x != o]})
             for i, (s, o) in enumerate(x.split() for x in FACTS)]
    f = d / "facts.jsonl"
    f.write_text("\n".join(lines) + "\n")
    return str(d), str(f)


def run(*args):
    return CliRunner().invoke(app, ["bench", "localization", *map(str, args)])


def test_the_injected_table_has_every_difficulty_and_method_asked(model_and_facts):
    m, facts = model_and_facts
    r = run("-m", m, "--truth", "injected", "--facts", facts, "--difficulties", "injected,injected-degenerate",
            "--methods", "actgrad,random", "--k", "1", "--per-set", "2", "--seeds", "0,1", "--json")
    assert r.exit_code == 0, (r.stdout, r.stderr)
    out = json.loads(r.stdout)
    assert out["seeds"] == [0, 1] and out["per_set"] == 2 and out["methods"] == ["actgrad", "random"]
    assert set(out["summary"]) <= {"injected", "injected-degenerate"} and out["summary"]
    for by in out["summary"].values():
        assert set(by) == {"actgrad", "random"}
        assert all(0 <= v["recall@0.01"]["mean"] <= 1 for v in by.values())


def test_out_keeps_the_rows_and_a_rerun_resumes_them(model_and_facts, tmp_path):
    m, facts = model_and_facts
    args = ("-m", m, "--truth", "injected", "--facts", facts, "--difficulties", "injected", "--methods",
            "ig@auto,random", "--k", "1", "--per-set", "2", "--out", tmp_path / "gt")
    r = run(*args)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    rows = (tmp_path / "gt" / "rows.jsonl").read_text()
    assert "| injected | ig@auto |" in (tmp_path / "gt" / "report.md").read_text()
    again = run(*args)
    assert again.exit_code == 0 and (tmp_path / "gt" / "rows.jsonl").read_text() == rows   # nothing redone
    assert "seed 0 injected" not in again.stdout and "| injected | random |" in again.stdout


@pytest.mark.parametrize("args, needle", [(("--truth", "grown"), "--truth"),
                                          (("--truth", "injected", "--difficulties", "hard"), "--difficulties"),
                                          (("--truth", "injected", "--methods", "magic"), "--methods"),
                                          (("--truth", "injected", "--seeds", "a,b"), "--seeds"),
                                          (("--truth", "injected", "--seeds", "0", "--tune-seeds", "0"), "tune"),
                                          (("--truth", "injected", "--steps", "many"), "steps")])
def test_bad_options_are_one_line(model_and_facts, args, needle):
    m, facts = model_and_facts
    r = run("-m", m, "--facts", facts, *args)
    assert r.exit_code != 0 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
