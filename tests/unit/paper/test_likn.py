"""kneuron.paper.likn: LIKNResult.save / load round-trip, facts without shared neurons included."""
import pyarrow as pa
import pyarrow.parquet as pq

from kneuron.paper.likn import LIKNResult, language_independent

NEURONS = {("a", "en"): [(0, 1), (1, 2)], ("a", "zh"): [(0, 1)], ("b", "en"): [(2, 3)], ("b", "zh"): [(1, 1)],
           ("c", "en"): [(0, 0)]}
DONE = {("a", "en"), ("a", "zh"), ("b", "en"), ("b", "zh"), ("c", "en")}


def test_a_likn_result_round_trips_beside_its_run(tmp_path):
    res = language_independent(NEURONS, DONE)
    assert res.per_fact == {"a": [(0, 1)], "b": []} and res.missing == {"zh": 1}
    pq.write_table(pa.table({"fact_id": [k[0] for k in sorted(DONE)], "lang": [k[1] for k in sorted(DONE)]}),
                   tmp_path / "facts.parquet")                    # the run it was made from
    res.save(tmp_path)
    again = LIKNResult.load(tmp_path)
    assert again == res and again.to_json() == res.to_json()


def test_away_from_its_run_only_facts_with_shared_neurons_are_known(tmp_path):
    res = language_independent(NEURONS, DONE)
    res.save(tmp_path)
    again = LIKNResult.load(tmp_path)
    assert again.per_fact == {"a": [(0, 1)]} and again.n_facts == 2 and again.langs == ("en", "zh")
