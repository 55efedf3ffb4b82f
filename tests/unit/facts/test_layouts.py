"""kneuron.facts.layouts: fact-set layouts (mLAMA, X-FACTR, ParaRel), detected and read with every bad line
one error; the bundled names and the en-zh set, on the small fixtures in tests/fixtures/factsets/."""
import json
import shutil
import sys
from pathlib import Path

import pytest

from kneuron.facts import FactError, fact_file_hash, load_facts, load_factset, resolve_facts, stats
from kneuron.facts.layouts import common, detect
from kneuron.facts.layouts.names import choose_name
from kneuron.facts.templates import y_ends_template
from support.paths import FIXTURES

FIX = FIXTURES / "factsets"
MLAMA, XFACTR, PARAREL = FIX / "mlama", FIX / "xfactr", FIX / "pararel"


def error_of(*args, **kw) -> str:
    with pytest.raises(FactError) as ei:
        load_facts(*args, **kw)
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


def copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / src.name))


def append(path: Path, line: str) -> int:
    """Append one line; return its line number."""
    text = path.read_text(encoding="utf-8")
    path.write_text(text + line + "\n", encoding="utf-8")
    return len(text.splitlines()) + 1


def by_key(facts):
    return {f.key: f for f in facts}


# ------------------------------------------------------------------------------ detection, names

def test_detects_each_layout(tmp_path):
    assert (detect(MLAMA), detect(XFACTR), detect(PARAREL)) == ("mlama", "xfactr", "pararel")
    assert load_factset(MLAMA).layout == "mlama" and load_factset(FIX.parent / "facts_small.jsonl").layout == "jsonl"
    (tmp_path / "empty").mkdir()
    msg = error_of(tmp_path / "empty")
    assert msg.startswith(f"{tmp_path / 'empty'}:0:") and "not a fact directory" in msg
    assert all(word in msg for word in ("mLAMA", "templates.jsonl", "X-FACTR", "TREx_prompts.csv", "ParaRel", "patterns/"))


def test_bundled_names_and_resolution():
    demo = load_facts("demo-en")
    assert len(demo) == 12 and {f.lang for f in demo} == {"en"}
    zh = load_facts("en-zh", lang="zh")
    assert zh and {f.lang for f in zh} == {"zh"}
    assert resolve_facts("en-zh").name == "en-zh.jsonl" and resolve_facts(MLAMA) == MLAMA
    msg = error_of("no-such-set")
    assert "cannot read" in msg and "demo-en" in msg and "en-zh" in msg


def test_stats_counts():
    s = stats(load_facts(MLAMA))
    assert s["languages"] == {"en": 4, "zh": 3}
    assert s["relations"] == {"P36": {"en": 3, "zh": 2}, "P37": {"en": 1, "zh": 1}}
    assert s["aligned_ids"] == 3 and s["n_templates"] == {"en": 2, "zh": 2}


def test_directory_hash(tmp_path):
    h = fact_file_hash(MLAMA)
    assert len(h) == 64 and h == fact_file_hash(str(MLAMA))
    moved = copy(MLAMA, tmp_path)
    assert fact_file_hash(moved) == h                       # relative paths: location does not matter
    append(moved / "zh" / "P36.jsonl", '{"sub_label": "德國", "obj_label": "柏林", "uuid": "u-p36-3"}')
    assert fact_file_hash(moved) != h
    assert fact_file_hash("demo-en") == fact_file_hash(resolve_facts("demo-en"))


def test_choose_name_examples():
    pick = lambda s: choose_name(s.split(), chinese=True).name
    assert pick("法兰西 法兰西共和国 法国") == "法国"
    assert pick("中 中华人民共和国 中国 中國 中華人民共和國 共产中国 🇨🇳") == "中国"
    assert pick("小拿拿 拿破崙 拿破崙·波拿巴 拿破崙一世") == "拿破仑"              # converted, core of the others
    n = choose_name(["加拿大", "🇨🇦"], chinese=True)
    assert n.name == "加拿大" and n.dropped == ("🇨🇦",)
    assert choose_name(["🇨🇦"], chinese=True) is None


def test_missing_opencc_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "opencc", None)
    common._t2s.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"kneuron\[data\]"):
            common.to_simplified("漢城")
    finally:
        common._t2s.cache_clear()


# ------------------------------------------------------------------------------------------ mLAMA

def test_mlama_aligned_by_uuid_and_simplified():
    fs = load_factset(MLAMA)
    assert fs.languages == ("en", "zh")
    facts = by_key(fs.facts)
    assert facts[("u-p36-1", "zh")].subject == "法国" and facts[("u-p36-2", "zh")].object == "东京"
    assert facts[("u-p37-1", "zh")].templates == ("[X]的官方语言是[Y]。",)           # 語 -> 语
    assert facts[("u-p36-1", "en")].templates == ("The capital of [X] is [Y].",)     # " ." normalized
    for (fid, lang), f in facts.items():
        other = facts.get((fid, "en" if lang == "zh" else "zh"))
        assert other is None or (other.relation == f.relation and other.id == fid)
    assert fs.report.count("facts missing in some language") == 1                      # u-p36-3 has no zh line
    assert [f.id for f in load_facts(MLAMA, lang="zh")] == ["u-p36-1", "u-p36-2", "u-p37-1"]
    msg = error_of(MLAMA, lang="de")
    assert "'de'" in msg and "en, zh" in msg


