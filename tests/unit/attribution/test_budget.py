"""The memory planner (attribution.budget): rows per batch against a budget, sizes, the engine under a
tiny budget (the CLI's --max-memory check: tests/unit/cli/test_runs.py)."""
from __future__ import annotations

import pytest
import torch

from kneuron.attribution import AMIG, Execution, attribute, attribute_many, budget
from kneuron.attribution.budget import Dims, dims_of, estimate, parse_size, plan
from kneuron.attribution.runner import RowRunner
from kneuron.errors import ConfigError
from support.tiny import tiny_handle


# model shapes: (layers, hidden, neurons, heads, kv heads, head dim, vocabulary, bytes per number)
SHAPES = {
    "smollm2-135m": Dims(30, 576, 1536, 9, 3, 64, 49152, 4),
    "gpt2-base": Dims(12, 768, 3072, 12, 12, 64, 50257, 4),
    "bert-base": Dims(12, 768, 3072, 12, 12, 64, 30522, 4),
    "llama-7b-bf16": Dims(32, 4096, 11008, 32, 32, 128, 32000, 2),
    "qwen2-0.5b": Dims(24, 896, 4864, 14, 2, 64, 151936, 4),
}


LENGTHS = [8, 32, 128, 512, 1024, 2048, 4096, 8192]


GiB = 2**30


def _feasible(d, T, b, **kw):
    try:
        return plan(d, T, b, **kw)
    except ConfigError:
        return None


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("kind", ["causal", "masked"])
def test_the_plan_keeps_its_estimate_under_the_budget(shape, kind):
    d = SHAPES[shape]
    for b in (256 * 2**20, 1 * GiB, 4 * GiB, 64 * GiB):
        for T in LENGTHS:
            for shared in (True, False):
                p = _feasible(d, T, b, kind=kind, shared_prefix=shared, max_rows=640, rows_per_layer=20)
                if p is None:
                    continue
                assert 1 <= p.rows <= 640
                assert p.bytes <= b and p.budget == b
                fixed, per_row = estimate(d, T, p.rows, single_token=kind == "causal", causal=kind == "causal",
                                          shared_prefix=shared, rows_per_layer=20)
                assert p.bytes == fixed + p.rows * per_row           # the plan reports its own estimate
                if p.rows < 640:                                      # and it is the largest batch that fits
                    f2, r2 = estimate(d, T, p.rows + 1, single_token=kind == "causal", causal=kind == "causal",
                                      shared_prefix=shared, rows_per_layer=20)
                    assert f2 + (p.rows + 1) * r2 > b


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_longer_prompts_get_fewer_rows(shape):
    d = SHAPES[shape]
    for kind in ("causal", "masked"):
        for shared in (True, False):
            rows = [p.rows if (p := _feasible(d, T, 2 * GiB, kind=kind, shared_prefix=shared, max_rows=10**6)) else 0
                    for T in LENGTHS]
            assert rows == sorted(rows, reverse=True), (kind, shared, rows)
            assert rows[-1] < rows[0]


def test_a_larger_vocabulary_gets_fewer_rows():
    small, large = SHAPES["smollm2-135m"], SHAPES["smollm2-135m"].__class__(**{**SHAPES["smollm2-135m"].__dict__,
                                                                               "vocab": 256_000})
    for T in LENGTHS:
        a = plan(small, T, 1 * GiB, max_rows=10**6).rows
        b = plan(large, T, 1 * GiB, max_rows=10**6).rows
        assert b < a


def test_a_bigger_budget_gives_no_fewer_rows():
    for d in SHAPES.values():
        for kind in ("causal", "masked"):
            for T in (8, 512, 4096):
                last = 0
                for b in (2**k for k in range(26, 40)):
                    p = _feasible(d, T, b, kind=kind, max_rows=4096, rows_per_layer=21)
                    rows = p.rows if p else 0
                    assert rows >= last
                    last = rows
                assert last == 4096 or kind == "masked"              # a big enough budget reaches the cap


def test_the_shared_prefix_and_the_staircase_are_cheaper_and_the_copy_grows_with_the_prompt():
    d = SHAPES["smollm2-135m"]
    _, shared = estimate(d, 2048, 600, shared_prefix=True, rows_per_layer=20)
    _, copied = estimate(d, 2048, 600, shared_prefix=False, rows_per_layer=20)
    _, short = estimate(d, 8, 600, shared_prefix=False, rows_per_layer=20)
    _, flat = estimate(d, 2048, 600, shared_prefix=True)                 # no staircase known: every block
    assert shared < copied and flat > shared
    # the copy: ~2 x kv x d x T x 4 bytes per block a row runs (what made 15 MB per prompt token)
    assert (copied - short) / 2040 > 15 * 2 * 3 * 64 * 4


def test_one_row_that_does_not_fit_is_one_line():
    d = SHAPES["llama-7b-bf16"]
    with pytest.raises(ConfigError) as e:
        plan(d, 8192, 100 * 2**20, kind="masked")
    msg = str(e.value)
    assert "\n" not in msg and "100.0 MiB" in msg and "needs about" in msg and "GiB" in msg
    with pytest.raises(ConfigError, match="kind"):
        plan(d, 8, GiB, kind="seq2seq")


def test_no_budget_is_the_speed_cap():
    p = plan(SHAPES["smollm2-135m"], 8192, None, max_rows=640)
    assert p.rows == 640 and p.budget is None


