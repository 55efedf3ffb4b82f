"""kneuron.editing.rome / stats / objective: ROME on tiny random-weight models of every causal family."""
from __future__ import annotations

import pytest
import torch

from kneuron.editing import ROME, EditError, Rewrite, edit
from kneuron.editing import stats as stats_mod
from kneuron.editing.objective import Runner, batch, prefixes
from kneuron.editing.methods.rome import candidate_layers, choose_layer
from kneuron.editing.stats import second_moment, second_moments
from kneuron.errors import ConfigError
from kneuron.facts import Fact
from kneuron.probe import answer_prob
from support.tiny import FAMILIES, same, snapshot, tiny_handle

pytestmark = pytest.mark.usefixtures("one_thread")

CAUSAL = [f for f, (kind, _) in FAMILIES.items() if kind == "causal"]
FACT = Fact("c0", "P36", "en", "france", "paris", ("the capital of [X] is [Y].", "[X] has its capital in [Y]."))
ITALY = Fact("c1", "P36", "en", "italy", "rome", ("the capital of [X] is [Y].",))
SMALL = dict(stats_texts=4, stats_length=12, progress=False)      # a small self-written corpus for tests


def mean_logp(h, prompt: str, obj: str) -> float:
    """Mean log-probability per token of ``obj`` after ``prompt``."""
    s = answer_prob(h, prompt, obj)
    return s.logp / len(s.target_ids)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("family", CAUSAL)
def test_rome_maps_k_star_to_v_star(family):
    """The edited projection maps k* to v* (float32, 1e-4), writes that one weight, undoes bit-exactly."""
    h = tiny_handle(family, dtype=torch.float32)
    before = snapshot(h)
    e = edit(h, FACT, "rome", method="rome", layer=1, insert="mean", **SMALL)
    assert not e.applied and same(h, before)
    proj = h.sites[1]
    assert [c.param for c in e.changes] == [n for n, p in h.model.named_parameters() if p is proj.weight]
    assert e.params_changed == proj.weight.numel() and torch.equal(e.key, e.k_star)
    with torch.no_grad():
        out0 = proj(e.k_star[None])[0]
        with e:
            out = proj(e.k_star[None])[0]
            assert torch.allclose(out, e.v_star, atol=1e-4, rtol=1e-4)
    assert same(h, before)
    info = e.info
    assert abs(float((out - out0).norm()) - info["delta_norm"]) < 1e-3 * max(1.0, info["delta_norm"])  # W'k* - Wk* = δ
    assert info["layer"] == 1 and info["prompts"] == 11 and 1 <= info["steps"] == len(info["losses"]) <= 20
    assert info["delta_norm"] <= 4.0 * info["m0_norm"] * (1 + 1e-5)      # the norm clamp
    assert info["stats"]["source"] == "self" and e.seconds > 0 and info["insert"] == "mean"


@pytest.mark.parametrize("family", ["gpt2", "qwen2"])
def test_rome_insert_at_the_prompts_key(family):
    """insert="prompt" (ROME's code): exact at the bare rewrite prompt's key instead of the mean key."""
    h = tiny_handle(family, dtype=torch.float32)
    e = edit(h, FACT, "rome", method="rome", layer=1, insert="prompt", stats="identity")
    assert not torch.equal(e.key, e.k_star) and e.info["insert"] == "prompt"
    with torch.no_grad(), e:
        assert torch.allclose(h.sites[1](e.key[None])[0], e.v_star, atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="insert must be") as err:           # refused before any work
        edit(h, FACT, "rome", method="rome", insert="both", stats="identity")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="stats must be"):
        ROME(stats="self")


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


def test_rome_refuses_masked_models_and_unknown_words():
    with pytest.raises(EditError, match="rome supports causal models only"):
        edit(tiny_handle("bert"), FACT, "rome", method="rome")
    h = tiny_handle("gpt2")
    with pytest.raises(EditError, match=r"fact c0 \(en\).*new") as err:
        edit(h, FACT, "zanzibar", method="rome", stats="identity")
    assert "\n" not in str(err.value)
    with pytest.raises(EditError, match="layer"):
        edit(h, FACT, "rome", method="rome", layer=7, stats="identity")
    with pytest.raises(ConfigError, match="unknown option"):
        edit(h, FACT, "rome", method="rome", stats="identity", lr=1.0)


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


