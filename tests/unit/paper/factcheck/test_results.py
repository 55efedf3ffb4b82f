"""kneuron.paper.factcheck.results: a check's result round-trips through JSON and its file, a missing file
is one line, and its table has a row per split and scorer."""
import pytest

from kneuron.paper.factcheck.check import fact_check_beside
from kneuron.paper.factcheck.results import FactCheckBaselines
from kneuron.runs.store import RunStoreError
from support.factcheck import features, inputs, synthetic, synthetic_facts


def test_a_result_round_trips(tmp_path):
    fs = synthetic_facts(5, 6)
    dkn, kn, wrong = inputs(fs)
    attr, prob = synthetic(fs)
    plan, res = fact_check_beside(fs, dkn, kn, wrong, attr, prob, features, n_boot=20)
    r = FactCheckBaselines("en", "amig", 2, 42, 20, res, plan.notes)
    assert FactCheckBaselines.from_json(r.to_json()) == r
    assert r.save(tmp_path) == tmp_path / "factcheck-en.json"
    assert FactCheckBaselines.load(tmp_path, "en") == r
    with pytest.raises(RunStoreError) as e:
        FactCheckBaselines.load(tmp_path, "zh")
    assert "\n" not in str(e.value) and "factcheck-zh.json" in str(e.value)
    assert len(r.table().rows) == 8

