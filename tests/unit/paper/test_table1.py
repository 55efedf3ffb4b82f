"""kneuron.paper.table1: Evaluation.save writes atomically and Evaluation.load reads back the same result."""
import pytest

from kneuron.paper.table1 import EditEffect, Evaluation, table1_of
from kneuron.runs.store import RunStoreError


def effects(n=6):
    return [EditEffect(f"P{i}", "en", f"r{i % 2}", 3, f"P{(i + 1) % n}", f"r{(i + 1) % 2}", 0.1 + 0.05 * i, 0.2,
                       p_suppress=0.05 * i, p_suppress_unrelated=0.21, p_enhance=0.3 + 0.01 * i,
                       p_enhance_unrelated=0.19 if i else 0.0) for i in range(n)]


def test_an_evaluation_round_trips_through_its_files(tmp_path):
    ev = Evaluation(table1_of(effects(), n_boot=20), effects(), 42, False, 1)
    ev.save(tmp_path)
    again = Evaluation.load(tmp_path)
    assert again.to_json() == ev.to_json() and again.effects == ev.effects and again.seed == 42
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evaluation.json", "evaluation.parquet"]   # no temp file
    again.save(tmp_path / "b")
    for name in ("evaluation.json", "evaluation.parquet"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / name).read_bytes()


def test_loading_what_is_not_there_or_torn_is_refused_in_one_line(tmp_path):
    with pytest.raises(RunStoreError, match="evaluation.json: not there"):
        Evaluation.load(tmp_path)
    (tmp_path / "evaluation.json").write_text('{"n_facts": ')
    with pytest.raises(RunStoreError, match=r"evaluation.json: damaged \("):
        Evaluation.load(tmp_path)
    assert (tmp_path / "evaluation.json").exists(), "a reader moves nothing"
