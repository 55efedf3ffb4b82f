"""kneuron.attribution.api: attribute() equals the plain slow reference, for every family and method, whatever
the batching, caches and rules; completeness; out-of-memory backs off; settings by keyword only."""
import pytest
import torch

from kneuron.attribution import AMIG, Attribution, Execution, IG, attribute
from kneuron.errors import ConfigError
from support.reference import reference_attribute
from support.tiny import FAMILIES, tiny_handle


def _prompt(h):
    return "the capital of france is" if h.kind == "causal" else "the capital of france is [Y] ."


def _close(fast, ref):
    ref = ref.double()
    err = (fast.double() - ref).abs().max() / ref.abs().max()
    assert err < 1e-5, f"relative error {err:.2e}"


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("method", ["ig", "amig"])
def test_fast_equals_reference_multi_token(family, method):
    h = tiny_handle(family)
    fast = attribute(h, _prompt(h), "paris rome", method=method, steps=3, execution=Execution(batch_size=5))
    ref = reference_attribute(h, _prompt(h), "paris rome", method=method, steps=3)
    assert fast.scores.shape == (h.n_layers, h.n_neurons)
    assert len(fast.target_ids) == 2
    _close(fast.scores, ref)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "opt", "gemma3_text"])
@pytest.mark.parametrize("objective", ["prob", "logprob"])
def test_amig_options_equal_reference(family, objective):
    h = tiny_handle(family)
    fast = attribute(h, _prompt(h), "paris", method=AMIG(paths="per-word", prefactor="difference"), steps=4,
                     rule="gauss", objective=objective)
    ref = reference_attribute(h, _prompt(h), "paris", method="amig", steps=4, rule="gauss", objective=objective,
                              paths="per-word", prefactor_kind="difference")
    _close(fast.scores, ref)


@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2", "llama", "opt", "gemma3_text"])
@pytest.mark.parametrize("rule", ["linspace", "right", "trapezoid"])
@pytest.mark.slow
def test_rules_with_nodes_at_0_and_1_equal_reference(family, rule):
    """Nodes at alpha = 1 come from one shared unpatched row, nodes at 0 double as F(baseline)."""
    h = tiny_handle(family)
    for method, opts in ((IG(), {}), (AMIG(paths="per-word", prefactor="difference"),
                                      dict(paths="per-word", prefactor_kind="difference"))):
        fast = attribute(h, _prompt(h), "paris rome", method=method, steps=4, rule=rule,
                         execution=Execution(batch_size=5))
        ref = reference_attribute(h, _prompt(h), "paris rome", method=method.name, steps=4, rule=rule, **opts)
        _close(fast.scores, ref)
        if method.name == "amig" and rule != "right":
            slow = attribute(h, _prompt(h), "paris rome", method=method, steps=4, rule=rule,
                             execution=Execution(prefix_cache=False, replay=False))
            _close(fast.delta, slow.delta)                 # F(baseline) from node 0 = from the extra row
    no_cache = attribute(h, _prompt(h), "paris", method="ig", steps=4, rule=rule,
                         execution=Execution(prefix_cache=False))
    _close(no_cache.scores, attribute(h, _prompt(h), "paris", method="ig", steps=4, rule=rule).scores)


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert", "gemma3_text"])
def test_batching_cache_and_replay_do_not_change_scores(family):
    h = tiny_handle(family)
    base = attribute(h, _prompt(h), "paris rome", method="amig", steps=4, execution=Execution(batch_size=1000))
    for kw in (dict(batch_size=1), dict(batch_size=7, replay=False), dict(batch_size=3, prefix_cache=False)):
        other = attribute(h, _prompt(h), "paris rome", method="amig", steps=4, execution=Execution(**kw))
        _close(other.scores, base.scores)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_completeness_with_proper_prefactor(family):
    """sum of a layer's IG scores = F(activation) - F(baseline); < 1% at 50 steps."""
    h = tiny_handle(family)
    ig = attribute(h, _prompt(h), "paris rome", method="ig", steps=50, rule="midpoint")
    amig = attribute(h, _prompt(h), "paris", method=AMIG(prefactor="difference"), steps=50, rule="midpoint")
    assert ig.completeness < 0.01 and amig.completeness < 0.01
    assert ig.delta.abs().sum() > 0
    # the paper's prefactor (activation, not activation - baseline) is not IG: no completeness
    assert attribute(h, _prompt(h), "paris", method="amig", steps=2).completeness is None


def test_completeness_residual_is_measured_not_assumed():
    h = tiny_handle("gptj")
    coarse = attribute(h, _prompt(h), "paris rome", method="ig", steps=2, rule="left")
    fine = attribute(h, _prompt(h), "paris rome", method="ig", steps=50, rule="midpoint")
    assert coarse.completeness > 10 * fine.completeness


def test_out_of_memory_backs_off(monkeypatch):
    from kneuron.attribution.runner import RowRunner
    h = tiny_handle("llama")
    ref = attribute(h, _prompt(h), "paris", steps=4, execution=Execution(batch_size=64))
    real, sizes = RowRunner.__call__, []

    def flaky(self, layers, points, *a, **kw):
        sizes.append(len(layers))
        if len(layers) > 5:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, layers, points, *a, **kw)
    monkeypatch.setattr(RowRunner, "__call__", flaky)
    got = attribute(h, _prompt(h), "paris", steps=4, execution=Execution(batch_size=64))
    assert sizes[:3] == [12, 6, 3]       # 3 layers x 4 steps (the left rule's node 0 gives F(baseline)), halved
    _close(got.scores, ref.scores)


