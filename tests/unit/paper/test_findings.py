"""paper.findings: each of the paper's claims flips from holds to does not hold when its numbers cross the
rule's named threshold, and says "cannot be tested here" (with the reason) when the run cannot tell."""
import copy

import pytest

from kneuron.paper import findings as F


def _t2_cell(sr, sup):
    return {lang: {"sr": sr, "suppress_related": sup} for lang in ("en", "zh")}


def _t3(dkn, paper, direct, tp, fp, fn, tn):
    return {"n_test_items": tp + fp + fn + tn, "dkn": {"f1": dkn}, "dkn_paper": {"f1": paper},
            "direct": {"f1": direct, "precision": 0.5, "recall": 0.9, "tp": tp, "fp": fp, "fn": fn, "tn": tn}}


def result(kind="causal", name="tiny") -> dict:
    """A minimal reproduce result on which every claim that a run can test holds."""
    return {
        "meta": {"model": {"kind": kind, "name": name}, "langs_used": ["en", "zh"], "notes": []},
        "table1": {"amig": {"en": {"sr": 12.0}, "zh": {"sr": 9.0}}, "ig": {"en": {"sr": 4.0}, "zh": {"sr": 3.0}}},
        "layers": {"kn": {"amig": {"en": [3, 3, 4], "zh": [3, 4, 3]}}, "likn": [0, 1, 9],
                   "dkn": {"en": [3, 3, 4], "zh": [3, 4, 3]}},
        "table2": {"langs": ["en", "zh"], "likn": {"n_facts": 10, "n_with_likn": 6, "share_nonempty": 0.6},
                   "table": {"likn": _t2_cell(30.0, -0.5), "other": _t2_cell(10.0, -0.1), "both": _t2_cell(20.0, -0.6),
                             "own": _t2_cell(40.0, -0.7), "random": _t2_cell(1.0, -0.01)}},
        "dkn": {"langs": {lang: {"n_facts": 10, "n_with_dkn": 5, "share_with_dkn": 0.5} for lang in ("en", "zh")}},
        "table3": {"en": _t3(0.8, 0.7, 0.6, 4, 3, 1, 2), "zh": _t3(0.9, 0.8, 0.1, 4, 3, 1, 2)},
    }


UNTESTABLE = {"Table 3: auto-regressive models show a higher recall than auto-encoding ones",
              "Fig. 5: monolingual models have DKNs too, which help fact-checking (not due to multilinguality)"}


def verdicts(res) -> dict:
    return {f.claim: f.verdict for f in F.findings(res)}


def test_every_testable_claim_holds_on_the_agreeing_result():
    fs = F.findings(result())
    v = {f.claim: f.verdict for f in fs}
    assert len(v) == len(fs) == 2 + 2 + 1 + 2 + 8 + 4 + 7 + 2          # every claim once, none twice
    assert {c for c, x in v.items() if x != F.HOLDS} == UNTESTABLE
    assert all(v[c] == F.UNTESTED for c in UNTESTABLE)
    assert all(f.rule for f in fs) and all(f.reason for f in fs if f.agree is None)
    t = F.table(fs)
    assert t.header == ["the paper's claim", "rule", "the paper's numbers", "here", "verdict"]
    assert len(t.rows) == len(fs)
    assert t.rows[1] == ["Table 1: AMIG localises better than B-KN: higher SR (zh)", "SR_AMIG − SR_B-KN > 0.0",
                         "m-GPT +44.49% SR; m-BERT +84.34% SR", "AMIG 9.000 vs B-KN 3.000", "holds"]
    untested = [r for r in t.rows if r[0] in UNTESTABLE]
    assert all(r[4].startswith("cannot be tested here: ") for r in untested)
    j = fs[0].to_json()
    assert j["verdict"] == "holds" and set(j) == {"claim", "here", "agree", "rule", "paper", "reason", "verdict"}


def flip(res, path, value):
    res = copy.deepcopy(res)
    *keys, last = path
    d = res
    for k in keys:
        d = d[k]
    d[last] = value
    return verdicts(res)


