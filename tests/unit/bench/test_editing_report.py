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


# ----------------------------------------------------------------------------- beside the published rows

def test_table_4_has_ft_and_ft_l_and_every_s_is_its_harmonic_mean():
    from kneuron.bench.editing_report import PUBLISHED
    from kneuron.editing.metrics import hmean
    rows = {r[0]: r[1:] for r in PUBLISHED}
    assert rows["FT (GPT-2 XL)"] == (65.1, 100.0, 87.9, 40.4) and rows["FT-L (GPT-2 XL)"] == (66.9, 99.1, 48.7, 70.3)
    assert rows["KN (GPT-2 XL)"] == (35.6, 28.7, 28.0, 72.9) and rows["ROME (GPT-2 XL)"] == (89.2, 100.0, 96.4, 75.4)
    for name, (s, *three) in rows.items():
        assert abs(hmean(three) - s) < 0.1, name              # the paper rounds ES, PS, NS (FT: 65.03)


def test_each_row_is_set_against_its_like_for_like_published_row():
    """kn-eai <-> KN (the x2 rule), ft-l <-> FT-L, rome <-> ROME; kn (Dai's rule), ft-m and its old name ft,
    kn-opt: none, each saying why."""
    from kneuron.bench.editing_report import like_for_like
    name = lambda m: (like_for_like(m)[0] or (None,))[0]  # noqa: E731
    assert [name(m) for m in ("unedited", "rome", "kn-eai", "ft-l")] == [
        "GPT-2 XL unedited", "ROME (GPT-2 XL)", "KN (GPT-2 XL)", "FT-L (GPT-2 XL)"]
    assert all(name(m) is None for m in ("kn", "ft-m", "ft", "kn-opt", "likn", "memit", "no-such"))
    assert "x2 rule" in like_for_like("kn-eai")[1] and "not the paper's KN row" in like_for_like("kn")[1]
    assert "FT-M" in like_for_like("ft-m")[1] and "ft-m's old name" in like_for_like("ft")[1]
    assert "last prompt position" in like_for_like("ft-l")[1]


def test_a_stored_run_with_ft_reports_it_as_ft_m():
    """The smollm2 run stored with "ft" (before ft-m / ft-l): its report renders, each row beside its Table 4
    row (or none), ROME's layer taken by ft, and the KN finding says whose rule the paper's KN is."""
    import json
    from pathlib import Path

    from kneuron.bench.editing_report import document, published_table
    from kneuron.report.render import markdown
    res = json.loads((Path(__file__).parents[3] / "docs/editing/smollm2-135m/results.json").read_text())
    rows = {r[0]: r for r in published_table(res).rows}
    assert rows["kn-eai"][6] == "KN (GPT-2 XL)" and rows["kn-eai"][7:11] == [35.6, 28.7, 28.0, 72.9]
    assert rows["rome"][6] == "ROME (GPT-2 XL)" and rows["kn"][6] == rows["ft"][6] == "none"
    assert rows["kn-eai"][2] == res["methods"]["kn-eai"]["en"]["S"] and "FT-M" in rows["ft"][11]
    md = markdown(document(res, None))
    assert "ROME's layer: 4" in md and "ft edits the same layer" in md and "FT-L (GPT-2 XL)" in md
    assert "its KN is the x2 rule, kn-eai's here, not kn's Dai rule" in md
