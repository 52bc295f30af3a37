"""k-means selection: FAISS k-means with ``budget`` centroids, the sample nearest each.

The unlabeled fused features ``h`` are clustered into ``budget`` centroids by
FAISS Lloyd iterations. They start, by default (``init="k-means++"``), from
exact k-means++ seeds drawn with ``rng`` (mmal's k-means++ over the features;
its first seed is the sample of largest norm), which avoids most of the poor
local minima of a random start; ``init="random"`` leaves the start to FAISS
(a random sample, seeded with one draw from ``rng``). Each centroid then
takes its nearest unlabeled sample. Two centroids can share a nearest sample;
collisions are resolved greedily by distance: all (centroid, sample) pairs
among each centroid's nearest candidates are visited by increasing distance
(ties: lower centroid, then lower row) and a pair is kept when neither its
centroid nor its sample is taken yet; centroids left over search deeper. The
picks are returned in the order they were matched (closest pairs first).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmal.cache.reader import Cache
from mmal.errors import SelectionError
from mmal.select.backend import asnumpy
from mmal.select.embedding import FactorizedEmbedding
from mmal.select.kmeanspp import kmeans_pp
from mmal.select.knn import FlatIndex, kmeans
from mmal.select.params import int_param
from mmal.select.registry import Selection, register
from mmal.select.scoring import head_inputs

#: Nearest samples fetched per centroid in the first matching round.
FIRST_NEIGHBOURS = 8

#: (centroid, sample) pairs whose float64 distance is computed at once.
PAIR_CHUNK = 8192


def _pair_sq_distances(centroids: Any, points: Any, owner: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """float64 ``‖centroids[owner] - points[rows]‖²`` per pair, in chunks."""
    # FAISS ranks in float32; a centroid halfway between two samples (a cluster
    # of two) is a near-tie that float32 can order either way. The matching
    # uses float64 so ties resolve as exact arithmetic says.
    c, p = asnumpy(centroids), asnumpy(points)
    out = np.empty(len(owner))
    for start in range(0, len(owner), PAIR_CHUNK):
        part = slice(start, start + PAIR_CHUNK)
        diff = c[owner[part]].astype(np.float64) - p[rows[part]].astype(np.float64)
        out[part] = np.einsum("ij,ij->i", diff, diff)
    return out


def nearest_distinct(centroids: np.ndarray, points: np.ndarray, *, xp: Any = np) -> np.ndarray:
    """A distinct row of ``points`` for every centroid, nearest first, collisions resolved greedily.

    Parameters
    ----------
    centroids : (c, D) float array
    points : (n, D) float array, ``n >= c``

    Returns
    -------
    (c,) int64 rows of ``points`` in matching order (not centroid order).
    """
    c, n = len(centroids), len(points)
    if c > n:
        raise ValueError(f"{c} centroids need at least as many points, got {n}")
    index = FlatIndex(points.shape[1], xp=xp)
    index.add(points)
    open_centroids = np.arange(c)
    taken = np.zeros(n, dtype=bool)
    picks: list[int] = []
    k = min(FIRST_NEIGHBOURS, n)
    # k doubles up to n; a round that searches all n points matches every open
    # centroid (fewer centroids than points), so at most log2(n) + 2 rounds run.
    for _ in range(max(1, n).bit_length() + 2):
        if not len(open_centroids):
            break
        _, rows = index.search(centroids[open_centroids], k)
        owner, rows = np.repeat(open_centroids, k), rows.ravel()
        dist = _pair_sq_distances(centroids, points, owner, rows)
        matched = np.zeros(c, dtype=bool)
        for i in np.lexsort((rows, owner, dist)):
            if not matched[owner[i]] and not taken[rows[i]]:
                matched[owner[i]] = taken[rows[i]] = True
                picks.append(int(rows[i]))
        open_centroids = open_centroids[~matched[open_centroids]]
        k = min(2 * k, n)
    if len(open_centroids):
        raise RuntimeError(f"{len(open_centroids)} centroids found no free point after searching "
                           "all points; this is a bug")
    return np.asarray(picks, dtype=np.int64)


def kmeanspp_seeds(points: np.ndarray, k: int, *, rng: np.random.Generator, xp: Any = np) -> np.ndarray:
    """(k, D) float32 k-means++ seeds among ``points`` (n, D), exact D² sampling."""
    # g = 1 ⊗ h is h itself: the factorized k-means++ runs on plain features.
    x = xp.asarray(points)
    emb = FactorizedEmbedding(xp.ones((len(points), 1), dtype=x.dtype), x)
    return points[kmeans_pp(emb, k, rng=rng, xp=xp)]


@register("kmeans", "FAISS k-means on the fused features, the sample nearest each centroid")
def select_kmeans(
    cache: Cache, budget: int, *, rng: np.random.Generator, xp: Any = np, niter: int = 20,
    init: str = "k-means++",
) -> Selection:
    """``budget`` unlabeled samples, one per k-means centroid of the unlabeled fused features.

    ``niter`` Lloyd iterations from ``init`` = ``"k-means++"`` or ``"random"``
    seeds (see the module docstring).
    """
    niter = int_param("niter", niter, minimum=1)
    if init not in ("k-means++", "random"):
        raise SelectionError(f"kmeans init must be 'k-means++' or 'random', got {init!r}")
    unlabeled = ~cache.labeled
    positions = np.flatnonzero(unlabeled).astype(np.int64)
    points = head_inputs(cache, unlabeled)
    seeds = kmeanspp_seeds(points, budget, rng=rng, xp=xp) if init == "k-means++" else None
    centroids = kmeans(points, budget, seed=int(rng.integers(2**31)), niter=niter, xp=xp,
                       init_centroids=seeds)
    return Selection(positions=positions[nearest_distinct(centroids, points, xp=xp)])