@pytest.mark.parametrize("text,n", [("512MB", 512 * 10**6), ("4GB", 4 * 10**9), ("4GiB", 4 * 2**30), ("4gib", 4 * 2**30),
                                    ("4G", 4 * 2**30), (" 1.5 GB ", 1_500_000_000), ("100000", 100000), (2**20, 2**20),
                                    ("64KiB", 65536), ("2TB", 2 * 10**12), (".5GiB", 2**29)])
def test_sizes(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("bad", ["", "lots", "4XB", "-1GB", "0", "0GB", "4 GB more", "GB", True, -5, "1e9"])
def test_bad_sizes_are_one_line_config_errors(bad):
    with pytest.raises(ConfigError) as e:
        parse_size(bad)
    assert "\n" not in str(e.value) and "max-memory" in str(e.value)
    with pytest.raises(ConfigError):
        Execution(max_memory=bad)


def test_execution_keeps_bytes():
    assert Execution(max_memory="4GiB").max_memory == 4 * 2**30
    assert Execution().max_memory is None


def test_the_default_budget_is_half_of_what_is_available():
    free = budget.available_bytes()
    b = budget.default_budget()
    if free is None:
        assert b is None
    else:
        assert 0 < b <= free // 2 + 1


def test_dims_of_a_loaded_model():
    h = tiny_handle("llama")
    d = dims_of(h)
    cfg = h.model.config
    assert (d.layers, d.hidden, d.neurons, d.heads, d.kv_heads, d.vocab, d.dtype_bytes) == (
        cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, 2, cfg.vocab_size, 8)


def _rows_seen(monkeypatch):
    seen = []
    real = RowRunner.__call__

    def spy(self, layers, points, problem=None, **kw):
        seen.append(len(layers) + len(kw.get("clean", ())))
        return real(self, layers, points, problem, **kw)
    monkeypatch.setattr(RowRunner, "__call__", spy)
    return seen


def _tight(h, prompt, target, rows=2):
    """A budget that holds ``rows`` rows of this prompt (and not one more, whatever the staircase)."""
    from kneuron.models.targets import encode
    enc = encode(h.tokenizer, h.kind, prompt, target)
    tokens = enc.positions[-1] + 1 if h.kind == "causal" else len(enc.input_ids)
    fixed, per_row = estimate(dims_of(h), tokens, rows, single_token=h.kind == "causal", causal=h.kind == "causal",
                              prompts=len(enc.positions), paths=len(enc.positions) * len(enc.input_ids))
    return fixed + rows * per_row


@pytest.mark.parametrize("family,method", [("gpt2", "ig"), ("llama", "ig"), ("llama", AMIG(paths="per-word")),
                                           ("bert", "ig"), ("bert", "amig")])
def test_a_tiny_budget_gives_the_scores_of_a_big_one(family, method, monkeypatch):
    """A budget that allows two rows per batch (and AMIG's baselines a few sequences per pass)
    gives the scores of an unbounded one."""
    h = tiny_handle(family)
    prompt = "the capital of france is" if h.kind == "causal" else "the capital of france is [Y] ."
    big = attribute(h, prompt, "paris rome", method=method, steps=4, execution=Execution(max_memory="64GiB"))
    seen = _rows_seen(monkeypatch)
    small = attribute(h, prompt, "paris rome", method=method, steps=4,
                      execution=Execution(max_memory=_tight(h, prompt, "paris rome")))
    assert seen and max(seen) <= 4 and len(seen) >= 8            # 2-3 rows (+ the clean row riding along)
    err = float((small.scores.double() - big.scores.double()).abs().max() / big.scores.abs().max())
    assert err < 1e-6
    assert small.prob == pytest.approx(big.prob)
    if big.completeness is not None:
        assert small.completeness == pytest.approx(big.completeness, abs=1e-9)


def test_amig_baselines_are_chunked_to_the_budget(monkeypatch):
    from kneuron.attribution import passes
    h = tiny_handle("llama")
    sizes = []
    real = passes.clean_pass

    def spy(handle, ids, positions, keep_outputs=False):
        sizes.append(ids.shape[0])
        return real(handle, ids, positions, keep_outputs)
    monkeypatch.setattr(passes, "clean_pass", spy)
    ids = torch.tensor([[7, 8, 9, 10, 11, 12]]).repeat(5, 1)
    with budget.limit(budget.SLACK + 1):                          # room for one sequence per pass
        chunked = passes.clean_pass(h, ids, [5])
    with budget.limit(None):
        whole = real(h, ids, [5])
    assert sizes[0] == 5 and sizes[1:] == [1] * 5
    assert torch.allclose(chunked.acts, whole.acts) and torch.allclose(chunked.logits, whole.logits)


def test_too_small_a_budget_fails_before_any_batch():
    h = tiny_handle("gpt2")
    with pytest.raises(ConfigError, match="too small") as e:
        attribute(h, "the capital of france is", "paris", steps=2, execution=Execution(max_memory="1KB"))
    assert "\n" not in str(e.value)


def test_several_prompts_under_a_budget(monkeypatch):
    h = tiny_handle("llama")
    items = [("the capital of france is", "paris rome"), ("italy", "rome")]
    big = attribute_many(h, items, steps=3, execution=Execution(max_memory="64GiB"))
    seen = _rows_seen(monkeypatch)
    small = attribute_many(h, items, steps=3, execution=Execution(max_memory=_tight(h, *items[0], rows=3)))
    assert max(seen) <= 5 and len(seen) > 5
    for a, b in zip(small, big):
        assert torch.allclose(a.scores, b.scores, rtol=1e-6, atol=1e-9)

