"""The command line in-process, for the tests: `cli(...)` invokes the app (stdout and stderr apart), and
`one_line_error` asserts kneuron's contract for an expected error: exit code 2, nothing on stdout, one
`kneuron: error: ...` line on stderr holding each needle. `tiny_dir`: a tiny gpt2 saved in float16."""
from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from kneuron.cli import app
from support.tiny import tiny_model, word_tokenizer


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, *needles) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert result.stdout == ""
    err = result.stderr
    assert err.startswith("kneuron: error: ") and err.count("\n") == 1, f"not one line: {err!r}"
    for n in needles:
        assert n in err, (n, err)
    return err


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    """A tiny gpt2 saved in float16 (so that dtype "auto" differs from the float32 default)."""
    d = tmp_path_factory.mktemp("tiny-gpt2-fp16")
    model, kind = tiny_model("gpt2", dtype=torch.float16)
    model.save_pretrained(d)
    word_tokenizer(kind).save_pretrained(d)
    return str(d)