def test_table1_sr():
    claim = "Table 1: AMIG localises better than B-KN: higher SR (en)"
    assert flip(result(), ["table1", "amig", "en", "sr"], 4.0)[claim] == F.FAILS       # equal is not above
    assert flip(result(), ["table1", "amig", "en", "sr"], 4.001)[claim] == F.HOLDS
    assert flip(result(), ["table1", "ig", "en", "sr"], None)[claim] == F.UNTESTED


@pytest.mark.parametrize("counts,verdict", [([1, 1, 8], F.FAILS), ([1, 3, 6], F.HOLDS), ([1, 2, 7], F.FAILS),
                                            ([0.99, 4, 5.01], F.FAILS), ([1, 4, 5], F.HOLDS), ([0, 0, 0], F.UNTESTED)])
def test_a_causal_model_spreads_its_kns(counts, verdict):
    # every third >= 10 % and none > 60 %
    claim = "Fig. 3: a causal model's KNs spread over early, middle and last layers (en)"
    assert flip(result(), ["layers", "kn", "amig", "en"], counts)[claim] == verdict


def test_a_masked_model_keeps_its_kns_last():
    claim = "Fig. 3: a masked model's KNs sit mostly in the last layers (en)"
    masked = result("masked")
    assert flip(masked, ["layers", "kn", "amig", "en"], [2, 2, 6])[claim] == F.HOLDS
    assert flip(masked, ["layers", "kn", "amig", "en"], [2, 3, 5])[claim] == F.FAILS   # half is not most


def test_english_and_chinese_kns_alike():
    claim = "Fig. 3: English and Chinese KNs are distributed over layers alike"
    res = result()
    res["layers"]["kn"]["amig"]["en"], res["layers"]["kn"]["amig"]["zh"] = [1, 0, 0], [4, 3, 0]   # cosine 0.8
    assert verdicts(res)[claim] == F.FAILS
    res["layers"]["kn"]["amig"]["zh"] = [4, 2.9, 0]                                           # just above
    assert verdicts(res)[claim] == F.HOLDS
    res["layers"]["kn"]["amig"]["zh"] = [0, 0, 0]
    assert verdicts(res)[claim] == F.UNTESTED
    del res["layers"]["kn"]["amig"]["zh"], res["layers"]["dkn"]["zh"]
    assert verdicts(res)[claim] == F.UNTESTED


def test_likn_exist_and_sit_in_the_last_two_layers():
    exist = "Module 2: facts have language-independent neurons (𝒩_en ∩ 𝒩_zh not empty)"
    claim = "Fig. 3: LIKN sit mostly in the last one or two layers"
    assert flip(result(), ["table2", "likn", "share_nonempty"], 0.0)[exist] == F.FAILS
    assert flip(result(), ["table2", "likn", "share_nonempty"], 0.01)[exist] == F.HOLDS
    assert flip(result(), ["layers", "likn"], [5, 3, 2])[claim] == F.FAILS
    assert flip(result(), ["layers", "likn"], [4, 3, 3])[claim] == F.HOLDS              # 6 of 10 in the last two
    assert flip(result(), ["layers", "likn"], [5, 0, 5])[claim] == F.FAILS              # 5 of 10
    assert F.likn_layers([0, 0, 0]).agree is None and F.likn_layers([0, 0, 0]).here == "no LIKN"
    res = result()
    del res["table2"]
    v = verdicts(res)
    assert v[exist] == v[claim] == F.UNTESTED                                           # one language: say so


