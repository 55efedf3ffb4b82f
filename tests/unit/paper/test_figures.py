"""paper.figures: one histogram per method and language (KN), one LIKN series, one per language (DKN), each
saying how many (fact, neuron) pairs it counts; the per-layer table and the LIKN-per-fact distribution."""
from pathlib import Path

from kneuron.paper import figures as F


def test_every_language_has_its_own_series(hand_result):
    s = [(k, label, sum(c)) for k, label, c in F.series(hand_result)]
    assert s == [("kn", "KN AMIG en", 10), ("kn", "KN AMIG zh", 10), ("kn", "KN B-KN en", 10), ("kn", "KN B-KN zh", 10),
                 ("likn", "LIKN (en ∩ zh)", 6), ("dkn", "DKN en", 4), ("dkn", "DKN zh", 4)]
    hand_result["layers"]["likn"] = []                                   # no Module 2: no LIKN series
    assert [k for k, _, _ in F.series(hand_result)].count("likn") == 0


def test_the_layer_table_gives_counts_shares_and_totals(hand_result):
    t = F.layer_table(hand_result)
    assert t.header == ["layer", "KN AMIG en", "KN AMIG zh", "KN B-KN en", "KN B-KN zh", "LIKN (en ∩ zh)", "DKN en",
                        "DKN zh"]
    cells = t.cells()
    assert len(cells) == 3 + 1 and cells[0][:3] == ["0", "3 (30%)", "2 (20%)"] and cells[2][5] == "5 (83%)"
    assert cells[-1] == ["all", "10", "10", "10", "10", "6", "4", "4"]
    hand_result["layers"]["dkn"]["en"] = [0, 0, 0]
    assert F.layer_table(hand_result).cells()[0][6] == "0"


def test_likn_per_fact_distribution(hand_result):
    assert F.likn_counts(hand_result) == {0: 17, 1: 1, 2: 1, 3: 1}
    t = F.likn_table(hand_result)
    assert "20 facts, mean 0.30" in t.title and t.cells()[0] == ["0", "17", "85%"] and len(t.rows) == 4
    hand_result["table2"]["likn"]["facts_by_count"] = {str(k): 1 for k in range(13)}
    t = F.likn_table(hand_result)                                        # 0 .. 9, then the rest together
    assert len(t.rows) == F.TOP_COUNT + 1 and t.cells()[-1] == ["10 or more", "3", "23%"]
    del hand_result["table2"]["likn"]["facts_by_count"]                 # a result made before the count
    assert F.likn_counts(hand_result) is None and F.likn_table(hand_result) is None


def test_figures_are_written_with_what_they_count(hand_result, tmp_path):
    figs = F.figures(hand_result, tmp_path)
    assert [Path(p).name for p, _ in figs] == ["fig-kn.png", "fig-likn.png", "fig-dkn.png"]
    assert all(Path(p).read_bytes()[:4] == b"\x89PNG" for p, _ in figs)
    caps = [c for _, c in figs]
    assert caps[0].startswith("Figure 3") and "KN AMIG zh 10" in caps[0] and "KN B-KN en 10" in caps[0]
    assert "LIKN (en ∩ zh) 6" in caps[1] and caps[2].startswith("Figure 4") and "DKN zh 4" in caps[2]
