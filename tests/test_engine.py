"""The engine's batching: rows of several layers in one batch (the staircase), the clean row riding
along, the prefix cache cut from the clean pass, the fused objective."""
import pytest
import torch

import logging

import transformers as T

from kneuron.attribution import checks as engine_checks, kvcache, runner as engine_runner
from kneuron.attribution import AMIG, Execution, attribute, attribute_many
from kneuron.attribution.passes import clean_pass, objective_values
from kneuron.attribution.rows import RunResult, make_problem
from kneuron.attribution.runner import RowRunner
from kneuron.models import sites
from kneuron.models.targets import encode
from support.tiny import FAMILIES, H, HEADS, I, NL, V, tiny_handle, word_tokenizer


def _runner(family, target="paris rome", k=0):
    h = tiny_handle(family)
    prompt = "the capital of france is" if h.kind == "causal" else "the capital of france is [Y] ."
    enc = encode(h.tokenizer, h.kind, prompt, target)
    ids = torch.tensor([enc.input_ids])
    clean = clean_pass(h, ids, enc.positions, keep_outputs=True)
    run = RowRunner(h, make_problem(h, ids, enc.positions[k], enc.target_ids[k], clean), "prob")
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
    layers, pts = _rows(h, acts)
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
    layers, pts = _rows(h, acts)
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
    layers, pts = _rows(h, acts)
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


@pytest.mark.parametrize("objective", ["prob", "logprob"])
def test_fused_objective_gradient(objective):
    logits = torch.randn(5, 11, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: objective_values(z, 3, objective), (logits,))
    want = torch.log_softmax(logits, -1)[:, 3]
    want = want.exp() if objective == "prob" else want
    assert torch.allclose(objective_values(logits, 3, objective), want)
    with pytest.raises(ValueError, match="objective"):
        objective_values(logits, 3, "nope")


# tiny models of the table's families tests/support/tiny.py does not build (never downloaded)
EXTRA = {
    "camembert": ("masked", lambda: T.CamembertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, intermediate_size=I, pad_token_id=0)),
    "electra": ("masked", lambda: T.ElectraConfig(vocab_size=V, embedding_size=H, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, intermediate_size=I)),
    "distilbert": ("masked", lambda: T.DistilBertConfig(vocab_size=V, dim=H, n_layers=NL, n_heads=HEADS, hidden_dim=I)),
    "gpt_neo": ("causal", lambda: T.GPTNeoConfig(vocab_size=V, hidden_size=H, num_layers=NL, num_heads=HEADS, intermediate_size=I, attention_types=[[["global", "local"], 1], [["global"], 1]], window_size=8)),
    "falcon": ("causal", lambda: T.FalconConfig(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, alibi=True)),
    "phi": ("causal", lambda: T.PhiConfig(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, intermediate_size=I)),
    "qwen3": ("causal", lambda: T.Qwen3Config(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, num_key_value_heads=2, intermediate_size=I, head_dim=8)),
    "gemma2": ("causal", lambda: T.Gemma2Config(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, num_key_value_heads=2, intermediate_size=I, head_dim=8)),
    "olmo": ("causal", lambda: T.OlmoConfig(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, intermediate_size=I)),
    "olmo2": ("causal", lambda: T.Olmo2Config(vocab_size=V, hidden_size=H, num_hidden_layers=NL, num_attention_heads=HEADS, intermediate_size=I)),
}


def _any_handle(family):
    if family in FAMILIES:
        return tiny_handle(family)
    from kneuron.models import from_model
    kind, make = EXTRA[family]
    torch.manual_seed(0)
    cfg = make()
    cfg.pad_token_id, cfg.eos_token_id, cfg.bos_token_id = 0, 5, 6
    cls = T.AutoModelForMaskedLM if kind == "masked" else T.AutoModelForCausalLM
    return from_model(cls.from_config(cfg).to(torch.float64).eval(), word_tokenizer(kind), kind=kind,
                      name=f"tiny-{family}")


def test_the_table_covers_every_family_tested():
    assert set(sites.ARCHITECTURES) == set(FAMILIES) | set(EXTRA)


