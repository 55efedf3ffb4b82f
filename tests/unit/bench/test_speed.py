"""The speed benchmark's own measurements (the timings themselves live in BENCHMARKS.md)."""
import subprocess
import sys

import pytest
import torch

from kneuron.bench.speed import base_model, peak_rss_bytes, prompts, rel_error


def test_peak_memory_of_a_child_is_its_own():
    """Each side runs in a fresh interpreter; its peak must not include the parent's memory (Linux's
    ru_maxrss keeps the image from before exec, which made both sides report the parent's peak)."""
    ballast = bytearray(400 * 2**20)            # the parent grows by 400 MB
    ballast[::4096] = b"x" * len(ballast[::4096])
    parent = peak_rss_bytes()
    code = "from kneuron.bench.speed import peak_rss_bytes; print(peak_rss_bytes())"
    child = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert parent > 400 * 2**20
    assert child < parent - 300 * 2**20
    del ballast


def test_prompts_and_models_are_what_the_benchmark_says():
    ps = prompts("masked", 3, n_words=11)
    assert len(ps) == 3 and all(p.endswith("[MASK] .") and len(p.split()) == 13 for p, _ in ps)
    assert prompts("causal", 3) == prompts("causal", 3)                    # seeded
    m = base_model("causal", n_layers=2)
    assert m.config.n_embd == 768 and m.config.n_inner == 3072 and m.config.vocab_size == 50257
    x = torch.randn(10, dtype=torch.float64)
    assert rel_error(x, x) == 0 and rel_error(2 * x, x) == pytest.approx(1.0)
