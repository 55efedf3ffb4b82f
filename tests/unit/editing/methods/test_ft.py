"""kneuron.editing.methods.ft: ft-m (EasyEdit's FT-M, the method "ft" was) bit for bit what the old ft computed,
"ft" still its name too; ft-l (ROME's FT-L) reads the object at the last prompt position and keeps its L∞
bound; on tiny random-weight models of every family; on smollm2-135m beside kn-opt."""
from __future__ import annotations

import pytest
import torch

from kneuron.editing import EditError, FtL, FtM, KnOpt, Rewrite, edit
from kneuron.editing.methods.ft import prompt_last
from kneuron.editing.objective import Objective, adam, batch, prefixes, work_dtype
from kneuron.errors import ConfigError
from kneuron.facts import Fact
from kneuron.models import hooks
from kneuron.models.sites import is_conv1d, value_vectors
from kneuron.models.targets import encode
from support.tiny import FAMILIES, same, snapshot, tiny_handle
from support.editing import mean_logp

pytestmark = pytest.mark.usefixtures("one_thread")

FACT = Fact("c0", "P36", "en", "france", "paris", ("the capital of [X] is [Y].", "[X] has its capital in [Y]."))
CAUSAL = [f for f, (kind, _) in FAMILIES.items() if kind == "causal"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))


def prompt(h) -> str:
    return "the capital of france is" if h.kind == "causal" else "the capital of france is [Y] ."


def weight_name(h, layer: int) -> str:
    return [k for k, p in h.model.named_parameters() if p is h.sites[layer].weight][0]


def old_ft(h, rewrite, layer, norm_bound=1e-2, lr=1e-3, steps=25, use_prefixes=False, kl_factor=0.0, stop=0.05):
    """The old ``ft`` (kneuron before ft-m / ft-l), line for line: its weight change."""
    proj = h.sites[layer]
    b = batch(h, rewrite, prefixes(h, 0) if use_prefixes else [], kl_at="last")
    obj = Objective(h, b)
    obj.reference()
    values = value_vectors(proj).detach()
    d = torch.zeros(values.shape, dtype=work_dtype(h), device=values.device, requires_grad=True)

    def add(x, out):
        return out + (x.to(d.dtype) @ d).to(out.dtype)

    def loss():
        with hooks.patch(h, proj, add, on="output", with_input=True):
            nll, kl = obj()
        total = nll + kl_factor * kl
        return total, {"loss": total.item(), "nll": nll.item(), "kl": kl.item()}

    adam([d], loss, steps, lr, lambda: d.clamp_(-norm_bound, norm_bound), stop)
    d = d.detach()
    new = (values.to(d.dtype) + d).to(values.dtype)
    return (new if is_conv1d(proj) else new.T).contiguous()


# ----------------------------------------------------------------------------- ft-m

@pytest.mark.parametrize("family", list(FAMILIES))
def test_ft_m_stays_within_its_bound_and_lowers_the_nll(family):
    h = tiny_handle(family)
    before = snapshot(h)
    p0 = mean_logp(h, prompt(h), "rome")
    e = edit(h, FACT, "rome", method="ft-m", layer=1, norm_bound=1e-2)
    name = weight_name(h, 1)
    assert [c.param for c in e.changes] == [name] and same(h, before) and e.method == "ft-m"
    with e:
        change = (h.sites[1].weight.detach() - before[name]).abs().max()
        assert 0 < change <= 1e-2 * (1 + 1e-9) and abs(float(change) - e.info["max_change"]) < 1e-12
        assert mean_logp(h, prompt(h), "rome") > p0
        assert all(torch.equal(v, before[k]) for k, v in h.model.state_dict().items() if k != name)
    assert same(h, before)
    assert e.info["layer"] == 1 and e.info["nll"] < e.info["nll_before"] and e.info["norm_bound"] == 1e-2


@pytest.mark.parametrize("family, opts", [("llama", {}), ("gpt2", {}), ("bert", {}),
                                          ("llama", {"use_prefixes": True, "kl_factor": 0.1, "steps": 4})])
def test_ft_m_is_the_old_ft_bit_for_bit_and_ft_is_its_old_name(family, opts):
    h = tiny_handle(family)
    rw = Rewrite(FACT, "rome")
    want = old_ft(h, rw, 1, **opts)
    got = edit(h, FACT, "rome", method="ft-m", layer=1, **opts)
    with pytest.warns(DeprecationWarning, match="'ft' is now 'ft-m'"):
        alias = edit(h, FACT, "rome", method="ft", layer=1, **opts)
    assert len(got.changes) == len(alias.changes) == 1
    assert torch.equal(got.changes[0].value, want) and torch.equal(alias.changes[0].value, want)
    assert {k: v for k, v in got.info.items()} == alias.info


def test_ft_m_options_and_errors():
    h = tiny_handle("llama")
    rw = Rewrite(FACT, "rome")
    e = edit(h, rw.fact, rw.new, method="ft-m", use_prefixes=True, kl_factor=0.1, steps=3)
    assert e.info["prompts"] == 11 and e.info["steps"] <= 3 and e.info["layer"] == 1     # default: depth 0.2 -> 1
    with pytest.raises(ConfigError, match="ft-m: norm_bound must be > 0"):
        edit(h, rw.fact, rw.new, method="ft-m", norm_bound=0)
    with pytest.raises(ConfigError, match="ft-l: norm_bound must be > 0"):
        FtL(norm_bound=-1)
    with pytest.raises(ConfigError, match="bound must be > 0"):
        KnOpt(bound=0)
    with pytest.raises(ConfigError, match="unknown option"):
        edit(h, rw.fact, rw.new, method="ft-m", neurons=[(0, 1)])
    with pytest.raises(EditError, match="layer"):
        edit(h, rw.fact, rw.new, method="ft-m", layer=-1)


