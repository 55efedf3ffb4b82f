"""kneuron.editing.methods.kn: the KN family of edits (kn, kn-eai, kn-erase, likn, likn-transfer, relation erasure)
on tiny random-weight models of every family; their localisation when no neurons are given."""
from __future__ import annotations

import pytest
import torch

from kneuron.editing import EditError, KN, edit
from kneuron.editing.localize import LOCALIZE, common_neurons, fact_neurons, locate_config, relation_top_neurons
from kneuron.editing.methods import erase_relation
from kneuron.errors import ConfigError
from kneuron.facts import Fact
from kneuron.neurons import LocateConfig
from support.tiny import FAMILIES, same, snapshot, tiny_handle

FACT = Fact("c0", "P36", "en", "france", "paris", ("the capital of [X] is [Y]", "[X] capital city is [Y]"))
OTHER = Fact("c0", "P36", "zh", "france", "paris", ("[X] city is [Y]",))         # "another language" (same words)
NEURONS = [(0, 3), (2, 7), (2, 11), (1, 40)]


def one_line(err) -> bool:
    return bool(str(err.value)) and "\n" not in str(err.value)


def row(h, word: str) -> torch.Tensor:
    """The output-embedding row of a word (computed here, independently of kneuron.editing)."""
    return h.model.get_output_embeddings().weight[h.tokenizer.convert_tokens_to_ids(word)].detach().double()


def vvec(h, layer: int, i: int) -> torch.Tensor:
    """Neuron i's value vector, straight from the weight: row of GPT-2's Conv1D, column of a Linear."""
    proj = h.sites[layer]
    w = proj.weight.detach()
    return (w[i] if type(proj).__name__ == "Conv1D" else w[:, i]).double().clone()


def dai(v, e_old, e_new, l1=1.0, l2=8.0):
    return v - l1 * v.norm() / e_old.norm() * e_old + l2 * v.norm() / e_new.norm() * e_new


# ----------------------------------------------------------------------------- the kn rule, every family

@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_kn_update_is_dais_formula(family):
    h = tiny_handle(family)
    before = {n: vvec(h, *n) for n in NEURONS}
    snap = snapshot(h)
    e = edit(h, FACT, "rome", method="kn", neurons=NEURONS)
    assert not e.applied and same(h, snap)                        # computed, not applied
    assert e.info["neurons"] == NEURONS and e.info["lambda1"] == 1.0 and e.info["lambda2"] == 8.0
    with e:
        for n, v in before.items():
            want = dai(v, row(h, "paris"), row(h, "rome"))
            assert torch.allclose(vvec(h, *n), want, rtol=1e-12, atol=1e-12), (family, n)
        # nothing else moved: the other value vectors of the edited layers are as before
        for layer in {l for l, _ in NEURONS}:
            w, w0 = h.sites[layer].weight, snap_param(h, snap, layer)
            mask = torch.ones_like(w, dtype=torch.bool)
            for l, i in NEURONS:
                if l == layer:
                    mask[index_of(h, layer, i)] = False
            assert torch.equal(w[mask], w0[mask])
    assert same(h, snap)


def snap_param(h, snap, layer):
    name = next(n for n, p in h.model.named_parameters() if p is h.sites[layer].weight)
    return snap[name]


def index_of(h, layer, i):
    return (i,) if type(h.sites[layer]).__name__ == "Conv1D" else (slice(None), i)


def test_kn_multi_token_object_uses_the_mean_row():
    h = tiny_handle("gpt2")
    before = vvec(h, 2, 7)
    e = edit(h, FACT, "rome city", method="kn", neurons=[(2, 7)], lambda2=3.0)
    assert len(e.info["new_tokens"]) == 2
    with e:
        want = dai(before, row(h, "paris"), (row(h, "rome") + row(h, "city")) / 2, l2=3.0)
        assert torch.allclose(vvec(h, 2, 7), want, rtol=1e-12, atol=1e-12)


def test_kn_masked_multi_token_tokens_in_context():
    h = tiny_handle("bert")
    e = edit(h, FACT, "rome city", method="kn", neurons=[(0, 1)])
    ids = h.tokenizer.convert_tokens_to_ids
    assert e.info["object_tokens"] == [ids("paris")] and e.info["new_tokens"] == [ids("rome"), ids("city")]


