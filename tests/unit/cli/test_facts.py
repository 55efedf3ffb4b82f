"""kneuron.cli.facts: `kneuron facts stats` on a bundled set (JSON) and a directory (table); a bad name is one
line. `kneuron facts known`: the rank rule's counts per relation and language on a model whose ranks are set."""
import json

import pytest
import torch
from typer.testing import CliRunner

from kneuron.cli import app
from support.paths import FIXTURES

PARAREL = FIXTURES / "factsets" / "pararel"


def test_cli_stats_en_zh_json():
    r = CliRunner().invoke(app, ["facts", "stats", "en-zh", "--json"])
    assert r.exit_code == 0, r.output
    j = json.loads(r.stdout)
    assert len(j["relations"]) >= 20
    assert j["languages"]["en"] >= 2000 and j["languages"]["zh"] >= 2000
    assert all(per["en"] == per["zh"] > 0 for per in j["relations"].values())
    assert j["aligned_ids"] == j["languages"]["en"] and j["layout"] == "jsonl"


def test_cli_stats_table_and_errors():
    r = CliRunner().invoke(app, ["facts", "stats", str(PARAREL)])
    assert r.exit_code == 0 and "P36" in r.stdout and "skipped" in r.stdout
    r = CliRunner().invoke(app, ["facts", "stats", "nope-set"])
    assert r.exit_code == 2 and "cannot read" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- kneuron facts known
RANKS = {"paris": 1, "rome": 3, "madrid": 12, "berlin": 2, "italian": 5, "german": 20}
# (id, relation, en object, zh object): the zh facts are English words labelled zh (what the tiny tokenizer spells)
ROWS = [("c1", "P36", "paris", "berlin"), ("c2", "P36", "rome", "german"), ("c3", "P37", "madrid", "italian")]


@pytest.fixture(scope="module")
def rigged_dir(tmp_path_factory):
    """A tiny BERT saved with its input (= tied output) embeddings zero and its output bias ranking the words
    of RANKS as given, at every position."""
    from support.tiny import tiny_model, word_tokenizer
    d = tmp_path_factory.mktemp("rigged-bert")
    model, kind = tiny_model("bert", dtype=torch.float32)
    tok = word_tokenizer(kind)
    V, vocab = model.config.vocab_size, tok.get_vocab()
    bias = torch.full((V,), -1000.0)                 # every other token far below rank 20
    for w, r in RANKS.items():
        bias[vocab[w]] = -float(r)
    free = [r for r in range(1, 21) if r not in RANKS.values()]
    fillers = [i for i in range(V) if i not in {vocab[w] for w in RANKS}]
    for r, i in zip(free, fillers):                  # other words take ranks 4, 6-11, 13-19
        bias[i] = -float(r)
    with torch.no_grad():
        model.get_input_embeddings().weight.zero_()
        model.cls.predictions.bias.copy_(bias)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


@pytest.fixture
def known_facts_file(tmp_path):
    p = tmp_path / "facts.jsonl"
    t = {"P36": "the capital of [X] is [Y] .", "P37": "the language spoken in [X] is [Y] ."}
    p.write_text("".join(json.dumps({"id": i, "relation": r, "lang": lg, "subject": "france", "object": o,
                                     "templates": [t[r]]}) + "\n"
                         for i, r, en, zh in ROWS for lg, o in (("en", en), ("zh", zh))), encoding="utf-8")
    return p


def test_cli_known_counts_per_relation_and_language(rigged_dir, known_facts_file, tmp_path, monkeypatch):
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "known.json"
    r = CliRunner().invoke(app, ["facts", "known", "--model", rigged_dir, "--facts", str(known_facts_file),
                                 "--json", "--out", str(out)])
    assert r.exit_code == 0, (r.output, r.exception)
    j = json.loads(r.stdout)
    assert json.loads(out.read_text(encoding="utf-8")) == j
    assert {(d["id"], d["lang"]): d["rank"] for d in j["facts"]} == {
        (i, lg): RANKS[o] for i, _, en, zh in ROWS for lg, o in (("en", en), ("zh", zh))}
    s = j["summary"]
    assert s["languages"] == {"en": {"facts": 3, "known": 2, "top1": 1, "median_rank": 3},
                              "zh": {"facts": 3, "known": 2, "top1": 0, "median_rank": 5}}
    assert s["relations"]["P36"]["zh"] == {"facts": 2, "known": 1, "top1": 0, "median_rank": 11}
    assert s["known_in_all_languages"] == 1 and s["ids"] == 3                 # c1 only

    r = CliRunner().invoke(app, ["facts", "known", "-m", rigged_dir, "-f", str(known_facts_file), "--langs", "zh",
                                 "--k", "2"])
    assert r.exit_code == 0, (r.output, r.exception)
    rows = [ln.split() for ln in r.stdout.splitlines()]
    cells = [[c for c in row if c not in "│┃|"] for row in rows]
    assert ["P36", "zh", "2", "1", "0", "11"] in cells and ["P37", "zh", "1", "0", "0", "5"] in cells
    assert ["total", "zh", "3", "1", "0", "5"] in cells and not any(c[1:2] == ["en"] for c in cells)
    assert "known (top-2)" in r.stdout and "known in all languages: 1 of 3 fact ids" in r.stdout


def test_cli_known_errors_are_one_line(known_facts_file):
    from support.cli import one_line_error
    one_line_error(CliRunner().invoke(app, ["facts", "known", "-m", "/no/such/model", "-f", "nope-set"]), "nope-set")
    one_line_error(CliRunner().invoke(app, ["facts", "known", "-m", "/no/such/model", "-f", str(known_facts_file),
                                            "--langs", "de"]), "no facts in de")
    one_line_error(CliRunner().invoke(app, ["facts", "known", "-m", "/no/such/model", "-f", str(known_facts_file)]),
                   "/no/such/model")
