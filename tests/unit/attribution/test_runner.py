"""kneuron.attribution.runner: the engine's batching: rows of several layers in one batch (the staircase),
the clean row riding along, the prefix cache cut from the clean pass, several prompts per batch, one result type."""
import pytest
import torch

from kneuron.attribution import AMIG, Execution, attribute, attribute_many
from kneuron.attribution.passes import clean_pass
from kneuron.attribution.rows import RunResult, make_problem
from kneuron.attribution.runner import RowRunner
from kneuron.models import sites
from kneuron.models.targets import encode
from support.engine import ITEMS, layer_rows
from support.tiny import tiny_handle


def _runner(family, target="paris rome", k=0):
    h = tiny_handle(family)
    prompt = "the capital of france is" if h.kind == "causal" else "the capital of france is [Y] ."
    enc = encode(h.tokenizer, h.kind, prompt, target)
    ids = torch.tensor([enc.input_ids])
    clean = clean_pass(h, ids, enc.positions, keep_outputs=True)
    run = RowRunner(h, make_problem(h, ids, enc.positions[k], enc.target_ids[k], clean), "prob")
    return h, run, clean.acts[0, k]


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


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert", "opt", "gemma", "gemma3_text"])
def test_staircase_equals_full_batch_and_skips_lower_layers(family):
    h, run, acts = _runner(family)
    layers, pts = layer_rows(h, acts)
    full = run(layers, pts, staircase=False)
    count = _Counter(h, run.problems[0].ids.shape[1])
    try:
        stair = run(layers, pts, staircase=True)
    finally:
        count.remove()
    assert isinstance(stair, RunResult) and stair.clean_obj is None and stair.clean_grad is None
    assert torch.allclose(stair.obj, full.obj, rtol=1e-9, atol=1e-12)
    assert torch.allclose(stair.grad, full.grad, rtol=1e-9, atol=1e-12)
    # block j computed only the rows of layers <= j
    assert count.rows == [2 * (j + 1) for j in range(h.n_layers)]


