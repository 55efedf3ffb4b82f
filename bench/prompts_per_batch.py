"""Seconds per prompt with several prompts sharing batches (attribute_many) against one at a time.

    .venv/bin/python bench/prompts_per_batch.py MODEL N_PROMPTS PER_CALL [PER_CALL ...]

Prompts: the first template of the first N English facts of the bundled `en-zh` set; 20 steps,
default rule; both methods. Prints the largest relative difference of the scores to one-at-a-time.
"""
from __future__ import annotations

import sys
import time
import warnings

import torch

from kneuron import load_facts, load_model
from kneuron.facts.templates import queries_for
from kneuron.attribution import attribute, attribute_many
from kneuron.facts import resolve_facts

warnings.filterwarnings("ignore")


def main():
    name, n, per_call = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3:]]
    h = load_model(name)
    facts = [f for f in load_facts(resolve_facts("en-zh")) if f.lang == "en"][:n]
    items = [(q.prompt, q.target) for q in (queries_for(f, h.kind)[0] for f in facts)]
    attribute(h, *items[0])                                        # warm-up
    for method in ("ig", "amig"):
        t0 = time.perf_counter()
        one = [attribute(h, p, t, method=method) for p, t in items]
        alone = (time.perf_counter() - t0) / n
        for per in per_call:
            t0 = time.perf_counter()
            many = [a for i in range(0, n, per) for a in attribute_many(h, items[i:i + per], method=method)]
            shared = (time.perf_counter() - t0) / n
            err = max(float((a.scores - b.scores).abs().max() / b.scores.abs().max()) for a, b in zip(many, one))
            print(f"{name} {method}: one at a time {alone:.3f} s/prompt; {per} per call {shared:.3f} s/prompt; "
                  f"max relative difference {err:.1e} ({torch.get_num_threads()} threads)", flush=True)


if __name__ == "__main__":
    main()
