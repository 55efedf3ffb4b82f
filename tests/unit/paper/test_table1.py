"""kneuron.paper.table1: Evaluation.save writes atomically and Evaluation.load reads back the same result."""
import json

import pytest

from kneuron import Execution, LocateConfig, load_facts, locate
from kneuron.facts import fact_file_hash
from kneuron.paper.stats import table1
from kneuron.paper.table1 import EditEffect, Evaluation, load_run, table1_from_run, table1_of, unrelated_partner
from kneuron.runs.store import RunStoreError
from support.tiny import tiny_handle


def effects(n=6):
    return [EditEffect(f"P{i}", "en", f"r{i % 2}", 3, f"P{(i + 1) % n}", f"r{(i + 1) % 2}", 0.1 + 0.05 * i, 0.2,
                       p_suppress=0.05 * i, p_suppress_unrelated=0.21, p_enhance=0.3 + 0.01 * i,
                       p_enhance_unrelated=0.19 if i else 0.0) for i in range(n)]


def test_an_evaluation_round_trips_through_its_files(tmp_path):
    ev = Evaluation(table1_of(effects(), n_boot=20), effects(), 42, False, 1)
    ev.save(tmp_path)
    again = Evaluation.load(tmp_path)
    assert again.to_json() == ev.to_json() and again.effects == ev.effects and again.seed == 42
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evaluation.json", "evaluation.parquet"]   # no temp file
    again.save(tmp_path / "b")
    for name in ("evaluation.json", "evaluation.parquet"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / name).read_bytes()


def test_loading_what_is_not_there_or_torn_is_refused_in_one_line(tmp_path):
    with pytest.raises(RunStoreError, match="evaluation.json: not there"):
        Evaluation.load(tmp_path)
    (tmp_path / "evaluation.json").write_text('{"n_facts": ')
    with pytest.raises(RunStoreError, match=r"evaluation.json: damaged \("):
        Evaluation.load(tmp_path)
    assert (tmp_path / "evaluation.json").exists(), "a reader moves nothing"


def effect(i, ps, pe, pu=0.5, cond=None):
    return EditEffect(f"f{i}", "en", "P36", 3, f"g{i}", "P37", p_before=0.4, p_before_unrelated=pu,
                      p_suppress=ps, p_suppress_unrelated=pu * 0.9, p_enhance=pe, p_enhance_unrelated=pu * 1.1,
                      condition=cond)


def test_effect_row_and_delta():
    e = effect(0, 0.1, 0.8)
    assert e.delta("suppress") == pytest.approx(-0.75) and e.delta("enhance") == pytest.approx(1.0)
    r = e.row()
    assert r["delta_suppress"] == pytest.approx(-0.75) and r["p_enhance"] == 0.8 and "condition" not in r
    only = EditEffect("f", "en", "P36", 0, "g", "P37", 0.4, 0.5, p_suppress=0.2, p_suppress_unrelated=0.5)
    assert "p_enhance" not in only.row() and "delta_enhance" not in only.row()


def test_table1_of_equals_the_metric_on_the_columns():
    es = [effect(i, 0.1 * i, 0.5 + 0.1 * i, pu=0.3 + 0.05 * i) for i in range(1, 6)]
    got = table1_of(es, n_boot=50).to_json()
    want = table1([e.p_before for e in es], [e.p_suppress for e in es], [e.p_enhance for e in es],
                  [e.p_before_unrelated for e in es], [e.p_suppress_unrelated for e in es],
                  [e.p_enhance_unrelated for e in es], n_boot=50).to_json()
    assert got == want
    assert got["suppress"]["related"] == pytest.approx(sum(e.delta("suppress") for e in es) / 5)


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


def test_table1_cells_split_by_known_facts():
    from kneuron.paper.facts_used import Known
    from kneuron.paper.table1 import table1_cells
    es = effects(6) + [EditEffect("Z0", "zh", "r0", 0, "Z1", "r1", 0.5, 0.2, 0.25, 0.2, 0.6, 0.2),
                       EditEffect("Z1", "zh", "r1", 2, "Z0", "r0", 0.4, 0.5, 0.1, 0.45, 0.5, 0.55)]
    plain = table1_cells(es, ["en", "zh"], n_boot=20)
    assert plain["en"] == {**table1_of(effects(6), n_boot=20).to_json(), "mean_neurons": 3.0,
                           "facts_without_neurons": 0}
    assert plain["zh"]["facts_without_neurons"] == 1 and "known" not in plain["en"]
    known = Known("rank", {("P0", "en"): True, ("P1", "en"): True, ("P2", "en"): False, ("Z0", "zh"): False})
    cells = table1_cells(es, ["en", "zh"], n_boot=20, known=known)
    assert {k: v for k, v in cells["en"].items() if k not in ("known", "not_known")} == plain["en"]   # unchanged
    assert cells["en"]["known"] == {**table1_of(effects(6)[:2], n_boot=20).to_json(), "mean_neurons": 3.0,
                                    "facts_without_neurons": 0}
    assert cells["en"]["not_known"]["n_facts"] == 1
    assert "known" not in cells["zh"] and cells["zh"]["not_known"]["n_facts"] == 1    # an empty part: no row
