"""Time per fact of `ig` and `amig` (20 steps) on smollm2-135m, on the bundled demo facts.

    .venv/bin/python bench/time_per_fact.py [--repeats 2] [--json]

One prompt per fact (the first template), all 30 layers x 1,536 neurons scored. Reports the median
over facts of the best of ``repeats`` runs, plus the model's load time.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings

import torch

from kneuron import attribute, load_facts, load_model
from kneuron.facts.templates import queries_for
from kneuron.facts import resolve_facts

warnings.filterwarnings("ignore")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    h = load_model("smollm2-135m")
    load_s = time.perf_counter() - t0
    queries = [queries_for(f, h.kind)[0] for f in load_facts(resolve_facts("demo-en"))]
    attribute(h, queries[0].prompt, queries[0].target, steps=2)          # warm-up
    out = {"model": h.name, "steps": args.steps, "n_facts": len(queries), "load_s": round(load_s, 2),
           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
           "methods": {}}
    for method in ("ig", "amig"):
        per = []
        for q in queries:
            best = float("inf")
            for _ in range(args.repeats):
                t = time.perf_counter()
                attribute(h, q.prompt, q.target, method=method, steps=args.steps)
                best = min(best, time.perf_counter() - t)
            per.append(best)
        out["methods"][method] = {"median_s_per_fact": round(statistics.median(per), 3),
                                  "min_s": round(min(per), 3), "max_s": round(max(per), 3)}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for m, r in out["methods"].items():
            print(f"{m:5s} {r['median_s_per_fact']:.2f} s/fact (median over {len(queries)} facts; "
                  f"min {r['min_s']:.2f}, max {r['max_s']:.2f}) — {out['machine']}")
        print(f"model load {out['load_s']:.1f} s")


if __name__ == "__main__":
    main()
