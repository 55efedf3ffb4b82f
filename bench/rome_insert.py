"""ROME's insertion key (issue 21), chosen on held-out records: "prompt" (ROME's code), "mean" (r-ROME: k* on
both sides of the update) and "start" (the bare prompt's key behind the model's document-start token).

Each insertion is one `kneuron bench editing` run (rome alone, its layer fixed) on the same records: fact ids
drawn from the facts that the headline run (RUN, its reported and held-out records) does not use, so the
choice never sees a reported record. The runs resume; the summary (S, ES, PS, NS with their intervals,
the disabling edits, the median and largest ‖ΔW‖/‖W‖, the unrelated-NLL rise) goes to OUT/summary.json.

Usage: python bench/rome_insert.py RUN OUT [N=40] [LAYER=6]
"""
import json
import sys
from pathlib import Path

from kneuron.bench.editing import run_editing_bench
from kneuron.facts import load_facts
from kneuron.models import load_model

INSERTS = ("prompt", "mean", "start")


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
    (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], *(int(x) for x in a[2:]))
