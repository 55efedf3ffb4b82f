"""kneuron.paper.table2: CrossLingual.save / load round-trip."""
from kneuron.paper.table1 import EditEffect
from kneuron.paper.table2 import CONDITIONS, CrossLingual, table2


def test_a_crosslingual_result_round_trips(tmp_path):
    effects = [EditEffect(f"P{i}", lang, "r", 2, "Q", "s", 0.2 + i / 50, 0.3, p_suppress=0.1, p_suppress_unrelated=0.29,
                          p_enhance=0.4, p_enhance_unrelated=0.31, condition=cond)
               for i in range(4) for lang in ("en", "zh") for cond in CONDITIONS]
    res = CrossLingual(("en", "zh"), 42, 4, 3, table2(effects, n_boot=10), effects)
    res.save(tmp_path)
    again = CrossLingual.load(tmp_path)
    assert again == res and again.to_json() == res.to_json()
    empty = CrossLingual(("en", "zh"), 1, 0, 0, {}, [])
    empty.save(tmp_path / "e")
    assert CrossLingual.load(tmp_path / "e") == empty