@pytest.mark.parametrize("family", sorted(set(FAMILIES) | set(EXTRA)))
def test_declared_capabilities_equal_the_run_time_check(family, monkeypatch):
    """What the architecture table declares for each family is what the run-time check (used for
    families the table does not know) finds, on mixed batches (prompts of different lengths, prefix
    caches stacked) and single-prompt ones."""
    h = _any_handle(family)
    declared = sites.ARCHITECTURES[h.model.config.model_type]
    monkeypatch.setitem(sites.ARCHITECTURES, h.model.config.model_type, declared._replace(staircase=None, share=None))
    attribute_many(h, ITEMS[h.kind][:2], steps=2, execution=Execution(batch_size=4096, prefix_cache=False))
    attribute(h, *ITEMS[h.kind][1], steps=2)             # one single-token answer: one problem, with its cache
    checked = {c: h.capabilities.checked(c) for c in sites.CAPABILITIES}
    assert checked["share"] == {True: declared.share}
    assert checked["staircase"] == {True: declared.staircase, False: declared.staircase}


def test_a_declared_family_runs_no_check(monkeypatch):
    calls = []
    real = engine_checks.staircase_agrees
    monkeypatch.setattr(engine_checks, "staircase_agrees", lambda run, b: calls.append("staircase") or real(run, b))
    real_capable = RowRunner.capable

    def spy(self, capability, mixed, check):
        return real_capable(self, capability, mixed, lambda: calls.append(capability) or check())
    monkeypatch.setattr(RowRunner, "capable", spy)
    h = tiny_handle("llama")
    attribute_many(h, ITEMS["causal"], steps=2, execution=Execution(batch_size=4096))
    assert calls == [] and h.capabilities.checked("staircase") == {} and h.capabilities.checked("share") == {}