def test_rome_with_a_given_or_identity_moment():
    h = tiny_handle("llama", dtype=torch.float32)
    rw = Rewrite(FACT, "rome")
    a = edit(h, FACT, "rome", method="rome", layer=1, stats="identity")
    b = edit(h, rw.fact, rw.new, method="rome", layer=1, moment=torch.eye(h.n_neurons))
    assert torch.allclose(a.changes[0].value, b.changes[0].value, atol=1e-6)
    with pytest.raises(EditError, match="stats must be"):
        edit(h, rw.fact, rw.new, method="rome", layer=1, moment=torch.eye(3))


def test_choose_layer_edits_each_layer_and_keeps_the_best_s():
    """One row per layer (ES/PS/NS/S/EM of editing.metrics), the best S chosen, the model left as it was;
    edits that change nothing give every layer the same row and the first layer wins the tie."""
    from kneuron.editing import Edit
    from kneuron.editing.metrics import measure, record_scores, summarize
    from kneuron.editing.records import case_for
    h = tiny_handle("gpt2", dtype=torch.float32)
    facts = [FACT, ITALY, Fact("c2", "P36", "en", "spain", "madrid", ("the capital of [X] is [Y].",))]
    cases = [case_for(facts, f.id, new, kind="causal", tokenizer=h.tokenizer, pool=facts, n_generation=0)
             for f, new in ((FACT, "rome"), (ITALY, "paris"))]
    before = [measure(h, [c.records["en"]], generation=False)[0] for c in cases]
    snap, steps = snapshot(h), []
    at = lambda c, layer: edit(h, c.records["en"].edit_fact, c.records["en"].new, method="rome",  # noqa: E731
                               layer=layer, **SMALL)
    best, rows = choose_layer(h, cases, [0, 2], before, edit_at=at, step=lambda: steps.append(1))
    assert same(h, snap) and len(steps) == 4 and [r["layer"] for r in rows] == [0, 2]
    rank = lambda r: tuple(-1e9 if r[k] is None else r[k] for k in ("S", "ES", "PS", "EM"))  # noqa: E731
    assert best == max(rows, key=rank)["layer"] and set(rows[0]) == {"layer", "ES", "PS", "NS", "S", "EM"}
    with at(cases[0], 2):                                   # a row is summarize() over the cases' scores
        m0 = measure(h, [cases[0].records["en"]], generation=False)[0]
    with at(cases[1], 2):
        m1 = measure(h, [cases[1].records["en"]], generation=False)[0]
    want = summarize([record_scores(m0, before[0]), record_scores(m1, before[1])])
    assert all(rows[1][k] == want[k] for k in ("ES", "PS", "NS", "S", "EM"))
    none = lambda c, layer: Edit(h, "rome", None, [])       # noqa: E731
    best, rows = choose_layer(h, cases, [3, 1, 2], before, edit_at=none)
    assert best == 3 and rows[0] == {**rows[1], "layer": 3} == {**rows[2], "layer": 3}


def test_candidate_layers_spread_over_the_depth_with_the_default():
    h = tiny_handle("gpt2")
    from kneuron.editing.methods.rome import default_layer
    got = candidate_layers(h)
    assert got == sorted(set(got)) and got[0] == 0 and got[-1] == h.n_layers - 1 and default_layer(h) in got


@pytest.mark.slow
def test_smollm2_rome_edit():
    """smollm2-135m: ROME makes the new object likelier than the old on the rewrite prompt (identity C
    keeps the test from computing statistics)."""
    from kneuron.models import load_model
    h = load_model("smollm2-135m")
    fact = Fact("P36-001", "P36", "en", "Denmark", "Copenhagen", ("The capital of [X] is [Y].",))
    e = edit(h, fact, "Taipei", method="rome", stats="identity", progress=False)
    prompt = "The capital of Denmark is"
    assert mean_logp(h, prompt, "Taipei") < mean_logp(h, prompt, "Copenhagen")
    with e:
        assert mean_logp(h, prompt, "Taipei") > mean_logp(h, prompt, "Copenhagen")
    assert e.info["layer"] == 6 and e.seconds < 120


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
