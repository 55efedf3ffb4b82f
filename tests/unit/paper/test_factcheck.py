"""kneuron.paper.factcheck: fact-checking beside baselines. The held-out AUROC and its interval against the
rank formula and a bootstrap over facts by hand; the relation split's disjointness; the probe fit on
training items only (a spy on fit_probe) and its layer chosen on validation; every scorer on both splits,
in memory and over a tiny locate run (dkn there is Table 3's dkn row); the result's round trip."""
import json
import math

import numpy as np
import pytest
import torch

import kneuron.paper.factcheck as fc
from kneuron import LocateConfig, load_facts, locate
from kneuron.errors import ConfigError
from kneuron.facts import Fact, fact_file_hash
from kneuron.paper.factcheck import (SCORERS, FactCheckBaselines, RelationSplit, auroc_interval, check_held_out,
                                     choose_layer, fact_check_beside, factcheck_from_run, fit_probe, plan_check,
                                     result, split_relations)
from kneuron.paper.table3 import Item, fact_check, table3_from_run
from kneuron.report.stats import auroc, best_threshold, paired_auroc
from kneuron.runs.store import RunStoreError
from support.tiny import tiny_handle


def mann_whitney(labels, scores) -> float:
    """AUROC by its definition: over every (positive, negative) pair, 1 when the positive is above, 1/2 tied."""
    pos = [s for y, s in zip(labels, scores) if y]
    neg = [s for y, s in zip(labels, scores) if not y]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def _facts(n_rel=5, n=6):
    return [Fact(f"r{r}-{i}", f"R{r}", "en", f"s{r}{i}", f"o{r}{i}", ("[X] is [Y].",), wrong_objects=(f"w{r}{i}",))
            for r in range(n_rel) for i in range(n)]


# ----------------------------------------------------------------------------- AUROC and its interval

def test_paired_auroc_is_the_rank_formula_ties_included():
    pos = np.array([[3.0, 2.0, 2.0, -math.inf], [1.0, 1.0, 1.0, 1.0]])
    neg = np.array([[1.0, 3.0, 2.0, -math.inf], [1.0, 0.0, 2.0, 1.0]])
    got = paired_auroc(pos, neg)
    for r in range(2):
        y, s = [1] * 4 + [0] * 4, list(pos[r]) + list(neg[r])
        assert got[r] == pytest.approx(mann_whitney(y, s)) == pytest.approx(auroc(y, s))
    assert got[0] == pytest.approx((3.5 + 2.5 + 2.5 + 0.5) / 16)      # per positive; ties count one half
    assert math.isnan(paired_auroc([1.0, math.nan], [0.0, 0.0]))


def _pairs(pos, neg):
    items, scores = [], []
    for i, (p, n) in enumerate(zip(pos, neg)):
        f = Fact(f"f{i}", "R", "en", "s", "o", ("[X] is [Y].",))
        items += [Item(f, "o", 1, "w"), Item(f, "w", 0, "o")]
        scores += [p, n]
    return items, scores


def test_held_out_auroc_and_its_interval_resample_facts():
    pos, neg = [0.9, 0.5, 0.5, 0.2, 0.7, 0.1], [0.1, 0.5, 0.6, 0.3, 0.2, 0.1]
    items, scores = _pairs(pos, neg)
    r = result(items, list(range(12)), list(range(12)), lambda _, idx: [scores[i] for i in idx], n_boot=500, seed=3)
    labels = [it.label for it in items]
    assert r.auroc == pytest.approx(mann_whitney(labels, scores))
    # the interval by hand: facts (a true and a wrong score together) drawn with numpy's seeded generator
    idx = np.random.default_rng(3).integers(0, 6, (500, 6))
    boot = paired_auroc(np.array(pos)[idx], np.array(neg)[idx])
    assert (r.auroc_low, r.auroc_high) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])))
    assert auroc_interval(items, scores, 500, 3) == pytest.approx((r.auroc_low, r.auroc_high))
    assert (r.threshold, r.val_f1) == best_threshold(labels, scores) and r.n_test_items == 12   # tuned on "val"


# ----------------------------------------------------------------------------- the relation split

