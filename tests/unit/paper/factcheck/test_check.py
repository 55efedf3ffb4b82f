"""kneuron.paper.factcheck.check: the check over a tiny locate run: every scorer on both splits (dkn there is
Table 3's dkn row), resumed from an interrupted item file, and refused on bad input."""
import json

import pytest

import kneuron.paper.factcheck.check as check_module
from kneuron import LocateConfig, load_facts, locate
from kneuron.errors import ConfigError
from kneuron.facts import fact_file_hash
from kneuron.paper.factcheck.check import factcheck_from_run
from kneuron.paper.factcheck.evaluation import SCORERS
from kneuron.paper.table3 import table3_from_run
from kneuron.runs.store import RunStoreError
from support.factcheck import write_run_facts
from support.tiny import tiny_handle


def test_factcheck_from_run_resumes_and_its_dkn_is_table3s(tmp_path, one_thread, monkeypatch):
    ff = write_run_facts(tmp_path / "facts.jsonl")
    h = tiny_handle("gpt2")
    run = tmp_path / "run"
    locate(h, load_facts(ff), LocateConfig(steps=2), run, facts_path=str(ff), facts_hash=fact_file_hash(ff),
           show_progress=False)
    from kneuron.runs.reopen import load_run
    neurons = load_run(run).neurons
    rows = [{"fact_id": f, "lang": lang, "groups": [neurons[f, lang][:2]] if len(neurons.get((f, lang), [])) > 1 else []}
            for f, lang in neurons]
    res = factcheck_from_run(h, run, "en", rows, n_boot=50)
    for name in ("facts", "relations"):
        assert all(res.splits[name].scorers[s] is not None for s in SCORERS)
    t3 = table3_from_run(h, run, "en", rows, method=res.method, steps=res.steps)
    assert res.splits["facts"].scorers["dkn"].auroc == t3.table["dkn"]["auroc"]
    assert res.splits["facts"].ids["test"] == t3.table["test_ids"]
    lines = (run / "factcheck-en.jsonl").read_text().splitlines()
    val_test = {f for sp in res.splits.values() for p in ("val", "test") for f in sp.ids[p]}
    assert sorted({json.loads(x)["fact_id"] for x in lines[1:]}) == sorted(val_test)   # what needs the model
    assert len(lines) - 1 == 2 * len(val_test)
    # interrupted: keep the settings line and two rows; the rerun scores the rest and gives the same result
    (run / "factcheck-en.jsonl").write_text("\n".join(lines[:3]) + "\n")
    calls = []
    real = check_module.score_items
    monkeypatch.setattr(check_module, "score_items",
                        lambda items, *a, **k: (calls.append(len(items)), real(items, *a, **k))[1])
    again = factcheck_from_run(h, run, "en", rows, n_boot=50)
    assert calls == [len(lines) - 3] and again == res
    with pytest.raises(ConfigError, match="'zh' is not in run"):
        factcheck_from_run(h, run, "zh", rows)
    with pytest.raises(RunStoreError, match="no DKN rows for language 'en'"):
        factcheck_from_run(h, run, "en", [])
    with pytest.raises(RunStoreError, match="other fact-check settings"):
        factcheck_from_run(h, run, "en", rows, seed=7)

