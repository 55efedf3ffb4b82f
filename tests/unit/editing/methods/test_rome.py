"""kneuron.editing.methods.rome: ROME on tiny random-weight models of every causal family (k* -> v*, the
insertion key, a given or identity moment, the layer sweep) and on smollm2-135m."""
from __future__ import annotations

import math

import pytest
import torch

from kneuron.editing import EditError, ROME, Rewrite, edit
from kneuron.editing.methods.rome import auto_insert, candidate_layers, choose_layer
from kneuron.errors import ConfigError
from kneuron.facts import Fact
from kneuron.models import hooks
from support.tiny import FAMILIES, same, snapshot, tiny_handle
from support.editing import mean_logp

pytestmark = pytest.mark.usefixtures("one_thread")

CAUSAL = [f for f, (kind, _) in FAMILIES.items() if kind == "causal"]
FACT = Fact("c0", "P36", "en", "france", "paris", ("the capital of [X] is [Y].", "[X] has its capital in [Y]."))
ITALY = Fact("c1", "P36", "en", "italy", "rome", ("the capital of [X] is [Y].",))
SMALL = dict(stats_texts=4, stats_length=12, progress=False)      # a small self-written corpus for tests


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


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_rome_insert_behind_the_start_token(family):
    """insert="start": exact at the bare prompt's key read behind the document-start token -- the key of
    that longer input at the subject's last token, not the bare prompt's nor k*."""
    from kneuron.editing.stats import start_ids
    h = tiny_handle(family, dtype=torch.float32)
    e = edit(h, FACT, "rome", method="rome", layer=1, insert="start", stats="identity")
    p = edit(h, FACT, "rome", method="rome", layer=1, insert="prompt", stats="identity")
    ids = start_ids(h.tokenizer, "the capital of france is")
    assert len(ids) == len(h.tokenizer("the capital of france is")["input_ids"]) + 1   # no BOS of its own
    with torch.no_grad(), hooks.capture(h, inputs={"k": h.sites[1]}) as got:
        h.model(torch.tensor([ids]))
    subject_last = ids.index(h.tokenizer("the capital of france")["input_ids"][-1], 1)
    assert torch.allclose(e.key, got["k"][0, subject_last], atol=1e-5)
    assert not torch.allclose(e.key, p.key, atol=1e-3) and not torch.allclose(e.key, e.k_star, atol=1e-3)
    assert e.info["insert"] == "start"
    with torch.no_grad(), e:
        assert torch.allclose(h.sites[1](e.key[None])[0], e.v_star, atol=1e-4, rtol=1e-4)


def test_auto_insert_takes_the_prompts_key_unless_its_update_is_too_large():
    """r = u·k*/u·k_prompt is how many times larger the prompt key's update is than r-ROME's."""
    u = torch.tensor([1.0, 0.0])
    k_star = torch.tensor([2.0, 5.0])
    assert auto_insert(u, k_star, torch.tensor([1.0, 9.0]), 10) == ("prompt", 2.0)
    assert auto_insert(u, k_star, torch.tensor([0.1, 9.0]), 10) == ("mean", pytest.approx(20.0))
    assert auto_insert(u, k_star, torch.tensor([0.1, 9.0]), 50) == ("prompt", pytest.approx(20.0))
    assert auto_insert(u, k_star, torch.tensor([-1.0, 0.0]), 10) == ("mean", -2.0)      # the other way
    assert auto_insert(u, k_star, torch.tensor([0.0, 3.0]), 10)[0] == "mean"            # u·k_prompt = 0


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_rome_auto_insert_is_the_default_and_records_its_choice(family):
    h = tiny_handle(family, dtype=torch.float32)
    assert ROME().insert == "auto"
    e = edit(h, FACT, "rome", method="rome", layer=1, stats="identity")
    p = edit(h, FACT, "rome", method="rome", layer=1, insert="prompt", stats="identity")
    r = float(e.k_star.double() @ e.k_star.double()) / float(e.k_star.double() @ p.key.double())   # u ∝ k*
    assert e.info["key_ratio"] == pytest.approx(r, rel=1e-5) and e.info["insert"] == "auto"
    want = "prompt" if 0 < r <= 10 else "mean"
    assert e.info["inserted"] == want and torch.equal(e.key, p.key if want == "prompt" else e.k_star)
    never = edit(h, FACT, "rome", method="rome", layer=1, stats="identity", auto_limit=0.0)
    always = edit(h, FACT, "rome", method="rome", layer=1, stats="identity", auto_limit=math.inf)
    assert never.info["inserted"] == "mean" and torch.equal(never.key, never.k_star)
    assert always.info["inserted"] == ("prompt" if r > 0 else "mean")


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


def test_an_interrupted_layer_sweep_resumes_from_the_scores_it_kept():
    """keep() stores each edit's scores as it is measured; a second sweep given them as known() edits only
    what the first did not reach, and its rows are an uninterrupted sweep's."""
    from kneuron.editing.metrics import measure
    from kneuron.editing.records import case_for
    h = tiny_handle("gpt2", dtype=torch.float32)
    facts = [FACT, ITALY, Fact("c2", "P36", "en", "spain", "madrid", ("the capital of [X] is [Y].",))]
    cases = [case_for(facts, f.id, new, kind="causal", tokenizer=h.tokenizer, pool=facts, n_generation=0)
             for f, new in ((FACT, "rome"), (ITALY, "paris"))]
    before = [measure(h, [c.records["en"]], generation=False)[0] for c in cases]
    made = []

    def at(c, layer, fail_after=None):
        if fail_after is not None and len(made) == fail_after:
            raise KeyboardInterrupt
        made.append((c.fact_id, layer))
        return edit(h, c.records["en"].edit_fact, c.records["en"].new, method="rome", layer=layer,
                    stats="identity", v_steps=3)
    whole = choose_layer(h, cases, [0, 2], before, edit_at=at)
    made.clear()
    store = {}
    keep = lambda c, layer, sc: store.__setitem__((layer, c.fact_id), sc)  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        choose_layer(h, cases, [0, 2], before, edit_at=lambda c, layer: at(c, layer, fail_after=3), keep=keep)
    assert len(store) == 3 and made == [("c0", 0), ("c1", 0), ("c0", 2)]
    made.clear()
    again = choose_layer(h, cases, [0, 2], before, edit_at=at, keep=keep,
                         known=lambda c, layer: store.get((layer, c.fact_id)))
    assert made == [("c1", 2)] and again == whole


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
