"""ROME's insertion key (issue 21), chosen on held-out records: "prompt" (ROME's code), "mean" (r-ROME: k* on
both sides of the update), "start" (the bare prompt's key behind the model's document-start token).

Each of the three is one `kneuron bench editing` run (rome alone, its layer fixed) on the same records: fact ids
drawn from the facts that the headline run (RUN, its reported and held-out records) does not use, so the
choice never sees a reported record. The runs resume; the summary (S, ES, PS, NS with their intervals,
the disabling edits, the median and largest ‖ΔW‖/‖W‖, the unrelated-NLL rise) goes to OUT/summary.json,
with insert="auto" (the default it chose) at several limits, read from the "prompt" and "mean" runs' edits.

Usage: python bench/rome_insert.py RUN OUT [N=40] [LAYER=6]
"""
import json
import statistics
import sys
from pathlib import Path

from kneuron.bench.editing import run_editing_bench
from kneuron.editing.health import DISABLING_MARGIN
from kneuron.facts import load_facts
from kneuron.models import load_model

INSERTS = ("prompt", "mean", "start")
LIMITS = (1.5, 2, 3, 5, 10, 20, 50, float("inf"))


def auto_sweep(out: Path, margin: float) -> list[dict]:
    """insert="auto" at each limit, per record from the "prompt" and "mean" runs' own edits: δ and u do not
    depend on the insertion (the same seeded optimisation), so auto's edit of a record *is* one of those two
    (r = u·k*/u·k_prompt, from their u_dot_k). Mean ES / PS / NS, S, disabling edits, the largest ‖ΔW‖/‖W‖."""
    runs = {ins: {d["case_id"]: d for d in map(lambda f: json.loads(f.read_text(encoding="utf-8")),
                                               (out / ins / "edits" / "rome").glob("*.json"))}
            for ins in ("prompt", "mean")}
    rows = []
    for limit in LIMITS:
        picked = []
        for c, p in sorted(runs["prompt"].items()):
            m = runs["mean"][c]
            r = m["info"]["u_dot_k"] / p["info"]["u_dot_k"]
            picked.append(p if 0 < r <= limit else m)
        mean = lambda k: statistics.mean(x for d in picked if (x := d["scores"]["en"][k]) is not None)  # noqa: E731
        rise = lambda d: max(d["health"]["nll_after"][g] - d["health"]["nll_before"][g]  # noqa: E731
                             for g in d["health"]["nll_before"])
        es, ps, ns = (100 * mean(k) for k in ("ES", "PS", "NS"))
        rows.append({"limit": limit, "ES": es, "PS": ps, "NS": ns, "S": statistics.harmonic_mean([es, ps, ns]),
                     "prompt_keys": sum(d is runs["prompt"][d["case_id"]] for d in picked),
                     "disabling": sum(rise(d) > margin for d in picked),
                     "weight_ratio_max": max(d["health"]["weight_ratio"] for d in picked)})
    return rows


def used_ids(run: Path) -> set[str]:
    ids = set()
    for name in ("cases.jsonl", "tune-cases.jsonl"):
        for line in (run / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                ids.add(json.loads(line)["fact_id"])
    return ids


def main(run: str, out: str, n: int = 40, layer: int = 6) -> None:
    run, out = Path(run), Path(out)
    h = load_model("smollm2-135m")
    every = [f for f in load_facts("en-zh") if f.lang == "en"]
    skip = used_ids(run)
    rest = [f for f in every if f.id not in skip]
    summary = {"run": str(run), "records": n, "layer": layer, "excluded_fact_ids": len(skip), "inserts": {}}
    for insert in INSERTS:
        d = out / insert
        res = run_editing_bench(h, rest, pool=every, out=d, n=n, methods=["rome"], langs=["en"], seed=1, n_generation=0,
                                resume=(d / "run.json").exists(), facts_name="en-zh", log=print,
                                method_options={"rome": {"insert": insert, "layer": layer}})
        m = res["methods"]["rome"]["en"]
        health = res["health"]["rome"]["en"]
        summary["inserts"][insert] = ({k: m.get(k) for k in ("S", "ES", "PS", "NS", "GE")}
                                      | {k: health[k] for k in ("n", "weight_ratio_median", "weight_ratio_max",
                                                                "nll_rise", "disabling")}
                                      | {"intervals": res["intervals"]["methods"]["rome"]["en"],
                                         "disabling_edits": [x for x in res["disabling"] if x["method"] == "rome"]})
        print(insert, json.dumps(summary["inserts"][insert]), flush=True)
    summary["auto_sweep"] = auto_sweep(out, DISABLING_MARGIN)
    for row in summary["auto_sweep"]:
        print("auto", json.dumps(row), flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], *(int(x) for x in a[2:]))
