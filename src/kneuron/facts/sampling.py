"""Spreading a sample over groups (relations, languages): one item from each group in turn."""
from __future__ import annotations

from typing import Hashable, Mapping, Sequence, TypeVar

T = TypeVar("T")


def round_robin(groups: Mapping[Hashable, Sequence[T]], n: int | None = None) -> list[T]:
    """Up to ``n`` items (all when None): the first item of every group in the mapping's order, then
    the second of every group that has one, and so on — so a small sample still covers many groups."""
    out: list[T] = []
    depth = max((len(g) for g in groups.values()), default=0)
    for i in range(depth):
        for g in groups.values():
            if n is not None and len(out) >= n:
                return out
            if i < len(g):
                out.append(g[i])
    return out
