"""benchmarks.editing_report: the editing bench's bootstrap intervals (through report.stats.ci).

The expected values were computed by the bench's own bootstrap before `ci` replaced it (kneuron
1c37887) on the same records: equality is exact, so results.json did not move."""
import math

from kneuron.bench.editing_report import _intervals

# seven records (ROME's rates in [0, 1]); None = a score the record has not got
ROWS = [{"ES": e, "PS": p, "NS": n, "GE": g} for e, p, n, g in
        [(1.0, 0.5, 1.0, 0.61), (0.0, 0.25, None, 0.55), (1.0, 1.0, 0.5, None), (1.0, 0.75, 1.0, 0.58),
         (0.0, 0.0, 0.75, 0.6), (1.0, None, 0.25, 0.49), (1.0, 0.5, 1.0, 0.57)]]


def test_intervals_did_not_move():
    assert _intervals(ROWS) == {"ES": [42.857142857142854, 100.0], "PS": [25.0, 75.0],
                                "NS": [53.57142857142857, 95.83333333333333], "GE": [53.597500000000004, 59.5],
                                "S": [38.40379213483146, 80.7017543859649]}
    assert _intervals(ROWS, seed=2) == {"ES": [42.857142857142854, 100.0], "PS": [25.0, 75.0],
                                        "NS": [50.0, 96.42857142857143], "GE": [53.42785714285714, 59.335],
                                        "S": [36.467999999999996, 80.7112375533428]}


def test_a_score_no_record_has_gets_no_interval_and_s_needs_all_three():
    rows = [{"ES": 1.0, "PS": 0.5, "NS": None}, {"ES": 0.0, "PS": 1.0, "NS": None}]
    out = _intervals(rows)
    assert set(out) == {"ES", "PS"}
    assert _intervals([]) == {}
    one = _intervals([{"ES": 1.0, "PS": 0.5, "NS": 1.0}])       # one record: every resample is it
    assert one["ES"] == [100.0, 100.0] and one["S"] == [75.0, 75.0]
    assert not any(math.isnan(v) for iv in one.values() for v in iv)