# ----------------------------------------------------------------------------- kn-eai, erase, likn

@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_kn_eai_rule_and_differs_from_kn(family):
    h = tiny_handle(family)
    before = vvec(h, 2, 7)
    eai = edit(h, FACT, "rome", method="kn-eai", neurons=[(2, 7)])
    top = eai.info["top_token"]
    E = h.model.get_output_embeddings().weight.detach().double()
    with eai:
        assert torch.allclose(vvec(h, 2, 7), before - 2 * E[top] + 2 * row(h, "rome"), rtol=1e-12, atol=1e-12)
        after_eai = vvec(h, 2, 7)
    with edit(h, FACT, "rome", method="kn", neurons=[(2, 7)]):
        after_kn = vvec(h, 2, 7)
    assert not torch.allclose(after_eai, after_kn)
    # the top token is the model's own prediction before the edit
    from kneuron.attribution import attribute
    prompt = "the capital of france is [Y]" if h.kind == "masked" else "the capital of france is"
    assert h.tokenizer.decode([top]) == attribute(h, prompt, "paris", steps=1).prediction[0]


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_erase_zeroes_exactly_those_vectors(family):
    h = tiny_handle(family)
    snap = snapshot(h)
    e = edit(h, FACT, None, method="kn-erase", neurons=NEURONS)
    assert e.params_changed == len(NEURONS) * h.model.config.hidden_size
    with e:
        for n in NEURONS:
            assert torch.count_nonzero(vvec(h, *n)) == 0
        changed = [k for k, v in h.model.state_dict().items() if not torch.equal(v, snap[k])]
        assert len(changed) == 3                                 # the three layers' output projections
        for layer in (0, 1, 2):
            w0, w = snap_param(h, snap, layer), h.sites[layer].weight
            diff = (w != w0)
            cols = {i for l, i in NEURONS if l == layer}
            where = diff.nonzero()[:, 0 if type(h.sites[layer]).__name__ == "Conv1D" else 1]
            assert set(where.tolist()) <= cols
    assert same(h, snap)


def test_erase_relation_zeroes_the_top_k():
    h = tiny_handle("llama")
    sets = [[(0, 1), (1, 2)], [(0, 1), (2, 3)], [(0, 1), (1, 2), (2, 9)]]
    assert relation_top_neurons(sets, k=2) == [(0, 1), (1, 2)]
    e = erase_relation(h, sets, k=2)
    assert e.method == "kn-erase" and e.rewrite is None and e.info["neurons"] == [(0, 1), (1, 2)]
    with e:
        assert torch.count_nonzero(vvec(h, 0, 1)) == 0 and torch.count_nonzero(vvec(h, 1, 2)) == 0
        assert torch.count_nonzero(vvec(h, 2, 3)) > 0
    with pytest.raises(EditError, match="got none"):
        erase_relation(h, [])


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_likn_applies_both_languages_terms(family):
    h = tiny_handle(family)
    before = vvec(h, 1, 5)
    e = edit(h, FACT, "rome", method="likn", other=OTHER, other_new="madrid", neurons=[(1, 5)])
    assert e.info["langs"] == ["en", "zh"] and e.info["neurons"] == [(1, 5)]
    v, n = before, before.norm()
    want = (v - n * row(h, "paris") / row(h, "paris").norm() + 8 * n * row(h, "rome") / row(h, "rome").norm()
            - n * row(h, "paris") / row(h, "paris").norm() + 8 * n * row(h, "madrid") / row(h, "madrid").norm())
    with e:
        assert torch.allclose(vvec(h, 1, 5), want, rtol=1e-12, atol=1e-12)


def test_likn_localizes_the_intersection_and_empty_is_no_change():
    h = tiny_handle("gpt2")
    e = edit(h, FACT, "rome", method="likn", other=OTHER, other_new="madrid",
             localize={"steps": 2, "threshold": 0.1})
    mine, theirs = e.info["neurons_en"], e.info["neurons_zh"]
    assert e.info["localized"] and e.info["neurons"] == sorted(set(mine) & set(theirs))
    assert mine == fact_neurons(h, FACT, locate_config(steps=2, threshold=0.1))
    empty = edit(h, FACT, "rome", method="likn", other=OTHER, other_new="madrid", neurons=[])
    assert empty.changes == [] and "no language-independent neurons" in empty.info["note"]
    with empty:
        pass
    with pytest.raises(EditError, match="another language") as err:
        edit(h, FACT, "rome", method="likn", other=FACT, other_new="madrid", neurons=[])
    assert one_line(err)
    with pytest.raises(EditError, match="needs other_new"):
        edit(h, FACT, "rome", method="likn", other=OTHER, neurons=[])