def test_table2_cross_lingual():
    beats = "Table 2: editing the LIKN beats editing the other language's KNs, Mono-KN (zh→en)"
    below = "Table 2: editing both languages' KNs (Seq-KN) is below editing the LIKN (en)"
    own = "Table 2: one language's KNs move the other language less than their own (zh→en)"
    control = ("Control (not in the paper): the LIKN move the fact more than as many random neurons in the same "
               "layers (en)")
    cell = ["table2", "table"]
    assert flip(result(), cell + ["other", "en", "sr"], 30.0)[beats] == F.FAILS
    assert flip(result(), cell + ["other", "en", "sr"], 29.0)[beats] == F.HOLDS
    assert flip(result(), cell + ["both", "en", "sr"], 30.0)[below] == F.FAILS
    assert flip(result(), cell + ["both", "en", "sr"], 29.9)[below] == F.HOLDS
    assert flip(result(), cell + ["likn", "en", "sr"], None)[below] == F.UNTESTED
    assert flip(result(), cell + ["own", "en", "sr"], 10.0)[own] == F.FAILS
    assert flip(result(), cell + ["own", "en", "sr"], 10.5)[own] == F.HOLDS
    assert flip(result(), cell + ["random", "en", "suppress_related"], -0.5)[control] == F.FAILS
    assert flip(result(), cell + ["random", "en", "suppress_related"], -0.49)[control] == F.HOLDS
    assert "Table 2: editing the LIKN beats editing the other language's KNs, Mono-KN (en→zh)" in verdicts(result())
    res = result()
    del res["table2"]
    assert [v for c, v in verdicts(res).items() if c.startswith("Table 2")] == [F.UNTESTED]


def test_table2_shows_where_the_papers_own_row_disagrees():
    """English Seq-KN is above LIKN in the paper's own Table 2 (4.285 vs 2.542): the report says so."""
    f = {x.claim: x for x in F.findings(result())}
    assert "m-GPT LIKN 2.542 vs Seq-KN 4.285 (not so in the paper's own row)" in \
        f["Table 2: editing both languages' KNs (Seq-KN) is below editing the LIKN (en)"].paper
    assert "not so" not in f["Table 2: editing both languages' KNs (Seq-KN) is below editing the LIKN (zh)"].paper


def test_dkn_exist_and_follow_the_kns():
    exist = "Module 3: facts have degenerate knowledge neurons (en)"
    claim = "Fig. 4: DKNs are distributed over layers like KNs (en)"
    assert flip(result(), ["dkn", "langs", "en", "share_with_dkn"], 0.0)[exist] == F.FAILS
    assert flip(result(), ["dkn", "langs", "en", "share_with_dkn"], 0.1)[exist] == F.HOLDS
    assert flip(result(), ["layers", "dkn", "en"], [10, 0, 0])[claim] == F.FAILS
    assert F.cosine([3, 3, 4], [3, 3, 4]) == pytest.approx(1.0)
    assert F.cosine([1, 0], [0, 1]) == 0.0 and F.cosine([0, 0], [1, 1]) is None
    assert flip(result(), ["layers", "dkn", "en"], [0, 0, 0])[claim] == F.UNTESTED
    # cosine exactly 0.8 does not hold, just above does
    assert F.cosine([1, 0], [4, 3]) == pytest.approx(0.8)
    res = copy.deepcopy(result())
    res["layers"]["dkn"]["en"], res["layers"]["kn"]["amig"]["en"] = [1, 0, 0], [4, 3, 0]
    assert verdicts(res)[claim] == F.FAILS
    res["layers"]["kn"]["amig"]["en"] = [4, 2.9, 0]
    assert verdicts(res)[claim] == F.HOLDS


def test_table3_with_dkn_beats_wo_dkn():
    tuned = "Table 3: with_DKN beats wo_DKN in F1 (en; t, λ tuned on validation)"
    paper = "Table 3: with_DKN beats wo_DKN in F1 (en; the paper's t = 0.7, λ = 1e-6)"
    assert flip(result(), ["table3", "en", "dkn", "f1"], 0.6)[tuned] == F.FAILS
    assert flip(result(), ["table3", "en", "dkn", "f1"], 0.61)[tuned] == F.HOLDS
    assert flip(result(), ["table3", "en", "dkn_paper", "f1"], 0.6)[paper] == F.FAILS
    assert flip(result(), ["table3", "en", "dkn_paper", "f1"], 0.6)[tuned] == F.HOLDS    # each its own row
    res = result()
    del res["table3"]["en"]["dkn"]                                       # no validation part: not tuned
    f = {x.claim: x for x in F.findings(res)}
    assert f[tuned].verdict == F.UNTESTED and "validation" in f[tuned].reason


