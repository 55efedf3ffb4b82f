"""kneuron.facts.sampling: round-robin draws over groups (one per group in turn, every group before a repeat)."""
from kneuron.facts.sampling import round_robin


def test_round_robin_takes_one_per_group_in_turn():
    groups = {"P36": [1, 2, 3], "P37": [10], "P30": [20, 21]}
    assert round_robin(groups) == [1, 10, 20, 2, 21, 3]
    assert round_robin(groups, 4) == [1, 10, 20, 2]
    assert round_robin(groups, 0) == []
    assert round_robin({}, 5) == [] and round_robin({"a": []}) == []


def test_round_robin_covers_every_group_before_repeating_one():
    groups = {r: list(range(r * 100, r * 100 + 5)) for r in range(7)}
    first = round_robin(groups, 7)
    assert sorted(x // 100 for x in first) == list(range(7))
