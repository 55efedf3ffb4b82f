"""`kneuron reproduce` end to end on a small bilingual organism trained here: every table, figure and
report file, resuming, and refusing what it should."""
import json
from types import SimpleNamespace

import pytest

from kneuron.facts import save_facts
from kneuron.models.load import from_model
from kneuron.paper.reproduce import ReproduceConfig, ReproduceResult, Reproduction, model_langs, spread_ids
from kneuron.runs.store import RunStoreError
from support.tiny import bilingual_facts

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mini(mini_organism, tmp_path_factory):
    import torch
    torch.set_num_threads(1)
    facts = bilingual_facts()
    model, tok, _ = mini_organism("clm")
    path = tmp_path_factory.mktemp("facts") / "bi.jsonl"
    save_facts(facts, path)
    return from_model(model, tok, kind="causal", name="mini"), str(path)


def _cfg(path, **kw):
    return ReproduceConfig(model="mini", facts=path, langs=("en", "zh"), steps=5, n_boot=50, **kw)


@pytest.mark.slow
def test_reproduce_writes_every_table_figure_and_a_self_contained_report(mini, tmp_path):
    h, path = mini
    out = tmp_path / "rep"
    res = Reproduction(h, _cfg(path), out, show_progress=False, log=lambda s: None).run()
    for f in ("report.md", "report.html", "fig-kn.png", "fig-likn.png", "table1.json", "table2.json",
              "table3-en.json", "table3-zh.json", "results.json", "facts.jsonl", "locate-amig/dkn.json"):
        assert (out / f).exists(), f
    assert set(res.table1) == {"ig", "amig"} and set(res.table1["amig"]) == {"en", "zh"}
    assert res.table1["amig"]["en"]["n_facts"] == 7 + 7
    assert set(res.table2["table"]) == {"likn", "own", "other", "both", "random"}
    for lang in ("en", "zh"):
        t3 = res.table3[lang]
        assert t3["n_test_items"] == 2 * t3["n_test"] > 0
        assert not set(t3["test_ids"]) & set(t3["val_ids"])
        assert {"direct", "compare"} <= set(t3)
    assert len(res.layers["kn"]["amig"]["en"]) == h.n_layers
    md = (out / "report.md").read_text()
    assert "Beside the paper's findings" in md and "Table 3" in md and "| AMIG | en | 14 |" in md
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(res.report["figures"]) >= 2
    assert "http://" not in page and "https://" not in page and "<img src=\"fig" not in page
    saved = json.loads((out / "results.json").read_text())
    assert saved["table1"] == json.loads(json.dumps(res.table1))
    assert ReproduceResult.load(out).to_json() == saved == json.loads(json.dumps(res.to_json(), default=str))

    # resume: nothing is recomputed, the same tables come back
    before = (out / "table1.json").stat().st_mtime_ns
    again = Reproduction(h, _cfg(path), out, resume=True, show_progress=False, log=lambda s: None).run()
    assert (out / "table1.json").stat().st_mtime_ns == before and again.table1 == res.table1
    # refused: a non-empty directory without resume, and other settings on resume
    with pytest.raises(RunStoreError, match="--resume"):
        Reproduction(h, _cfg(path), out, show_progress=False, log=lambda s: None)
    with pytest.raises(RunStoreError, match="steps"):
        Reproduction(h, ReproduceConfig(model="mini", facts=path, steps=7, n_boot=50), out, resume=True,
                     show_progress=False, log=lambda s: None)

    # the finished run resumed with the next questions: their steps only, Modules 1-3 and Tables 1-3 kept
    kept = {f: (out / f).stat().st_mtime_ns for f in ("table1.json", "table3-en.json", "locate-amig/dkn.jsonl")}
    nx = Reproduction(h, _cfg(path), out, resume=True, show_progress=False, log=lambda s: None,
                      next_questions=True).run()
    assert {f: (out / f).stat().st_mtime_ns for f in kept} == kept and nx.table1 == res.table1
    n = nx.next
    assert n["dkn_clusters"]["config"]["method"] == "clusters" and set(n["dkn_clusters"]["langs"]) == {"en", "zh"}
    assert set(n["factcheck"]) == {"pairs", "clusters"} and all(set(v) == {"en", "zh"} for v in n["factcheck"].values())
    for rule, stem in (("pairs", "factcheck"), ("clusters", "factcheck-clusters")):
        for lang in ("en", "zh"):
            j = json.loads((out / "locate-amig" / f"{stem}-{lang}.json").read_text())
            assert j == json.loads(json.dumps(n["factcheck"][rule][lang])) and j["dkn"] == rule
    assert n["consistency"] is None and n["cas"] is None and "two or more queries" in n["notes"][0]
    md = (out / "report.md").read_text()
    assert "After the paper" in md and "pairs against clusters" in md and "DKN rule: clusters" in md
    assert ReproduceResult.load(out).to_json()["next"] == json.loads(json.dumps(n, default=str))
    # again: every next step is read back, nothing is scored again
    rows = (out / "locate-amig" / "factcheck-en.jsonl").read_text()
    again = Reproduction(h, _cfg(path), out, resume=True, show_progress=False, log=lambda s: None,
                         next_questions=True).run()
    assert again.next == n and (out / "locate-amig" / "factcheck-en.jsonl").read_text() == rows


@pytest.mark.slow
def test_next_questions_with_several_queries_add_consistency_and_cas(mini, tmp_path):
    h, path = mini
    out = tmp_path / "rep"
    res = Reproduction(h, _cfg(path, prompts=None, limit=4), out, show_progress=False, log=lambda s: None,
                       next_questions=True).run()
    c = res.next["consistency"]
    assert {(s["method"]) for s in c["settings"]} == {"ig", "amig"}
    assert c["facts"] and all(len(f["sizes"]) >= 2 for f in c["facts"] if f["score"] is not None)
    assert res.next["cas"]["facts"] and not res.next["notes"]
    md = (out / "report.md").read_text()
    assert "Localization consistency" in md and "Consistency-aware selection" in md


def test_english_only_model_skips_the_cross_lingual_parts_and_says_why():
    langs, notes = model_langs(SimpleNamespace(name="smollm2-135m"), ("en", "zh"))
    assert langs == ("en",) and "zh skipped" in notes[0] and "Table 2" in notes[0]
    assert model_langs(SimpleNamespace(name="organism-mlm"), ("en", "zh")) == (("en", "zh"), [])


def test_spread_ids_round_robin_over_relations_and_languages():
    fs = bilingual_facts()
    ids = spread_ids(fs, ("en", "zh"), 4)
    assert ids == ["c0", "l0", "c1", "l1"]
    assert spread_ids([f for f in fs if not (f.id == "c0" and f.lang == "zh")], ("en", "zh"), 1) == ["c1"]
    assert len(spread_ids(fs, ("en",), None)) == 14
    assert spread_ids(fs, ("en", "zh"), 3, relations=1) == ["c0", "c1", "c2"]
    with pytest.raises(ValueError):
        ReproduceConfig(model="m", facts="f", limit=0).validate()
