"""Fixtures of the paper report's unit tests: a hand-built `reproduce` result (results.json's shape), every
number distinct so a test can tell which cell a row was read from, and its fact ids per language."""
import copy

import pytest

CONDITIONS = {"likn": 30.0, "other": 10.0, "both": 20.0, "own": 40.0, "random": 1.0}


def _t3(lang):
    z = lang == "zh"

    def scorer(p, r, f1, tp, fp, fn, tn):
        return {"precision": p, "recall": r, "f1": f1, "auroc": 0.7, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
                "released_code": {"precision": r, "recall": p, "f1": f1}}
    return {"n_facts": 20, "n_fit": 12, "n_val": 4, "n_test": 4, "n_test_items": 8,
            "test_ids": ["f1", "f2", "f3", "f4"], "val_ids": ["f5", "f6", "f7", "f8"],
            "tuned": {"t": 0.5, "lambda": 0.01, "val_f1": 0.6},
            "direct": scorer(0.6, 0.75, 0.2 if z else 0.5, 3, 2, 1, 2),
            "dkn": {**scorer(0.8, 0.5, 0.9 if z else 0.7, 2, 0, 2, 4), "t": 0.5, "lambda": 0.01},
            "dkn_paper": {**scorer(0.7, 0.25, 0.4 if z else 0.3, 1, 0, 3, 4), "t": 0.7, "lambda": 1e-6}}


def _t1(sr, n):
    op = lambda r, u: {"related": r, "unrelated": u}  # noqa: E731
    return {"n_facts": n, "sr": sr, "sr_interval": {"value": sr, "low": sr / 2, "high": sr * 2}, "mean_neurons": 5.0,
            "suppress": op(-0.4, 0.01), "enhance": op(0.2, -0.01), "facts_without_neurons": 0}


BASE = {
    "meta": {"model": {"name": "tiny", "kind": "causal", "n_layers": 3, "n_neurons": 16, "site": "h[i].mlp.down",
                       "dtype": "torch.float32"},
             "config": {"model": "tiny", "facts": "en-zh", "langs": ["en", "zh"], "limit": 20, "relations": 2,
                        "steps": 20, "prompts": 1, "seed": 42, "n_boot": 10, "dkn": {"top_n": 20}},
             "data": {"n_ids": 20, "n_facts": 40, "relations": 2, "facts": "/x/en-zh.jsonl", "facts_hash": "ab"},
             "langs_used": ["en", "zh"], "notes": [], "versions": {}, "started": ""},
    "table1": {"amig": {"en": _t1(12.0, 20), "zh": _t1(9.0, 20)}, "ig": {"en": _t1(4.0, 20), "zh": _t1(6.0, 20)}},
    "table2": {"langs": ["en", "zh"], "seed": 42, "n_facts": 20, "n_facts_with_likn": 3,
               "likn": {"langs": ["en", "zh"], "n_facts": 20, "n_with_likn": 3, "share_nonempty": 0.15,
                        "mean_likn_per_fact": 0.3, "layers": {"2": 6},
                        "facts_by_count": {"0": 17, "1": 1, "2": 1, "3": 1},
                        "count_per_fact": {**{f"f{i}": 0 for i in range(4, 21)}, "f1": 1, "f2": 2, "f3": 3}},
               "table": {c: {lang: {"n_facts": 3, "sr": sr + (lang == "zh"), "suppress_related": -sr / 100,
                                    "sr_interval": {"value": sr + (lang == "zh"), "low": 0.5, "high": 99.0},
                                    "suppress_unrelated": 0.001, "enhance_related": 0.1, "enhance_unrelated": -0.001,
                                    "mean_edited": 2.0} for lang in ("en", "zh")} for c, sr in CONDITIONS.items()}},
    "dkn": {"config": {"top_n": 20, "t_low": 0.2, "t_high": 0.25, "relative": True, "max_size": 2},
            "langs": {lang: {"n_facts": 20, "n_with_dkn": 5, "share_with_dkn": 0.25, "groups_per_fact": 0.5,
                             "sizes": {"2": 10}, "mean_group_drop": 0.3, "mean_max_part_drop": 0.1,
                             "forward_passes_per_fact": 4.0, "ablations_per_fact": 100.0, "truncated": 0}
                      for lang in ("en", "zh")}},
    "table3": {"en": _t3("en"), "zh": _t3("zh")},
    "layers": {"kn": {"amig": {"en": [3, 3, 4], "zh": [2, 4, 4]}, "ig": {"en": [5, 0, 5], "zh": [1, 1, 8]}},
               "likn": [0, 1, 5], "dkn": {"en": [1, 1, 2], "zh": [0, 2, 2]}},
    "timings": {"Table 1": 1.0},
}


@pytest.fixture
def hand_result() -> dict:
    return copy.deepcopy(BASE)


@pytest.fixture
def hand_ids() -> dict:
    every = [f"f{i}" for i in range(1, 21)]
    return {"en": every, "zh": list(every)}