def test_relation_split_is_disjoint_seeded_and_complete():
    fs = _facts(10, 2)
    sp = split_relations(fs, seed=42)
    tr, va, te = set(sp.train), set(sp.val), set(sp.test)
    assert len(te) == 2 and len(va) == 2 and len(tr) == 6
    assert not (tr & va or tr & te or va & te) and tr | va | te == {f.relation for f in fs}
    assert split_relations(fs, seed=42) == sp and split_relations(fs, seed=7) != sp
    parts = sp.facts(fs)
    assert {f.relation for f in parts.fit} == tr and {f.relation for f in parts.test} == te
    assert len(parts.fit) + len(parts.val) + len(parts.test) == len(fs)
    with pytest.raises(AssertionError, match="overlaps"):
        RelationSplit(("R1", "R2"), ("R2",), ("R3",))
    with pytest.raises(ConfigError, match="2 relations leave none to train on"):
        split_relations(_facts(2, 3))
    assert "no relations split" in plan_check(_facts(2, 3), {}, {}, {}).notes[0]


# ----------------------------------------------------------------------------- the probe

def _features(items, informative=True):
    """[n, 3 layers, 3]: feature 0 is the item's index (so a spy can tell which items a probe saw), feature 1
    the label (layer 2 only, if informative), feature 2 a fixed jitter."""
    x = torch.zeros(len(items), 3, 3, dtype=torch.float64)
    for i, it in enumerate(items):
        x[i, :, 0] = i
        x[i, :, 2] = ((i * 7919) % 13) / 13
        if informative:
            x[i, 2, 1] = it.label
    return x.float()


def _synthetic(facts):
    """A model whose true objects score 1 on neuron (0, 0) and wrong ones 0; log p follows the label."""
    def attr(item):
        s = torch.zeros(2, 4)
        s[0, 0] = float(item.label)
        s[1, 1] = 0.5
        return s
    return attr, lambda item: (math.log(0.6 if item.label else 0.3), bool(item.label))


def _inputs(fs):
    dkn = {f.key: [[(0, 0), (1, 1)]] for f in fs}
    kn = {f.key: [[(0, 0), (1, 2)]] for f in fs}
    return dkn, kn, {f.key: f.wrong_objects[0] for f in fs}


def test_the_probe_trains_on_training_items_only(monkeypatch):
    fs = _facts(5, 6)
    dkn, kn, wrong = _inputs(fs)
    seen = []
    real = fc.fit_probe
    monkeypatch.setattr(fc, "fit_probe", lambda x, y, layer, *a, **k: (seen.append(x[:, 0].round().int().tolist()),
                                                                       real(x, y, layer, *a, **k))[1])
    attr, prob = _synthetic(fs)
    plan, res = fact_check_beside(fs, dkn, kn, wrong, attr, prob, _features, n_boot=20)
    assert len(seen) == 2 * 3                                  # one probe per layer, per split
    for k, name in enumerate(("facts", "relations")):
        sp = plan.splits[name]
        train = sorted(i for i, it in enumerate(plan.items) if it.fact in sp.fit)
        for rows in seen[3 * k:3 * k + 3]:
            assert sorted(rows) == train                           # exactly the training items
            held = {f.key for f in sp.val + sp.test}
            assert not any(plan.items[i].fact.key in held for i in rows)
        assert sorted(res[name].ids["train"]) == sorted(f.id for f in sp.fit)
    rel = plan.relations
    trained = {plan.items[i].fact.relation for i in seen[3]}
    assert trained == set(rel.train) and not trained & (set(rel.val) | set(rel.test))
    assert res["relations"].relations == {"train": list(rel.train), "val": list(rel.val), "test": list(rel.test)}
    # the guard itself refuses a leak
    leak = [it for it in plan.items if it.fact.relation == rel.test[0]][:1]
    with pytest.raises(AssertionError, match="held out"):
        check_held_out("relations", plan.splits["relations"], leak)


