"""A small run made without a model (a RunStore with its facts and neurons), beside hand-written DKN files
of each rule, in the form `kneuron dkn` writes them (``kneuron.paper.dkn.row``: a settings line, then one
row per fact): what the tests of the run reader and the explorer share."""
import json

from kneuron.facts import Fact
from kneuron.runs.store import DKN_FILES, RunStore

META = {"model": "tiny-model", "method": "ig", "steps": 3, "threshold": 0.2, "n_layers": 3, "n_neurons": 8}
FACTS = [Fact("P1", "capital", "en", "s1", "o1", ("[X] is in [Y].",)),
         Fact("P1", "capital", "zh", "s1", "o1", ("[X] is in [Y].",)),
         Fact("P2", "capital", "en", "s2", "o2", ("[X] is in [Y].",))]
# each fact's knowledge neurons, by rank
NEURONS = {("P1", "en"): [(0, 1), (1, 2), (2, 3), (1, 5), (2, 7)],
           ("P1", "zh"): [(0, 1), (2, 7)],
           ("P2", "en"): [(2, 3), (2, 7), (0, 4)]}
# the groups of each rule (a fact a rule has no row of is absent): L0N1 is in both rules' groups of P1 (en),
# L1N2 in the pairs rule's only, L1N5 and L2N3 in the clusters rule's only, L2N7 in none
PAIRS = {("P1", "en"): [[(0, 1), (1, 2)]], ("P1", "zh"): [], ("P2", "en"): []}
CLUSTERS = {("P1", "en"): [[(0, 1), (1, 5), (2, 3)]], ("P2", "en"): [[(0, 4), (2, 3)]]}
CONFIG = {"pairs": {"top_n": 20, "t_low": 0.2, "t_high": 0.25, "relative": True, "max_size": 2, "max_evals": 5000},
          "clusters": {"top_n": 20, "t_low": 0.2, "t_high": 0.25, "relative": True, "method": "clusters",
                       "distance": "value", "horizon": 1.0}}


def pairs_row(key, groups) -> dict:
    return {"fact_id": key[0], "lang": key[1], "relation": "capital", "n_kn": len(NEURONS[key]),
            "groups": [[list(n) for n in g] for g in groups], "drops": [0.5] * len(groups),
            "part_drops": [0.1] * len(groups), "n_candidates": len(NEURONS[key]), "n_quiet": 2, "p0": 0.6,
            "n_evals": 10, "n_forward": 1, "truncated": False, "method": "pairs"}


def clusters_row(key, groups) -> dict:
    parts = [[list(n)] for g in groups for n in g]          # each neuron its own persistent cluster
    return {**pairs_row(key, groups), "method": "clusters", "seconds": 0.01, "clusters": parts,
            "alone": [0.05] * len(parts), "kept": [True] * len(parts), "all_drop": 0.5 if groups else None,
            "lifetimes": [[0.0, None]] * len(parts)}


def write_dkn(run, method: str, groups: dict) -> None:
    row = pairs_row if method == "pairs" else clusters_row
    lines = [{"config": CONFIG[method]}] + [row(k, g) for k, g in groups.items()]
    (run / DKN_FILES[method][0]).write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")


def make_dkn_run(path, rules=("pairs", "clusters")):
    """A finished run of FACTS and NEURONS at ``path``, with the DKN rows of ``rules`` ("pairs": dkn.jsonl,
    "clusters": dkn-clusters.jsonl; their groups PAIRS and CLUSTERS)."""
    s = RunStore(path, META, facts=FACTS)
    for i, f in enumerate(FACTS):
        s.add({"order": i, "fact_id": f.id, "lang": f.lang, "relation": f.relation, "prompt": f"{f.subject} is in",
               "target": f.object, "p_target": 0.5, "n_neurons": len(NEURONS[f.key])},
              [{"layer": l, "neuron": j, "score": 1.0 / (r + 1), "rank": r} for r, (l, j) in enumerate(NEURONS[f.key])])
    s.finalize()
    for m in rules:
        write_dkn(path, m, PAIRS if m == "pairs" else CLUSTERS)
    return path