def test_an_unknown_family_is_checked_once_and_a_no_is_logged(monkeypatch, caplog):
    """A family the table does not know: checked at run time, once per model; BLOOM's staircase
    fails the check (a shape error in its attention), which is logged with the reason, and the
    scores are those of the declared family."""
    h = tiny_handle("bloom")
    items = ITEMS["causal"]
    ref = attribute_many(h, items, steps=2)
    monkeypatch.delitem(sites.ARCHITECTURES, "bloom")
    h = tiny_handle("bloom")
    checks = []
    real = engine_checks.staircase_agrees
    monkeypatch.setattr(engine_checks, "staircase_agrees", lambda run, b: checks.append(1) or real(run, b))
    with caplog.at_level(logging.INFO, logger="kneuron"):
        got = attribute_many(h, items, steps=2)
        attribute_many(h, items, steps=2)
    assert h.capabilities.checked("staircase") == {True: False}
    assert h.capabilities.checked("share") == {True: True}
    assert len(checks) == 1                                   # once per model, not per batch or call
    logged = [r.getMessage() for r in caplog.records if r.name == "kneuron"]
    stair = [m for m in logged if "staircase" in m]
    assert len(stair) == 1 and "must match" in stair[0]
    # the other no's: BLOOM's attention does not take a shared prefix (single and mixed batches)
    assert all("shared key/value prefix" in m for m in logged if m not in stair)
    assert h.capabilities.checked("prefix") == {True: False, False: False}
    for a, b in zip(got, ref):
        assert torch.allclose(a.scores, b.scores, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("error", [TypeError, IndexError, RuntimeError])
def test_a_bug_in_the_optimised_path_raises(error, monkeypatch):
    """A bug in the staircase (or the check that would run it) is not read as 'unsupported': it
    raises, for a declared family and for one the check runs on."""
    def broken(*a, **k):
        raise error("a bug")
    monkeypatch.setattr(engine_runner, "_first_rows", broken)
    with pytest.raises(error, match="a bug"):
        attribute(tiny_handle("gpt2"), "the capital of france is", "paris", steps=2)
    if error is RuntimeError:
        return                                 # (for an undeclared family: a shape error is a 'no', see above)
    monkeypatch.delitem(sites.ARCHITECTURES, "gpt2")
    with pytest.raises(error, match="a bug"):
        attribute(tiny_handle("gpt2"), "the capital of france is", "paris", steps=2)


ITEMS = {"causal": [("the capital of france is", "paris rome"), ("italy", "rome"),
                    ("the language spoken in spain is", "spanish")],
         "masked": [("the capital of france is [Y] .", "paris rome"), ("[Y] italy", "rome"),
                    ("the language spoken in spain is [Y] .", "spanish")]}


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
    layers, pts = _rows(h, acts)
    plain, with_clean, no_grad = run(layers, pts), run(layers, pts, clean=[0]), run(layers, pts, grad=False)
    assert all(isinstance(r, RunResult) for r in (plain, with_clean, no_grad))
    assert plain.obj.shape == with_clean.obj.shape == (len(layers),) and plain.grad.shape == pts.shape
    assert with_clean.clean_obj.shape == (1,) and with_clean.clean_grad.shape == (1, h.n_layers, h.n_neurons)
    assert no_grad.grad is None and torch.allclose(no_grad.obj, plain.obj)
    with pytest.raises(TypeError):
        run(layers, pts, None, True)             # clean, grad, staircase are keyword-only


# ----------------------------------------------------------------------------- the shared key/value prefix

CAUSAL = sorted(f for f in set(FAMILIES) | set(EXTRA) if (FAMILIES.get(f) or EXTRA.get(f))[0] == "causal")


def _problems(h, items):
    problems = []
    for prompt, target in items:
        enc = encode(h.tokenizer, h.kind, prompt, target)
        ids = torch.tensor([enc.input_ids])
        clean = clean_pass(h, ids, enc.positions, keep_outputs=True)
        for k, pos in enumerate(enc.positions):
            problems.append((make_problem(h, ids, pos, enc.target_ids[k], clean), clean.acts[0, k]))
    return problems


def _both(run, *args, **kw):
    out = []
    for force in (True, False):
        run._force_prefix = force
        out.append(run(*args, **kw))
    run._force_prefix = None
    return out


def _rel(x, y):
    return float((x - y).abs().max() / y.abs().max().clamp_min(1e-300))


@pytest.mark.parametrize("family", CAUSAL)
def test_shared_prefix_attention_equals_the_concatenating_cache(family):
    """Rows attending to one shared prefix (prefix.attend) give the objective and gradients of
    transformers' own cache (a concatenated copy per row): one prompt with the staircase and a clean
    row, and rows of several prompts of different lengths sharing a batch (stacked, masked prefixes)."""
    h = _any_handle(family)
    if not sites.declared_capability(h.model, "prefix"):
        pytest.skip(f"{family}: its attention bypasses transformers' attention interface (declared: the copy path)")
    probs = _problems(h, ITEMS["causal"])
    if not kvcache.growing_cache_layers(probs[0][0].past):
        pytest.skip(f"{family}: its cache is not a plain growing one (the copy path runs)")
    (p, acts), = [x for x in probs if x[0].past_len >= 3][:1]
    run = RowRunner(h, p, "prob")
    layers, pts = _rows(h, acts, per_layer=3)
    a, b = _both(run, layers, pts, clean=[0], staircase=True)
    for x, y in ((a.obj, b.obj), (a.grad, b.grad), (a.clean_obj, b.clean_obj), (a.clean_grad, b.clean_grad)):
        assert _rel(x, y) < 1e-9
    run = RowRunner(h, [x[0] for x in probs], "prob")
    if not run.can_mix:
        return
    L = h.n_layers
    layers = torch.arange(L).repeat_interleave(len(probs))
    problem = torch.arange(len(probs)).repeat(L)
    pts = torch.stack([probs[int(i)][1][int(l)] for l, i in zip(layers, problem)]) * 0.7
    a, b = _both(run, layers, pts, problem, clean=[0, 2], staircase=declared_capability_or_true(h))
    for x, y in ((a.obj, b.obj), (a.grad, b.grad), (a.clean_grad, b.clean_grad)):
        assert _rel(x, y) < 1e-9


def declared_capability_or_true(h):
    return sites.declared_capability(h.model, "staircase") is not False


def test_prefix_attention_and_its_backward():
    """PrefixAttention (grouped-query heads, one prefix per prompt, a padding bias) equals plain
    attention over the concatenated keys; its recomputing backward passes gradcheck."""
    from kneuron.attribution.prefix import PrefixAttention
    g = torch.Generator().manual_seed(0)
    n, KV, G, d, T = 5, 2, 3, 4, 6
    q = torch.randn(n, KV * G, 1, d, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.randn(n, KV, 1, d, dtype=torch.float64, generator=g, requires_grad=True)
    v = torch.randn(n, KV, 1, d, dtype=torch.float64, generator=g, requires_grad=True)
    K = torch.randn(2, KV, T, d, dtype=torch.float64, generator=g)
    V = torch.randn(2, KV, T, d, dtype=torch.float64, generator=g)
    owner = torch.tensor([1, 0, 1, 1, 0])
    valid = torch.tensor([6, 4, 6, 6, 4])[:, None] > torch.arange(T)       # prompt 0's prefix is padded
    bias = torch.zeros(n, T + 1, dtype=torch.float64)
    bias[:, :T].masked_fill_(~valid, float("-inf"))

    def ours(q, k, v):
        out = PrefixAttention.apply(q, k, v, K, V, owner, bias, 0.4)               # [KV, n, G, d]
        return out.permute(1, 0, 2, 3).reshape(n, KV * G, d)

    def plain(q, k, v):
        keys = torch.cat([K[owner], k], 2).repeat_interleave(G, 1)                # [n, H, T + 1, d]
        vals = torch.cat([V[owner], v], 2).repeat_interleave(G, 1)
        w = (q @ keys.transpose(-1, -2) * 0.4 + bias[:, None, None]).softmax(-1)
        return (w @ vals)[:, :, 0]
    assert torch.allclose(ours(q, k, v), plain(q, k, v), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(ours, (q, k, v))
    single = lambda q, k, v: PrefixAttention.apply(q, k, v, K[:1], V[:1], None, None, 0.4)
    assert torch.autograd.gradcheck(single, (q, k, v))


@pytest.mark.parametrize("family", CAUSAL)
def test_declared_shared_prefix_equals_the_run_time_check(family, monkeypatch):
    """What the table declares of the shared-prefix attention is what the run-time check finds (single
    prompts and shared batches), where the family's cache is a plain growing one."""
    h = _any_handle(family)
    declared = sites.ARCHITECTURES[h.model.config.model_type]
    monkeypatch.setitem(sites.ARCHITECTURES, h.model.config.model_type, declared._replace(prefix=None))
    attribute_many(h, ITEMS["causal"][:2], steps=2, execution=Execution(batch_size=4096))   # shared batches
    attribute(h, *ITEMS["causal"][2], steps=2)           # one single-token answer: one problem, with its cache
    checked = h.capabilities.checked("prefix")
    growing = kvcache.growing_cache_layers(_problems(h, ITEMS["causal"][2:])[0][0].past)
    if not growing:
        assert checked == {}                            # never asked: the copy path is the only one
    else:
        assert checked == {True: declared.prefix, False: declared.prefix}


def _saved_bytes(h, prompt, rows, force=None):
    """Bytes autograd keeps for the backward of ``rows`` rows of the prompt's answer (distinct storages)."""
    enc = encode(h.tokenizer, h.kind, prompt, "paris")
    ids = torch.tensor([enc.input_ids])
    clean = clean_pass(h, ids, enc.positions, keep_outputs=True)
    run = RowRunner(h, make_problem(h, ids, enc.positions[0], enc.target_ids[0], clean), "prob")
    run._force_prefix = force
    layers = torch.zeros(rows, dtype=torch.long)                   # every row runs every block
    pts = clean.acts[0, 0][layers] * torch.linspace(0, 1, rows, dtype=torch.float64)[:, None]
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run(layers, pts)
    return sum(seen.values())


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_no_copy_of_the_prefix_per_row(family):
    """What the backward keeps per row does not grow with the prompt: the rows share the prompt's
    key/value prefix (with a copy per row, each row would keep [kv heads, prompt, d] per block)."""
    h = tiny_handle(family)
    short, long = "the capital of france is", " ".join(["the capital of france is"] * 12)
    per_row = {p: (_saved_bytes(h, p, 24) - _saved_bytes(h, p, 8)) / 16 for p in (short, long)}
    assert per_row[long] <= per_row[short] * 1.01
    # the check has teeth: the concatenating cache keeps ~ 2 x kv x d x prompt x 8 bytes per block and row
    copied = (_saved_bytes(h, long, 24, force=False) - _saved_bytes(h, long, 8, force=False)) / 16
    assert copied > per_row[long] + h.n_layers * 2 * 8 * 50
