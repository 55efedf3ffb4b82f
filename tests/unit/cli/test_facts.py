"""kneuron.cli.facts: `kneuron facts stats` on a bundled set (JSON) and a directory (table); a bad name is one
line."""
import json

from typer.testing import CliRunner

from kneuron.cli import app
from support.paths import FIXTURES

PARAREL = FIXTURES / "factsets" / "pararel"


def test_cli_stats_en_zh_json():
    r = CliRunner().invoke(app, ["facts", "stats", "en-zh", "--json"])
    assert r.exit_code == 0, r.output
    j = json.loads(r.stdout)
    assert len(j["relations"]) >= 20
    assert j["languages"]["en"] >= 2000 and j["languages"]["zh"] >= 2000
    assert all(per["en"] == per["zh"] > 0 for per in j["relations"].values())
    assert j["aligned_ids"] == j["languages"]["en"] and j["layout"] == "jsonl"


def test_cli_stats_table_and_errors():
    r = CliRunner().invoke(app, ["facts", "stats", str(PARAREL)])
    assert r.exit_code == 0 and "P36" in r.stdout and "skipped" in r.stdout
    r = CliRunner().invoke(app, ["facts", "stats", "nope-set"])
    assert r.exit_code == 2 and "cannot read" in r.stderr and len(r.stderr.strip().splitlines()) == 1