def test_the_layer_is_chosen_on_validation_never_on_test():
    """Layer 0 separates train and test but is inverted on validation; layer 1 separates train and
    validation but is inverted on test: validation must pick layer 1 (the test then scores low)."""
    y = [1, 0] * 12
    train, val, test = list(range(0, 8)), list(range(8, 16)), list(range(16, 24))
    x = torch.zeros(24, 2, 2)
    gen = torch.Generator().manual_seed(0)
    x[:, :, 1] = torch.rand(24, 2, generator=gen) * 0.1                 # noise
    for i, lab in enumerate(y):
        sign = {0: -1.0 if i in val else 1.0, 1: -1.0 if i in test else 1.0}
        for layer in (0, 1):
            x[i, layer, 0] = sign[layer] * (lab - 0.5)
    probe, aucs = choose_layer(x, y, train, val)
    assert probe.layer == 1 and aucs[1] == 1.0 and aucs[0] == 0.0
    poisoned = x.clone()
    poisoned[test] = -poisoned[test] + 3.0                               # the test rows cannot move the choice
    again, aucs2 = choose_layer(poisoned, y, train, val)
    assert again.layer == 1 and aucs2 == aucs and torch.equal(again.weight, probe.weight)
    test_auc = auroc([y[i] for i in test], probe.score(x[test, 1]))
    assert test_auc == 0.0


def test_the_probe_is_deterministic_and_standardised_on_training_rows():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(40, 5, generator=gen) * torch.tensor([1.0, 10.0, 0.1, 3.0, 0.0]) + 4.0
    y = [int(v > 4.0) for v in x[:, 0]]
    a, b = fit_probe(x[:30], y[:30], 0), fit_probe(x[:30], y[:30], 0)
    assert torch.equal(a.weight, b.weight) and a.bias == b.bias
    assert torch.allclose(a.mean, x[:30].double().mean(0)) and torch.allclose(a.std[:4], x[:30, :4].double().std(0, unbiased=False))
    assert a.std[4] == 1.0                                                  # a constant feature is left as it is
    assert auroc(y[30:], a.score(x[30:])) == 1.0


# ----------------------------------------------------------------------------- every scorer, both splits

def test_every_scorer_on_both_splits_and_dkn_is_table3s():
    fs = _facts(5, 6)
    dkn, kn, wrong = _inputs(fs)
    attr, prob = _synthetic(fs)
    plan, res = fact_check_beside(fs, dkn, kn, wrong, attr, prob, _features, n_boot=50)
    for name in ("facts", "relations"):
        sc = res[name].scorers
        assert set(sc) == set(SCORERS) and all(sc[s] is not None for s in SCORERS)
        assert sc["dkn"].auroc == 1.0 and sc["logp"].auroc == 1.0 and sc["dkn"].f1 == 1.0
        assert sc["kn"].auroc == 1.0                 # (0, 0) is in the KN sets too
        assert sc["probe"].tuned["layer"] == 2 and sc["probe"].auroc == 1.0
        assert sc["dkn"].auroc_low <= sc["dkn"].auroc <= sc["dkn"].auroc_high
    t3 = fact_check(fs, dkn, wrong, attr, prob)
    f = res["facts"]
    assert f.ids["test"] == t3["test_ids"] and f.ids["val"] == t3["val_ids"]
    assert f.scorers["dkn"].tuned["t"] == t3["tuned"]["t"] and f.scorers["dkn"].threshold == t3["tuned"]["lambda"]
    assert f.scorers["dkn"].auroc == t3["dkn"]["auroc"] and f.scorers["dkn"].f1 == t3["dkn"]["f1"]
    # without the label feature the probe is not perfect: the 1.0 above comes from the features, not a leak
    _, flat = fact_check_beside(fs, dkn, kn, wrong, attr, prob, lambda items: _features(items, False), n_boot=20)
    assert flat["relations"].scorers["probe"].auroc != 1.0


def test_a_result_round_trips(tmp_path):
    fs = _facts(5, 6)
    dkn, kn, wrong = _inputs(fs)
    attr, prob = _synthetic(fs)
    plan, res = fact_check_beside(fs, dkn, kn, wrong, attr, prob, _features, n_boot=20)
    r = FactCheckBaselines("en", "amig", 2, 42, 20, res, plan.notes)
    assert FactCheckBaselines.from_json(r.to_json()) == r
    assert r.save(tmp_path) == tmp_path / "factcheck-en.json"
    assert FactCheckBaselines.load(tmp_path, "en") == r
    with pytest.raises(RunStoreError) as e:
        FactCheckBaselines.load(tmp_path, "zh")
    assert "\n" not in str(e.value) and "factcheck-zh.json" in str(e.value)
    assert len(r.table().rows) == 8


# ----------------------------------------------------------------------------- over a tiny locate run