@pytest.mark.parametrize("line, field, problem", [
    ('{"sub_label": "德國", "uuid": "u-9"}', "obj_label", "missing required field"),
    ('{"sub_label": "德國", "obj_label": "", "uuid": "u-9"}', "obj_label", "non-empty string"),
    ('{"sub_label": "德國", "obj_label": "柏林", "uuid": 7}', "uuid", "non-empty string"),
])
def test_mlama_malformed_fact_line(tmp_path, line, field, problem):
    d = copy(MLAMA, tmp_path)
    n = append(d / "zh" / "P36.jsonl", line)
    msg = error_of(d)
    assert msg.startswith(f"{d / 'zh' / 'P36.jsonl'}:{n}: field \"{field}\": ") and problem in msg


def test_mlama_malformed_json_and_template(tmp_path):
    d = copy(MLAMA, tmp_path)
    n = append(d / "en" / "P37.jsonl", '{"sub_label": oops}')
    assert error_of(d).startswith(f"{d / 'en' / 'P37.jsonl'}:{n}:") and "malformed JSON" in error_of(d)
    d2 = copy(MLAMA, tmp_path / "b")
    n = append(d2 / "zh" / "templates.jsonl", '{"relation": "P36"}')
    assert error_of(d2).startswith(f'{d2 / "zh" / "templates.jsonl"}:{n}: field "template": missing required field')


# ----------------------------------------------------------------------------------------- X-FACTR

def test_xfactr_names_templates_and_report():
    fs = load_factset(XFACTR)
    assert fs.languages == ("en", "fr", "zh")
    en, zh = ({f.id: f for f in fs.facts if f.lang == lg} for lg in ("en", "zh"))
    assert (en["x-P36-0"].subject, en["x-P36-0"].object) == ("France", "Paris")        # labels of the triples
    assert en["x-P36-0"].aliases == ("City of Light",)
    assert (zh["x-P36-0"].subject, zh["x-P36-0"].object) == ("法国", "巴黎")
    assert zh["x-P36-5"].object == "马德里" and "馬德里" in zh["x-P36-5"].aliases        # t2s, raw kept as alias
    assert zh["x-P36-7"].subject == "加拿大"                                           # emoji alias dropped
    assert "x-P36-6" in en and "x-P36-6" not in zh                                     # Atlantis: no Chinese name
    assert zh["x-P36-0"].templates == ("[X]的行政中心是[Y]。",)
    assert not [f for f in fs.facts if f.lang == "fr"]                                 # fr templates have markup
    assert fs.report.count("templates skipped (inflection markup)") == 2
    assert fs.report.count("facts without a zh name for the subject (skipped)") == 1
    msg = error_of(XFACTR, lang="fr")
    assert "'fr'" in msg and "en, fr, zh" in msg


def test_xfactr_malformed_inputs(tmp_path):
    d = copy(XFACTR, tmp_path)
    n = append(d / "alias-zh.txt", "France\t法国")
    assert error_of(d).startswith(f'{d / "alias-zh.txt"}:{n}: field "QID": ')
    d = copy(XFACTR, tmp_path / "b")
    line = {"uuid": "x", "sub_uri": "Q1", "sub_label": "A", "obj_uri": "Q2", "obj_label": "B", "count": "many"}
    n = append(d / "triples" / "P37.jsonl", json.dumps(line))
    assert error_of(d).startswith(f'{d / "triples" / "P37.jsonl"}:{n}: field "count": ')
    d = copy(XFACTR, tmp_path / "c")
    n = append(d / "triples" / "P37.jsonl", json.dumps({k: v for k, v in line.items() if k != "sub_uri"}))
    assert error_of(d).startswith(f'{d / "triples" / "P37.jsonl"}:{n}: field "sub_uri": missing required field')
    d = copy(XFACTR, tmp_path / "d")
    n = append(d / "TREx_prompts.csv", "P19,place of birth,[X] was born in [Y] .")
    assert error_of(d).startswith(f'{d / "TREx_prompts.csv"}:{n}:') and "columns" in error_of(d)


# ----------------------------------------------------------------------------------------- ParaRel

def test_pararel_paraphrases():
    fs = load_factset(PARAREL)
    facts = {f.id: f for f in fs.facts}
    assert set(facts) == {"p-p36-1", "p-p36-2", "p-p36-3", "p-p37-1", "p-p37-2"} and fs.languages == ("en",)
    t = facts["p-p36-1"].templates
    assert t[0] == "The capital of [X] is [Y]." and "[Y] is the capital of [X]." in t and len(t) == 4
    assert [y_ends_template(x) for x in t] == sorted((y_ends_template(x) for x in t), reverse=True)
    assert fs.report.count("relations without patterns (facts skipped)") == 1       # P31
    assert fs.report.count("templates skipped ([X] 2 times)") == 1
    msg = error_of(PARAREL, lang="zh")
    assert "'zh'" in msg and "languages present: en" in msg


def test_pararel_malformed_pattern(tmp_path):
    d = copy(PARAREL, tmp_path)
    n = append(d / "patterns" / "P37.jsonl", '{"lemma": "x"}')
    assert error_of(d).startswith(f'{d / "patterns" / "P37.jsonl"}:{n}: field "pattern": missing required field')


def test_en_zh_facts_are_usable():
    facts = load_facts("en-zh")
    keys = {f.key for f in facts}
    for f in facts:
        assert (f.id, "zh" if f.lang == "en" else "en") in keys
        assert f.wrong_objects and f.object not in f.wrong_objects
        assert not set(f.aliases) & set(f.wrong_objects)
        assert y_ends_template(f.templates[0]), f
    zh = [f for f in facts if f.lang == "zh"]
    assert sum(len(set(f.templates)) >= 2 for f in zh) > 0.8 * len(zh)
    names = {f.object for f in zh} | {f.subject for f in zh}
    assert {"法国", "首尔", "中国", "加拿大", "美国", "伦敦"} <= names and "村国" not in names
