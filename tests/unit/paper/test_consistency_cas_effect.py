"""kneuron.paper.cas_effect: the three sets on a hand-made per-query score table (union, the library's CAS),
erasure and update of a planted neuron on a tiny model against an empty set, the weights bit-identical after
every measurement, the summary, and over a locate run: resumable per fact, one-query facts skipped, an old
run refused in one line."""
import json

import pytest
import torch

from kneuron import LocateConfig, load_facts, locate
from kneuron.errors import ConfigError
from kneuron.facts import Fact
from kneuron.neurons import cas
from kneuron.paper.cas_effect import (ROWS_FILE, CasEffectConfig, CasEffectReport, FactSets, Probe, build_sets,
                                      cas_effect_from_run, dense_scores, fact_effect, measure, new_object, unrelated_facts)
from kneuron.runs.store import RunStoreError
from support.tiny import tiny_handle

# three queries' stored (neuron, score) pairs, by rank; (0, 1) steady, (1, 3) strong in one query only
TABLE = [[((1, 3), 0.9), ((0, 1), 0.5), ((2, 2), 0.4)],
         [((0, 1), 0.55), ((2, 2), 0.3)],
         [((0, 1), 0.5), ((1, 0), 0.45)]]


def _weights(h) -> dict:
    return {k: v.clone() for k, v in h.model.state_dict().items()}


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- the three sets

def test_the_three_sets_of_a_hand_made_table():
    s = build_sets(TABLE, 3, 4, tau=0.3)
    assert s.queries == (((1, 3), (0, 1), (2, 2)), ((0, 1), (2, 2)), ((0, 1), (1, 0)))
    assert s.union == ((1, 3), (0, 1), (2, 2), (1, 0))
    assert set(s.union) == set().union(*map(set, s.queries))
    # CAS = beta1 mean - beta2 std over the queries, 0 where a query did not select the neuron
    dense = dense_scores(TABLE, 3, 4)
    assert float(dense[1][1, 3]) == 0.0 and float(dense[0][1, 3]) == 0.9
    assert s.cas == tuple(cas(dense, 0.3).neurons)
    steady = (0.5 + 0.55 + 0.5) / 3 - torch.tensor([0.5, 0.55, 0.5]).std(correction=0).item()
    spiky = 0.3 - torch.tensor([0.9, 0.0, 0.0]).std(correction=0).item()
    assert steady > 0 > spiky
    assert s.cas[0] == (0, 1) and (1, 3) not in s.cas                    # the steady one first, the spiky one out
    assert set(s.cas) <= set(s.union)
    # the betas and top_k reach the library's rule
    assert build_sets(TABLE, 3, 4, 0.3, top_k=1).cas == ((0, 1),)
    loose = build_sets(TABLE, 3, 4, 0.0, beta1=1.0, beta2=0.0)
    assert loose.cas == tuple(cas(dense, 0.0, None, 1.0, 0.0).neurons) and set(loose.cas) == set(loose.union)
    assert s.sizes() == {"query": [3, 2, 2], "union": 4, "cas": len(s.cas)}


def test_config_is_checked_and_the_betas_default_to_the_runs():
    with pytest.raises(ConfigError, match="beta1 must be > 0"):
        CasEffectConfig(beta1=0).validate()
    with pytest.raises(ConfigError, match="method must be one of kn-eai, kn"):
        CasEffectConfig(method="rome").validate()
    with pytest.raises(ConfigError, match="unrelated must be >= 1"):
        CasEffectConfig(n_unrelated=0).validate()
    assert CasEffectConfig().betas({"select": "cas", "cas_beta1": 2.0, "cas_beta2": 0.5}) == (2.0, 0.5)
    assert CasEffectConfig().betas({"cas_beta1": 2.0}) == (1.0, 1.0)        # not a CAS run: 1 and 1
    assert CasEffectConfig(beta2=3.0).betas({"select": "cas", "cas_beta2": 0.5}) == (1.0, 3.0)


