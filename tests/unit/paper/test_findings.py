"""paper.findings: each of the paper's claims flips from agree to disagree when its numbers cross the
threshold, and says n/a when the run cannot tell."""
import copy

import pytest

from kneuron.paper import findings as F


def result(kind="causal") -> dict:
    """A minimal reproduce result on which every finding agrees."""
    return {
        "meta": {"model": {"kind": kind}, "langs_used": ["en", "zh"]},
        "table1": {"amig": {"en": {"sr": 12.0}, "zh": {"sr": 9.0}}, "ig": {"en": {"sr": 4.0}, "zh": {"sr": 3.0}}},
        "layers": {"kn": {"amig": {"en": [3, 3, 4], "zh": [3, 4, 3]}}, "likn": [0, 1, 9],
                   "dkn": {"en": [3, 3, 4], "zh": [3, 4, 3]}},
        "table2": {"langs": ["en", "zh"],
                   "table": {c: {lang: {"sr": sr, "suppress_related": -0.5} for lang in ("en", "zh")}
                             for c, sr in (("likn", 30.0), ("other", 10.0), ("both", 20.0))}},
        "table3": {"en": {"dkn": {"f1": 0.8}, "direct": {"f1": 0.6, "precision": 0.5, "recall": 0.9}}},
    }


def verdicts(res) -> dict:
    return {f.claim: f.verdict for f in F.findings(res)}


def test_every_finding_agrees_on_the_agreeing_result():
    v = verdicts(result())
    assert len(v) == 2 + 2 + 1 + 4 + 2 + 2 and set(v.values()) == {"agree"}
    t = F.table(F.findings(result()))
    assert t.header == ["the paper", "here", "verdict"] and len(t.rows) == len(v)
    assert t.rows[0] == ["Table 1: AMIG's SR beats B-KN's (en)", "AMIG 12.000 vs B-KN 4.000", "agree"]


def flip(res, path, value):
    res = copy.deepcopy(res)
    *keys, last = path
    d = res
    for k in keys:
        d = d[k]
    d[last] = value
    return verdicts(res)


def test_table1_sr():
    claim = "Table 1: AMIG's SR beats B-KN's (en)"
    assert flip(result(), ["table1", "amig", "en", "sr"], 4.0)[claim] == "disagree"      # equal is not above
    assert flip(result(), ["table1", "amig", "en", "sr"], 4.001)[claim] == "agree"
    assert flip(result(), ["table1", "ig", "en", "sr"], None)[claim] == "n/a"


@pytest.mark.parametrize("counts,verdict", [([1, 1, 8], "disagree"), ([1, 3, 6], "agree"), ([1, 2, 7], "disagree"),
                                            ([0.99, 4, 5.01], "disagree"), ([1, 4, 5], "agree")])
def test_a_causal_model_spreads_its_kns(counts, verdict):
    # every third >= 10 % and none > 60 %
    claim = "Fig. 3: a causal model's KNs spread over early, middle and last layers (en)"
    assert flip(result(), ["layers", "kn", "amig", "en"], counts)[claim] == verdict


def test_a_masked_model_keeps_its_kns_last():
    claim = "Fig. 3: a masked model's KNs sit mostly in the last layers (en)"
    masked = result("masked")
    assert flip(masked, ["layers", "kn", "amig", "en"], [2, 2, 6])[claim] == "agree"
    assert flip(masked, ["layers", "kn", "amig", "en"], [2, 3, 5])[claim] == "disagree"   # half is not most


def test_likn_in_the_last_two_layers():
    claim = "Fig. 3: LIKN sit mostly in the last one or two layers"
    assert flip(result(), ["layers", "likn"], [5, 3, 2])[claim] == "disagree"
    assert flip(result(), ["layers", "likn"], [4, 3, 3])[claim] == "agree"               # 6 of 10 in the last two
    assert flip(result(), ["layers", "likn"], [5, 0, 5])[claim] == "disagree"           # 5 of 10
    assert F.likn_layers([0, 0, 0]).agree is None and F.likn_layers([0, 0, 0]).here == "no LIKN"
    res = result()
    res["layers"]["likn"] = []
    assert claim not in verdicts(res)                                                   # no Module 2: no row


def test_table2_cross_lingual():
    beats = "Table 2: editing the LIKN beats editing the other language's KNs (zh→en)"
    below = "Table 2: editing both languages' KNs (sequential) is below LIKN (en)"
    assert flip(result(), ["table2", "table", "other", "en", "sr"], 30.0)[beats] == "disagree"
    assert flip(result(), ["table2", "table", "other", "en", "sr"], 29.0)[beats] == "agree"
    assert flip(result(), ["table2", "table", "both", "en", "sr"], 30.0)[below] == "disagree"
    assert flip(result(), ["table2", "table", "likn", "en", "sr"], None)[below] == "n/a"
    assert "en→zh" in " ".join(verdicts(result()))
    res = result()
    del res["table2"]
    assert not any(c.startswith("Table 2") for c in verdicts(res))


def test_dkn_layers_follow_the_kns():
    claim = "Fig. 4/5: DKNs are distributed over layers like KNs (en)"
    assert flip(result(), ["layers", "dkn", "en"], [10, 0, 0])[claim] == "disagree"
    assert F.cosine([3, 3, 4], [3, 3, 4]) == pytest.approx(1.0)
    assert F.cosine([1, 0], [0, 1]) == 0.0 and F.cosine([0, 0], [1, 1]) is None
    assert flip(result(), ["layers", "dkn", "en"], [0, 0, 0])[claim] == "n/a"
    # cosine just above / below 0.8
    assert F.cosine([1, 0], [4, 3]) == pytest.approx(0.8)
    assert flip(result(), ["layers", "kn", "amig", "en"], [4, 3, 0])[claim] != "agree"
    res = copy.deepcopy(result())
    res["layers"]["dkn"]["en"], res["layers"]["kn"]["amig"]["en"] = [1, 0, 0], [4, 2.9, 0]
    assert verdicts(res)[claim] == "agree"


def test_table3_fact_checking():
    f1 = "Table 3: DKN fact-checking beats the direct baseline in F1 (en)"
    recall = "Table 3: the model itself tends to call facts true (high recall) (en)"
    assert flip(result(), ["table3", "en", "dkn", "f1"], 0.6)[f1] == "disagree"
    assert flip(result(), ["table3", "en", "dkn"], None)[f1] == "n/a"
    assert flip(result(), ["table3", "en", "direct", "recall"], 0.4)[recall] == "disagree"
    assert flip(result(), ["table3", "en", "direct", "recall"], 0.5)[recall] == "n/a"     # a tie says nothing


def test_thirds():
    assert F.thirds([1, 1, 1, 1, 1, 1]) == (2 / 6, 2 / 6, 2 / 6)
    assert F.thirds([1, 0, 0, 0, 9]) == (0.1, 0.0, 0.9)          # 5 layers: 1 / 3 / 1
    assert F.thirds([0, 0, 0]) == (0.0, 0.0, 0.0)
