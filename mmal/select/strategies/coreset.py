"""Core-set selection (Sener & Savarese, 2018): k-center greedy on the fused features.

Greedy k-center repeatedly picks the unlabeled sample farthest from its
nearest center, the labeled samples being the initial centers. With no labeled
sample the first center is drawn uniformly from the unlabeled pool with
``rng`` (the only random draw); every later pick is deterministic, equal
distances going to the lower row position.

Exact and memory bounded without an N×N matrix: we keep ``d(x)``, each
candidate's squared distance to its nearest center, as an upper bound that is
made exact against *blocks* of new centers with one FAISS search (compute-bound
matrix products instead of one memory-bound pass over the pool per center).
Between refreshes the farthest candidate is found lazily: candidates sit in a
max-heap keyed by their bound; the top one is lowered against the few centers
added since the last refresh and pushed back, until the top is up to date. As
bounds only decrease, an up-to-date top is the exact farthest candidate, so the
picks equal plain greedy k-center.

Refresh distances are FAISS float32 (CPU or GPU by ``xp``); checks against
pending centers are float64. Near-ties (relative gaps around 1e-6) can
therefore resolve differently between the CPU and GPU FAISS.
"""

from __future__ import annotations

import heapq
import logging
from typing import Any

import numpy as np

from mmal.cache.reader import Cache
from mmal.select.knn import FlatIndex
from mmal.select.params import int_param
from mmal.select.registry import Selection, register
from mmal.select.scoring import head_inputs, unlabeled_positions

log = logging.getLogger(__name__)

#: New centers folded into the bounds per FAISS refresh: large enough for
#: efficient matrix products, small enough that lazy checks stay cheap.
DEFAULT_BLOCK_SIZE = 256


def min_sq_distances(points: np.ndarray, centers: np.ndarray, *, xp: Any = np) -> np.ndarray:
    """(n,) float64 squared distance from each of ``points`` (n, D) to its nearest of ``centers`` (c, D)."""
    index = FlatIndex(points.shape[1], xp=xp)
    index.add(centers)
    return index.search(points, 1)[0][:, 0].astype(np.float64)


def k_center_greedy(
    points: np.ndarray, budget: int, *, centers: np.ndarray | None = None,
    rng: np.random.Generator, xp: Any = np, block_size: int = DEFAULT_BLOCK_SIZE,
) -> np.ndarray:
    """Greedy k-center: ``budget`` rows of ``points``, each the farthest from all centers so far.

    Parameters
    ----------
    points : (m, D) float32 array
        Candidates (host memory).
    budget : int, ``1 <= budget <= m``
    centers : (c, D) float32 array, optional
        Existing centers (the labeled set). None or empty: the first pick is
        drawn uniformly with ``rng``.
    rng : numpy.random.Generator
    xp : array module
        CuPy runs the FAISS searches on the GPU where FAISS supports it.
    block_size : int
        Centers per exact refresh; any value gives the same picks.

    Returns
    -------
    (budget,) int64 rows of ``points`` in pick order, no repeats.
    """
    m = len(points)
    if not 1 <= budget <= m:
        raise ValueError(f"budget must be in [1, {m}], got {budget}")
    points = np.ascontiguousarray(points, dtype=np.float32)
    picks: list[int] = []
    if centers is not None and len(centers):
        bound = min_sq_distances(points, centers, xp=xp)
    else:
        first = int(rng.integers(m))
        picks.append(first)
        bound = min_sq_distances(points, points[first:first + 1], xp=xp)
    state = _LazyFarthest(points, bound, picks, xp)
    while len(picks) < budget:
        if len(state.pending) >= block_size:
            state.refresh()
        picks.append(state.pop_farthest())
    log.debug("k-center greedy: %d picks, %d lazy checks, %d refreshes",
              budget, state.checks, state.refreshes)
    return np.asarray(picks, dtype=np.int64)


class _LazyFarthest:
    """Bounds ``d(x)``, the max-heap over them and the centers not yet folded in."""

    def __init__(self, points: np.ndarray, bound: np.ndarray, picks: list[int], xp: Any) -> None:
        self.points, self.bound, self.xp = points, bound, xp
        self.alive = np.ones(len(points), dtype=bool)
        self.alive[picks] = False
        self.pending: list[int] = []
        self.seen = np.zeros(len(points), dtype=np.int64)  # pending centers folded into bound[x]
        self.checks = self.refreshes = 0
        self._rebuild_heap()

    def _rebuild_heap(self) -> None:
        idx = np.flatnonzero(self.alive)
        order = np.lexsort((idx, -self.bound[idx]))  # a sorted list is already a valid heap
        self.heap = list(zip((-self.bound[idx[order]]).tolist(), idx[order].tolist(), strict=True))

    def refresh(self) -> None:
        """Fold every pending center into all bounds with one FAISS search."""
        near = min_sq_distances(self.points, self.points[self.pending], xp=self.xp)
        np.minimum(self.bound, near, out=self.bound)
        self.pending = []
        self.seen[:] = 0
        self.refreshes += 1
        self._rebuild_heap()

    def pop_farthest(self) -> int:
        """Remove and return the candidate farthest from every center (exact)."""
        # A popped candidate is either returned or brought up to date and pushed
        # back, once: at most len(heap) + 1 pops.
        for _ in range(len(self.heap) + 1):
            _, x = heapq.heappop(self.heap)
            if self.seen[x] < len(self.pending):
                self.checks += 1
                new = self.points[self.pending[self.seen[x]:]].astype(np.float64)
                diff = new - self.points[x].astype(np.float64)
                self.bound[x] = min(self.bound[x], float((diff * diff).sum(axis=1).min()))
                self.seen[x] = len(self.pending)
                heapq.heappush(self.heap, (-self.bound[x], x))
                continue
            self.alive[x] = False
            self.pending.append(x)
            self.seen[x] = len(self.pending)
            return x
        raise RuntimeError("k-center greedy found no up-to-date candidate; this is a bug")


@register("coreset", "k-center greedy on the fused features, from the labeled set")
def select_coreset(
    cache: Cache, budget: int, *, rng: np.random.Generator, xp: Any = np,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Selection:
    """Greedy k-center over the unlabeled fused features ``h``, labeled samples as centers.

    Reads the fused features once (N × D_fused float32 in host memory). ``rng``
    is used only when no sample is labeled (the first center).
    """
    block_size = int_param("block_size", block_size, minimum=1)
    labeled = cache.labeled
    unlabeled_pos = unlabeled_positions(cache)
    points = head_inputs(cache, ~labeled)
    centers = head_inputs(cache, labeled) if labeled.any() else None
    picks = k_center_greedy(points, budget, centers=centers, rng=rng, xp=xp, block_size=block_size)
    return Selection(positions=unlabeled_pos[picks])
