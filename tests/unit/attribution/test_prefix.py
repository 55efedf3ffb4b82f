"""kneuron.attribution.prefix: rows attending to one shared key/value prefix equal the concatenating cache
(objective and gradients), PrefixAttention's backward, the declared capability equals the run-time check, and
no copy of the prefix per row."""
import pytest
import torch
import transformers as T

from kneuron.attribution import Execution, attribute, attribute_many, kvcache
from kneuron.attribution.passes import clean_pass
from kneuron.attribution.rows import make_problem
from kneuron.attribution.runner import RowRunner
from kneuron.models import sites
from kneuron.models.targets import encode
from support.engine import EXTRA, ITEMS, any_handle, layer_rows
from support.tiny import FAMILIES, V, tiny_handle


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


def _single_prompt_rows(h, probs):
    """The largest relative difference between one prompt's rows through the shared prefix and through
    transformers' cache; None where the shared-prefix path cannot run on this model (its attention
    bypasses transformers' attention interface, which ``prefix.shared_prefix`` detects)."""
    (p, acts), = [x for x in probs if x[0].past_len >= 3][:1]
    run = RowRunner(h, p, "prob")
    layers, pts = layer_rows(h, acts, per_layer=1)
    try:
        a, b = _both(run, layers, pts, clean=[0], staircase=False)
    except RuntimeError:
        return None
    return max(_rel(x, y) for x, y in ((a.obj, b.obj), (a.grad, b.grad)))


@pytest.mark.parametrize("family", CAUSAL)
def test_shared_prefix_attention_equals_the_concatenating_cache(family):
    """Rows attending to one shared prefix (prefix.attend) give the objective and gradients of
    transformers' own cache (a concatenated copy per row): one prompt with the staircase and a clean
    row, and rows of several prompts of different lengths sharing a batch (stacked, masked prefixes)."""
    h = any_handle(family)
    if sites.declared_capability(h.model, "prefix") is False:
        pytest.skip(f"{family}: its attention bypasses transformers' attention interface (declared: the copy path)")
    probs = _problems(h, ITEMS["causal"])
    if not kvcache.growing_cache_layers(probs[0][0].past):
        pytest.skip(f"{family}: its cache is not a plain growing one (the copy path runs)")
    if _single_prompt_rows(h, probs) is None:          # not declared: this transformers' code decides
        pytest.skip(f"{family}: its attention bypasses this transformers' attention interface")
    (p, acts), = [x for x in probs if x[0].past_len >= 3][:1]
    run = RowRunner(h, p, "prob")
    layers, pts = layer_rows(h, acts, per_layer=3)
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
    h = any_handle(family)
    declared = sites.ARCHITECTURES[h.model.config.model_type]
    monkeypatch.setitem(sites.ARCHITECTURES, h.model.config.model_type, declared._replace(prefix=None))
    attribute_many(h, ITEMS["causal"][:2], steps=2, execution=Execution(batch_size=4096))   # shared batches
    attribute(h, *ITEMS["causal"][2], steps=2)           # one single-token answer: one problem, with its cache
    checked = h.capabilities.checked("prefix")
    growing = kvcache.growing_cache_layers(_problems(h, ITEMS["causal"][2:])[0][0].past)
    if not growing:
        assert checked == {}                            # never asked: the copy path is the only one
    elif declared.prefix is None:                       # the table leaves it to the check: the check's verdict
        rel = _single_prompt_rows(h, _problems(h, ITEMS["causal"]))      # is whether the path runs, exact
        assert checked == {True: rel is not None and rel < 1e-9, False: rel is not None and rel < 1e-9}
    else:
        assert checked == {True: declared.prefix, False: declared.prefix}


def test_gemma3_shared_prefix_where_its_cache_grows(monkeypatch):
    """Gemma 3's sliding-window layers keep their window's last tokens only (never shared: the copy path, see
    the table); with every layer full attention its cache is a plain growing one, and then its attention
    (query_pre_attn_scalar's scale, soft-capped logits) through the shared prefix equals the concatenating
    cache, and the declared capability is what the run-time check finds."""
    kind, make = FAMILIES["gemma3_text"]

    def full():
        cfg = make()
        cfg.layer_types = ["full_attention"] * cfg.num_hidden_layers
        return cfg
    monkeypatch.setitem(FAMILIES, "gemma3_text", (kind, full))
    h = tiny_handle("gemma3_text")
    assert h.model.config.layer_types == ["full_attention"] * 3 and h.model.config.final_logit_softcapping
    assert kvcache.growing_cache_layers(_problems(h, ITEMS["causal"][:1])[1][0].past)
    test_shared_prefix_attention_equals_the_concatenating_cache("gemma3_text")
    test_declared_shared_prefix_equals_the_run_time_check("gemma3_text", monkeypatch)


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

