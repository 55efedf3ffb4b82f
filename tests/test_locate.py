"""The locate pipeline: deterministic rows, resume after an interruption, evaluation partners."""
import json

import pytest

import kneuron.runs.locate as loc
from kneuron import LocateConfig, load_facts, locate
from kneuron.paper.table1 import evaluate, unrelated_partner
from kneuron.facts import fact_file_hash
from tiny import tiny_handle

FACTS = [
    ("c1", "P36", "france", "paris", ["the capital of [X] is [Y] .", "[X] capital city is [Y] ."]),
    ("c2", "P36", "italy", "rome", ["the capital of [X] is [Y] ."]),
    ("c3", "P36", "spain", "madrid", ["the capital of [X] is [Y] ."]),
    ("l1", "P37", "italy", "italian", ["the language spoken in [X] is [Y] ."]),
    ("l2", "P37", "germany", "german", ["the language spoken in [X] is [Y] ."]),
]


@pytest.fixture
def fact_file(tmp_path):
    p = tmp_path / "facts.jsonl"
    p.write_text("".join(json.dumps({"id": i, "relation": r, "lang": "en", "subject": s, "object": o,
                                     "templates": t}) + "\n" for i, r, s, o, t in FACTS))
    return p


def _run(h, fact_file, out, per=1, **kw):
    cfg = LocateConfig(method="amig", steps=3, threshold=0.2, prompts_per_batch=per)
    return locate(h, load_facts(fact_file), cfg, out, facts_path=str(fact_file),
                  facts_hash=fact_file_hash(fact_file), show_progress=False, **kw)


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_same_inputs_same_rows(family, fact_file, tmp_path):
    h = tiny_handle(family, dtype=__import__("torch").float32)
    a = _run(h, fact_file, tmp_path / "a")
    b = _run(h, fact_file, tmp_path / "b")
    assert a.facts().equals(b.facts()) and a.neurons().equals(b.neurons())
    assert a.facts().num_rows == 5
    assert a.facts().column("n_prompts").to_pylist() == [2, 1, 1, 1, 1]
    nt = a.neurons().to_pylist()
    assert nt and all(r["score"] > 0 for r in nt)
    for fid in {r["fact_id"] for r in nt}:
        scores = [r["score"] for r in nt if r["fact_id"] == fid]
        assert scores == sorted(scores, reverse=True)


def test_interrupted_run_resumes_to_the_same_files(fact_file, tmp_path, monkeypatch):
    h = tiny_handle("gpt2")
    full = _run(h, fact_file, tmp_path / "full")
    real, calls = loc.locate_facts, []

    def dies_on_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(loc, "locate_facts", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        _run(h, fact_file, tmp_path / "cut")
    monkeypatch.setattr(loc, "locate_facts", real)
    from kneuron.runs.store import open_run
    assert len(open_run(tmp_path / "cut").done()) == 2            # finished facts were kept
    resumed = _run(h, fact_file, tmp_path / "cut", resume=True)
    assert resumed.n_new == 3
    assert resumed.facts().equals(full.facts()) and resumed.neurons().equals(full.neurons())


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_prompts_of_several_facts_per_batch_give_the_same_run(family, fact_file, tmp_path, monkeypatch):
    """--prompts-per-batch 3: facts are attributed in groups (here 3 + 3 prompts: c1's two and c2,
    then c3, l1, l2), each committed on its own; the run equals the one-prompt-at-a-time run."""
    h = tiny_handle(family)
    one = _run(h, fact_file, tmp_path / "one")
    real, groups = loc.locate_facts, []

    def spy(handle, work, cfg, progress=None):
        groups.append([f.id for f, _ in work])
        return real(handle, work, cfg, progress)
    monkeypatch.setattr(loc, "locate_facts", spy)
    three = _run(h, fact_file, tmp_path / "three", per=3)
    assert groups == [["c1", "c2"], ["c3", "l1", "l2"]]
    assert three.facts().drop_columns(["p_target", "top_p"]).equals(one.facts().drop_columns(["p_target", "top_p"]))
    a, b = three.neurons().to_pylist(), one.neurons().to_pylist()
    assert [(r["fact_id"], r["layer"], r["neuron"]) for r in a] == [(r["fact_id"], r["layer"], r["neuron"]) for r in b]
    assert all(abs(x["score"] - y["score"]) <= 1e-6 * abs(y["score"]) for x, y in zip(a, b))


def test_unrelated_partner_is_another_relation_and_seeded(fact_file):
    facts = load_facts(fact_file)
    p1, fb = unrelated_partner(facts, seed=42)
    assert fb == 0
    assert all(facts[j].relation != f.relation for f, j in zip(facts, p1))
    assert unrelated_partner(facts, seed=42)[0] == p1


def test_evaluate_writes_table1(fact_file, tmp_path):
    h = tiny_handle("gpt2")
    _run(h, fact_file, tmp_path / "r")
    t, extra = evaluate(h, tmp_path / "r", n_boot=50)
    j = json.loads((tmp_path / "r" / "evaluation.json").read_text())
    assert j["n_facts"] == 5 and extra["unrelated_same_relation"] == 0
    assert j["suppress"]["related"] == pytest.approx(t.suppress.related)
    assert (tmp_path / "r" / "evaluation.parquet").exists()
