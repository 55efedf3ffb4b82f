"""kneuron.cli.runs: locate / intervene / evaluate's options, checked in one line before anything is
written or loaded."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from kneuron.cli import app


def test_locate_max_memory_option(tmp_path):
    r = CliRunner().invoke(app, ["locate", "--facts", "demo-en", "--out", str(tmp_path / "run"), "--max-memory", "lots"])
    assert r.exit_code == 2
    err = r.stderr.strip()
    assert err.count("\n") == 0 and "max-memory must be a size like 512MB" in err
    assert not (tmp_path / "run").exists()                       # refused before anything was written or loaded


def test_cli_method_options_have_one_name(fact_file, tmp_path):
    """`kneuron locate --method amig --paths per-word --prefactor difference`: run.json's
    method_options use the same names; a bad choice is one line, before anything is written."""
    import torch
    from typer.testing import CliRunner
    from kneuron.cli import app
    from support.tiny import tiny_model, word_tokenizer
    model, kind = tiny_model("gpt2", dtype=torch.float32)
    model.save_pretrained(tmp_path / "m")
    word_tokenizer(kind).save_pretrained(tmp_path / "m")
    args = ["locate", "-f", str(fact_file), "-o", str(tmp_path / "r"), "-m", str(tmp_path / "m"), "--steps", "2",
            "--limit", "1", "--json", "--method", "amig", "--paths", "per-word"]
    r = CliRunner().invoke(app, args + ["--prefactor", "difference"])
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert meta["method"] == "amig"
    assert meta["method_options"] == {"paths": "per-word", "prefactor": "difference", "normalize": False}
    bad = CliRunner().invoke(app, [a.replace(str(tmp_path / "r"), str(tmp_path / "bad")) for a in args]
                             + ["--prefactor", "nope"])
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and "--prefactor" in bad.stderr
    assert "'nope'" in bad.stderr and not (tmp_path / "bad").exists()