def test_new_objects_and_unrelated_facts_are_fixed_and_of_other_facts():
    fs = [Fact(f"f{i}", "P36" if i < 3 else "P37", "en", f"s{i}", o, ["[X] is [Y] ."])
          for i, o in enumerate(["paris", "rome", "paris", "berlin", "madrid"])]
    new = new_object(fs[0], fs)
    assert new == "rome" and new_object(fs[0], fs) == new                    # same relation, another object
    assert new_object(fs[3], fs, seed=1) == "madrid"
    assert new_object(fs[0], fs[:1]) is None
    un = unrelated_facts(fs[0], fs, 3)
    assert [g.relation for g in un][:2] == ["P37", "P37"] and fs[0] not in un and len(un) == 3
    assert [g.id for g in unrelated_facts(fs[0], fs, 3)] == [g.id for g in un]


# ----------------------------------------------------------------------------- on a model

PLANTED = (2, 5)
QUERIES = (("the capital of france is", "paris"), ("france capital city is", "paris"))


@pytest.fixture(scope="module")
def planted():
    """The tiny gpt2 with neuron PLANTED always on (activation 10: input weights 0, bias 10), its value
    vector paris's output embedding, and a sharper final norm (x20): every query answers paris through it."""
    torch.set_num_threads(1)
    h = tiny_handle("gpt2")
    layer, idx = PLANTED
    mlp = h.model.transformer.h[layer].mlp
    paris = h.tokenizer.get_vocab()["paris"]
    with torch.no_grad():
        mlp.c_fc.weight[:, idx] = 0
        mlp.c_fc.bias[idx] = 10.0
        mlp.c_proj.weight[idx] = h.model.get_output_embeddings().weight[paris]
        h.model.transformer.ln_f.weight *= 20
    fact = Fact("c1", "P36", "en", "france", "paris", ["the capital of [X] is [Y] .", "[X] capital city is [Y] ."])
    probe = Probe(QUERIES, "rome", (("italy capital city is", "rome"), ("the city of spain is", "madrid")), "en")
    return h, fact, probe


def test_erasing_a_planted_neuron_removes_the_fact_and_an_empty_set_changes_nothing(planted):
    h, fact, probe = planted
    base = measure(h, probe)
    assert all(s.p > 0.9 and s.acc == 1.0 for s in base.old)              # the planted neuron answers paris
    before = _weights(h)
    on = FactSets(((PLANTED,), (PLANTED,)), (PLANTED,), (PLANTED,))
    off = FactSets(((), ()), (), ())
    hit, none = fact_effect(h, fact, on, probe, base=base), fact_effect(h, fact, off, probe)
    assert _same(before, _weights(h))                                     # every edit undone, bit for bit
    for s in ("query", "union", "cas"):
        e = hit["erase"][s]
        assert e.rel > 0.9 and e.gen > 0.9 and e.rel_alt == 1.0           # paris is gone on every query
        z = none["erase"][s]
        assert (z.rel, z.gen, z.rel_alt, z.gen_alt, z.loc, z.loc_alt, z.dppl) == (0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0)
        u = none["update"][s]
        assert (u.rel, u.gen, u.loc, u.dppl) == (0.0, 0.0, 1.0, 0.0)        # no neuron: paris stays
    assert hit["erase"]["union"] == hit["erase"]["cas"] == hit["erase"]["query"]   # the same set everywhere
    up = hit["update"]["cas"]
    assert up.rel == 1.0 and up.gen == 1.0 and up.rel_alt > 0              # rome now beats paris


def test_per_query_sets_are_each_measured_on_their_own_query(planted):
    h, fact, probe = planted
    mixed = FactSets(((PLANTED,), ()), (PLANTED,), ())
    got = fact_effect(h, fact, mixed, probe)["erase"]
    # query 0 erased by its own set (Rel high), query 1 by nothing; Gen: query 1 under set 0, query 0 under set 1
    one = fact_effect(h, fact, FactSets(((PLANTED,), (PLANTED,)), (PLANTED,), (PLANTED,)), probe)["erase"]["union"]
    assert one.rel > 0.9
    assert got["query"].rel == pytest.approx(one.rel / 2, abs=0.05)       # (erased + untouched) / 2
    assert got["query"].gen == pytest.approx(one.gen / 2, abs=0.05)
    assert got["cas"].rel == 0.0 and got["union"].rel > 0.9
    with pytest.raises(ConfigError, match="2 queries but 1 per-query sets"):
        fact_effect(h, fact, FactSets(((PLANTED,),), (), ()), probe)


# ----------------------------------------------------------------------------- over a run

