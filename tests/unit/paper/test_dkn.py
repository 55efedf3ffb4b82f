"""kneuron.paper.dkn: DKNRun (Module 3 over a run) — to_json is dkn.json, save / load round-trip, what
dkn_from_run returns is what a later load reads."""
import json

import pytest

from kneuron import LocateConfig, load_facts, locate
from kneuron.facts import fact_file_hash
from kneuron.paper.dkn import DKNConfig, DKNRun, dkn_from_run, summarize
from kneuron.runs.store import RunStoreError
from support.tiny import tiny_handle

CONF = {"top_n": 4, "t_low": 0.2, "t_high": 0.25, "relative": True, "max_size": 2, "max_evals": 5000}


def _row(fid, lang, groups, drops):
    return {"fact_id": fid, "lang": lang, "relation": "r", "n_kn": 3, "groups": groups, "drops": drops,
            "part_drops": [d / 10 for d in drops], "n_candidates": 3, "n_quiet": 2, "p0": 0.5, "n_evals": 4,
            "n_forward": 2, "truncated": False}


ROWS = [_row("a", "en", [[[0, 1], [1, 2]]], [0.9]), _row("b", "en", [], []),
        _row("a", "zh", [[[0, 1], [2, 3]], [[1, 1], [1, 2]]], [0.5, 0.75])]


def test_a_dkn_result_round_trips(tmp_path):
    res = DKNRun(ROWS, summarize(ROWS, CONF))
    assert res.config == CONF and res.to_json() is res.summary
    assert res.groups()[("a", "zh")] == [((0, 1), (2, 3)), ((1, 1), (1, 2))] and res.groups()[("b", "en")] == []
    res.save(tmp_path)
    again = DKNRun.load(tmp_path)
    assert again == res and again.to_json() == res.to_json()
    assert (tmp_path / "dkn.json").read_text() == json.dumps(res.summary, indent=2, sort_keys=True)
    lines = (tmp_path / "dkn.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"config": CONF} and [json.loads(x) for x in lines[1:]] == ROWS
    res.save(tmp_path)                       # rows the file holds already are not written again
    assert (tmp_path / "dkn.jsonl").read_text().splitlines() == lines


def test_saving_beside_rows_of_other_settings_or_loading_nothing_is_one_line(tmp_path):
    DKNRun(ROWS, summarize(ROWS, CONF)).save(tmp_path)
    other = {**CONF, "t_low": 0.1}
    with pytest.raises(RunStoreError) as e:
        DKNRun(ROWS, summarize(ROWS, other)).save(tmp_path)
    assert "\n" not in str(e.value) and "t_low" in str(e.value)
    with pytest.raises(RunStoreError) as e:
        DKNRun.load(tmp_path / "nothing")
    assert "\n" not in str(e.value) and "dkn.json" in str(e.value)


def test_what_dkn_from_run_returns_is_what_load_reads(fact_file, tmp_path, one_thread):
    h = tiny_handle("gpt2")
    run = tmp_path / "run"
    locate(h, load_facts(fact_file), LocateConfig(steps=2), run, facts_path=str(fact_file),
           facts_hash=fact_file_hash(fact_file), show_progress=False)
    res = dkn_from_run(h, run, DKNConfig(top_n=4))
    assert isinstance(res, DKNRun) and len(res.rows) == 5
    assert [(r["fact_id"], r["lang"]) for r in res.rows] == [f.key for f in load_facts(fact_file)]
    assert res.summary == summarize(res.rows, res.config) and res.config["top_n"] == 4
    assert DKNRun.load(run) == res
    assert json.loads((run / "dkn.json").read_text()) == res.to_json()
