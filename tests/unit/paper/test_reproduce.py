"""kneuron.paper.reproduce: the typed ReproduceResult writes and reads results.json exactly as the code before
it did (the fixture is results.json of `kneuron reproduce --model organism-clm --relations 3 --limit 12` made
at 1c37887, whose run() returned that dict), step caches are keyed records, Module 1 runs on the executor
given, and the per-layer histogram."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kneuron.paper.reproduce import DUMPS, ReproduceConfig, ReproduceResult, Reproduction, per_layer
from kneuron.runs.store import RunStoreError

OLD = Path(__file__).with_name("reproduce-results-1c37887.json")


def test_an_old_results_json_reads_back_and_is_written_byte_for_byte():
    text = OLD.read_text(encoding="utf-8")
    old = json.loads(text)
    res = ReproduceResult.from_json(old)
    assert res.to_json() == old and set(res.to_json()) == {"meta", "table1", "table2", "dkn", "table3", "layers",
                                                           "timings", "report"}
    assert json.dumps(res.to_json(), **DUMPS) == text
    assert res.table1["amig"]["en"]["n_facts"] == old["table1"]["amig"]["en"]["n_facts"] > 0
    assert res.report["md"].endswith("report.md") and res.table2 == old["table2"]


def test_save_and_load_round_trip(tmp_path):
    res = ReproduceResult.from_json(json.loads(OLD.read_text(encoding="utf-8")))
    res.save(tmp_path)
    assert (tmp_path / "results.json").read_text(encoding="utf-8") == OLD.read_text(encoding="utf-8")
    assert ReproduceResult.load(tmp_path) == res
    # without a report (written last) the key is absent, as in the dict the report was made from
    bare = ReproduceResult(res.meta, res.table1, None, res.dkn, res.table3, res.layers, res.timings)
    assert "report" not in bare.to_json() and bare.to_json()["table2"] is None


def test_load_refuses_a_missing_or_damaged_result_in_one_line(tmp_path):
    with pytest.raises(RunStoreError, match="no results.json"):
        ReproduceResult.load(tmp_path)
    (tmp_path / "results.json").write_text('{"meta": {}, "table1": ')
    with pytest.raises(RunStoreError, match="results.json: damaged"):
        ReproduceResult.load(tmp_path)
    (tmp_path / "results.json").write_text('{"meta": {}}')
    with pytest.raises(RunStoreError, match="damaged .KeyError"):
        ReproduceResult.load(tmp_path)


def test_per_layer_counts_each_layer_index():
    assert per_layer(4, [0, 2, 2, 3, 2]) == [1, 0, 3, 1]
    assert per_layer(2, iter(())) == [0, 0]
    with pytest.raises(IndexError):
        per_layer(2, [2])


@pytest.fixture
def tiny_rep(fact_file, tmp_path):
    from support.tiny import tiny_handle
    cfg = ReproduceConfig(model="tiny", facts=str(fact_file), langs=("en",), steps=2, n_boot=10)
    return tiny_handle("gpt2"), cfg, tmp_path / "rep"


def test_module_1_runs_on_the_executor_given(tiny_rep):
    from kneuron.runs.locate import LocalExecutor
    h, cfg, out = tiny_rep
    opened = []

    class Spy(LocalExecutor):
        def open(self, model, cfg, execution, out, load):
            opened.append((cfg.method, Path(out).name))
            return super().open(model, cfg, execution, out, load)
    rep = Reproduction(h, cfg, out, show_progress=False, log=lambda s: None, executor=Spy())
    assert rep.locate("ig") == out / "locate-ig" and (out / "locate-ig" / "run.json").is_file()
    assert opened == [("ig", "locate-ig")]
    assert type(Reproduction(h, cfg, out, resume=True, show_progress=False, log=lambda s: None).executor) is LocalExecutor


def test_step_caches_are_records_beside_the_manifest(tiny_rep):
    h, cfg, out = tiny_rep
    rep = Reproduction(h, cfg, out, show_progress=False, log=lambda s: None)
    made = []

    def make():
        made.append(1)
        return {"en": {"n_facts": 5, "p": (0.25, 0.5)}}
    assert rep._cached("table3-en", make) == make() and len(made) == 2
    assert json.loads((out / "table3-en.json").read_text()) == {"en": {"n_facts": 5, "p": [0.25, 0.5]}}
    assert (out / "table3-en.json").read_text() == json.dumps(make(), **DUMPS)
    made.clear()
    again = Reproduction(h, cfg, out, resume=True, show_progress=False, log=lambda s: None)
    assert again._cached("table3-en", make) == {"en": {"n_facts": 5, "p": [0.25, 0.5]}} and not made
    # the one resume check, naming what differs
    with pytest.raises(RunStoreError, match="steps differs .run has 2, now 3.; use the same settings"):
        Reproduction(h, ReproduceConfig(model="tiny", facts=cfg.facts, langs=("en",), steps=3, n_boot=10), out,
                     resume=True, show_progress=False, log=lambda s: None)
    (out / "reproduce.json").write_text("{")
    with pytest.raises(RunStoreError, match="reproduce.json: damaged"):
        Reproduction(h, cfg, out, resume=True, show_progress=False, log=lambda s: None)


def test_an_out_that_is_not_a_reproduce_directory_is_refused_untouched(tiny_rep):
    """--out holding other files: refused in one line before anything in it is cleaned or written."""
    h, cfg, out = tiny_rep
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "draft.1a2b.tmp").write_text("mine too")
    for resume in (False, True):
        with pytest.raises(RunStoreError) as e:
            Reproduction(h, cfg, out, resume=resume, show_progress=False, log=lambda s: None)
        assert "\n" not in str(e.value)
    assert sorted(p.name for p in out.iterdir()) == ["draft.1a2b.tmp", "notes.txt"]
