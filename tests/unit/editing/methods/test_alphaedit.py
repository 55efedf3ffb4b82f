"""kneuron.editing.methods.alphaedit: AlphaEdit on tiny random-weight models of every causal family: the
preserved keys' outputs left unchanged (the whole model's on the preserved text too), the update checked
against its own optimality conditions, the previously edited keys K_p (sequential editing, also through
the bench's run directory), undo bit for bit, and one-line errors."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from kneuron.editing import AlphaEdit, EditError, JointEdit, edit, edit_batch
from kneuron.editing.methods.alphaedit import null_projector
from kneuron.editing.stats import second_moment
from kneuron.errors import ConfigError
from kneuron.models import hooks
from kneuron.models.sites import value_vectors
from support.tiny import same, snapshot, tiny_handle

pytestmark = pytest.mark.usefixtures("one_thread")

from unit.editing.methods.test_memit import CAUSAL, FACT, ITALY, PAIRS, SPAIN, T  # noqa: F401 (the same rewrites)
CORPUS = ("the capital of germany is berlin", "the river in spain was born a city")
# 14 tokens, 13 distinct keys (both texts open with "the": one key at position 0): C0 has rank 13 < n = 48;
# its non-zero eigenvalues are >= 6e-3 x the largest in every family, its zero ones ~1e-8 (C0 is float32)
EXACT = 1e-4                                      # a threshold between the two: P = the exact null space
QUICK = dict(v_steps=5, progress=False)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))


def corpus_keys(h, layer) -> torch.Tensor:
    """K0: the projection's input at every token of CORPUS (what its C0 is taken over), [N, n]."""
    rows = []
    for text in CORPUS:
        with torch.no_grad(), hooks.capture(h, inputs={"k": h.sites[layer]}) as got:
            h.model(input_ids=torch.tensor([h.tokenizer(text)["input_ids"]]))
        rows.append(got["k"].reshape(-1, h.n_neurons))
    return torch.cat(rows).double()


def logits(h):
    with torch.no_grad():
        return [h.model(input_ids=torch.tensor([h.tokenizer(t)["input_ids"]])).logits.double() for t in CORPUS]


@pytest.mark.parametrize("family", CAUSAL)
def test_alphaedit_leaves_the_preserved_keys_outputs_unchanged(family):
    """C0 over CORPUS (rank 13 < n) with a threshold below its smallest non-zero eigenvalue: P is the null
    space of K0 (up to C0's float32 rounding), so W'K0 - WK0 ≤ 1e-4 at both edited layers and the model's
    logits on the preserved text do not move, while the edit does move the rewrites' keys."""
    h = tiny_handle(family)
    before, logits0 = snapshot(h), logits(h)
    K0 = {layer: corpus_keys(h, layer) for layer in (1, 2)}
    e = edit_batch(h, PAIRS[:2], method="alphaedit", layer=2, span=2, corpus=CORPUS, nullspace_threshold=EXACT,
                   **QUICK)
    assert not e.applied and same(h, before) and [r["null_dims"] for r in e.info["per_layer"]] == [h.n_neurons - 13] * 2
    out0 = {layer: h.sites[layer](K0[layer].to(h.dtype)).double().detach() for layer in (1, 2)}
    moved0 = h.sites[2](e.keys[2].to(h.dtype)).double().detach()
    with torch.no_grad(), e:
        for layer in (1, 2):
            assert float((h.sites[layer](K0[layer].to(h.dtype)).double() - out0[layer]).abs().max()) <= 1e-4
        assert all(float((a - b).abs().max()) <= 1e-4 for a, b in zip(logits(h), logits0)), family
        moved = h.sites[2](e.keys[2].to(h.dtype)).double() - moved0
    assert same(h, before)
    assert float(moved.norm()) > 1e-3 * float(e.residuals[2].norm())       # the rewrites' outputs did move


def test_the_update_is_the_optimum_of_alphaedits_objective():
    """With K_p from a kept edit: D = ΔWᵀ lies in P's range (D = PD) and is stationary for
    ‖KD - R‖² + α‖D‖² + ‖K_p D‖² over such D: P((KᵀK + K_pᵀK_p + αI) D - KᵀR) = 0, with P and α taken here
    from C0 (self-written) and the default threshold; P K0 is small as the threshold bounds it."""
    h = tiny_handle("llama")
    C = second_moment(h, 2, texts=4, length=12, progress=False).double()      # the unedited model's, given
    opts = dict(layer=2, span=1, moments={2: C}, **QUICK)                      # to both edits (sequential)
    first = edit(h, FACT, "rome", method="alphaedit", **opts)
    with first:
        e = edit(h, ITALY, "paris", method="alphaedit", kept=[first], **opts)
        values = value_vectors(h.sites[2]).detach().double().clone()   # not a view of the weight
    assert e.info["per_layer"][0]["kept_keys"] == 1 and first.info["per_layer"][0]["kept_keys"] == 0
    assert e.info["stats"]["source"] == "given"
    w, V = torch.linalg.eigh(C)
    small = V[:, w < 1e-2 * w.max()]
    P = small @ small.T
    assert torch.allclose(P, null_projector(C), atol=1e-8) and 0 < small.shape[1] < h.n_neurons
    K, R, Kp = e.keys[2].double(), e.residuals[2].double(), first.keys[2].double()
    D = e.changes[0].value.double().T - values
    alpha = float(C.diagonal().mean())
    assert torch.allclose(P @ D, D, atol=1e-10)
    grad = P @ ((K.T @ K + Kp.T @ Kp + alpha * torch.eye(h.n_neurons, dtype=C.dtype)) @ D - K.T @ R)
    assert float(grad.abs().max()) <= 1e-8 * float((K.T @ R).abs().max())
    # the preserved keys K0 (C0 = K0ᵀK0 / N): ‖K0 D‖² / N = tr(DᵀC0D) = tr(DᵀPC0PD) ≤ ‖D‖₂² Σ_{λ < threshold} λ,
    # against ‖D‖₂² λ_max for an update free to use every direction
    energy, top = float(torch.trace(D.T @ C @ D)), float(torch.linalg.matrix_norm(D, 2)) ** 2
    assert energy <= top * float(w[w < 1e-2 * w.max()].sum()) * (1 + 1e-9) and energy < 1e-2 * top * float(w.max())
    assert float((K @ D).norm()) > 0 and e.info["per_layer"][0]["null_dims"] == small.shape[1]


