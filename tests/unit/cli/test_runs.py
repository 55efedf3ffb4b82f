"""kneuron.cli.runs: locate / intervene / evaluate's options, checked in one line before anything is
written or loaded."""
from __future__ import annotations

from typer.testing import CliRunner

from kneuron.cli import app


def test_locate_max_memory_option(tmp_path):
    r = CliRunner().invoke(app, ["locate", "--facts", "demo-en", "--out", str(tmp_path / "run"), "--max-memory", "lots"])
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert err.count("\n") == 0 and "max-memory must be a size like 512MB" in err
    assert not (tmp_path / "run").exists()                       # refused before anything was written or loaded