TPL = ["the capital of [X] is [Y] .", "[X] capital city is [Y] .", "the city of [X] is [Y] ."]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A locate run of the tiny llama: three facts of three templates (two relations) and one of one."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("cas")
    p = d / "facts.jsonl"
    rows = [("c1", "P36", "france", "paris", TPL), ("c2", "P36", "italy", "rome", TPL),
            ("c3", "P37", "spain", "madrid", TPL), ("c4", "P37", "germany", "berlin", TPL[:1])]
    p.write_text("".join(json.dumps({"id": i, "relation": r, "lang": "en", "subject": s, "object": o,
                                     "templates": t}) + "\n" for i, r, s, o, t in rows))
    h = tiny_handle("llama")
    locate(h, load_facts(p), LocateConfig(steps=2, threshold=0.5), d / "run", show_progress=False)
    return h, d / "run"


def test_a_run_resumes_only_missing_facts_and_leaves_the_weights(run, monkeypatch, tmp_path):
    h, path = run
    import kneuron.paper.cas_effect as ce
    before = _weights(h)
    real, calls = ce.fact_effect, []

    def dies_on_second(*a, **k):
        calls.append(a[1].id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(ce, "fact_effect", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        cas_effect_from_run(h, path, CasEffectConfig(n_unrelated=2, n_boot=50), resume=False)
    assert len((path / ROWS_FILE).read_text().splitlines()) == 2          # the settings line and the first fact
    calls.clear()
    monkeypatch.setattr(ce, "fact_effect", lambda *a, **k: calls.append(a[1].id) or real(*a, **k))
    rep = cas_effect_from_run(h, path, CasEffectConfig(n_unrelated=2, n_boot=50))
    assert calls == ["c2", "c3"]                                          # only the missing facts
    assert _same(before, _weights(h))
    assert [f.fact_id for f in rep.facts] == ["c1", "c2", "c3"]
    assert [s["fact_id"] for s in rep.skipped] == ["c4"] and "one query" in rep.skipped[0]["reason"]
    for f in rep.facts:
        assert len(f.sizes["query"]) == 3 and f.sizes["cas"] <= f.sizes["union"] and len(f.unrelated) == 2
        assert set(f.effects) == {"erase", "update"} and f.new is not None
    s = rep.summary["ops"]["erase"]["cas"]
    assert s["n"] == 3 and s["metrics"]["rel"]["mean"] == pytest.approx(
        sum(f.effects["erase"]["cas"].rel for f in rep.facts) / 3)
    assert "cas-union" in rep.summary["cas_minus"]["update"]
    rep.save(tmp_path / "r.json")
    back = CasEffectReport.load(tmp_path / "r.json")
    assert back.to_json() == json.loads(json.dumps(rep.to_json())) and back.facts == rep.facts
    t = rep.table()
    assert t.header[:4] == ["op", "set", "facts", "Rel"] and len(t.cells()) == 6      # 2 ops x 3 sets
    calls.clear()
    cas_effect_from_run(h, path, CasEffectConfig(n_unrelated=2, n_boot=50))
    assert calls == []                                                    # nothing redone
    with pytest.raises(RunStoreError, match="other CAS effect settings"):
        cas_effect_from_run(h, path, CasEffectConfig(n_unrelated=3))


def test_a_run_made_before_query_neurons_is_refused_in_one_line(run, tmp_path):
    import shutil
    h, path = run
    old = tmp_path / "old"
    shutil.copytree(path, old)
    meta = json.loads((old / "run.json").read_text())
    del meta["query_neurons"]
    (old / "run.json").write_text(json.dumps(meta))
    (old / "queries.parquet").unlink()
    with pytest.raises(RunStoreError) as e:
        cas_effect_from_run(h, old)
    assert "\n" not in str(e.value) and "re-run it" in str(e.value)


def test_a_set_met_twice_is_edited_once_per_operation(planted, monkeypatch):
    h, fact, probe = planted
    import kneuron.paper.cas_effect as ce
    real, calls = ce.edited_state, []
    monkeypatch.setattr(ce, "edited_state", lambda *a, **k: calls.append((a[2], frozenset(a[3]))) or real(*a, **k))
    ce.fact_effect(h, fact, FactSets(((PLANTED,), (PLANTED,)), (PLANTED,), ((0, 0),)), probe)
    assert sorted(calls, key=str) == sorted([(op, frozenset(s)) for op in ("erase", "update")
                                             for s in ([PLANTED], [(0, 0)])], key=str)
