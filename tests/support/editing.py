"""Helpers for the editing tests: the mean log-probability per token of an answer, the measure the
optimised methods (rome, kn-opt, ft) are asked to raise."""
from __future__ import annotations

from kneuron.probe import answer_prob


def mean_logp(h, prompt: str, obj: str) -> float:
    """Mean log-probability per token of ``obj`` after ``prompt``."""
    s = answer_prob(h, prompt, obj)
    return s.logp / len(s.target_ids)
