"""kneuron.runs.locate: the locate pipeline: deterministic rows, resume after an interruption (also of a run
recorded with an old option name), prompts of several facts per batch, one name per knob, bad settings refused
before anything is written, a model name loaded by the executor."""
import json

import pytest

import kneuron.runs.locate as loc
from kneuron import AMIG, Execution, LocateConfig, load_facts, locate
from kneuron.errors import ConfigError
from kneuron.facts import fact_file_hash
from kneuron.paper.table1 import load_run
from support.tiny import tiny_handle

def _run(h, fact_file, out, per=1, **kw):
    cfg = LocateConfig(method="amig", steps=3, threshold=0.2)
    return locate(h, load_facts(fact_file), cfg, out, execution=Execution(prompts_per_batch=per),
                  facts_path=str(fact_file), facts_hash=fact_file_hash(fact_file), show_progress=False, **kw)


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_same_inputs_same_rows(family, fact_file, tmp_path):
    h = tiny_handle(family, dtype=__import__("torch").float32)
    a = _run(h, fact_file, tmp_path / "a")
    b = _run(h, fact_file, tmp_path / "b")
    assert a.facts().equals(b.facts()) and a.neurons().equals(b.neurons())
    assert a.facts().num_rows == 5
    assert a.facts().column("n_prompts").to_pylist() == [2, 1, 1, 1, 1]
    nt = a.neurons().to_pylist()
    assert nt and all(r["score"] > 0 for r in nt)
    for fid in {r["fact_id"] for r in nt}:
        scores = [r["score"] for r in nt if r["fact_id"] == fid]
        assert scores == sorted(scores, reverse=True)