# ----------------------------------------------------------------------------- likn-transfer

OTHER_B = Fact("c0", "P36", "zh", "francia", "parigi", ("[X] la ville est [Y]", "en [X] la capitale [Y]"))  # same id


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_likn_transfer_writes_the_edit_languages_terms_only(family):
    h = tiny_handle(family)
    before = vvec(h, 1, 5)
    e = edit(h, FACT, "rome", method="likn-transfer", other=OTHER, neurons=[(1, 5)])
    assert e.method == "likn-transfer" and e.info["langs"] == ["en"] and "other_new" not in e.info
    both = edit(h, FACT, "rome", method="likn", other=OTHER, other_new="madrid", neurons=[(1, 5)])
    with e:
        got = vvec(h, 1, 5)
        assert torch.allclose(got, dai(before, row(h, "paris"), row(h, "rome")), rtol=1e-12, atol=1e-12)
    with both:
        assert not torch.allclose(vvec(h, 1, 5), got)           # likn adds the other language's terms too


def test_likn_transfer_value_is_blind_to_the_other_language():
    """With the neurons fixed, the other language's fact (its prompts, object, subject) changes nothing of
    what is written, bit for bit; other_new is not an option it takes."""
    h = tiny_handle("gpt2")
    runs = [edit(h, FACT, "rome", method="likn-transfer", other=o, neurons=NEURONS) for o in (OTHER, OTHER_B, None)]
    for e in runs[1:]:
        assert [c.param for c in e.changes] == [c.param for c in runs[0].changes]
        assert all(torch.equal(a.value, b.value) for a, b in zip(e.changes, runs[0].changes))
    with pytest.raises(ConfigError, match="unknown option.*other_new") as err:
        edit(h, FACT, "rome", method="likn-transfer", other=OTHER, other_new="madrid", neurons=NEURONS)
    assert one_line(err)


def test_likn_transfer_objective_sees_no_other_language_prompt(monkeypatch):
    """Localised here: the neurons come from both languages, but every prompt the value is computed on
    (kn's token ids, in context) is one of the edit language's."""
    import kneuron.editing.localize as loc
    import kneuron.editing.methods.kn as kn
    seen, located = [], []
    enc = kn.encode

    def spy_encode(tok, kind, prompt, target):
        seen.append(prompt)
        return enc(tok, kind, prompt, target)

    def spy_neurons(handle, fact, **kw):
        located.append(fact.key)
        return {"en": [(0, 1), (1, 2), (2, 9)], "zh": [(1, 2), (2, 3), (2, 9)]}[fact.lang]
    monkeypatch.setattr(kn, "encode", spy_encode)
    monkeypatch.setattr(loc, "fact_neurons", spy_neurons)
    h = tiny_handle("gpt2")
    e = edit(h, FACT, "rome", method="likn-transfer", other=OTHER_B)
    assert located == [FACT.key, OTHER_B.key]                       # both languages localised
    assert e.info["neurons"] == [(1, 2), (2, 9)] and e.info["neuron_langs"] == ["en", "zh"]   # the intersection
    assert e.info["neurons_en"] == [(0, 1), (1, 2), (2, 9)] and e.info["localized"]
    en_prompts = {q.prompt for q in FACT.queries(h.kind)}
    assert seen and set(seen) <= en_prompts
    assert not any("francia" in p for p in seen)
    # another other-language fact with the same localisation: the same value, bit for bit
    again = edit(h, FACT, "rome", method="likn-transfer", other=OTHER)
    assert all(torch.equal(a.value, b.value) for a, b in zip(again.changes, e.changes))


