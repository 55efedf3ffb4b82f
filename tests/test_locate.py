"""The locate pipeline: deterministic rows, resume after an interruption, evaluation partners."""
import json

import pytest

from kneuron import Execution, LocateConfig, load_facts, locate
from kneuron.facts import fact_file_hash
from kneuron.paper.table1 import load_run, table1_from_run, unrelated_partner
from support.tiny import tiny_handle

def _run(h, fact_file, out, per=1, **kw):
    cfg = LocateConfig(method="amig", steps=3, threshold=0.2)
    return locate(h, load_facts(fact_file), cfg, out, execution=Execution(prompts_per_batch=per),
                  facts_path=str(fact_file), facts_hash=fact_file_hash(fact_file), show_progress=False, **kw)


def test_unrelated_partner_is_another_relation_and_seeded(fact_file):
    facts = load_facts(fact_file)
    p1, fb = unrelated_partner(facts, seed=42)
    assert fb == 0
    assert all(facts[j].relation != f.relation for f, j in zip(facts, p1))
    assert unrelated_partner(facts, seed=42)[0] == p1


def test_evaluate_writes_table1(fact_file, tmp_path):
    h = tiny_handle("gpt2")
    _run(h, fact_file, tmp_path / "r")
    ev = table1_from_run(h, tmp_path / "r", n_boot=50)
    assert not (tmp_path / "r" / "evaluation.json").exists()          # the caller writes it, once
    ev.save(tmp_path / "r")
    j = json.loads((tmp_path / "r" / "evaluation.json").read_text())
    assert j["n_facts"] == 5 and ev.unrelated_same_relation == 0 and j == json.loads(json.dumps(ev.to_json()))
    assert j["suppress"]["related"] == pytest.approx(ev.table.suppress.related)
    assert [e.fact_id for e in ev.effects] == [f.id for f in load_run(tmp_path / "r").facts]
    assert (tmp_path / "r" / "evaluation.parquet").exists()
