"""kneuron.runs.store: a run directory (RunStore): its layout and bytes, resume equal to an uninterrupted
run, a finalize cut short repaired, the checks that refuse a wrong add / resume / row, its own facts, duckdb."""
import importlib.util
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kneuron.runs.store import RunStore, RunStoreError, open_run, query

META = {"model": "smollm2-135m", "method": "ig", "steps": 20, "threshold": 0.2, "facts_hash": "abc", "note": "ü"}


def fact(i, lang="en"):
    """A finished fact and its neurons (fact 4 selects none)."""
    row = {"order": i, "fact_id": f"P{i}", "lang": lang, "prompt": f"q{i} {lang}", "p_before": 0.1 * i}
    neurons = [{"layer": i % 3, "neuron": 100 * i + k, "score": 1.0 / (k + 1), "rank": k} for k in range(3)]
    return row, ([] if i == 4 else neurons)


ALL = [fact(i, lang) for i in range(6) for lang in ("en", "de")]


def run_all(path, items=ALL):
    s = RunStore(path, META)
    for row, neurons in items:
        s.add(row, neurons)
    s.finalize()
    return s


def test_new_run_layout(tmp_path):
    s = run_all(tmp_path / "r")
    assert json.loads((tmp_path / "r" / "run.json").read_text(encoding="utf-8")) == META
    assert (tmp_path / "r" / "run.json").read_text(encoding="utf-8").startswith('{\n  "facts_hash"')
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["facts.parquet", "neurons.parquet", "run.json"]
    f, n = pq.read_table(tmp_path / "r" / "facts.parquet"), pq.read_table(tmp_path / "r" / "neurons.parquet")
    assert f.num_rows == 12 and n.num_rows == 10 * 3
    assert f.column_names[:3] == ["order", "fact_id", "lang"]
    assert f.schema.field("order").type == pa.int64() and f.schema.field("p_before").type == pa.float64()
    for c, t in [("order", pa.int64()), ("layer", pa.int64()), ("neuron", pa.int64()),
                 ("rank", pa.int64()), ("score", pa.float64()), ("fact_id", pa.string())]:
        assert n.schema.field(c).type == t
    assert f["order"].to_pylist() == sorted(f["order"].to_pylist())
    assert f.slice(0, 2)["lang"].to_pylist() == ["de", "en"]
    assert n.slice(0, 3)["rank"].to_pylist() == [0, 1, 2]
    assert s.facts().equals(f) and s.neurons().equals(n)