def test_bloom_takes_the_full_batch_and_gets_its_numbers():
    """BLOOM passes per-row tensors the engine cannot cut (ALiBi, [batch x heads, ...]): the table says
    no staircase, and the full batch gives the (correct) numbers."""
    h, run, acts = _runner("bloom")
    assert sites.declared_capability(h.model, "staircase") is False
    layers, pts = layer_rows(h, acts)
    count = _Counter(h, run.problems[0].ids.shape[1])
    try:
        got = run(layers, pts)                           # staircase=None: as the table declares
    finally:
        count.remove()
    assert count.rows == [len(layers)] * h.n_layers      # every block ran every row
    ref = run(layers, pts, staircase=False)
    assert torch.allclose(got.grad, ref.grad, rtol=1e-9, atol=1e-12)
    with pytest.raises(RuntimeError, match="size"):      # what the staircase would do: a shape error
        run(layers, pts, staircase=True)


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama"])
def test_clean_row_rides_along(family):
    """The clean row added to a batch gives the same objective and per-layer gradients as on its
    own, and does not change the other rows."""
    h, run, acts = _runner(family)
    layers, pts = layer_rows(h, acts)
    r = run(layers, pts, clean=[0])
    (f1,), (g1,) = r.clean_obj, r.clean_grad
    alone_f, alone_g = run.clean_grads()
    plain = run(layers, pts)
    assert torch.allclose(r.obj, plain.obj, rtol=1e-9) and torch.allclose(r.grad, plain.grad, rtol=1e-9, atol=1e-12)
    assert torch.allclose(f1, alone_f, rtol=1e-9) and torch.allclose(g1, alone_g, rtol=1e-9, atol=1e-12)
    # the clean row's gradient at layer l equals a patched row at alpha = 1 (activation unchanged)
    at_one = run(torch.arange(h.n_layers), acts.clone())
    assert torch.allclose(g1, at_one.grad, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_prefix_cache_cut_from_clean_pass_equals_a_prefix_pass(family):
    """The second answer token's runner reuses the clean pass's cache cut to its prefix; it must
    equal running the prefix alone (which the fallback does)."""
    h, run, acts = _runner(family, k=1)
    past = run.problems[0].past
    assert past is not None and past.get_seq_length() == _position(h, 1)
    layers, pts = layer_rows(h, acts)
    cut = run(layers, pts)
    enc = encode(h.tokenizer, h.kind, "the capital of france is", "paris rome")
    ids = torch.tensor([enc.input_ids])
    clean = clean_pass(h, ids, enc.positions, keep_outputs=True)
    clean.cache = None                                   # nothing to cut: the decoder runs the prefix
    fresh = RowRunner(h, make_problem(h, ids, enc.positions[1], enc.target_ids[1], clean), "prob")
    assert fresh.problems[0].past.get_seq_length() == enc.positions[1]
    other = fresh(layers, pts)
    assert torch.allclose(cut.obj, other.obj, rtol=1e-9, atol=1e-12)
    assert torch.allclose(cut.grad, other.grad, rtol=1e-9, atol=1e-12)


def _position(h, k):
    return encode(h.tokenizer, h.kind, "the capital of france is", "paris rome").positions[k]


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert", "opt", "gemma", "bloom", "gpt_neox"])
@pytest.mark.parametrize("method", ["ig", AMIG(paths="per-word", prefactor="difference")])
def test_several_prompts_per_batch_equal_one_at_a_time(family, method, monkeypatch):
    """Prompts of different lengths and answers of 1-2 tokens (different prefix lengths, different
    numbers of AMIG paths) share batches, and each gets the scores it gets alone."""
    h = tiny_handle(family)
    items = ITEMS[h.kind]
    alone = [attribute(h, p, t, method=method, steps=3, rule="linspace") for p, t in items]
    calls, stair = [], []
    real, real_forward = RowRunner.__call__, RowRunner.forward

    def spy(self, layers, points, problem=None, **kw):
        calls.append(0 if problem is None else len(problem.unique()))
        return real(self, layers, points, problem, **kw)

    def forward(self, batch, *, staircase, grad=True):
        if batch.partial:
            stair.append((batch.mixed, staircase))
        return real_forward(self, batch, staircase=staircase, grad=grad)
    monkeypatch.setattr(RowRunner, "__call__", spy)
    monkeypatch.setattr(RowRunner, "forward", forward)
    together = attribute_many(h, items, method=method, steps=3, rule="linspace", execution=Execution(batch_size=4096))
    for a, b in zip(together, alone):
        err = (a.scores.double() - b.scores.double()).abs().max() / b.scores.abs().max()
        assert err < 1e-6, f"relative error {err:.1e}"
        assert a.prob == pytest.approx(b.prob) and a.target_ids == b.target_ids
        assert a.completeness == pytest.approx(b.completeness, abs=1e-9)
    assert max(calls) == 4                            # one batch: 4 problems (BLOOM too: its ALiBi follows the mask)
    # the staircase is used with shared batches wherever it is used alone (not BLOOM)
    assert stair and all(mixed for mixed, _ in stair)
    assert {used for _, used in stair} == {family != "bloom"}


@pytest.mark.parametrize("method", ["ig", AMIG(paths="per-word", prefactor="difference")])
def test_sliding_window_prompts_share_batches_where_their_inputs_stack(method, monkeypatch):
    """Gemma 3 with a sliding window shorter than the prompts: without the prefix cache the prompts' full
    rows share one batch (padded, behind the per-layer-type masks) and each gets its scores alone; with it,
    the sliding layers' caches hold the window's tokens only and cannot be stacked, so the problems go one
    per batch -- with the same scores."""
    h = tiny_handle("gemma3_text")
    items = ITEMS["causal"]
    assert h.model.config.sliding_window < min(len(h.tokenizer(p)["input_ids"]) for p, _ in items if " " in p)
    alone = [attribute(h, p, t, method=method, steps=3, rule="linspace") for p, t in items]
    real = RowRunner.__call__
    for prefix_cache, most in ((False, 4), (True, 1)):
        calls = []

        def spy(self, layers, points, problem=None, **kw):
            calls.append(0 if problem is None else len(problem.unique()))
            return real(self, layers, points, problem, **kw)
        monkeypatch.setattr(RowRunner, "__call__", spy)
        together = attribute_many(h, items, method=method, steps=3, rule="linspace",
                                  execution=Execution(batch_size=4096, prefix_cache=prefix_cache))
        assert max(calls) == most
        for a, b in zip(together, alone):
            err = (a.scores.double() - b.scores.double()).abs().max() / b.scores.abs().max()
            assert err < 1e-6, f"relative error {err:.1e}"
            assert a.prob == pytest.approx(b.prob) and a.target_ids == b.target_ids


def test_problems_that_cannot_share_go_one_by_one(monkeypatch):
    """Where the check says no, batches hold one problem each, and the scores are still right."""
    h = tiny_handle("llama")
    items = ITEMS["causal"]
    alone = [attribute(h, p, t, steps=2) for p, t in items]
    monkeypatch.setitem(sites.ARCHITECTURES, "llama", sites.ARCHITECTURES["llama"]._replace(share=False))
    calls = []
    real = RowRunner.__call__

    def spy(self, layers, points, problem=None, **kw):
        calls.append(len(problem.unique()))
        return real(self, layers, points, problem, **kw)
    monkeypatch.setattr(RowRunner, "__call__", spy)
    together = attribute_many(h, items, steps=2, execution=Execution(batch_size=4096))
    assert calls and max(calls) == 1
    for a, b in zip(together, alone):
        assert torch.allclose(a.scores, b.scores, rtol=1e-6, atol=1e-9)


def test_no_sharing_when_asked():
    h = tiny_handle("gpt2")
    items = ITEMS["causal"]
    a = attribute_many(h, items, steps=2, execution=Execution(share=False))
    b = attribute_many(h, items, steps=2)
    for x, y in zip(a, b):
        assert torch.allclose(x.scores, y.scores, rtol=1e-6, atol=1e-9)


def test_attribute_many_of_nothing():
    assert attribute_many(tiny_handle("gpt2"), []) == []


def test_one_result_type():
    """RowRunner.__call__ returns a RunResult whether or not clean rows ride along (never a 2- or 3-tuple)."""
    h, run, acts = _runner("gpt2")
    layers, pts = layer_rows(h, acts)
    plain, with_clean, no_grad = run(layers, pts), run(layers, pts, clean=[0]), run(layers, pts, grad=False)
    assert all(isinstance(r, RunResult) for r in (plain, with_clean, no_grad))
    assert plain.obj.shape == with_clean.obj.shape == (len(layers),) and plain.grad.shape == pts.shape
    assert with_clean.clean_obj.shape == (1,) and with_clean.clean_grad.shape == (1, h.n_layers, h.n_neurons)
    assert no_grad.grad is None and torch.allclose(no_grad.obj, plain.obj)
    with pytest.raises(TypeError):
        run(layers, pts, None, True)             # clean, grad, staircase are keyword-only