def test_top_and_prob():
    h = tiny_handle("gpt2")
    a = attribute(h, _prompt(h), "paris rome", steps=2)
    assert a.prob == pytest.approx(a.token_probs[0] * a.token_probs[1])
    top = a.top(5)
    assert [s for _, _, s in top] == sorted([s for _, _, s in top], reverse=True)
    assert top[0][2] == pytest.approx(float(a.scores.max()))
    with pytest.raises(ValueError, match="unknown method"):
        attribute(h, _prompt(h), "paris", method="nope")


def test_attribute_takes_settings_by_keyword_only():
    h = tiny_handle("gpt2")
    with pytest.raises(TypeError):
        attribute(h, _prompt(h), "paris", "amig")                 # noqa: the method is keyword-only
    by_name = attribute(h, _prompt(h), "paris", method="amig", steps=2)
    by_object = attribute(h, _prompt(h), "paris", method=AMIG(), steps=2)
    assert torch.equal(by_name.scores, by_object.scores) and by_name.params == by_object.params
    per_word = attribute(h, _prompt(h), "paris", method=AMIG(paths="per-word"), steps=2)
    assert per_word.params["paths"] == "per-word" and not torch.equal(per_word.scores, by_name.scores)
    for bad, needle in ((dict(steps=0), "steps"), (dict(rule="nope"), "rule"), (dict(objective="nope"), "objective")):
        with pytest.raises(ConfigError, match=needle):
            attribute(h, _prompt(h), "paris", **bad)
    for bad, needle in ((dict(batch_size=0), "batch-size"), (dict(prompts_per_batch=0), "prompts-per-batch"),
                        (dict(precision="int8"), "precision")):
        with pytest.raises(ConfigError, match=needle):
            Execution(**bad)



@pytest.mark.parametrize("method", [IG(), AMIG(prefactor="difference")])
def test_an_attribution_saves_and_loads_equal(tmp_path, method):
    """save -> load gives back every field: the scores and delta bit for bit, the rest as it was."""
    h = tiny_handle("gpt2")
    a = attribute(h, _prompt(h), "paris rome", method=method, steps=3)
    assert a.delta is not None                                  # a proper prefactor: delta and completeness set
    b = Attribution.load(a.save(tmp_path / "a.safetensors"))
    assert torch.equal(a.scores, b.scores) and torch.equal(a.delta, b.delta)
    for f in ("prob", "token_probs", "target_ids", "method", "params", "completeness", "prediction"):
        assert getattr(a, f) == getattr(b, f), f
    assert not list(tmp_path.glob("*.tmp"))                     # written atomically: no temp file left


def test_loading_what_is_not_a_saved_attribution_is_one_line(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"not safetensors")
    from safetensors.torch import save_file                     # ours in name, a field missing
    save_file({"scores": torch.zeros(2, 2)}, str(tmp_path / "y.safetensors"),
              metadata={"kneuron.attribution": '{"prob": 0.5}'})
    for p in (tmp_path / "x.safetensors", tmp_path / "missing.safetensors", tmp_path / "y.safetensors"):
        with pytest.raises(ConfigError, match="not a saved Attribution") as e:
            Attribution.load(p)
        assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- steps="auto"

@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_auto_steps_meet_the_tolerance_with_the_fewest_doublings(family):
    """steps="auto" doubles the nodes from 8 until the completeness residual is under the tolerance: the
    scores are the reference IG's at the steps it stopped at, its residual is under the tolerance and the
    half as many nodes were not (unless it stopped at 8)."""
    from kneuron.attribution.api import AUTO_START
    h = tiny_handle(family)
    for tol in (0.05, 3e-4):                        # tiny models: about 1e-3 at 8 nodes, halved per doubling
        a = attribute(h, _prompt(h), "paris", method="ig", steps="auto", tolerance=tol)
        n = a.params["steps"]
        assert a.params["steps_auto"]["tolerance"] == tol and n >= AUTO_START and a.residual < tol
        assert a.residual == pytest.approx(a.completeness, rel=1e-6, abs=1e-12)   # IG: the same number
        _close(a.scores, reference_attribute(h, _prompt(h), "paris", method="ig", steps=n))
        if n > AUTO_START:
            assert attribute(h, _prompt(h), "paris", method="ig", steps=n // 2).completeness >= tol
    assert attribute(h, _prompt(h), "paris", method="ig", steps="auto", tolerance=3e-4).params["steps"] > AUTO_START


def test_auto_steps_measure_amigs_path_residual_and_refuse_what_has_no_path():
    h = tiny_handle("gpt2")
    a = attribute(h, _prompt(h), "paris rome", method="amig", steps="auto", tolerance=0.01)
    assert a.completeness is None and a.residual is not None and a.residual < 0.01     # activation prefactor
    proper = attribute(h, _prompt(h), "paris", method=AMIG(prefactor="difference"), steps=8)
    assert proper.residual == pytest.approx(proper.completeness, rel=1e-6)
    for bad, match in ((dict(method="actgrad", steps="auto"), "path methods"), (dict(steps="many"), "'auto'"),
                       (dict(steps="auto", tolerance=0), "tolerance")):
        with pytest.raises(ConfigError, match=match) as err:
            attribute(h, _prompt(h), "paris", **bad)
        assert "\n" not in str(err.value)
