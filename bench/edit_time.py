"""Seconds per edit on smollm2-135m.

    python bench/edit_time.py METHOD              one en fact per relation of en-zh (the first 8 with wrong
                                                  objects), each its first wrong object as the new one, one edit each
    python bench/edit_time.py METHOD --batch B    B en facts (round robin over the relations, first wrong object)
                                                  edited as one batch (`editing.edit_batch`; memit, alphaedit: one
                                                  joint edit); seconds per edit = the batch's time / B

The one-time statistics (C, C0) are computed first, untimed, as a run's cache gives them. Prints one JSON line
per edit (or per batch) and a summary line.
"""
import json
import statistics
import sys
import time

import torch

from kneuron.editing import edit, edit_batch
from kneuron.editing.registry import method_for
from kneuron.facts import load_facts
from kneuron.models import load_model

h = load_model("smollm2-135m")
facts = [f for f in load_facts("en-zh") if f.lang == "en" and f.wrong_objects]
args = sys.argv[1:]
method = args[0] if args else "kn"
batch = int(args[args.index("--batch") + 1]) if "--batch" in args else None


def per_relation(n: int) -> list:
    """The first ``n`` facts, round robin over the relations (each relation's facts in file order)."""
    by: dict = {}
    for f in facts:
        by.setdefault(f.relation, []).append(f)
    out, i = [], 0
    while len(out) < n and any(i < len(v) for v in by.values()):
        out += [v[i] for v in by.values() if i < len(v)][: n - len(out)]
        i += 1
    return out


m = method_for(method)
ctx = {"moments": m.moments(h, progress=False)} if hasattr(m, "moments") else {}   # memit, alphaedit: C0 per layer
out = []
if batch is None:
    for f in per_relation(8):
        t0, c0 = time.perf_counter(), time.process_time()
        e = edit(h, f, f.wrong_objects[0], method=method, **ctx)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        out.append({"id": f.id, "templates": len(f.templates), "seconds": e.seconds, "wall": wall, "cpu": cpu,
                    "params": e.params_changed})
        print(json.dumps(out[-1]), flush=True)
    print("median seconds", statistics.median(o["seconds"] for o in out),
          "median cpu seconds", statistics.median(o["cpu"] for o in out), "threads", torch.get_num_threads())
else:
    picked = per_relation(batch)
    t0, c0 = time.perf_counter(), time.process_time()
    e = edit_batch(h, [(f, f.wrong_objects[0]) for f in picked], method=method, **ctx)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"batch": len(picked), "wall": wall, "cpu": cpu, "params": e.params_changed}))
    print("seconds per edit", wall / len(picked), "cpu seconds per edit", cpu / len(picked),
          "threads", torch.get_num_threads())
