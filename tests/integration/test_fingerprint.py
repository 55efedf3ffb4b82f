"""kneuron.models.fingerprint: the one weights fingerprint the caches (store.cache) are keyed by: kept per
model until a weight is written, never stale; the same for ROME's statistics and the value index."""
import torch

import kneuron.models.fingerprint as fp_mod
from kneuron.editing import stats
from kneuron import lens
from support.tiny import tiny_handle


def test_the_fingerprint_is_kept_until_a_weight_is_written(monkeypatch):
    h = tiny_handle("gpt2")
    calls, real = [], fp_mod._fingerprint
    monkeypatch.setattr(fp_mod, "_fingerprint", lambda m: calls.append(1) or real(m))
    fp0 = fp_mod.weights_fingerprint(h.model)
    assert fp_mod.weights_fingerprint(h.model) == fp0 and len(calls) == 1
    w = h.sites[0].weight
    with torch.no_grad():
        old = w[0, 0].item()
        w[0, 0] += 1.0                                            # an in-place write: a new version
        assert fp_mod.weights_fingerprint(h.model) != fp0 and len(calls) == 2
        w[0, 0] = old
    assert fp_mod.weights_fingerprint(h.model) == fp0 and len(calls) == 3
    assert stats.weights_fingerprint(h.model) == lens.fingerprint(h) == fp0     # one fingerprint for both caches


def test_the_fingerprint_is_the_statistics_cache_key_of_before():
    """The algorithm of editing/stats.py before it moved: the same keys, so existing caches stay valid."""
    import hashlib
    h = tiny_handle("gpt2")
    ref = hashlib.sha1()
    for name, p in h.model.named_parameters():
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // 61)
        ref.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        ref.update(torch.stack([flat.sum(dtype=torch.float64), flat.abs().sum(dtype=torch.float64)]).numpy().tobytes())
        ref.update(flat[::step][:64].double().numpy().tobytes())
    assert fp_mod.weights_fingerprint(h.model) == ref.hexdigest()[:16]
