"""paper.report: the report's sections in order (beside the paper's numbers, the verdicts, the facts used,
Tables 1-3, Figures 3-5 with their counts, provenance), Table 1's rows over known / not-known facts, and
write_report's JSON (the comparison, the verdicts, the facts used, read from known.json beside the run)."""
import json
from pathlib import Path

from kneuron.facts import Fact, save_facts
from kneuron.paper import findings
from kneuron.paper.facts_used import KNOWN_FILE
from kneuron.paper.report import document, run_ids, write_report
from kneuron.report.render import markdown

OLD = Path(__file__).with_name("reproduce-results-1c37887.json")
SECTIONS = ["## Beside the paper's numbers", "## Beside the paper's findings — a verdict per claim",
            "## Facts used — which facts each table uses and why", "## Table 1", "## Module 2 and Table 2",
            "## Module 3", "## Table 3", "## Figures 3–5", "## Parameters and provenance"]


def _positions(md: str) -> list[int]:
    return [md.index(s) for s in SECTIONS]


def test_an_old_result_renders_every_section_in_order():
    """results.json of a run made before this report (no per-fact LIKN counts, no knowledge records)."""
    res = json.loads(OLD.read_text(encoding="utf-8"))
    md = markdown(document(res, [], {"principle": "P.", "rule": None, "steps": []}))
    assert _positions(md) == sorted(_positions(md))
    assert "LIKN per fact" not in md                                     # not recorded then: no table
    assert "| 0 | 205 (94%) | 350 (74%) |" in md                         # the per-layer counts of its histograms
    md = markdown(document(res, []))
    assert "## Facts used" not in md                                     # None: the section is left out


def test_verdict_counts_and_table1_known_rows(hand_result):
    hand_result["table1"]["amig"]["en"]["known"] = {**hand_result["table1"]["amig"]["en"], "n_facts": 7}
    hand_result["table1"]["amig"]["en"]["not_known"] = {**hand_result["table1"]["amig"]["en"], "n_facts": 13}
    md = markdown(document(hand_result, []))
    fs = findings.findings(hand_result)
    n = sum(f.verdict == findings.HOLDS for f in fs)
    assert f"{n} hold, {sum(f.verdict == findings.FAILS for f in fs)} do not hold" in md
    assert "| AMIG | en | 20 |" in md and "| AMIG, known | en | 7 |" in md and "| AMIG, not known | en | 13 |" in md
    assert "| AMIG, known | zh |" not in md
    assert "**LIKN per fact: 20 facts, mean 0.30**" in md
    assert "Figure 5 (DKNs of the monolingual BERT and GPT-2) needs a monolingual model" in md


def test_write_report_returns_the_comparison_verdicts_and_facts_used(hand_result, tmp_path):
    save_facts([Fact(f"f{i}", "P1", lang, "x", "y", ("[X] is [Y].",)) for i in range(1, 21) for lang in ("en", "zh")],
               tmp_path / "facts.jsonl")
    assert run_ids(tmp_path)["zh"][:2] == ["f1", "f2"] and run_ids(tmp_path / "nothing") == {}
    recs = [{"id": f"f{i}", "lang": "en", "relation": "P1", "rank": i, "p": 0.1, "known": i <= 10}
            for i in range(1, 21)]
    summary = {"languages": {"en": {"facts": 20, "known": 10, "top1": 4, "median_rank": 10.5}}}
    (tmp_path / KNOWN_FILE).write_text(json.dumps({"rule": "rank", "k": 10, "facts": recs, "summary": summary}),
                                       encoding="utf-8")
    r = write_report(hand_result, tmp_path)
    assert set(r) == {"md", "html", "figures", "beside_paper", "verdicts", "facts_used"}
    assert len(r["figures"]) == 3 and all(Path(p).is_file() for p in r["figures"])
    assert {v["verdict"] for v in r["verdicts"]} <= {"holds", "does not hold", "cannot be tested here"}
    assert len(r["verdicts"]) == len(findings.findings(hand_result))
    t1 = next(s for s in r["facts_used"]["steps"] if s["step"].startswith("Table 1"))
    assert t1["per_lang"]["en"] == {"facts": 20, "known": 10, "not_known": 10, "not_judged": 0}
    assert t1["per_lang"]["zh"]["not_judged"] == 20                      # no zh records
    md = Path(r["md"]).read_text(encoding="utf-8")
    assert "Known by: rank: the gold object's first token within the model's top 10" in md
    assert "| Table 1 (Module 1: B-KN, AMIG) | every fact of the run |" in md and "20 (10 / 10)" in md
    assert "en 10 of 20 known, 4 top-1, median rank 10.5" in md
    assert "table2_by_known" not in r                                    # no crosslingual.parquet: no split
    json.dumps(r, allow_nan=False)                                       # results.json keeps it as it is
    page = Path(r["html"]).read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 3


def test_table2_is_split_by_known_from_the_effects_the_run_saved(hand_result, tmp_path):
    from kneuron.paper.facts_used import Known
    from kneuron.paper.table1 import EditEffect
    from kneuron.paper.table2 import CONDITIONS, CrossLingual
    effects = [EditEffect(f"f{i}", lang, "P1", 2, "g", "P2", 0.5, 0.5, 0.1, 0.49, 0.8, 0.52, condition=c)
               for i in (1, 2, 3) for lang in ("en", "zh") for c in CONDITIONS]
    CrossLingual(("en", "zh"), 42, 20, 3, {}, effects).save_effects(tmp_path / "locate-amig")
    known = Known("rank", {(f"f{i}", lang): i < 3 for i in (1, 2, 3) for lang in ("en", "zh")})
    r = write_report(hand_result, tmp_path, known=known)
    assert set(r["table2_by_known"]) == {"known_in_both", "not_known_in_both"}
    assert r["table2_by_known"]["known_in_both"]["likn"]["zh"]["n_facts"] == 2
    md = Path(r["md"]).read_text(encoding="utf-8")
    assert "| known in both | likn | en | 2 |" in md and "| not known in both | random | zh | 1 |" in md


def test_a_one_language_result_renders_and_says_what_it_cannot_test(hand_result):
    """An English-only model (smollm2-135m): no Module 2, no Chinese; the report is whole and says why."""
    res = hand_result
    res["meta"]["model"]["name"], res["meta"]["langs_used"] = "smollm2-135m", ["en"]
    res["meta"]["notes"] = ["smollm2-135m is an English-only model: zh skipped"]
    res["table2"] = None
    for d in (res["table1"]["amig"], res["table1"]["ig"], res["dkn"]["langs"], res["table3"], res["layers"]["dkn"],
              res["layers"]["kn"]["amig"], res["layers"]["kn"]["ig"]):
        d.pop("zh")
    res["layers"]["likn"] = []
    md = markdown(document(res, [], {"principle": "P.", "rule": None, "steps": []}))
    assert "## Module 2 and Table 2" in md and "Skipped: smollm2-135m is an English-only model" in md
    assert "Module 2 needs two languages; smollm2-135m is an English-only model: zh skipped" in md
    assert "**Table 2 (SR)**" not in md and "LIKN (en" not in md
    v = {f.claim: f.verdict for f in findings.findings(res)}
    assert v["Fig. 5: monolingual models have DKNs too, which help fact-checking (not due to multilinguality)"] == \
        findings.HOLDS                                                   # testable on an English-only model
    assert v["Table 3: DKNs help most in Chinese"] == findings.UNTESTED
