"""scripts/build_en_zh.py, the bundled en-zh set's build script, on the fixtures in tests/fixtures/factsets/:
deterministic, curated overrides applied, what it drops reported."""
import importlib.util
import sys

import pytest

from kneuron.facts import load_facts
from kneuron.facts.templates import y_ends_template
from support.paths import FIXTURES, ROOT

FIX = FIXTURES / "factsets"
SCRIPT = ROOT / "scripts" / "build_en_zh.py"


def by_key(facts):
    return {f.key: f for f in facts}


# -------------------------------------------------------------------------------------- build script

@pytest.fixture(scope="module")
def builder():
    spec = importlib.util.spec_from_file_location("build_en_zh", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod                  # dataclasses look their module up while it loads
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def test_build_is_deterministic_and_reports(builder, tmp_path):
    runs = [builder.build(FIX, relations=("P36", "P37"), per_relation=10) for _ in range(2)]
    assert builder.render_jsonl(runs[0]) == builder.render_jsonl(runs[1])
    assert builder.render_card(runs[0]) == builder.render_card(runs[1])
    b = runs[0]
    out = tmp_path / "f.jsonl"
    out.write_text(builder.render_jsonl(b), encoding="utf-8")
    facts = by_key(load_facts(out))
    en = {f.subject: f for (_, lg), f in facts.items() if lg == "en" and f.relation == "P36"}
    assert "Atlantis" not in en                                                          # no Chinese name
    assert b.report.count("facts missing in zh: no Chinese name for the subject") == 1
    assert facts[(en["South Korea"].id, "zh")].object == "首尔"                           # curated override
    assert facts[(en["Spain"].id, "zh")].object == "马德里"
    for f in facts.values():
        assert y_ends_template(f.templates[0]) and f.wrong_objects
    swiss = [f for f in facts.values() if f.lang == "en" and f.subject == "Switzerland"]
    assert swiss and all({"German", "French"}.isdisjoint(f.wrong_objects) for f in swiss)
    assert "| P36 |" in builder.render_card(b) and "X-FACTR" in builder.render_card(b)
