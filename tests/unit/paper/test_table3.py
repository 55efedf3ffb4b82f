"""kneuron.paper.table3: FactCheck (Table 3 of one language) — to_json, save / load round-trip, the bytes
`reproduce` keeps, and table3_from_run taking Module 3's result or its rows."""
import json
import math

import pytest
import torch

from kneuron import LocateConfig, load_facts, locate
from kneuron.facts import Fact, fact_file_hash
from kneuron.paper.dkn import DKNConfig, dkn_from_run
from kneuron.paper.reproduce import DUMPS
from kneuron.paper.table3 import (FactCheck, Item, PAPER_LAMBDA, PAPER_T, fact_check, relation_dkns, split_facts,
                                  table3_from_run, wrong_object)
from kneuron.runs.store import RunStoreError
from support.tiny import tiny_handle

TABLE = {"n_facts": 4, "n_fit": 2, "n_val": 1, "n_test": 1, "tuned": {"t": 0.5, "lambda": 1e-6, "val_f1": 1.0},
         "seed": 42, "test_ids": ["P1"], "val_ids": ["P2"], "dkn": {"precision": None, "auroc": 0.5, "t": 0.5},
         "direct": {"precision": 1.0, "f1": 0.5, "released_code": {"precision": 0.5, "recall": 1.0, "f1": 0.5}}}


def test_a_fact_check_round_trips(tmp_path):
    res = FactCheck("zh", "amig", 20, TABLE)
    j = res.to_json()
    assert list(j)[:3] == ["lang", "method", "steps"] and {k: j[k] for k in TABLE} == TABLE
    assert FactCheck.from_json(j) == res
    path = res.save(tmp_path)
    assert path == tmp_path / "table3-zh.json"
    assert path.read_text(encoding="utf-8") == json.dumps(j, **DUMPS)          # reproduce's step cache, byte for byte
    again = FactCheck.load(tmp_path, "zh")
    assert again == res and again.to_json() == j
    with pytest.raises(RunStoreError) as e:
        FactCheck.load(tmp_path, "en")
    assert "\n" not in str(e.value) and "table3-en.json" in str(e.value)


def test_table3_from_run_takes_the_dkn_result_or_its_rows(fact_file, tmp_path, one_thread):
    h = tiny_handle("gpt2")
    run = tmp_path / "run"
    locate(h, load_facts(fact_file), LocateConfig(steps=2), run, facts_path=str(fact_file),
           facts_hash=fact_file_hash(fact_file), show_progress=False)
    dkn = dkn_from_run(h, run, DKNConfig(top_n=4))
    res = table3_from_run(h, run, "en", dkn, steps=2)
    assert isinstance(res, FactCheck) and (res.lang, res.method, res.steps) == ("en", "amig", 2)
    assert res.table["n_facts"] == 5 and res.table["n_test"] + res.table["n_val"] + res.table["n_fit"] == 5
    rows = table3_from_run(h, run, "en", dkn.rows, steps=2)
    assert rows == res
    res.save(tmp_path)
    assert FactCheck.load(tmp_path, "en") == res


def _facts(n_rel=3, n=10):
    return [Fact(f"r{r}-{i:02d}", f"R{r}", "en", f"s{r}{i}", f"o{r}{i}", ("[X] is [Y].",),
                 wrong_objects=(f"w{r}{i}",)) for r in range(n_rel) for i in range(n)]


def test_split_per_relation_is_80_20_disjoint_and_deterministic():
    fs = _facts(3, 10)
    sp = split_facts(fs, seed=42)
    ids = lambda x: {f.id for f in x}  # noqa: E731
    assert len(sp.test) == 6 and len(sp.val) == 6 and len(sp.fit) == 18
    assert not (ids(sp.test) & ids(sp.train)) and ids(sp.test) | ids(sp.train) == ids(fs)
    for r in ("R0", "R1", "R2"):
        assert sum(f.relation == r for f in sp.test) == 2
    assert ids(split_facts(fs, seed=42).test) == ids(sp.test)
    assert ids(split_facts(fs, seed=7).test) != ids(sp.test)
    # another relation added: the others' split does not move
    more = split_facts(fs + _facts(4, 10)[30:], seed=42)
    assert ids(sp.test) <= ids(more.test)


