"""kneuron.attribution.execution: how attribution runs, apart from what it computes. bf16 / fp16 autocast
(the GPU path): close to fp32, selectable, validated; progress counts rows and is not pickled."""
import pytest
import torch

from kneuron import Execution, LocateConfig, attribute
from kneuron.errors import ConfigError
from support.tiny import tiny_handle


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("family", ["llama", "bert", "gemma3_text"])
def test_bf16_autocast_ranks_neurons_like_fp32(family):
    h = tiny_handle(family, dtype=torch.float32)
    prompt = "the capital of france is" + (" [Y]" if h.kind == "masked" else "")
    a = attribute(h, prompt, "paris", method="ig", steps=10)
    b = attribute(h, prompt, "paris", method="ig", steps=10, execution=Execution(precision="bf16"))
    assert b.params["precision"] == "bf16" and "precision" not in a.params
    assert not torch.equal(a.scores, b.scores)                       # autocast really ran in bf16
    x, y = a.scores.flatten().double(), b.scores.flatten().double()
    assert torch.corrcoef(torch.stack([x, y]))[0, 1] > 0.98
    top = lambda s: {(l, j) for l, j, _ in s.top(10)}  # noqa: E731
    assert len(top(a) & top(b)) >= 7
    assert a.scores.dtype == b.scores.dtype == torch.float32


def test_bad_precision_fails_before_work():
    with pytest.raises(ConfigError, match="precision"):
        Execution(precision="int8")
    with pytest.raises(TypeError):                       # how it runs is not part of what a run computes
        LocateConfig(precision="fp8")


def _prompt(h):
    return "the capital of france is" if h.kind == "causal" else "the capital of france is [Y] ."


def test_execution_progress_counts_rows_and_is_not_pickled():
    import pickle
    h = tiny_handle("gpt2")
    rows = []
    ex = Execution(batch_size=4, progress=rows.append)
    attribute(h, _prompt(h), "paris", steps=2, execution=ex)
    assert sum(rows) == h.n_layers * 2 and max(rows) <= 4       # 3 layers x 2 nodes, in batches of <= 4
    back = pickle.loads(pickle.dumps(ex))
    assert back == ex and back.progress is None and back.batch_size == 4