RELS = {"capital": "the capital of [X] is [Y] .", "language": "the language spoken in [X] is [Y] .",
        "river": "the river of [X] is [Y] .", "born": "[X] was born in [Y] ."}
SUBJECTS = ["france", "italy", "germany", "spain", "tanzania"]
OBJECTS = ["paris", "rome", "berlin", "madrid", "dodoma"]


def write_run_facts(path):
    rows = [{"id": f"{r[0]}{i}", "relation": r, "lang": "en", "subject": s, "object": OBJECTS[(i + k) % 5],
             "templates": [t]} for k, (r, t) in enumerate(RELS.items()) for i, s in enumerate(SUBJECTS)]
    path.write_text("".join(json.dumps(x) + "\n" for x in rows))
    return path


def test_factcheck_from_run_resumes_and_its_dkn_is_table3s(tmp_path, one_thread, monkeypatch):
    ff = write_run_facts(tmp_path / "facts.jsonl")
    h = tiny_handle("gpt2")
    run = tmp_path / "run"
    locate(h, load_facts(ff), LocateConfig(steps=2), run, facts_path=str(ff), facts_hash=fact_file_hash(ff),
           show_progress=False)
    from kneuron.runs.reopen import load_run
    neurons = load_run(run).neurons
    rows = [{"fact_id": f, "lang": lang, "groups": [neurons[f, lang][:2]] if len(neurons.get((f, lang), [])) > 1 else []}
            for f, lang in neurons]
    res = factcheck_from_run(h, run, "en", rows, n_boot=50)
    for name in ("facts", "relations"):
        assert all(res.splits[name].scorers[s] is not None for s in SCORERS)
    t3 = table3_from_run(h, run, "en", rows, method=res.method, steps=res.steps)
    assert res.splits["facts"].scorers["dkn"].auroc == t3.table["dkn"]["auroc"]
    assert res.splits["facts"].ids["test"] == t3.table["test_ids"]
    lines = (run / "factcheck-en.jsonl").read_text().splitlines()
    val_test = {f for sp in res.splits.values() for p in ("val", "test") for f in sp.ids[p]}
    assert sorted({json.loads(x)["fact_id"] for x in lines[1:]}) == sorted(val_test)   # what needs the model
    assert len(lines) - 1 == 2 * len(val_test)
    # interrupted: keep the settings line and two rows; the rerun scores the rest and gives the same result
    (run / "factcheck-en.jsonl").write_text("\n".join(lines[:3]) + "\n")
    calls = []
    real = fc.score_items
    monkeypatch.setattr(fc, "score_items", lambda items, *a, **k: (calls.append(len(items)), real(items, *a, **k))[1])
    again = factcheck_from_run(h, run, "en", rows, n_boot=50)
    assert calls == [len(lines) - 3] and again == res
    with pytest.raises(ConfigError, match="'zh' is not in run"):
        factcheck_from_run(h, run, "zh", rows)
    with pytest.raises(RunStoreError, match="no DKN rows for language 'en'"):
        factcheck_from_run(h, run, "en", [])
    with pytest.raises(RunStoreError, match="other fact-check settings"):
        factcheck_from_run(h, run, "en", rows, seed=7)


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_statement_state_is_each_blocks_output_at_the_statements_last_token(family, one_thread):
    """The hidden states of the model itself (output_hidden_states: entry l + 1 is block l's output, the
    last one before the final norm), read at the candidate's last token; a wrong candidate reads otherwise."""
    from kneuron.paper.factcheck import statement_state
    h = tiny_handle(family)
    tpl = "the capital of [X] is [Y] ." if family == "bert" else "the capital of [X] is [Y]"
    f = Fact("c", "P36", "en", "france", "paris", (tpl,))
    got = statement_state(h, Item(f, "paris", 1, "rome"))
    assert got.shape == (h.n_layers, h.model.config.hidden_size) and got.dtype == torch.float32
    tok = h.tokenizer
    ids = tok("the capital of france is paris" + (" ." if family == "bert" else ""))["input_ids"]
    pos = ids.index(tok.convert_tokens_to_ids("paris"))
    with torch.no_grad():
        ref = h.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    for layer in range(h.n_layers - 1):
        assert torch.allclose(got[layer], ref[layer + 1][0, pos].float(), atol=1e-5)
    assert not torch.allclose(got, statement_state(h, Item(f, "rome", 0, "paris")))