def test_likn_transfer_errors_are_one_line():
    h = tiny_handle("gpt2")
    with pytest.raises(EditError, match="likn-transfer needs other=") as err:       # nothing to localise with
        edit(h, FACT, "rome", method="likn-transfer")
    assert one_line(err)
    with pytest.raises(EditError, match="another language") as err:
        edit(h, FACT, "rome", method="likn-transfer", other=FACT, neurons=NEURONS)
    assert one_line(err)
    empty = edit(h, FACT, "rome", method="likn-transfer", other=OTHER, neurons=[])
    assert empty.changes == [] and "no language-independent neurons" in empty.info["note"]


# ----------------------------------------------------------------------------- neurons: common filter, localisation

def test_common_neurons_are_excluded():
    sets = [[(0, 1), (1, 2)], [(0, 1)], [(0, 1), (2, 3)]] + [[(2, 2)]] * 7       # 10 facts
    common = common_neurons(sets, share=0.1)
    assert common == {(0, 1), (2, 2)}                      # 3 > 1 and 7 > 1; (1, 2), (2, 3): once each, kept
    h = tiny_handle("gpt2")
    snap = snapshot(h)
    e = edit(h, FACT, "rome", method="kn", neurons=[(0, 1), (1, 2), (2, 2)], common=common)
    assert e.info["neurons"] == [(1, 2)] and e.info["filtered"] == [(0, 1), (2, 2)] and e.info["common_filter"]
    with e:
        assert torch.equal(vvec(h, 0, 1), snap_vec(snap, h, 0, 1))
        assert not torch.equal(vvec(h, 1, 2), snap_vec(snap, h, 1, 2))


def snap_vec(snap, h, layer, i):
    return snap_param(h, snap, layer)[index_of(h, layer, i)].double()


def test_kn_localizes_when_no_neurons_given():
    h = tiny_handle("bert")
    e = edit(h, FACT, "rome", method="kn", localize={"steps": 2})
    assert e.info["localized"] and e.info["neurons"] == fact_neurons(h, FACT, locate_config(steps=2))
    assert e.seconds > 0 and e.info["localize"] == {**LOCALIZE.record(), "steps": 2, "max_prompts": None}
    assert e.info["common_filter"] is False and e.info["filtered"] == []
    typed = edit(h, FACT, "rome", method=KN(localize=LocateConfig(steps=2, rule="midpoint")))   # the same, typed
    assert typed.info == e.info and all(torch.equal(a.value, b.value) for a, b in zip(typed.changes, e.changes))
    assert locate_config(steps=2) == LocateConfig(steps=2, rule="midpoint") == locate_config({"steps": 2})


# ----------------------------------------------------------------------------- undo, save, errors

METHOD_CASES = {"kn": ("rome", {}), "kn-eai": ("rome", {}), "kn-erase": (None, {}),
                "likn": ("rome", {"other": OTHER, "other_new": "madrid"}), "likn-transfer": ("rome", {"other": OTHER})}


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
@pytest.mark.parametrize("method", sorted(METHOD_CASES))
def test_undo_restores_every_bit(family, method):
    h = tiny_handle(family)
    snap = snapshot(h)
    new, opts = METHOD_CASES[method]
    e = edit(h, FACT, new, method=method, neurons=NEURONS, **opts)
    e.apply()
    assert not same(h, snap)
    e.undo()
    assert same(h, snap)
    with e:
        assert not same(h, snap)
    assert same(h, snap)
    with pytest.raises(RuntimeError):
        with e:
            raise RuntimeError("boom")
    assert same(h, snap) and not e.applied


def test_erase_relation_undo_bit_exact():
    h = tiny_handle("gpt2")
    snap = snapshot(h)
    with erase_relation(h, [NEURONS, NEURONS[:2]], k=3):
        assert not same(h, snap)
    assert same(h, snap)


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_save_gives_the_edited_predictions(family, tmp_path):
    from kneuron.models import load_model
    h = tiny_handle(family)
    e = edit(h, FACT, "rome", method="kn", neurons=NEURONS)
    d = e.save(tmp_path / "m")
    ids = h.tokenizer("the capital of france is [MASK]" if h.kind == "masked" else "the capital of france is",
                      return_tensors="pt")["input_ids"]
    loaded = load_model(str(d), dtype="auto")
    with torch.no_grad():
        plain = h.model(input_ids=ids).logits
        with e:
            edited = h.model(input_ids=ids).logits
        got = loaded.model(input_ids=ids).logits
    assert torch.equal(got, edited) and not torch.allclose(plain, edited)
    with pytest.raises(EditError, match="not an empty directory") as err:
        e.save(d)
    assert one_line(err)


