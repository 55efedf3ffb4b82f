"""kneuron.paper.table3: FactCheck (Table 3 of one language) — to_json, save / load round-trip, the bytes
`reproduce` keeps, and table3_from_run taking Module 3's result or its rows."""
import json

import pytest

from kneuron import LocateConfig, load_facts, locate
from kneuron.facts import fact_file_hash
from kneuron.paper.dkn import DKNConfig, dkn_from_run
from kneuron.paper.reproduce import DUMPS
from kneuron.paper.table3 import FactCheck, table3_from_run
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
