"""The engine's batching: rows of several layers in one batch (the staircase), the clean row riding
along, the prefix cache cut from the clean pass, the fused objective."""
import pytest
import torch

from kneuron.attribution import engine
from kneuron.attribution import attribute, attribute_many
from kneuron.attribution.engine import Runner, clean_pass, make_problem, objective_values
from kneuron.models.targets import encode
from tiny import FAMILIES, tiny_handle


def _runner(family, target="paris rome", k=0):
    h = tiny_handle(family)
    prompt = "the capital of france is" if h.kind == "causal" else "the capital of france is [Y] ."
    enc = encode(h.tokenizer, h.kind, prompt, target)
    ids = torch.tensor([enc.input_ids])
    clean = clean_pass(h, ids, enc.positions, keep_outputs=True)
    run = Runner(h, make_problem(h, ids, enc.positions[k], enc.target_ids[k], clean), "prob")
    return h, run, clean.acts[0, k]


def _rows(h, acts, per_layer=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    layers = torch.arange(h.n_layers).repeat_interleave(per_layer)
    scale = torch.rand(len(layers), 1, generator=g, dtype=acts.dtype)
    return layers, acts[layers] * scale


class _Counter:
    """Counts the rows each block computes (at its MLP's output projection)."""

    def __init__(self, h, seq):
        self.rows, self.seq = [0] * h.n_layers, seq
        self.hooks = [s.register_forward_pre_hook(self._hook(j)) for j, s in enumerate(h.sites)]

    def _hook(self, j):
        def f(mod, args):
            x = args[0]
            self.rows[j] += x.shape[0] if x.dim() == 3 else x.shape[0] // self.seq
        return f

    def remove(self):
        for x in self.hooks:
            x.remove()


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert", "opt", "gemma"])
def test_staircase_equals_full_batch_and_skips_lower_layers(family):
    h, run, acts = _runner(family)
    layers, pts = _rows(h, acts)
    full = run(layers, pts, staircase=False)
    count = _Counter(h, run.problems[0].ids.shape[1])
    try:
        stair = run(layers, pts, staircase=True)
    finally:
        count.remove()
    for a, b in zip(stair, full):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
    # block j computed only the rows of layers <= j
    assert count.rows == [2 * (j + 1) for j in range(h.n_layers)]


def test_staircase_check_per_model():
    """The once-per-model check accepts families whose blocks run on part of a batch and refuses one
    that passes per-row tensors the engine cannot cut (BLOOM's ALiBi, [batch x heads, ...]);
    the refused family still gives the full batch's (correct) numbers."""
    for family in ("gpt2", "bloom"):
        h, run, acts = _runner(family)
        layers, pts = _rows(h, acts)
        got = run(layers, pts)                           # staircase=None: decided by the check
        assert engine._STAIRCASE[h.model][False] is (family != "bloom")
        ref = run(layers, pts, staircase=False)
        assert torch.allclose(got[1], ref[1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama"])
def test_clean_row_rides_along(family):
    """The clean row added to a batch gives the same objective and per-layer gradients as on its
    own, and does not change the other rows."""
    h, run, acts = _runner(family)
    layers, pts = _rows(h, acts)
    obj, g, (f1, g1) = run(layers, pts, clean=True)
    alone_f, alone_g = run.clean_grads()
    plain = run(layers, pts)
    assert torch.allclose(obj, plain[0], rtol=1e-9) and torch.allclose(g, plain[1], rtol=1e-9, atol=1e-12)
    assert torch.allclose(f1, alone_f, rtol=1e-9) and torch.allclose(g1, alone_g, rtol=1e-9, atol=1e-12)
    # the clean row's gradient at layer l equals a patched row at alpha = 1 (activation unchanged)
    at_one = run(torch.arange(h.n_layers), acts.clone())
    assert torch.allclose(g1, at_one[1], rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_prefix_cache_cut_from_clean_pass_equals_a_prefix_pass(family):
    """The second answer token's runner reuses the clean pass's cache cut to its prefix; it must
    equal running the prefix alone (which the fallback does)."""
    h, run, acts = _runner(family, k=1)
    past = run.problems[0].past
    assert past is not None and past.get_seq_length() == _position(h, 1)
    layers, pts = _rows(h, acts)
    cut = run(layers, pts)
    enc = encode(h.tokenizer, h.kind, "the capital of france is", "paris rome")
    ids = torch.tensor([enc.input_ids])
    clean = clean_pass(h, ids, enc.positions, keep_outputs=True)
    clean.cache = None                                   # nothing to cut: the decoder runs the prefix
    fresh = Runner(h, make_problem(h, ids, enc.positions[1], enc.target_ids[1], clean), "prob")
    assert fresh.problems[0].past.get_seq_length() == enc.positions[1]
    for a, b in zip(cut, fresh(layers, pts)):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def _position(h, k):
    return encode(h.tokenizer, h.kind, "the capital of france is", "paris rome").positions[k]


@pytest.mark.parametrize("objective", ["prob", "logprob"])
def test_fused_objective_gradient(objective):
    logits = torch.randn(5, 11, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: objective_values(z, 3, objective), (logits,))
    want = torch.log_softmax(logits, -1)[:, 3]
    want = want.exp() if objective == "prob" else want
    assert torch.allclose(objective_values(logits, 3, objective), want)
    with pytest.raises(ValueError, match="objective"):
        objective_values(logits, 3, "nope")


def test_every_family_takes_the_staircase_or_refuses_it_explicitly():
    """Which families run rows of several layers in one batch without waste (record of the check)."""
    taken = {}
    for family in FAMILIES:
        h, run, acts = _runner(family)
        run(*_rows(h, acts))
        taken[family] = engine._STAIRCASE[h.model][False]
    assert {f for f, ok in taken.items() if not ok} == {"bloom"}


ITEMS = {"causal": [("the capital of france is", "paris rome"), ("italy", "rome"),
                    ("the language spoken in spain is", "spanish")],
         "masked": [("the capital of france is [Y] .", "paris rome"), ("[Y] italy", "rome"),
                    ("the language spoken in spain is [Y] .", "spanish")]}


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert", "opt", "gemma", "bloom", "gpt_neox"])
@pytest.mark.parametrize("method,opts", [("ig", {}), ("amig", {"paths": "per-word", "prefactor_kind": "difference"})])
def test_several_prompts_per_batch_equal_one_at_a_time(family, method, opts, monkeypatch):
    """Prompts of different lengths and answers of 1-2 tokens (different prefix lengths, different
    numbers of AMIG paths) share batches, and each gets the scores it gets alone."""
    h = tiny_handle(family)
    items = ITEMS[h.kind]
    alone = [attribute(h, p, t, method=method, steps=3, rule="linspace", **opts) for p, t in items]
    calls = []
    real = Runner.__call__

    def spy(self, layers, points, problem=None, **kw):
        calls.append(0 if problem is None else len(problem.unique()))
        return real(self, layers, points, problem, **kw)
    monkeypatch.setattr(Runner, "__call__", spy)
    together = attribute_many(h, items, method=method, steps=3, rule="linspace", batch_size=4096, **opts)
    for a, b in zip(together, alone):
        err = (a.scores.double() - b.scores.double()).abs().max() / b.scores.abs().max()
        assert err < 1e-6, f"relative error {err:.1e}"
        assert a.prob == pytest.approx(b.prob) and a.target_ids == b.target_ids
        assert a.completeness == pytest.approx(b.completeness, abs=1e-9)
    assert engine._MIX[h.model][True]                 # (BLOOM too: its ALiBi follows the attention mask)
    assert max(calls) == 4                            # one batch: 4 problems (one answer has two tokens)
    # the staircase is used with shared batches wherever it is used alone
    assert engine._STAIRCASE[h.model][True] is engine._STAIRCASE[h.model][False] is (family != "bloom")


def test_problems_that_cannot_share_go_one_by_one(monkeypatch):
    """Where the check says no, batches hold one problem each, and the scores are still right."""
    h = tiny_handle("llama")
    items = ITEMS["causal"]
    alone = [attribute(h, p, t, steps=2) for p, t in items]
    engine._MIX[h.model] = {True: False}
    calls = []
    real = Runner.__call__

    def spy(self, layers, points, problem=None, **kw):
        calls.append(len(problem.unique()))
        return real(self, layers, points, problem, **kw)
    monkeypatch.setattr(Runner, "__call__", spy)
    together = attribute_many(h, items, steps=2, batch_size=4096)
    assert calls and max(calls) == 1
    for a, b in zip(together, alone):
        assert torch.allclose(a.scores, b.scores, rtol=1e-6, atol=1e-9)


def test_no_sharing_when_asked():
    h = tiny_handle("gpt2")
    items = ITEMS["causal"]
    a = attribute_many(h, items, steps=2, share=False)
    b = attribute_many(h, items, steps=2)
    for x, y in zip(a, b):
        assert torch.allclose(x.scores, y.scores, rtol=1e-6, atol=1e-9)


def test_attribute_many_of_nothing():
    assert attribute_many(tiny_handle("gpt2"), []) == []