def test_interrupted_run_resumes_to_the_same_files(fact_file, tmp_path, monkeypatch):
    h = tiny_handle("gpt2")
    full = _run(h, fact_file, tmp_path / "full")
    real, calls = loc.locate_facts, []

    def dies_on_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(loc, "locate_facts", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        _run(h, fact_file, tmp_path / "cut")
    monkeypatch.setattr(loc, "locate_facts", real)
    from kneuron.runs.store import open_run
    assert len(open_run(tmp_path / "cut").done()) == 2            # finished facts were kept
    resumed = _run(h, fact_file, tmp_path / "cut", resume=True)
    assert resumed.n_new == 3
    assert resumed.facts().equals(full.facts()) and resumed.neurons().equals(full.neurons())


def test_a_run_recorded_with_the_old_option_name_resumes(fact_file, tmp_path, monkeypatch):
    """AMIG's ``prefactor`` was ``prefactor_kind`` in run.json once: such a run resumes and reads back."""
    h = tiny_handle("gpt2")
    full = _run(h, fact_file, tmp_path / "full")
    _run(h, fact_file, tmp_path / "old", limit=2)
    path = tmp_path / "old" / "run.json"
    meta = json.loads(path.read_text())
    opts = meta["method_options"]
    meta["method_options"] = {("prefactor_kind" if k == "prefactor" else k): v for k, v in opts.items()}
    assert "prefactor_kind" in meta["method_options"]
    path.write_text(json.dumps(meta))
    resumed = _run(h, fact_file, tmp_path / "old", resume=True)
    assert resumed.n_new == 3 and resumed.neurons().equals(full.neurons())
    assert load_run(tmp_path / "old").store.meta["method_options"] == opts


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_prompts_of_several_facts_per_batch_give_the_same_run(family, fact_file, tmp_path, monkeypatch):
    """--prompts-per-batch 3: facts are attributed in groups (here 3 + 3 prompts: c1's two and c2,
    then c3, l1, l2), each committed on its own; the run equals the one-prompt-at-a-time run."""
    h = tiny_handle(family)
    one = _run(h, fact_file, tmp_path / "one")
    real, groups = loc.locate_facts, []

    def spy(handle, work, cfg, execution):
        groups.append([f.id for f, _ in work])
        return real(handle, work, cfg, execution)
    monkeypatch.setattr(loc, "locate_facts", spy)
    three = _run(h, fact_file, tmp_path / "three", per=3)
    assert groups == [["c1", "c2"], ["c3", "l1", "l2"]]
    assert three.facts().drop_columns(["p_target", "top_p"]).equals(one.facts().drop_columns(["p_target", "top_p"]))
    a, b = three.neurons().to_pylist(), one.neurons().to_pylist()
    assert [(r["fact_id"], r["layer"], r["neuron"]) for r in a] == [(r["fact_id"], r["layer"], r["neuron"]) for r in b]
    assert all(abs(x["score"] - y["score"]) <= 1e-6 * abs(y["score"]) for x, y in zip(a, b))


def test_config_records_what_is_computed_with_one_name_per_knob(fact_file, tmp_path):
    """LocateConfig keeps the method by name and its options as the method's params(); run.json
    records them (and the precision, which changes the numbers), not how the run was executed."""
    by_object = LocateConfig(method=AMIG(paths="per-word", prefactor="difference"), steps=3)
    by_name = LocateConfig(method="amig", steps=3, method_options={"paths": "per-word", "prefactor": "difference"})
    assert by_object == by_name and by_object.method == "amig"
    assert by_object.method_options == {"paths": "per-word", "prefactor": "difference", "normalize": False}
    assert by_object.method_object == AMIG(paths="per-word", prefactor="difference")
    assert LocateConfig().method_options == {} and LocateConfig().method == "ig"
    for bad, needle in ((dict(steps=0), "steps"), (dict(rule="nope"), "rule"), (dict(objective="nope"), "objective"),
                        (dict(threshold=2.0), "threshold"), (dict(refine_p=1.0), "refine-p"), (dict(top_k=0), "top-k"),
                        (dict(method="amig", method_options={"prefactor_kind": "difference"}), "prefactor_kind")):
        with pytest.raises(ConfigError, match=needle):
            LocateConfig(**bad)
    h = tiny_handle("gpt2")
    store = locate(h, load_facts(fact_file)[:1], by_object, tmp_path / "r", show_progress=False,
                   execution=Execution(batch_size=7, prompts_per_batch=2, replay=False))
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert meta["method"] == "amig" and meta["method_options"] == by_object.method_options
    assert meta["precision"] == "fp32" and meta["steps"] == 3
    for how in ("batch_size", "prompts_per_batch", "replay", "prefix_cache", "share", "execution"):
        assert how not in meta
    assert store.n_new == 1


def test_bad_settings_fail_before_anything_is_written(fact_file, tmp_path):
    h = tiny_handle("gpt2")
    facts = load_facts(fact_file)
    with pytest.raises(ConfigError, match="limit"):
        locate(h, facts, LocateConfig(steps=2), tmp_path / "a", limit=0, show_progress=False)
    with pytest.raises(ConfigError, match="Execution"):
        locate(h, facts, LocateConfig(steps=2), tmp_path / "a", execution={"batch_size": 4}, show_progress=False)
    with pytest.raises(ConfigError, match="load options"):
        locate(h, facts, LocateConfig(steps=2), tmp_path / "a", load={"site": "mlp.c_proj"}, show_progress=False)
    with pytest.raises(TypeError):
        locate(h, facts, LocateConfig(steps=2), tmp_path / "a", False)     # noqa: options are keyword-only
    assert not (tmp_path / "a").exists()


def test_a_run_in_another_precision_does_not_resume(fact_file, tmp_path):
    h = tiny_handle("gpt2", dtype=__import__("torch").float32)
    facts = load_facts(fact_file)[:2]
    locate(h, facts, LocateConfig(steps=2), tmp_path / "r", limit=1, show_progress=False)
    from kneuron.runs.store import RunStoreError
    with pytest.raises(RunStoreError, match="precision"):
        locate(h, facts, LocateConfig(steps=2), tmp_path / "r", resume=True, show_progress=False,
               execution=Execution(precision="bf16"))
    # how it runs may change between sessions: the rest of the run is done with other settings
    store = locate(h, facts, LocateConfig(steps=2), tmp_path / "r", resume=True, show_progress=False,
                   execution=Execution(batch_size=3, prompts_per_batch=4))
    assert store.n_new == 1 and store.facts().num_rows == 2


def test_a_model_name_is_loaded_by_the_executor(fact_file, tmp_path):
    """locate(<name>, ...): the executor loads the model (with ``load``'s options); the same run as
    with the handle loaded by hand."""
    import torch
    from support.tiny import tiny_model, word_tokenizer
    from kneuron import load_model
    model, kind = tiny_model("gpt2", dtype=torch.float32)
    model.save_pretrained(tmp_path / "m")
    word_tokenizer(kind).save_pretrained(tmp_path / "m")
    facts = load_facts(fact_file)[:2]
    a = locate(str(tmp_path / "m"), facts, LocateConfig(steps=2), tmp_path / "a", show_progress=False,
               load={"device": "cpu"})
    b = locate(load_model(str(tmp_path / "m")), facts, LocateConfig(steps=2), tmp_path / "b", show_progress=False)
    assert a.facts().equals(b.facts()) and a.neurons().equals(b.neurons())
    assert json.loads((tmp_path / "a" / "run.json").read_text())["model"] == str((tmp_path / "m").resolve())


def test_a_run_keeps_each_querys_own_neurons(fact_file, tmp_path):
    """queries.parquet holds each query's select() set (before refine), the refined set is neurons.parquet's;
    run.json says so (query_neurons) and records no selection for the default refine."""
    from kneuron.attribution import attribute_many
    from kneuron.neurons import neurons_of, query_sets
    from kneuron.runs.store import open_run
    h = tiny_handle("gpt2")
    store = _run(h, fact_file, tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert meta["query_neurons"] is True and not {"select", "cas_beta1", "cas_beta2"} & set(meta)
    run = open_run(tmp_path / "r")
    sets = run.query_neurons()
    cfg = LocateConfig(method="amig", steps=3, threshold=0.2)
    for f in load_facts(fact_file):
        qs = loc.check_fact(h, f)
        found = attribute_many(h, [(q.prompt, q.target) for q in qs], method=cfg.method_object, steps=3)
        assert sets[f.key] == [s.neurons for s in query_sets(found, f.lang, cfg)]
        assert [tuple(n) for n in _neurons(store, f.key)] == neurons_of(found, f.lang, cfg).neurons
    assert len(sets[("c1", "en")]) == 2 and any(sets[("c1", "en")])


def _neurons(store, key):
    return [(r["layer"], r["neuron"]) for r in store.neurons().to_pylist() if (r["fact_id"], r["lang"]) == key]


def test_an_old_run_without_query_neurons_still_resumes(fact_file, tmp_path):
    """A run made before runs kept queries.parquet resumes to the same neurons, in its own two tables."""
    h = tiny_handle("gpt2")
    full = _run(h, fact_file, tmp_path / "full")
    _run(h, fact_file, tmp_path / "old", limit=2)
    path = tmp_path / "old" / "run.json"
    meta = json.loads(path.read_text())
    del meta["query_neurons"]
    path.write_text(json.dumps(meta))
    (tmp_path / "old" / "queries.parquet").unlink()
    resumed = _run(h, fact_file, tmp_path / "old", resume=True)
    assert resumed.n_new == 3 and resumed.neurons().equals(full.neurons()) and resumed.facts().equals(full.facts())
    assert not (tmp_path / "old" / "queries.parquet").exists() and "query_neurons" not in json.loads(path.read_text())


def test_a_cas_run_records_its_selection_and_resumes_only_as_cas(fact_file, tmp_path):
    from kneuron.attribution import attribute_many
    from kneuron.neurons import cas, tau_for
    from kneuron.runs.store import RunStoreError
    h = tiny_handle("gpt2")
    facts = load_facts(fact_file)
    cfg = LocateConfig(steps=2, select="cas", cas_beta1=1.0, cas_beta2=2.0)
    store = locate(h, facts, cfg, tmp_path / "r", limit=2, show_progress=False)
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert (meta["select"], meta["cas_beta1"], meta["cas_beta2"]) == ("cas", 1.0, 2.0)
    f = facts[0]
    found = attribute_many(h, [(q.prompt, q.target) for q in loc.check_fact(h, f)], steps=2)
    assert _neurons(store, f.key) == cas([a.scores for a in found], tau_for("en"), None, 1.0, 2.0).neurons
    with pytest.raises(RunStoreError, match="select differs"):
        locate(h, facts, LocateConfig(steps=2), tmp_path / "r", resume=True, show_progress=False)
    assert locate(h, facts, cfg, tmp_path / "r", resume=True, show_progress=False).n_new == 3
