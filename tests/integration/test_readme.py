"""The README's Python examples run as written (on the real smollm2-135m weights)."""
import re

import pytest

from support.paths import ROOT

README = ROOT / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_the_api_example():
    blocks = python_blocks()
    assert any("kneuron.load_model" in b and "kneuron.locate" in b for b in blocks)


@pytest.mark.slow
def test_readme_python_examples_run_as_written(tmp_path, monkeypatch):
    pytest.importorskip("gguf")
    monkeypatch.chdir(tmp_path)                  # the examples write runs/mine here
    scope: dict = {}
    for block in python_blocks():
        exec(compile(block, str(README), "exec"), scope)
    store = scope["store"]
    assert store.facts().num_rows == 2 and (tmp_path / "runs" / "mine" / "facts.jsonl").is_file()
    assert scope["a"].scores.shape == (30, 1536)
    assert scope["run"].facts().num_rows == 2                   # open_run reads what locate wrote
    assert len(scope["ns"].neurons) > 0                         # localize found the fact's neurons
    # the examples leave the model as they found it (suppress / enhance / erase undone)
    from kneuron.probe import answer_prob
    h = scope["h"]
    fresh = answer_prob(h, "The capital of France is", "Paris").prob
    assert fresh == pytest.approx(scope["a"].prob, rel=1e-3)     # float rounding only: an edit left behind moves it by far more
