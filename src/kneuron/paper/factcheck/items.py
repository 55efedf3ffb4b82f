"""Each item's model scores, the long step of a check: its mean attribution (the run's locate method)
of p(candidate) over each of its neuron sets, and log p(candidate | prompt), one row per item.

``factcheck_from_run`` appends each item's row to ``<run>/factcheck-<lang>.jsonl`` (``item_records``) as it
is found, so an interrupted check continues where it stopped; a check in memory keeps them in ``Rows``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from kneuron.facts import Fact
from kneuron.paper.factcheck.plan import scope
from kneuron.paper.table3 import Item, _mean_score
from kneuron.store import JsonLines


def item_key(it: Item) -> tuple[str, str, str]:
    return it.fact.id, it.fact.lang, it.candidate


def item_means(scores: torch.Tensor, fact: Fact, sets: dict) -> dict[str, float | None]:
    """An item's mean attribution over each of its neuron sets (None: its scope has no set)."""
    out = {}
    for name, by_scope in sets.items():
        v = _mean_score(scores, by_scope.get(scope(name.split("|")[0])(fact), []))
        out[name] = None if math.isinf(v) else v
    return out


def score_items(items: list[Item], attr, prob, sets: dict, rows, step: Callable = lambda: None) -> None:
    """Each item not in ``rows`` yet, scored by the model (``attr``, ``prob``: ``table3.model_scorers``)
    and put there at once (``rows``: a ``JsonLines`` or ``Rows``)."""
    for it in items:
        if item_key(it) not in rows:
            rows.put({"fact_id": it.fact.id, "lang": it.fact.lang, "candidate": it.candidate, "label": it.label,
                      "logp": prob(it)[0], "means": item_means(attr(it), it.fact, sets)})
        step()


class Rows(dict):
    """Item rows in memory, with ``JsonLines``' ``put`` (for checks that keep nothing on disk)."""

    def put(self, row: dict) -> None:
        self[(row["fact_id"], row["lang"], row["candidate"])] = row


ROW_KEY, ROW_NEED = ("fact_id", "lang", "candidate"), ("label", "logp", "means")


def item_records(path, config: dict, fresh: bool = False) -> JsonLines:
    """factcheck-<lang>.jsonl: a settings line, then one row per scored item, fsync'ed as written; rows
    made under other settings (method, steps, seed, the plan's fingerprint) are refused in one line."""
    from kneuron.runs.store import RunStoreError
    return JsonLines(path, key=ROW_KEY, need=ROW_NEED, config=config, fresh=fresh, noun="item", error=RunStoreError,
                     hint="made with other fact-check settings or DKN rows: use the same ones or --restart")