def test_empty_neuron_list_records_fact(tmp_path):
    s = RunStore(tmp_path / "r", META)
    s.add(*fact(4))
    assert s.done() == {("P4", "en")} and s.facts().num_rows == 1 and s.neurons().num_rows == 0
    s.finalize()
    s = RunStore(tmp_path / "r", META, resume=True)
    assert s.done() == {("P4", "en")}
    assert s.neurons().column_names[:7] == ["order", "fact_id", "lang", "layer", "neuron", "score", "rank"]


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    ref = run_all(tmp_path / "ref")
    s = RunStore(tmp_path / "r", META)
    for row, neurons in ALL[:3]:
        s.add(row, neurons)
    # simulate a kill between the two writes of the 4th fact: its neurons part but no facts part
    parts = sorted((tmp_path / "r" / "parts").glob("*.neurons.parquet"))
    orphan = parts[0].with_name("000000009-deadbeefdeadbeef.neurons.parquet")
    orphan.write_bytes(parts[0].read_bytes())
    (tmp_path / "r" / "parts" / "x.facts.parquet.tmp").write_bytes(b"half a file")
    assert open_run(tmp_path / "r").neurons().num_rows == 9  # readers ignore the orphan
    del s

    s = RunStore(tmp_path / "r", META, resume=True)
    assert not orphan.exists() and not list((tmp_path / "r" / "parts").glob("*.tmp"))
    assert s.done() == {(r["fact_id"], r["lang"]) for r, _ in ALL[:3]}
    for row, neurons in ALL[3:]:
        if (row["fact_id"], row["lang"]) not in s.done():
            s.add(row, neurons)
    s.finalize()
    assert s.facts().equals(ref.facts()) and s.neurons().equals(ref.neurons())
    for name in ("facts.parquet", "neurons.parquet"):
        assert (tmp_path / "r" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()


def test_identical_runs_identical_bytes(tmp_path):
    run_all(tmp_path / "a")
    run_all(tmp_path / "b", list(reversed(ALL)))  # order of arrival does not matter
    for name in ("facts.parquet", "neurons.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_finalize_resume_add_finalize_keeps_everything(tmp_path):
    ref = run_all(tmp_path / "ref")
    s = run_all(tmp_path / "r", ALL[:5])
    s = RunStore(tmp_path / "r", META, resume=True)
    assert len(s.done()) == 5
    for row, neurons in ALL[5:8]:
        s.add(row, neurons)
    assert s.facts().num_rows == 8  # compacted + parts, before finalize
    s.finalize()
    s = RunStore(tmp_path / "r", META, resume=True)
    for row, neurons in ALL[8:]:
        s.add(row, neurons)
    s.finalize()
    assert s.facts().equals(ref.facts()) and s.neurons().equals(ref.neurons())
    for name in ("facts.parquet", "neurons.parquet"):
        assert (tmp_path / "r" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()


def parts_of(path, items):
    """The parts/ folder that adding `items` to a fresh run leaves behind."""
    s = RunStore(path, META)
    for row, neurons in items:
        s.add(row, neurons)
    return path / "parts"


def test_cut_finalize_is_repaired(tmp_path):
    """Killed inside finalize: between its two compacted writes, or before parts/ was removed."""
    ref = run_all(tmp_path / "ref")
    run_all(tmp_path / "r", ALL[:4])
    old_facts = (tmp_path / "r" / "facts.parquet").read_bytes()
    s = RunStore(tmp_path / "r", META, resume=True)
    for row, neurons in ALL[4:]:
        s.add(row, neurons)
    s.finalize()
    # neurons.parquet has all 12 facts, facts.parquet only the first 4, the parts are still there
    shutil.copytree(parts_of(tmp_path / "p1", ALL[4:]), tmp_path / "r" / "parts")
    (tmp_path / "r" / "facts.parquet").write_bytes(old_facts)
    r = open_run(tmp_path / "r")
    assert r.facts().equals(ref.facts()) and r.neurons().equals(ref.neurons())
    s = RunStore(tmp_path / "r", META, resume=True)
    assert pq.read_table(tmp_path / "r" / "neurons.parquet").num_rows == 4 * 3  # cut back to the committed
    assert len(s.done()) == 12
    s.finalize()
    assert s.facts().equals(ref.facts()) and s.neurons().equals(ref.neurons())
    # parts left over after both compacted writes: skipped by readers, deleted by the next writer
    shutil.copytree(parts_of(tmp_path / "p2", ALL[:2]), tmp_path / "r" / "parts")
    assert open_run(tmp_path / "r").facts().equals(ref.facts())
    RunStore(tmp_path / "r", resume=True)
    assert not list((tmp_path / "r" / "parts").glob("*"))


def test_adding_a_fact_twice_is_refused(tmp_path):
    s = RunStore(tmp_path / "r", META)
    s.add(*fact(1))
    s.add(*fact(1, "de"))
    with pytest.raises(RunStoreError, match="already recorded"):
        s.add(*fact(1))
    s.finalize()
    s = RunStore(tmp_path / "r", META, resume=True)
    with pytest.raises(RunStoreError, match="already recorded"):
        s.add(*fact(1, "de"))
    assert s.facts().num_rows == 2


def test_new_run_into_non_empty_dir_is_refused(tmp_path):
    (tmp_path / "r").mkdir()
    RunStore(tmp_path / "r", META)  # empty dir is fine
    with pytest.raises(RunStoreError, match="already holds a run; pass --resume"):
        RunStore(tmp_path / "r", META)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(RunStoreError, match="already holds a run"):
        RunStore(tmp_path / "other", META)


def test_resume_checks(tmp_path):
    with pytest.raises(RunStoreError, match="no run.json"):
        RunStore(tmp_path / "none", META, resume=True)
    with pytest.raises(RunStoreError, match="no run.json"):
        open_run(tmp_path / "none")
    RunStore(tmp_path / "r", META).add(*fact(1))
    with pytest.raises(RunStoreError, match=r"steps differs \(run has 20, now 50\)"):
        RunStore(tmp_path / "r", {**META, "steps": 50}, resume=True)
    # keys outside RESUME_KEYS, or missing on one side, are not checked; run.json is kept
    s = RunStore(tmp_path / "r", {"model": "smollm2-135m", "note": "other", "versions": {"x": 1}}, resume=True)
    assert s.meta == META and s.done() == {("P1", "en")}


def test_readonly_and_row_checks(tmp_path):
    s = RunStore(tmp_path / "r", META)
    with pytest.raises(RunStoreError, match="lacks order"):
        s.add({"fact_id": "P9", "lang": "en"}, [])
    with pytest.raises(RunStoreError, match="lang="):
        s.add(fact(1)[0], [{"lang": "de", "layer": 0, "neuron": 1, "score": 1.0, "rank": 0}])
    with pytest.raises(RunStoreError, match="lacks score"):
        s.add(fact(1)[0], [{"layer": 0, "neuron": 1, "rank": 0}])
    assert s.done() == set() and not list((tmp_path / "r" / "parts").glob("*.facts.parquet"))
    r = open_run(tmp_path / "r")
    with pytest.raises(RunStoreError, match="read-only"):
        r.add(*fact(2))


def test_duckdb_query(tmp_path):
    pytest.importorskip("duckdb")
    run_all(tmp_path / "r")
    rows = query(tmp_path / "r", "select f.lang, count(*) from neurons n join facts f using (fact_id, lang) "
                                 "where n.rank = 0 group by f.lang order by f.lang")
    assert rows == [("de", 5), ("en", 5)]
    import duckdb

    con = duckdb.connect()
    n = con.execute(f"select count(*), sum(rank) from read_parquet('{tmp_path / 'r' / 'neurons.parquet'}')")
    assert n.fetchall() == [(30, 30)]
    con.close()
    # unfinished runs can be queried too
    s = RunStore(tmp_path / "u", META)
    s.add(*fact(1))
    assert query(tmp_path / "u", "select fact_id, p_before from facts") == [("P1", 0.1)]


# ----------------------------------------------------------------------------- the run's own facts

def facts_list(n=3):
    from kneuron.facts import Fact
    return [Fact(f"P{i}", "capital", lang, f"s{i}ü", f"o{i}", ("[X] is in [Y].",), aliases=("a",) if i else ())
            for i in range(n) for lang in ("en", "de")]


def test_new_run_keeps_its_facts(tmp_path):
    from kneuron.facts import load_facts
    fs = facts_list()[::-1]                                   # any order: kept as given
    s = RunStore(tmp_path / "r", META, facts=fs)
    p = tmp_path / "r" / "facts.jsonl"
    assert load_facts(p) == fs
    assert [(f.id, f.lang) for f in load_facts(p)] == [f.key for f in fs]
    assert not list((tmp_path / "r").glob("*.tmp"))
    for row, neurons in ALL[:2]:
        s.add(row, neurons)
    s.finalize()
    assert sorted(q.name for q in (tmp_path / "r").iterdir()) == [
        "facts.jsonl", "facts.parquet", "neurons.parquet", "run.json"]
    # resumed with the same facts: the file is not rewritten
    before, inode = p.read_bytes(), p.stat().st_ino
    RunStore(tmp_path / "r", META, resume=True, facts=fs)
    assert p.read_bytes() == before and p.stat().st_ino == inode, "an atomic rewrite would make a new inode"
    # fewer facts (a smaller --limit): the file keeps them all
    RunStore(tmp_path / "r", META, resume=True, facts=fs[:2])
    assert p.read_bytes() == before and p.stat().st_ino == inode
    # other facts (another order, another key) are refused, and nothing changes
    with pytest.raises(RunStoreError, match=r"fact 1 is 'P2' \(de\) in its facts.jsonl, 'P0' \(en\) now"):
        RunStore(tmp_path / "r", META, resume=True, facts=fs[::-1])
    other = facts_list(4)[::-1]
    with pytest.raises(RunStoreError, match="its facts differ from those given"):
        RunStore(tmp_path / "r", META, resume=True, facts=other)
    assert p.read_bytes() == before
    # more facts (a larger --limit) extend it, the first ones unchanged
    more = fs + [f for f in facts_list(5) if f.id in ("P3", "P4")]
    RunStore(tmp_path / "r", META, resume=True, facts=more)
    assert load_facts(p) == more and p.read_bytes().startswith(before)
    # read-only opens never write
    after = p.read_bytes()
    open_run(tmp_path / "r")
    assert p.read_bytes() == after


def test_resume_writes_facts_a_run_lacks(tmp_path):
    from kneuron.facts import load_facts
    RunStore(tmp_path / "r", META).add(*fact(1))               # an older run: no facts.jsonl
    assert not (tmp_path / "r" / "facts.jsonl").exists()
    RunStore(tmp_path / "r", META, resume=True)                 # no facts given: none written
    assert not (tmp_path / "r" / "facts.jsonl").exists()
    s = RunStore(tmp_path / "r", META, resume=True, facts=facts_list(2))
    assert load_facts(tmp_path / "r" / "facts.jsonl") == facts_list(2)
    assert s.done() == {("P1", "en")}


def test_duplicate_facts_are_refused(tmp_path):
    fs = facts_list(2)
    with pytest.raises(RunStoreError, match=r"duplicate fact \('P0', 'en'\)"):
        RunStore(tmp_path / "r", META, facts=fs + fs[:1])
    assert not (tmp_path / "r").exists(), "refused before anything is written"


def test_resume_with_another_model_shape_is_refused(tmp_path):
    spec = {"name": "m", "kind": "causal", "site": "mlp.down_proj", "layers": "model.layers", "n_layers": 3,
            "n_neurons": 48}
    meta = {**META, "n_layers": 3, "n_neurons": 48, "model_spec": spec}
    RunStore(tmp_path / "r", meta).add(*fact(1))
    with pytest.raises(RunStoreError, match="n_neurons differs"):
        RunStore(tmp_path / "r", {**meta, "n_neurons": 32}, resume=True)
    with pytest.raises(RunStoreError, match="model_spec differs"):
        RunStore(tmp_path / "r", {**meta, "model_spec": {**spec, "site": "mlp.up_proj"}}, resume=True)
    assert RunStore(tmp_path / "r", meta, resume=True).done() == {("P1", "en")}


# ----------------------------------------------------------------------------- each query's neurons

QMETA = {**META, "query_neurons": True}


def queries_of(i):
    """Fact i's two queries' own neurons (the second query of fact 4 has none)."""
    return [{"query": q, "layer": q, "neuron": 10 * i + k, "score": 1.0 / (k + 1), "rank": k}
            for q in range(2) for k in range(2) if not (i == 4 and q == 1)]


def test_a_run_that_keeps_query_neurons_has_queries_parquet(tmp_path):
    s = RunStore(tmp_path / "r", QMETA)
    for row, neurons in ALL:
        s.add({**row, "n_prompts": 2}, neurons, queries_of(row["order"]))
    s.finalize()
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["facts.parquet", "neurons.parquet",
                                                                  "queries.parquet", "run.json"]
    q = open_run(tmp_path / "r").queries()
    assert q.column_names[:8] == ["order", "fact_id", "lang", "query", "layer", "neuron", "score", "rank"]
    assert q.num_rows == 12 * 4 - 2 * 2 and q.schema.field("query").type == pa.int64()
    sets = open_run(tmp_path / "r").query_neurons()
    assert sets[("P4", "de")] == [[(0, 40), (0, 41)], []]
    assert sets[("P1", "en")] == [[(0, 10), (0, 11)], [(1, 10), (1, 11)]]
    if importlib.util.find_spec("duckdb"):
        assert query(tmp_path / "r", "select count(*) from queries where query = 1") == [(12 * 2 - 2 * 2,)]
    with pytest.raises(RunStoreError, match="keeps each query's neurons; none given"):
        RunStore(tmp_path / "q", QMETA).add(*fact(1))


def test_a_run_made_before_query_neurons_resumes_as_it_was(tmp_path):
    """A run without "query_neurons" in run.json keeps its two tables when resumed (query rows given to it
    are dropped), and asking it for query neurons says to re-run it, in one line."""
    run_all(tmp_path / "r", ALL[:4])
    s = RunStore(tmp_path / "r", QMETA, resume=True)         # run.json is the run's own: no query_neurons
    assert not s.keeps_queries
    for row, neurons in ALL[4:]:
        s.add(row, neurons, queries_of(row["order"]))
    s.finalize()
    assert s.facts().equals(run_all(tmp_path / "ref").facts())
    assert not (tmp_path / "r" / "queries.parquet").exists()
    with pytest.raises(RunStoreError) as e:
        open_run(tmp_path / "r").query_neurons()
    assert "\n" not in str(e.value) and "re-run it" in str(e.value) and str(tmp_path / "r") in str(e.value)


def test_resuming_with_another_selection_is_refused_also_against_an_old_run(tmp_path):
    """A run.json without "select" was made with refine: resuming it with select cas is refused; with
    the default (select left out) it resumes."""
    run_all(tmp_path / "r", ALL[:2])
    with pytest.raises(RunStoreError, match=r"select differs \(run has 'refine', now 'cas'\)"):
        RunStore(tmp_path / "r", {**META, "select": "cas", "cas_beta1": 1.0, "cas_beta2": 1.0}, resume=True)
    RunStore(tmp_path / "r", META, resume=True)
    RunStore(tmp_path / "c", {**META, "select": "cas", "cas_beta1": 1.0, "cas_beta2": 1.0})
    with pytest.raises(RunStoreError, match="cas_beta2 differs"):
        RunStore(tmp_path / "c", {**META, "select": "cas", "cas_beta1": 1.0, "cas_beta2": 2.0}, resume=True)


def test_run_reads_each_dkn_rules_rows_by_the_names_the_writer_uses(tmp_path):
    """Run.dkn(rule) reads the rows file ``kneuron.paper.dkn`` writes for that rule (one table of names,
    DKN_FILES), and no other rule's; dkn_methods names the rules a run has."""
    from kneuron.paper.dkn import DKNRun, METHODS, files, summarize
    from kneuron.runs.store import DKN_FILES
    from support.dkn_run import CLUSTERS, PAIRS, clusters_row, make_dkn_run, pairs_row
    assert {m: files(m) for m in METHODS} == DKN_FILES
    run = make_dkn_run(tmp_path / "hand", rules=("pairs",))
    r = open_run(run)
    assert r.dkn_methods() == ["pairs"] and r.dkn("clusters") == {}
    assert {k: row["groups"] for k, row in r.dkn().items()} == {k: [list(map(list, g)) for g in gs]
                                                                for k, gs in PAIRS.items()}
    with pytest.raises(RunStoreError, match="no DKN rule 'nope': the rules are pairs, clusters"):
        r.dkn("nope")
    # what the library's writer leaves (DKNRun.save: each rule its own files), read back rule by rule
    written = make_dkn_run(tmp_path / "saved", rules=())
    rows = {"pairs": [pairs_row(k, g) for k, g in PAIRS.items()],
            "clusters": [clusters_row(k, g) for k, g in CLUSTERS.items()]}
    for m in ("clusters", "pairs"):
        DKNRun(rows[m], summarize(rows[m], {"method": m} if m == "clusters" else {})).save(written)
    r = open_run(written)
    assert r.dkn_methods() == ["pairs", "clusters"]
    for m in METHODS:
        assert list(r.dkn(m).values()) == rows[m]
