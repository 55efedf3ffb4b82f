"""Time per fact of `ig` and `amig` (20 steps), peak memory, and the share of the time spent in the
output layer (the unembedding: 262,144 x 640 on gemma3-270m), on a bundled model and fact set.

    .venv/bin/python bench/time_per_fact.py [--model smollm2-135m] [--facts demo-en] [--langs en]
                                            [--limit 12] [--repeats 2] [--json]

One prompt per fact (the first query), every layer's neurons scored. Reports the median over facts
of the best of ``repeats`` runs, the model's load time, the process's peak resident memory, and the
output layer's share: the wall time inside its forward and backward (timed with hooks on the module)
over the attribution's wall time, summed over the runs.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
import warnings

import torch

from kneuron import attribute, load_facts, load_model
from kneuron.facts import resolve_facts

warnings.filterwarnings("ignore")


class OutputClock:
    """Wall seconds spent in one module's forward and backward (hooks on it, removed by ``close``)."""

    def __init__(self, module: torch.nn.Module):
        self.seconds, self._t = 0.0, {}
        self._hooks = [module.register_forward_pre_hook(lambda m, a: self._start("f")),
                       module.register_forward_hook(lambda m, a, o: self._stop("f")),
                       module.register_full_backward_pre_hook(lambda m, g: self._start("b")),
                       module.register_full_backward_hook(lambda m, gi, go: self._stop("b"))]

    def _start(self, k):
        self._t[k] = time.perf_counter()

    def _stop(self, k):
        if k in self._t:
            self.seconds += time.perf_counter() - self._t.pop(k)

    def close(self):
        for h in self._hooks:
            h.remove()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--facts", default="demo-en")
    ap.add_argument("--langs", default="en", help="comma-separated; each fact id in each language")
    ap.add_argument("--limit", type=int, default=12, help="fact ids, the first of each relation in turn")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    h = load_model(args.model)
    load_s = time.perf_counter() - t0
    langs = args.langs.split(",")
    facts = [f for f in load_facts(resolve_facts(args.facts)) if f.lang in langs]
    by_rel: dict[str, list] = {}
    for f in facts:
        by_rel.setdefault(f.relation, []).append(f.id)
    ids, i = [], 0
    while len(ids) < args.limit and any(i < len(v) for v in by_rel.values()):
        ids += [v[i] for v in by_rel.values() if i < len(v) and v[i] not in ids][: args.limit - len(ids)]
        i += 1
    queries = [(f.lang, f.first_query(h.kind)) for f in facts if f.id in ids]
    queries = [(lang, q) for lang, q in queries if q is not None]
    attribute(h, queries[0][1].prompt, queries[0][1].target, steps=2)          # warm-up
    head = h.model.get_output_embeddings()
    out = {"model": h.name, "facts": args.facts, "langs": langs, "steps": args.steps, "n_prompts": len(queries),
           "load_s": round(load_s, 2),
           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
           "methods": {}}
    for method in ("ig", "amig"):
        per: dict[str, list[float]] = {lang: [] for lang in langs}
        clock, total = OutputClock(head), 0.0
        for lang, q in queries:
            best = float("inf")
            for _ in range(args.repeats):
                t = time.perf_counter()
                attribute(h, q.prompt, q.target, method=method, steps=args.steps)
                dt = time.perf_counter() - t
                best, total = min(best, dt), total + dt
            per[lang].append(best)
        clock.close()
        allp = [s for v in per.values() for s in v]
        out["methods"][method] = {"median_s_per_fact": round(statistics.median(allp), 3),
                                  "min_s": round(min(allp), 3), "max_s": round(max(allp), 3),
                                  "per_lang": {lang: round(statistics.median(v), 3) for lang, v in per.items() if v},
                                  "output_layer_share": round(clock.seconds / total, 3)}
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if args.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        for m, r in out["methods"].items():
            langs_s = ", ".join(f"{k} {v:.2f}" for k, v in r["per_lang"].items())
            print(f"{m:5s} {r['median_s_per_fact']:.2f} s/fact (median over {len(queries)} prompts; {langs_s}; "
                  f"min {r['min_s']:.2f}, max {r['max_s']:.2f}); output layer {100 * r['output_layer_share']:.1f} % "
                  f"of the time — {out['machine']}")
        print(f"model load {out['load_s']:.1f} s, peak memory {out['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
