"""The typed edit effects and the one pivot from effects to the Table 1 metric."""
import pytest

from kneuron.paper.stats import table1
from kneuron.paper.table1 import EditEffect, table1_of


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
