"""paper.beside: each of our cells set beside the paper's row it stands for (LIKN <- likn, Mono-KN <- other,
Seq-KN <- both, and the released code's Seq-KN <- other in en / own in zh; wo_DKN <- direct, with_DKN <-
dkn_paper and dkn), the paper's percentages computed the paper's way, P / R in the code's convention, and the
not-like-for-like points naming our model and counts."""
import pytest

from kneuron.paper import beside
from kneuron.report.render import markdown


def _rows(res, table, lang):
    return [r for r in beside.rows(res) if r["table"] == table and r["lang"] == lang]


def test_table2_rows_read_the_condition_each_paper_row_stands_for(hand_result):
    en = {r["row"]: r for r in _rows(hand_result, "Table 2", "en")}
    zh = {r["row"]: r for r in _rows(hand_result, "Table 2", "zh")}
    assert [en[r]["ours"] for r in ("LIKN", "Mono-KN", "Seq-KN", "Seq-KN (the released code's)")] == [30, 10, 20, 10]
    assert [zh[r]["ours"] for r in ("LIKN", "Mono-KN", "Seq-KN", "Seq-KN (the released code's)")] == [31, 11, 21, 41]
    assert en["LIKN"]["paper"] == {"m-GPT": 2.542, "m-BERT": 2.359} and zh["Seq-KN"]["paper"]["m-GPT"] == 3.654
    assert en["LIKN"]["ours_interval"] == {"value": 30.0, "low": 0.5, "high": 99.0} and en["LIKN"]["n"] == 3
    # the paper's arrows: (LIKN - Mono) / Mono and (LIKN - Seq) / LIKN, for ours and theirs alike
    assert en["LIKN over Mono-KN"]["ours"] == pytest.approx(200.0)
    assert en["LIKN over Seq-KN"]["ours"] == pytest.approx(100 * 10 / 30)
    assert zh["LIKN over Mono-KN"]["paper"]["m-GPT"] == pytest.approx(277.36, abs=0.01)
    assert en["LIKN over Seq-KN"]["paper"]["m-GPT"] < 0            # the paper's own English Seq-KN is above LIKN


def test_table3_rows_give_p_and_r_in_the_codes_convention(hand_result):
    zh = _rows(hand_result, "Table 3", "zh")
    wo, paper, tuned, gain = zh
    assert (wo["row"], paper["row"], tuned["row"]) == ("wo_DKN", "with_DKN", "with_DKN")
    assert "0.7" in paper["ours_as"] and "tuned" in tuned["ours_as"]
    assert wo["ours"] == {"P": 0.75, "R": 0.6, "F1": 0.2}                 # the code's P is our recall
    assert wo["ours_true_class"] == {"precision": 0.6, "recall": 0.75}
    assert wo["paper"]["m-GPT"] == {"P": 0.0002, "R": 1.0, "F1": 0.0004}
    assert paper["ours"]["F1"] == 0.4 and tuned["ours"]["F1"] == 0.9
    assert gain["row"] == "with_DKN over wo_DKN" and gain["ours"] == pytest.approx(100 * (0.9 - 0.2) / 0.2)
    assert gain["paper"]["m-GPT"] == pytest.approx(167150, rel=0.01)


def test_table1_rows_are_the_sr_gain_of_amig(hand_result):
    en, zh = _rows(hand_result, "Table 1", "en"), _rows(hand_result, "Table 1", "zh")
    assert en[0]["ours"] == pytest.approx(200.0) and zh[0]["ours"] == pytest.approx(50.0)
    assert en[0]["paper"] == {"m-GPT": None, "m-BERT": None} and zh[0]["paper"]["m-GPT"] == 44.49
    hand_result["table1"]["ig"]["en"]["sr"] = None
    assert _rows(hand_result, "Table 1", "en")[0]["ours"] is None
    assert beside.gain(1.0, 2.0, 0.0) is None and beside.gain(None, 1.0, 1.0) is None


def test_one_language_gives_no_table2_rows_and_the_section_still_renders(hand_result):
    del hand_result["table2"]
    assert not _rows(hand_result, "Table 2", "en")
    md = markdown(beside.document(hand_result))
    assert "**Table 2 (SR)**" not in md and "**Table 3" in md


def test_the_section_renders_and_says_where_ours_is_not_like_for_like(hand_result):
    points = beside.not_like_for_like(hand_result)
    text = " ".join(points)
    assert "tiny (causal, 3 layers × 16 neurons" in text and "ai-forever/mGPT" in text
    assert "Table 1 en 20, zh 20" in text and "Table 2 3 fact ids with a LIKN (of 20)" in text
    assert "en 8 test items (4 facts)" in text and "no outlier cut" in text and "20 IG steps" in text
    md = markdown(beside.document(hand_result))
    assert "## Beside the paper's numbers" in md and "m-GPT row" in md
    assert "| en | LIKN | SR | 2.542 | 2.359 | 30.000 [0.500, 99.000] |" in md
    assert "| zh | wo_DKN | 0.0002 / 1.000 / 0.0004 |" in md
    assert md.count("\n- **") == len(points)
    hand_result["meta"]["model"]["kind"] = "masked"                      # a masked model: beside m-BERT first
    assert "the paper's m-BERT row" in markdown(beside.document(hand_result))