def test_relation_dkns_keeps_above_t_times_max():
    fs = _facts(1, 4)
    g = {fs[0].key: [[(1, 1), (2, 2)]], fs[1].key: [[(1, 1), (3, 3)]], fs[2].key: [[(1, 1), (2, 2)]],
         fs[3].key: [[(1, 1), (4, 4)], [(1, 1), (5, 5)]]}     # (1, 1) counted once per fact
    assert relation_dkns(g, fs, 0.7) == {"R0": [(1, 1)]}        # count > int(4 * 0.7) = 2
    assert relation_dkns(g, fs, 0.3) == {"R0": [(1, 1), (2, 2)]}  # count > int(1.2) = 1
    assert relation_dkns(g, fs, 0.0) == {"R0": [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]}


def test_wrong_object_is_fixed_and_never_the_answer():
    f = Fact("a", "R", "en", "x", "paris", ("[X] is [Y].",), aliases=("Paris City",),
             wrong_objects=("paris", "Paris City", "rome", "berlin"))
    assert wrong_object(None, f, []) == wrong_object(None, f, []) in ("rome", "berlin")
    g = Fact("b", "R", "en", "x", "paris", ("[X] is [Y].",))
    assert wrong_object(None, g, ["paris", "oslo"]) == "oslo"
    assert wrong_object(None, g, []) is None


def _synthetic(facts, poison_test=None):
    """A model where true objects score 1 on neuron (0, 0) and wrong ones 0; the test part can be poisoned."""
    def attr(item: Item):
        s = torch.zeros(2, 4)
        v = float(item.label)
        if poison_test is not None and item.fact.id in poison_test:
            v = 1.0 - v + 5.0
        s[0, 0] = v
        s[1, 1] = 0.5
        return s
    return attr, lambda item: (math.log(0.6 if item.label else 0.3), bool(item.label))


def test_tuning_never_sees_the_test_part():
    fs = _facts(3, 10)
    groups = {f.key: [[(0, 0), (1, 1)]] if i % 2 == 0 else [[(0, 0), (1, 3)]] for i, f in enumerate(fs)}
    wrong = {f.key: f.wrong_objects[0] for f in fs}
    seen = []
    attr, prob = _synthetic(fs)
    rec = lambda it: (seen.append(it.fact.id), attr(it))[1]  # noqa: E731
    clean = fact_check(fs, groups, wrong, rec, prob)
    test_ids = set(clean["test_ids"])
    n_val_calls = 2 * clean["n_val"]
    assert not test_ids & set(seen[:n_val_calls])             # tuning scored validation items only
    assert set(seen[n_val_calls:]) == test_ids                # the test part is scored after tuning
    # poisoning the test part (labels inverted, scores shifted) leaves the tuned t and lambda unchanged
    attr2, _ = _synthetic(fs, poison_test=test_ids)
    poisoned = fact_check(fs, groups, wrong, attr2, prob)
    assert poisoned["tuned"] == clean["tuned"]
    assert clean["dkn"]["f1"] == 1.0 and clean["dkn"]["auroc"] == 1.0
    assert poisoned["dkn"]["f1"] != clean["dkn"]["f1"]
    assert clean["dkn_paper"]["t"] == PAPER_T and clean["dkn_paper"]["lambda"] == PAPER_LAMBDA
    assert clean["direct"]["f1"] == 1.0 and clean["compare"]["auroc"] == 1.0
    assert clean["n_test_items"] == 2 * len(test_ids)


def test_no_validation_part_means_no_tuning():
    fs = _facts(3, 2)                                        # 2 per relation: 1 test, 1 fit, no validation
    groups = {f.key: [[(0, 0), (1, 1)]] for f in fs}
    attr, prob = _synthetic(fs)
    r = fact_check(fs, groups, {f.key: f.wrong_objects[0] for f in fs}, attr, prob)
    assert r["n_val"] == 0 and r["tuned"]["t"] is None and "dkn" not in r
    assert r["n_test"] == 3 and r["dkn_paper"]["t"] == PAPER_T


def test_model_scorer_logp_and_greedy_match_the_model():
    import math

    from kneuron.probe import answer_prob, predict
    from kneuron.paper.table3 import model_scorers
    from support.tiny import tiny_handle
    h = tiny_handle("gpt2")
    top = predict(h, "the capital of france is", 1)[0][0].strip()
    f = Fact("a", "P36", "en", "france", "paris", ("the capital of [X] is [Y]",))
    _, prob = model_scorers(h)
    for cand in {top, "paris", "rome"}:
        logp, greedy = prob(Item(f, cand, 1, "x"))
        assert logp == pytest.approx(math.log(answer_prob(h, "the capital of france is", cand).prob), rel=1e-6)
        assert greedy == (cand == top)