# ----------------------------------------------------------------------------- ft-l

def test_ft_l_is_romes_ft_l():
    """ROME's / EasyEdit's GPT-2 XL FT-L hyper-parameters (hparams/FT/gpt2-xl_constr.json), causal only."""
    m = FtL()
    assert (m.layer, m.lr, m.steps, m.norm_bound, m.relative, m.bias, m.stop) == (0, 5e-4, 25, 5e-4, False, True, 1e-2)
    assert FtL.causal_only and FtL.sweeps_layer and not FtM.sweeps_layer and FtM().layer is None


def test_ft_l_reads_the_object_at_the_last_prompt_position():
    """The first logged loss is -mean_t log p(target_t) at the prompt's last position, computed here by hand
    on the unedited model; on a two-token object it differs from the teacher-forced NLL (ft-m's)."""
    h = tiny_handle("llama")
    new = "dodoma tanzania"
    tok = h.tokenizer
    ids = tok("the capital of france is")["input_ids"]
    target = tok(new, add_special_tokens=False)["input_ids"]
    assert len(target) == 2 and encode(tok, "causal", "the capital of france is", new).target_ids == target
    with torch.no_grad():
        lp = torch.log_softmax(h.model(input_ids=torch.tensor([ids])).logits[0, -1].double(), -1)
        forced = torch.log_softmax(h.model(input_ids=torch.tensor([ids + target[:1]])).logits[0].double(), -1)
    by_hand = float(-lp[target].mean())
    teacher = float(-(forced[-2, target[0]] + forced[-1, target[1]]) / 2)
    e = edit(h, FACT, new, method="ft-l", layer=1, steps=3)
    assert e.info["losses"][0] == pytest.approx(by_hand, abs=1e-10) == e.info["nll_before"]
    assert e.info["objective"] == "prompt_last" and abs(by_hand - teacher) > 1e-3
    m = edit(h, FACT, new, method="ft-m", layer=1, steps=1)
    assert m.info["nll_before"] == pytest.approx(teacher, abs=1e-10)
    b = batch(h, Rewrite(FACT, new), [], kl_at="last")
    assert b.cols.tolist() == [len(ids) - 1, len(ids)] and prompt_last(b).cols.tolist() == [len(ids) - 1] * 2


@pytest.mark.parametrize("family", CAUSAL)
def test_ft_l_keeps_its_linf_bound(family):
    """max |ΔW| ≤ ε on the weight (and on the bias, where the projection has one, as ROME trains it); the
    bound is reached (the edit moves); relative=True: ε = norm_bound x the weight's mean |w|."""
    h = tiny_handle(family)
    before = snapshot(h)
    e = edit(h, FACT, "rome", method="ft-l", layer=1, steps=5)
    proj, eps = h.sites[1], 5e-4
    assert e.info["epsilon"] == eps and same(h, before)
    with e:
        for c in e.changes:
            change = (dict(h.model.named_parameters())[c.param].detach() - before[c.param]).abs().max()
            assert 0 < change <= eps * (1 + 1e-9)
    assert [c.param for c in e.changes][0] == weight_name(h, 1)
    assert len(e.changes) == 1 + (getattr(proj, "bias", None) is not None) and e.info["max_change"] <= eps * (1 + 1e-9)
    rel = edit(h, FACT, "rome", method="ft-l", layer=1, steps=3, relative=True, norm_bound=0.01, bias=False)
    want = 0.01 * float(proj.weight.detach().abs().double().mean())
    assert rel.info["epsilon"] == pytest.approx(want, rel=1e-12) and len(rel.changes) == 1
    assert 0 < rel.info["max_change"] <= want * (1 + 1e-9)


def test_ft_l_edits_and_refuses_a_masked_model():
    h = tiny_handle("gpt2")
    p0 = mean_logp(h, prompt(h), "rome")
    e = edit(h, FACT, "rome", method="ft-l", layer=1, norm_bound=1e-2, lr=1e-2)
    assert e.info["nll"] < e.info["nll_before"] and e.info["layer"] == 1
    with e:
        assert mean_logp(h, prompt(h), "rome") > p0
    with pytest.raises(EditError, match="ft-l supports causal models only"):
        edit(tiny_handle("bert"), FACT, "rome", method="ft-l")


@pytest.mark.slow
def test_smollm2_ft_and_kn_opt():
    """smollm2-135m: FT-M's defaults flip a fact on its rewrite prompt; kn-opt on a handful of neurons lowers
    the new object's NLL."""
    from kneuron.models import load_model
    h = load_model("smollm2-135m")
    fact = Fact("P36-001", "P36", "en", "Denmark", "Copenhagen", ("The capital of [X] is [Y].",))
    rw, p = Rewrite(fact, "Taipei"), "The capital of Denmark is"
    gap = lambda: mean_logp(h, p, "Taipei") - mean_logp(h, p, "Copenhagen")  # noqa: E731
    assert gap() < 0
    with edit(h, rw.fact, rw.new, method="ft-m"):
        assert gap() > 0
    e = edit(h, rw.fact, rw.new, method="kn-opt", neurons=[(20, 10), (21, 100), (22, 7), (23, 42), (24, 3)], use_prefixes=False)
    assert e.info["nll"] < e.info["nll_before"]
