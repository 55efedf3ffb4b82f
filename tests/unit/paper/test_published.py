"""paper.published: the paper's numbers, each once with its source; the percentages the paper prints beside
its cells follow from them (a mistyped cell fails here), and what is not published is None, not 0."""
import pytest

from kneuron.paper import published as P


def test_each_cell_is_there_once_with_a_source():
    keys = [(p.table, p.model, p.lang, p.row, p.metric) for p in P.NUMBERS]
    assert len(keys) == len(set(keys)) == 2 + 4 * 3 + 6 * 2 * 3
    assert all(p.source.startswith(P.PAPER) for p in P.NUMBERS)
    assert P.value("Table 2", "m-GPT", "en", "LIKN", "SR") == 2.542
    assert P.value("Table 3", "m-GPT", "zh", "with_DKN", "F1") == 0.669
    assert P.value("Table 1", "m-GPT", "en", "AMIG vs B-KN", "SR gain %") is None   # only the Chinese gains
    assert P.value("Table 2", "GPT-2", "en", "LIKN", "SR") is None


@pytest.mark.parametrize("model,lang,up,down", [("m-BERT", "en", 10.29, None), ("m-GPT", "en", 5.92, None),
                                                ("m-BERT", "zh", 213.05, 42.97), ("m-GPT", "zh", 277.36, 58.80)])
def test_table2_percentages_follow_from_the_cells(model, lang, up, down):
    v = {r: P.value("Table 2", model, lang, r, "SR") for r in ("LIKN", "Mono-KN", "Seq-KN")}
    assert 100 * (v["LIKN"] - v["Mono-KN"]) / v["Mono-KN"] == pytest.approx(up, abs=0.01)       # the paper's ↑
    if down is not None:                                                                    # the paper's ↓
        assert 100 * (v["LIKN"] - v["Seq-KN"]) / v["LIKN"] == pytest.approx(down, abs=0.01)


@pytest.mark.parametrize("model,lang,up", [("m-BERT", "en", 49), ("m-GPT", "en", 1962), ("m-BERT", "zh", 3170),
                                           ("m-GPT", "zh", 167150), ("BERT", "en", 16), ("GPT-2", "en", 1876)])
def test_table3_f1_gains_and_f1_follow_from_the_cells(model, lang, up):
    f1 = {r: P.value("Table 3", model, lang, r, "F1") for r in ("wo_DKN", "with_DKN")}
    assert 100 * (f1["with_DKN"] - f1["wo_DKN"]) / f1["wo_DKN"] == pytest.approx(up, rel=0.01, abs=0.6)
    for row in ("wo_DKN", "with_DKN"):      # F1 = 2PR / (P + R), to the printed digits
        p, r = (P.value("Table 3", model, lang, row, m) for m in ("P", "R"))
        assert 2 * p * r / (p + r) == pytest.approx(f1[row], abs=0.0015)


def test_the_like_model_is_chosen_by_kind():
    assert P.like_model("causal") == "m-GPT" and P.like_model("masked") == "m-BERT"
    assert P.MODELS["m-GPT"].kind == "causal" and P.MODELS["m-BERT"].kind == "masked"
