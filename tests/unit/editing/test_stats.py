"""kneuron.editing.stats: ROME's key second moments (cached, a damaged file recomputed; several layers in one
pass; over a corpus) and the weights fingerprint they are keyed by."""
from __future__ import annotations

import pytest
import torch

from kneuron.editing import edit, stats as stats_mod
from kneuron.editing.stats import second_moment, second_moments
from kneuron.facts import Fact
from support.tiny import tiny_handle

pytestmark = pytest.mark.usefixtures("one_thread")


FACT = Fact("c0", "P36", "en", "france", "paris", ("the capital of [X] is [Y].", "[X] has its capital in [Y]."))


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_stats_cache_is_reused_and_a_damaged_file_recomputed(monkeypatch, cache):
    h = tiny_handle("gpt2", dtype=torch.float32)
    calls = []
    real = stats_mod._collect
    monkeypatch.setattr(stats_mod, "_collect", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    C = second_moment(h, 1, texts=4, length=12, progress=False)
    assert calls == [[1]] and C.shape == (h.n_neurons, h.n_neurons) and C.dtype == torch.float32
    assert torch.allclose(C, C.T) and torch.linalg.eigvalsh(C.double()).min() > -1e-6
    assert torch.equal(second_moment(h, 1, texts=4, length=12, progress=False), C)
    assert calls == [[1]]                                                        # from the cache
    files = list((cache / "stats").glob("*.pt"))
    assert len(files) == 1 and not list((cache / "stats").glob(".tmp-*"))
    files[0].write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="damaged"):
        again = second_moment(h, 1, texts=4, length=12, progress=False)
    assert calls == [[1], [1]] and torch.equal(again, C)                        # recomputed, deterministic
    assert torch.equal(second_moment(h, 1, texts=4, length=12, progress=False), C) and len(calls) == 2
    second_moments(h, [0, 1, 2], texts=4, length=12, progress=False)             # only the missing ones
    assert calls[-1] == [0, 2]
    second_moment(h, 1, texts=4, length=12, seed=1, progress=False)              # other settings: other file
    assert len(calls) == 4
    with torch.no_grad():                                                        # other weights: other file
        h.sites[2].weight.add_(1.0)
    second_moment(h, 1, texts=4, length=12, progress=False)
    assert len(calls) == 5


def test_self_written_keys_count_the_same_tokens_for_every_layer():
    """Several layers collected in one pass get what each would alone: every read token but the start."""
    h = tiny_handle("gpt2")
    one = stats_mod._collect(h, [1], None, 4, 12, 0, 256, False)
    three = stats_mod._collect(h, [0, 1, 2], None, 4, 12, 0, 256, False)
    assert one[1][1] == 4 * 11 and all(three[l][1] == 4 * 11 for l in (0, 1, 2))
    assert torch.allclose(one[1][0], three[1][0])


def test_stats_over_a_corpus_is_the_second_moment_of_the_keys():
    h = tiny_handle("llama")
    texts = ["the capital of france is paris", "rome is in italy and berlin in germany"]
    C = second_moment(h, 2, corpus=texts, progress=False)
    keys = []
    hook = h.sites[2].register_forward_pre_hook(lambda m, a: keys.append(a[0][0]))
    with torch.no_grad():
        for t in texts:
            h.model(input_ids=torch.tensor([h.tokenizer(t)["input_ids"]]))
    hook.remove()
    k = torch.cat(keys).double()
    assert torch.allclose(C.double(), k.T @ k / len(k), atol=1e-6)
    with pytest.raises(TypeError):
        second_moment(h, 2, corpus="one string", progress=False)


def test_progress_in_a_log_is_one_summary_line_per_pass(capfd):
    """stderr not a terminal (capfd: a pipe, as in a log): each statistics pass leaves one line, the keys
    it read out of all it was to read, and no bar frames (no carriage return); stdout untouched."""
    h = tiny_handle("gpt2", dtype=torch.float32)
    capfd.readouterr()
    second_moment(h, 1, texts=4, length=12)                                      # progress on: the default
    second_moment(h, 1, corpus=["the capital of france is paris"] * 10)
    out, err = capfd.readouterr()
    assert out == "" and "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"statistics ({h.name}, 4x12 tokens): 44/44 in ")   # every read key counted
    assert lines[1].startswith(f"statistics ({h.name}, 10 texts): 10/10 in ")


def test_the_weights_fingerprint_is_reused_until_a_weight_changes(monkeypatch):
    """Kept per model (hashing every weight is slow), but never stale: an applied edit, its undo and a
    parameter given new storage each change what it is computed from."""
    h = tiny_handle("llama")
    import kneuron.models.fingerprint as fp_mod                 # where stats' fingerprint lives now
    calls = []
    real = fp_mod._fingerprint
    monkeypatch.setattr(fp_mod, "_fingerprint", lambda m: calls.append(1) or real(m))
    fp0 = stats_mod.weights_fingerprint(h.model)
    assert stats_mod.weights_fingerprint(h.model) == fp0 and len(calls) == 1
    e = edit(h, FACT, "rome", method="kn", neurons=[(1, 3)])
    with e:
        fp1 = stats_mod.weights_fingerprint(h.model)
    assert fp1 != fp0 and len(calls) == 2
    assert stats_mod.weights_fingerprint(h.model) == fp0 and len(calls) == 3        # undone: the same weights
    w = h.sites[0].weight
    w.data = w.data.clone() * 2                                                     # new storage, same version
    assert stats_mod.weights_fingerprint(h.model) != fp0 and len(calls) == 4
