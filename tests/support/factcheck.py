"""Inputs of the fact-check tests (``kneuron.paper.factcheck``, `kneuron factcheck`): synthetic facts, a
synthetic model of them and their hidden states, for the checks in memory; and the fact file of the tiny
locate runs the checks over a run use (four relations of five facts, each relation's objects rotated)."""
from __future__ import annotations

import json
import math

import torch

from kneuron.facts import Fact

RELS = {"capital": "the capital of [X] is [Y] .", "language": "the language spoken in [X] is [Y] .",
        "river": "the river of [X] is [Y] .", "born": "[X] was born in [Y] ."}
SUBJECTS = ["france", "italy", "germany", "spain", "tanzania"]
OBJECTS = ["paris", "rome", "berlin", "madrid", "dodoma"]


def write_run_facts(path):
    """The four relations of five facts (words of ``support.tiny.WORDS``) as a fact file at ``path``."""
    rows = [{"id": f"{r[0]}{i}", "relation": r, "lang": "en", "subject": s, "object": OBJECTS[(i + k) % 5],
             "templates": [t]} for k, (r, t) in enumerate(RELS.items()) for i, s in enumerate(SUBJECTS)]
    path.write_text("".join(json.dumps(x) + "\n" for x in rows))
    return path


def synthetic_facts(n_rel=5, n=6):
    """``n_rel`` relations of ``n`` facts, each with one wrong object."""
    return [Fact(f"r{r}-{i}", f"R{r}", "en", f"s{r}{i}", f"o{r}{i}", ("[X] is [Y].",), wrong_objects=(f"w{r}{i}",))
            for r in range(n_rel) for i in range(n)]


def features(items, informative=True):
    """[n, 3 layers, 3]: feature 0 is the item's index (so a spy can tell which items a probe saw), feature 1
    the label (layer 2 only, if informative), feature 2 a fixed jitter."""
    x = torch.zeros(len(items), 3, 3, dtype=torch.float64)
    for i, it in enumerate(items):
        x[i, :, 0] = i
        x[i, :, 2] = ((i * 7919) % 13) / 13
        if informative:
            x[i, 2, 1] = it.label
    return x.float()


def synthetic(facts):
    """A model whose true objects score 1 on neuron (0, 0) and wrong ones 0; log p follows the label."""
    def attr(item):
        s = torch.zeros(2, 4)
        s[0, 0] = float(item.label)
        s[1, 1] = 0.5
        return s
    return attr, lambda item: (math.log(0.6 if item.label else 0.3), bool(item.label))


def inputs(fs):
    """The DKN groups, knowledge neurons and wrong objects of ``fs``: (dkn, kn, wrong), each by fact key."""
    dkn = {f.key: [[(0, 0), (1, 1)]] for f in fs}
    kn = {f.key: [[(0, 0), (1, 2)]] for f in fs}
    return dkn, kn, {f.key: f.wrong_objects[0] for f in fs}
