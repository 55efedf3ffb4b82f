"""Seconds per edit on smollm2-135m: one en fact per relation of en-zh (the first 8 with wrong objects), its first wrong object as the new one. Usage: python bench/edit_time.py [kn|rome|...]"""
import json, sys, time
import torch
from kneuron.models import load_model
from kneuron.facts import load_facts
from kneuron.editing import edit
h = load_model("smollm2-135m")
facts = [f for f in load_facts("en-zh") if f.lang == "en"]
from kneuron.facts.sampling import round_robin
import random
picked = []
seen = set()
for f in facts:
    if f.relation not in seen and f.wrong_objects:
        seen.add(f.relation); picked.append(f)
    if len(picked) == 8: break
method = sys.argv[1] if len(sys.argv) > 1 else "kn"
out = []
for f in picked:
    t0 = time.perf_counter(); c0 = time.process_time()
    e = edit(h, f, f.wrong_objects[0], method=method)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out.append({"id": f.id, "templates": len(f.templates), "seconds": e.seconds, "wall": wall, "cpu": cpu,
                "neurons": len(e.info.get("neurons", [])), "params": e.params_changed})
    print(json.dumps(out[-1]), flush=True)
import statistics
print("median seconds", statistics.median(o["seconds"] for o in out),
      "median cpu seconds", statistics.median(o["cpu"] for o in out), "threads", torch.get_num_threads())
