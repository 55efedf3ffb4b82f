"""0-dimensional persistent homology of a finite metric space: the single-linkage merge tree of a distance
matrix, and the clusters that persist over the widest range of radii. Pure numpy, no model: the structural
step of the clusters rule for degenerate knowledge neurons (``kneuron.paper.dkn``, after Chen et al., ACL
2025), where the points are candidate neurons and the distances come from their connection weights.

Grow a ball of radius r around every point and join two points when their balls meet (distance <= r): as r
goes from 0 up, the connected components merge, two at a time, exactly as single-linkage clustering merges
them (Kruskal's algorithm on the edges by length). Each component is a ``Cluster``: a single point is born
at r = 0, a merged component at the radius of its merge, and a component dies at the radius where it merges
into another (its lifetime, or persistence, is death - birth); the last one never dies (death = inf).

``cut`` keeps the partition that exists over the widest interval of radii below a ``horizon``; see its
docstring for why.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kneuron.errors import ConfigError

GAP_TIES = 1e-9       # gaps this close (relative to the horizon) are equally wide


@dataclass(frozen=True)
class Cluster:
    """A component of the filtration: its points (sorted indices), the radius it is born at (0 for one
    point, else its merge) and the radius it merges into another at (inf for the last one)."""
    members: tuple[int, ...]
    birth: float
    death: float

    @property
    def persistence(self) -> float:
        return self.death - self.birth


@dataclass(frozen=True)
class Cut:
    """The persistent clusters (``cut``): the components alive over the widest gap (lo, hi) of radii,
    sorted by their smallest member, with the merge radii below the horizon they were chosen from."""
    clusters: list[Cluster]
    gap: tuple[float, float]
    radii: list[float]

    @property
    def width(self) -> float:
        return self.gap[1] - self.gap[0]


def check_distances(d) -> np.ndarray:
    """``d`` as a float matrix, refused (ConfigError, one line) unless square, finite, symmetric, >= 0 and
    zero on the diagonal."""
    d = np.asarray(d, dtype=float)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ConfigError(f"a distance matrix must be square, got shape {tuple(d.shape)}")
    if not np.isfinite(d).all():
        raise ConfigError("a distance matrix must be finite (it holds nan or inf)")
    if (d < 0).any() or not np.allclose(d, d.T) or not np.allclose(np.diag(d), 0):
        raise ConfigError("a distance matrix must be non-negative, symmetric and zero on its diagonal")
    return d


def merge_tree(d) -> list[Cluster]:
    """Every cluster of the single-linkage filtration of ``d``: the n points (index order), then one cluster
    per merge in the order of the merges. Edges are taken by (length, i, j), so equal distances merge in
    the order of their points' indices: the same matrix always gives the same tree."""
    d = check_distances(d)
    n = len(d)
    i, j = np.triu_indices(n, 1)
    order = np.lexsort((j, i, d[i, j]))                 # by length, then i, then j
    owner = list(range(n))                              # point -> the index of its live cluster
    members = [{k} for k in range(n)]
    births, deaths = [0.0] * n, [math.inf] * n
    for e in order:
        a, b = owner[i[e]], owner[j[e]]
        if a == b:
            continue
        r = float(d[i[e], j[e]])
        deaths[a] = deaths[b] = r
        members.append(members[a] | members[b])
        births.append(r)
        deaths.append(math.inf)
        for k in members[-1]:
            owner[k] = len(members) - 1
    return [Cluster(tuple(sorted(m)), b, x) for m, b, x in zip(members, births, deaths)]


def cut(d, horizon: float = 1.0) -> Cut:
    """The clusters that persist: cut the merge tree in the widest gap between consecutive merge radii in
    [0, ``horizon``] (the gaps from 0 to the first merge and from the last merge below the horizon to the
    horizon included), and return the components alive across it.

    Why this rule: the partition into k components exists for a whole interval of radii (from the merge
    that makes it to the next one); the partition that exists longest is the structure least sensitive to
    the radius chosen, which is what persistence asks for, and every cluster it returns lives at least
    across that interval. It yields a partition (no nested clusters to choose between) and it needs no
    count of clusters. The one parameter, ``horizon``, is the radius beyond which points are unrelated:
    without it the single component at the top would persist for ever and always win, and a tight blob
    could not be told from points scattered at the same relative spacing. For cosine distances between
    weight vectors, 1 (orthogonal weights) is the natural horizon: a tight blob then gives one cluster
    (it lives from its last merge to the horizon), two or three well-separated blobs give two or three,
    and points no closer than the horizon stay one cluster each. Ties: gaps equally wide (to ``GAP_TIES``
    of the horizon) are decided for the largest radius, i.e. the fewest clusters (claim less structure)."""
    if not horizon > 0:
        raise ConfigError(f"the horizon must be > 0, got {horizon}")
    tree = merge_tree(d)
    n = len(check_distances(d))
    radii = [c.birth for c in tree[n:] if c.birth < horizon]
    edges = [0.0, *radii, float(horizon)]
    widths = [hi - lo for lo, hi in zip(edges, edges[1:])]
    best = max(widths)
    k = max(i for i, w in enumerate(widths) if w >= best - GAP_TIES * horizon)
    lo, hi = edges[k], edges[k + 1]
    alive = [c for c in tree if c.birth <= lo and c.death >= hi]
    return Cut(sorted(alive, key=lambda c: c.members[0]), (lo, hi), radii)


def cosine_distances(x) -> np.ndarray:
    """1 - cosine similarity between the rows of ``x`` (a point per row), in [0, 2]; a zero row is at
    distance 1 (unrelated) from every other row."""
    x = np.asarray(x, dtype=float)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    u = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    d = np.clip(1.0 - u @ u.T, 0.0, 2.0)
    d = (d + d.T) / 2
    np.fill_diagonal(d, 0.0)
    return d


__all__ = ["Cluster", "Cut", "check_distances", "cosine_distances", "cut", "merge_tree"]
