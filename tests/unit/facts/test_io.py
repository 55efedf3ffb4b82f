"""kneuron.facts.io: the canonical fact file (JSON lines) loader and saver: order and fields kept,
every bad line one error naming the file, line and field; the file hash."""
import hashlib
import json
from pathlib import Path

import pytest

from kneuron.facts import Fact, FactError, fact_file_hash, load_facts, save_facts
from support.paths import FIXTURES

FIXTURE = FIXTURES / "facts_small.jsonl"
GOOD = {"id": "P36-0001", "relation": "P36", "lang": "en", "subject": "France",
        "object": "Paris", "templates": ["The capital of [X] is [Y]."]}


def write(tmp_path: Path, *lines, name: str = "facts.jsonl") -> Path:
    """Write lines (dicts are JSON-encoded, strings written as-is) to a file."""
    p = tmp_path / name
    p.write_text("".join((json.dumps(x, ensure_ascii=False) if isinstance(x, dict) else x) + "\n"
                         for x in lines), encoding="utf-8")
    return p


def error_of(path: Path, **kw) -> str:
    with pytest.raises(FactError) as ei:
        load_facts(path, **kw)
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


def test_load_fixture_keeps_order_and_fields():
    facts = load_facts(FIXTURE)
    assert [f.key for f in facts] == [("P36-0001", "en"), ("P36-0001", "fr"), ("P36-0001", "zh"),
                                      ("P36-0002", "en"), ("P103-0001", "en")]
    en = facts[0]
    assert en.templates == ("The capital of [X] is [Y].", "[X]'s capital city is [Y].")
    assert en.aliases == ("Paris, France",) and en.wrong_objects == ("Lyon", "Rome")
    assert facts[1].aliases == () and facts[1].wrong_objects == ()
    assert en.prompts() == ["The capital of France is [Y].", "France's capital city is [Y]."]
    assert facts[2].prompts() == ["法国的首都是[Y]。"]


def test_strips_subject_and_object(tmp_path):
    p = write(tmp_path, {**GOOD, "subject": "  France ", "object": " Paris\t"})
    (f,) = load_facts(p)
    assert (f.subject, f.object) == ("France", "Paris")


def test_lang_filter(tmp_path):
    assert [f.lang for f in load_facts(FIXTURE, lang="zh")] == ["zh"]
    assert [f.id for f in load_facts(FIXTURE, lang="en")] == ["P36-0001", "P36-0002", "P103-0001"]
    msg = error_of(FIXTURE, lang="de")
    assert "facts_small.jsonl" in msg and "'de'" in msg and "en, fr, zh" in msg


def test_save_load_round_trip(tmp_path):
    facts = load_facts(FIXTURE)
    out = tmp_path / "out.jsonl"
    save_facts(facts, out)
    assert load_facts(out) == facts
    text = out.read_text(encoding="utf-8")
    assert "巴黎" in text and "\\u" not in text  # UTF-8, not ASCII escapes
    assert len(text.splitlines()) == len(facts)
    first = json.loads(text.splitlines()[0])
    assert list(first)[:6] == ["id", "relation", "lang", "subject", "object", "templates"]
    assert "aliases" not in json.loads(text.splitlines()[1])  # empty optional fields omitted
    # saving again is byte-identical (canonical), so the hash is stable
    out2 = tmp_path / "out2.jsonl"
    save_facts(load_facts(out), out2)
    assert fact_file_hash(out) == fact_file_hash(out2)


def test_save_rejects_duplicate_keys(tmp_path):
    f = Fact("a", "P1", "en", "X", "Y", ("[X] [Y]",))
    with pytest.raises(ValueError, match="duplicate"):
        save_facts([f, f], tmp_path / "dup.jsonl")


def test_hash_is_sha256_of_bytes(tmp_path):
    assert fact_file_hash(FIXTURE) == hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    p = write(tmp_path, GOOD)
    h = fact_file_hash(p)
    p.write_bytes(p.read_bytes() + b"\n")
    assert fact_file_hash(p) != h


def test_missing_file(tmp_path):
    msg = error_of(tmp_path / "nope.jsonl")
    assert "nope.jsonl" in msg and "cannot read" in msg


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("\n  \n", encoding="utf-8")
    msg = error_of(p)
    assert msg.startswith(f"{p}:0:") and "no facts" in msg


def test_malformed_json_line_number(tmp_path):
    p = write(tmp_path, GOOD, "", '{"id": "x", oops}')  # blank line 2 skipped but counted
    msg = error_of(p)
    assert msg.startswith(f"{p}:3:") and "malformed JSON" in msg


def test_not_an_object(tmp_path):
    msg = error_of(write(tmp_path, GOOD, '["a", "b"]'))
    assert ":2:" in msg and "not a JSON object" in msg


@pytest.mark.parametrize("field, value, problem", [
    ("id", None, "missing required field"),
    ("subject", None, "missing required field"),
    ("templates", None, "missing required field"),
    ("object", "", "non-empty string"),
    ("lang", 3, "non-empty string"),
    ("relation", "   ", "non-empty string"),
    ("templates", [], "non-empty list"),
    ("templates", "The capital of [X] is [Y].", "non-empty list"),
    ("aliases", "Paris", "list of strings"),
])
def test_field_errors(tmp_path, field, value, problem):
    bad = dict(GOOD, id="P36-0002")
    if value is None:
        del bad[field]
    else:
        bad[field] = value
    p = write(tmp_path, GOOD, bad)
    msg = error_of(p)
    assert msg.startswith(f"{p}:2: field \"{field}\": ") and problem in msg


def test_non_string_template_item(tmp_path):
    msg = error_of(write(tmp_path, dict(GOOD, templates=["The capital of [X] is [Y].", 7])))
    assert ':1: field "templates[1]"' in msg and "non-empty string" in msg


@pytest.mark.parametrize("template, mark, found", [
    ("The capital of France is [Y].", "[X]", 0),
    ("The capital of [X] is Paris.", "[Y]", 0),
    ("[X] and [X] share [Y].", "[X]", 2),
    ("[X]: [Y] or [Y]", "[Y]", 2),
])
def test_template_placeholders(tmp_path, template, mark, found):
    p = write(tmp_path, GOOD, dict(GOOD, lang="fr", templates=["La capitale de [X] est [Y].", template]))
    msg = error_of(p)
    assert ':2: field "templates[1]"' in msg and f"{mark} exactly once, found {found}" in msg


def test_unknown_field(tmp_path):
    msg = error_of(write(tmp_path, dict(GOOD, alias=["Paname"])))
    assert ':1: field "alias": unknown field' in msg


def test_duplicate_key_names_first_line(tmp_path):
    p = write(tmp_path, GOOD, dict(GOOD, lang="fr"), dict(GOOD, subject="Italy", object="Rome"))
    msg = error_of(p)
    assert msg.startswith(f"{p}:3: field \"id\"") and "first seen on line 1" in msg
    assert "'P36-0001'" in msg and "'en'" in msg
