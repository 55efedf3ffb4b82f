"""kneuron.editing.objective: the rewrite batch's positions, the model's own seeded prefixes, the prefix
reuse that equals the plain run."""
from __future__ import annotations

import pytest
import torch

from kneuron.editing import Rewrite
from kneuron.editing.objective import Runner, batch, prefixes
from kneuron.facts import Fact
from support.tiny import FAMILIES, tiny_handle

pytestmark = pytest.mark.usefixtures("one_thread")

CAUSAL = [f for f, (kind, _) in FAMILIES.items() if kind == "causal"]
FACT = Fact("c0", "P36", "en", "france", "paris", ("the capital of [X] is [Y].", "[X] has its capital in [Y]."))


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_prefix_reuse_matches_the_plain_run():
    """The fast run (the part before the subject run once) gives the plain run's log-probs, after its
    check (which falls back to the plain run where a family's cache or padding differ: BLOOM in float64)."""
    for family in CAUSAL:
        h = tiny_handle(family)
        b = batch(h, Rewrite(FACT, "rome"), prefixes(h))
        fast, plain = Runner(h, b, reuse_prefix=True), Runner(h, b)
        assert fast.shape[1] < b.shape[1]
        assert fast.check() or family == "bloom"
        assert torch.allclose(fast.log_probs(), plain.log_probs(), atol=1e-6), family


def test_prefixes_are_the_models_own_seeded_and_cached():
    h = tiny_handle("llama")
    p = prefixes(h)
    assert len(p) == 10 and all(isinstance(x, str) for x in p)
    from kneuron.editing import objective
    objective._PREFIX_CACHE.clear()
    assert prefixes(h) == p                      # seeded: the same after recomputing
    assert prefixes(h, seed=1) != p


def test_batch_positions():
    """The lookup is the subject's last token; the NLL is taken at the positions predicting the new
    object's tokens; the KL prompt is the last row."""
    h = tiny_handle("gpt2")
    tok = h.tokenizer
    b = batch(h, Rewrite(FACT, "rome"), ["a b"])
    ids = b.input_ids.tolist()
    assert tok.convert_ids_to_tokens(ids[0][int(b.lookup[0])]) == "france"
    assert tok.convert_ids_to_tokens(ids[1][int(b.lookup[1])]) == "france"
    assert b.n_prompts == 2 and b.shape[0] == 3 and b.kl_row == 2
    assert tok.convert_ids_to_tokens(ids[2][b.kl_col]) == "france"
    assert b.targets.tolist() == [tok.convert_tokens_to_ids("rome")] * 2
    assert [tok.convert_ids_to_tokens(ids[r][c]) for r, c in zip(b.rows.tolist(), b.cols.tolist())] == ["is", "is"]
    assert abs(float(b.weights.sum()) - 1) < 1e-12