def test_the_model_calls_facts_true():
    claim = "Table 3: the model itself tends to call facts true, hence a high recall (en)"
    half = _t3(0.8, 0.7, 0.6, 3, 2, 2, 3)                                # 5 of 10 judged true: not more than half
    assert flip(result(), ["table3", "en"], half)[claim] == F.FAILS
    assert flip(result(), ["table3", "en"], _t3(0.8, 0.7, 0.6, 3, 3, 2, 2))[claim] == F.HOLDS
    assert flip(result(), ["table3", "en"], _t3(0.8, 0.7, 0.6, 0, 0, 0, 0))[claim] == F.UNTESTED
    assert F.judged_true({"tp": 1, "fp": 2, "fn": 3, "tn": 4}) == pytest.approx(0.3)


def test_dkns_help_most_in_chinese():
    claim = "Table 3: DKNs help most in Chinese"
    # en gain 0.2, zh gain 0.8 (the agreeing result); zh gain equal to en's does not hold; a zh gain <= 0 never does
    assert flip(result(), ["table3", "zh", "dkn", "f1"], 0.3)[claim] == F.FAILS
    assert flip(result(), ["table3", "zh", "dkn", "f1"], 0.31)[claim] == F.HOLDS
    res = result()
    res["table3"]["en"]["dkn"]["f1"], res["table3"]["zh"]["dkn"]["f1"] = 0.0, 0.1        # gains -0.6, 0.0
    assert verdicts(res)[claim] == F.FAILS
    res["table3"]["zh"]["dkn"]["f1"] = 0.11
    assert verdicts(res)[claim] == F.HOLDS
    del res["table3"]["zh"]
    assert verdicts(res)[claim] == F.UNTESTED


def test_a_monolingual_model_tests_the_multilinguality_claim():
    claim = "Fig. 5: monolingual models have DKNs too, which help fact-checking (not due to multilinguality)"
    mono = result(name="smollm2-135m")                                   # English-only by its card
    assert verdicts(mono)[claim] == F.HOLDS
    assert flip(mono, ["dkn", "langs", "en", "share_with_dkn"], 0.0)[claim] == F.FAILS
    assert flip(mono, ["table3", "en", "dkn", "f1"], 0.6)[claim] == F.FAILS
    assert verdicts(result(name="gemma3-270m"))[claim] == F.UNTESTED    # bilingual


def test_thirds():
    assert F.thirds([1, 1, 1, 1, 1, 1]) == (2 / 6, 2 / 6, 2 / 6)
    assert F.thirds([1, 0, 0, 0, 9]) == (0.1, 0.0, 0.9)          # 5 layers: 1 / 3 / 1
    assert F.thirds([0, 0, 0]) == (0.0, 0.0, 0.0)


def test_the_here_column_says_whether_the_intervals_overlap():
    iv = lambda v, lo, hi: {"value": v, "low": lo, "high": hi}  # noqa: E731
    assert F.apart(iv(5, 4, 6), iv(2, 1, 3.9)) == " (95% intervals apart)"
    assert F.apart(iv(5, 4, 6), iv(2, 1, 4.0)) == " (95% intervals overlap)"      # touching is overlapping
    assert F.apart(iv(5, 4, 6), None) == "" and F.apart(iv(5, None, 6), iv(2, 1, 3)) == ""
    res = result()
    res["table1"]["amig"]["en"]["sr_interval"], res["table1"]["ig"]["en"]["sr_interval"] = iv(12, 10, 14), iv(4, 3, 5)
    f = {x.claim: x for x in F.findings(res)}
    assert f["Table 1: AMIG localises better than B-KN: higher SR (en)"].here.endswith("(95% intervals apart)")
    res["table2"]["table"]["likn"]["en"]["sr_interval"] = iv(30, 5, 50)
    res["table2"]["table"]["other"]["en"]["sr_interval"] = iv(10, 2, 20)
    f = {x.claim: x for x in F.findings(res)}
    assert "(95% intervals overlap)" in f["Table 2: editing the LIKN beats editing the other language's KNs, "
                                          "Mono-KN (zh→en)"].here