def test_the_kept_keys_keep_earlier_edits_where_they_are():
    """A second edit made with the first kept (its keys are K_p) moves the first's keys less than the same
    edit made without them (the penalty ‖ΔP K_p‖² can only lower it); an edit without keys adds none."""
    h = tiny_handle("qwen2")
    opts = dict(layer=2, span=1, stats_texts=4, stats_length=12, **QUICK)
    first = edit(h, FACT, "rome", method="alphaedit", **opts)
    with first:
        free = edit(h, ITALY, "paris", method="alphaedit", **opts)
        kept = edit(h, ITALY, "paris", method="alphaedit", kept=(first,), **opts)
        plain = edit(h, ITALY, "paris", method="alphaedit", kept=(JointEdit(h, "alphaedit", None, []),), **opts)
        values = value_vectors(h.sites[2]).detach().double().clone()   # not a view of the weight
    Kp = first.keys[2].double()
    moved = {name: float((Kp @ (e.changes[0].value.double().T - values)).norm()) for name, e in
             (("free", free), ("kept", kept), ("plain", plain))}
    assert moved["kept"] < moved["free"] and moved["plain"] == pytest.approx(moved["free"], rel=1e-9)
    assert plain.info["per_layer"][0]["kept_keys"] == 0


def test_errors_are_one_line_and_name_the_option():
    for opts, word in (({"nullspace_threshold": 0.0}, "nullspace_threshold"),
                       ({"nullspace_threshold": 1.0}, "nullspace_threshold"), ({"l2": 0.0}, "l2"),
                       ({"stats": "identity"}, "stats='identity'"), ({"span": 0}, "span")):
        with pytest.raises(ConfigError, match=f"alphaedit: {word}") as err:
            AlphaEdit(**opts)
        assert "\n" not in str(err.value)
    with pytest.raises(EditError, match="alphaedit supports causal models only") as err:
        edit(tiny_handle("bert"), FACT, "rome", method="alphaedit")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="unknown option"):
        edit(tiny_handle("gpt2"), FACT, "rome", method="alphaedit", neurons=[(0, 1)])


# ----------------------------------------------------------------------------- the bench's sequential mode

def test_the_bench_chain_gives_alphaedit_its_kept_edits_also_after_a_resume(tmp_path, monkeypatch):
    from kneuron.bench.editing.context import BenchContext, Budget
    from kneuron.bench.editing.modes import Sequential
    from .test_memit import bench_ctx
    seen, real = [], BenchContext.edit

    def spy(self, method, case, lang, **extra):
        seen.append([(type(e).__name__, sorted(e.keys or {})) for e in extra.get("kept", ())])
        return real(self, method, case, lang, **extra)
    monkeypatch.setattr(BenchContext, "edit", spy)
    ctx = bench_ctx(tmp_path, "alphaedit", {"layer": 2, "span": 2, "v_steps": 3, "stats_texts": 4,
                                            "stats_length": 12})
    ctx = replace(ctx, cfg=replace(ctx.cfg, mode="sequential"))
    w0 = snapshot(ctx.handle)
    assert len(list(Sequential().run("alphaedit", ctx.cases, replace(ctx, budget=Budget(2))))) == 2
    assert seen == [[], [("JointEdit", [1, 2])]] and same(ctx.handle, w0)
    seen.clear()
    rows = list(Sequential().run("alphaedit", ctx.cases, replace(ctx, budget=Budget(None))))
    assert len(rows) == 6 and same(ctx.handle, w0)
    # the third en edit: the two kept ones read back from the run directory, keys and all
    assert seen[0] == [("JointEdit", [1, 2])] * 2 and [len(k) for k in seen] == [2, 0, 1, 2]
    assert all(r.info["stats"]["source"] == "given" for r in rows)
    assert [r.info["per_layer"][0]["kept_keys"] for r in rows] == [0, 1, 2, 0, 1, 2]    # one key row per kept edit