def test_errors_are_one_line():
    h = tiny_handle("gpt2")
    with pytest.raises(EditError, match="equals the fact's object") as err:
        edit(h, FACT, "paris", method="kn", neurons=NEURONS)
    assert one_line(err)
    with pytest.raises(EditError, match=r"fact c0 \(en\).*new.*cannot be encoded") as err:
        edit(h, FACT, "tokyo", method="kn", neurons=NEURONS)              # not in the tiny vocabulary
    assert one_line(err)
    bad_object = Fact("c9", "P36", "en", "france", "tokyo", FACT.templates)
    with pytest.raises(EditError, match=r"fact c9 \(en\).*object.*cannot be encoded") as err:
        edit(h, bad_object, "rome", method="kn", neurons=NEURONS)
    assert one_line(err)
    with pytest.raises(ConfigError, match="unknown editing method") as err:
        edit(h, FACT, "rome", method="kn-nope")
    assert one_line(err)
    with pytest.raises(ConfigError, match="unknown option") as err:
        edit(h, FACT, "rome", method="kn", neurons=NEURONS, lamda2=3)
    assert one_line(err)
    with pytest.raises(EditError, match="outside") as err:
        edit(h, FACT, "rome", method="kn", neurons=[(9, 0)])
    assert one_line(err)
    masked_only = Fact("c0", "P36", "en", "france", "paris", ("[Y] is the capital of [X]",))
    with pytest.raises(EditError, match="no template usable") as err:
        edit(h, masked_only, "rome", method="kn", neurons=NEURONS)
    assert one_line(err)


@pytest.mark.slow
def test_smollm2_kn_edit_tokens_in_context_and_cost():
    """On smollm2-135m: the answer tokens carry GPT-2-style leading spaces, and kn with its localisation
    stays within seconds (measured: ~3 s of one core for this 2-prompt fact)."""
    from kneuron.models import load_model
    h = load_model("smollm2-135m")
    fact = Fact("P36-000", "P36", "en", "France", "Paris", ("The capital of [X] is [Y].", "The capital city of [X] is [Y]."))
    e = edit(h, fact, "Rome", method="kn")
    assert e.info["new_tokens"] == h.tokenizer(" Rome", add_special_tokens=False)["input_ids"]
    assert e.info["object_tokens"] == h.tokenizer(" Paris", add_special_tokens=False)["input_ids"]
    assert e.info["neurons"] and e.seconds > 0            # the cost is measured in BENCHMARKS.md, not here
    snap = snapshot(h)
    with e:
        pass
    assert same(h, snap)


def test_kn_rewrite_prompts_localize_on_the_first_prompt_only(monkeypatch):
    """prompts="rewrite" (the API side of the bench's --localize-prompts): the fact's first prompt (a record's
    edit_fact puts its rewrite prompt there) is the only one attributed; the info says max_prompts 1; a
    contradicting max_prompts or another value is a one-line ConfigError."""
    import kneuron.neurons as nrn
    seen: list[str] = []
    real = nrn.attribute_many

    def spy(handle, pairs, **kw):
        seen.extend(p for p, _ in pairs)
        return real(handle, pairs, **kw)
    monkeypatch.setattr(nrn, "attribute_many", spy)
    h = tiny_handle("gpt2")
    e = edit(h, FACT, "rome", method="kn", prompts="rewrite", localize={"steps": 2})
    assert seen == ["the capital of france is"] and e.info["localize"]["max_prompts"] == 1
    assert e.info["neurons"] == fact_neurons(h, FACT, locate_config(steps=2), max_prompts=1)
    seen.clear()
    edit(h, FACT, "rome", method="likn", other=OTHER, other_new="madrid", prompts="rewrite", localize={"steps": 2})
    assert seen == ["the capital of france is", "france city is"]
    for bad, msg in (({"prompts": "paraphrase"}, "must be rewrite or all"),
                     ({"prompts": "rewrite", "max_prompts": 2}, "contradicts")):
        with pytest.raises(ConfigError, match=msg) as err:
            KN(**bad)
        assert one_line(err)
