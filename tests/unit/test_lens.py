"""kneuron.lens: the logit lens, value-vector projections, the cached value-search index."""
import numpy as np
import pytest
import torch

from kneuron import load_model, suppress
from kneuron.probe import predict
from kneuron.attribution.passes import clean_pass
from kneuron.errors import ConfigError
from kneuron.facts.templates import QueryError
from kneuron.lens import greedy_continuation, logit_lens, token_id, value_index, value_tokens
from kneuron.models.sites import value_vectors
from support.tiny import tiny_handle

PROMPTS = {"causal": "the capital of france is", "masked": "the capital of france is [Y] ."}


@pytest.fixture(scope="module")
def clm():
    return load_model("organism-clm")


@pytest.mark.parametrize("family", ["gpt2", "llama", "opt", "bert", "roberta", "gemma3_text"])
def test_last_layer_after_the_mlp_is_the_models_prediction(family, one_thread):
    h = tiny_handle(family, dtype=torch.float32)
    lens = logit_lens(h, PROMPTS[h.kind], k=5)
    assert len(lens.layers) == h.n_layers and all(x.before is not None for x in lens.layers)
    top = predict(h, PROMPTS[h.kind], 5)
    assert [t for t, _ in lens.layers[-1].after] == [t for t, _ in top]
    assert np.allclose([p for _, p in lens.layers[-1].after], [p for _, p in top], atol=1e-6)


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_before_the_mlp_is_the_stream_without_its_update(family, one_thread):
    """With every neuron of layer l off (and no output bias), the MLP adds nothing: the stream after
    layer l equals the stream before its MLP."""
    h = tiny_handle(family, dtype=torch.float32)
    for s in h.sites:
        if s.bias is not None:
            s.bias.data.zero_()
    plain = logit_lens(h, PROMPTS[h.kind], k=5)
    for layer in range(h.n_layers):
        with suppress(h, [(layer, i) for i in range(h.n_neurons)]):
            off = logit_lens(h, PROMPTS[h.kind], k=5).layers[layer].after
        assert [t for t, _ in off] == [t for t, _ in plain.layers[layer].before]
        assert np.allclose([p for _, p in off], [p for _, p in plain.layers[layer].before], atol=1e-4)


def test_activations_and_updates_are_the_attribution_engines(clm):
    lens = logit_lens(clm, "The capital of Canada is")
    ids = torch.tensor([clm.tokenizer("The capital of Canada is")["input_ids"]])
    acts = clean_pass(clm, ids, [ids.shape[1] - 1]).acts[0, 0]
    assert torch.allclose(lens.activations, acts.float(), atol=1e-6)
    sizes = [s for *_, s in lens.updates]
    assert sizes == sorted(sizes, reverse=True)
    l, i, a, s = lens.updates[0]
    assert a == pytest.approx(float(acts[l, i])) and s == pytest.approx(abs(a) * float(value_vectors(clm.sites[l])[i].norm()))


def test_value_tokens_project_the_value_vector(clm):
    promoted, suppressed = value_tokens(clm, 2, 7, k=5)
    logits = clm.model.get_output_embeddings().weight @ value_vectors(clm.sites[2])[7]
    assert [clm.tokenizer.decode([int(j)]) for j in logits.topk(5).indices] == [t for t, _ in promoted]
    assert [s for _, s in suppressed] == pytest.approx(sorted(logits.tolist())[:5], rel=1e-5)
    with pytest.raises(ConfigError, match="layer 9 is out of range"):
        value_tokens(clm, 9, 0)


def test_value_index_is_built_once_and_cached(clm, tmp_path, monkeypatch):
    import kneuron.lens as lens_mod
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path))
    seen = []
    idx = value_index(clm, k=8, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(l + 1, clm.n_layers) for l in range(clm.n_layers)]
    assert idx.path.parent == tmp_path / "value-index" and idx.path.is_file()
    assert not list(idx.path.parent.glob("*.tmp"))                       # written atomically
    real, builds = lens_mod._build, []
    monkeypatch.setattr(lens_mod, "_build", lambda *a: builds.append(1) or real(*a))
    again = value_index(clm, k=8)
    assert builds == [] and np.array_equal(again.tokens, idx.tokens) and np.array_equal(again.logits, idx.logits)
    tid = token_id(clm, "Ottawa")
    hits = idx.search(tid)
    assert hits and [r for *_, r, _ in hits] == sorted(r for *_, r, _ in hits)
    layer, index, rank, logit = hits[0]
    promoted, _ = value_tokens(clm, layer, index, k=8)
    assert promoted[rank][0] == "Ottawa" and promoted[rank][1] == pytest.approx(logit, rel=1e-5)
    idx.path.write_bytes(b"torn")                                         # a damaged cache is built again,
    with pytest.warns(UserWarning, match="damaged or stale value index") as w:    # with one warning
        rebuilt = value_index(clm, k=8)
    assert len(w) == 1 and np.array_equal(rebuilt.tokens, idx.tokens) and builds == [1]


def test_greedy_continuation_and_bad_input(clm, one_thread):
    assert greedy_continuation(clm, "The capital of Canada is", 3).startswith("Ottawa")
    assert greedy_continuation(tiny_handle("bert"), PROMPTS["masked"]) is None
    with pytest.raises(QueryError, match="empty"):
        logit_lens(clm, "   ")
    with pytest.raises(QueryError, match="exactly one"):
        logit_lens(tiny_handle("bert"), "no answer mark here")
    with pytest.raises(QueryError, match="not one token"):
        token_id(clm, "Ottawa Warsaw")
