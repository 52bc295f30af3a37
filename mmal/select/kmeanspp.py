"""Exact k-means++ seeding over a factorized gradient embedding, for the whole pool.

k-means++ (Arthur & Vassilvitskii, 2007) as BADGE uses it: the first center is
the sample with the largest norm; every next center is drawn with probability
proportional to ``D(x)²``, the squared distance from ``x`` to its nearest chosen
center; a chosen sample is never drawn again.

Recomputing ``D²`` for all ``N`` samples after every new center costs one
memory-bound pass over the pool per center. Instead we keep an upper bound
``U(x) >= D(x)²`` that is made exact in *blocks* of new centers with matrix
products (compute-bound, ``block_size`` centers at once). Between refreshes a
sample ``x`` is proposed with probability ``U(x)/ΣU`` and accepted with
probability ``D(x)²/U(x)``, where ``D(x)²`` needs only the few centers added
since the last refresh. Each accepted draw therefore has probability
``U(x)/ΣU · D(x)²/U(x) ∝ D(x)²``: exactly k-means++, not an approximation.

A proposal can be rejected many times in a row when the bound is stale (the
new centers sit where most of ``U``'s mass is). After ``4·min(block_size, 128) + 16``
rejections the bound is refreshed, and the next proposal, drawn from the exact
``U = D²``, is the center: every center takes a bounded number of proposals
and the draw stays exact (the comment in the loop says why).

A refresh skips the D-wide ``u`` products of (sample, center) pairs where the
center cannot come closer than ``U(x)`` (a Cauchy-Schwarz bound from the K-wide
``r`` products with a proven rounding margin, :mod:`mmal.select.refresh`), in
groups of centers of one pseudo-label, and runs its row chunks on every core; on
VGGSound-sized pools this skips all but a few percent of the products late in
the seeding. A skipped pair could not have lowered the bound, so right after a
refresh ``U`` is exactly ``D²`` as computed, which the first proposal after a
refresh relies on.

Exact duplicates of a chosen center have ``D² = 0`` (the distance expansion's
rounding noise is snapped to 0, :data:`mmal.select.embedding.ROUNDING_TOLERANCE`),
so they are never drawn while some sample has ``D² > 0``; once every unchosen
sample has ``D² = 0`` the next center is uniform among them.

An embedding whose squared distances would overflow its dtype (NaN distances
that no test accepts) is refused up front
(:meth:`mmal.select.embedding.FactorizedEmbedding.overflowing_rows`);
:func:`mmal.select.embedding.cache_embedding` reads such a cache in float64.

All random numbers come from the host NumPy ``Generator`` (two uniforms per
proposal, or one ``choice`` when no distance mass is left), so NumPy and CuPy
consume the same stream; in float64 mode they pick the same ids.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from mmal.errors import SelectionError, preview
from mmal.progress import progress_bar
from mmal.select.backend import asnumpy
from mmal.select.embedding import FactorizedEmbedding, expanded_sq_distances
from mmal.select.params import int_param
from mmal.select.refresh import Scratch, lower_bound_inplace
from mmal.select.threads import RowPool, cpu_workers

log = logging.getLogger(__name__)

#: Centers per bound refresh. Larger blocks mean fewer refreshes (the centers of
#: the last, partial block are never refreshed against) and more work per
#: proposal against the pending centers. Measured with the threaded refresh on a
#: 2-core CPU (docs/performance.md): 256 against 128 took 0.12 s against 0.16 s
#: at KineticsSound scale and 6.5 s against 7.1-7.7 s at VGGSound scale. Any
#: value gives exact D² sampling; a budget above it picks other samples for the
#: same seed than another value would (0.3.0's default was 128; ``-p
#: block_size=128`` picked the same 500 samples as 0.3.0 at KineticsSound scale).
DEFAULT_BLOCK_SIZE = 256

#: Rejections since the last refresh are capped at ``4·min(block_size, 128) + 16``:
#: the run of rejections that a refresh ends does not grow past that of 128-center
#: blocks (the default of mmal 0.3.0), so budgets up to 129 pick what
#: ``block_size=128`` picks (the same schedule of refreshes).
REJECTION_BLOCK = 128


def kmeans_pp(
    emb: FactorizedEmbedding,
    budget: int,
    *,
    rng: np.random.Generator,
    xp: Any = np,
    block_size: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Seed ``budget`` centers by exact k-means++ over ``emb``.

    Parameters
    ----------
    emb : FactorizedEmbedding
        ``n`` samples; ``r`` and ``u`` live on ``xp`` (float32 or float64).
    budget : int
        Number of centers, ``1 <= budget <= n``.
    rng : numpy.random.Generator
        The only source of randomness (drawn on the host).
    xp : array module
        ``numpy`` or ``cupy``, matching ``emb``.
    block_size : int, optional
        Centers per exact bound refresh (default :data:`DEFAULT_BLOCK_SIZE`).
        Any value gives the same distribution; it only changes the speed.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    positions : np.ndarray
        (budget,) int64 rows of ``emb`` in pick order, no repeats.

    Raises
    ------
    SelectionError
        When squared distances of some rows would overflow ``emb``'s dtype
        (:meth:`FactorizedEmbedding.overflowing_rows`).

    Examples
    --------
    >>> emb = FactorizedEmbedding(np.eye(3), np.ones((3, 2)))
    >>> kmeans_pp(emb, 2, rng=np.random.default_rng(0)).shape
    (2,)
    """
    n = len(emb)
    if not 1 <= budget <= n:
        raise ValueError(f"budget must be in [1, {n}], got {budget}")
    block = DEFAULT_BLOCK_SIZE if block_size is None else int_param("block_size", block_size,
                                                                     minimum=1)
    bad = emb.overflowing_rows()
    if bad.any():
        raise SelectionError(
            f"the embedding of rows {preview(np.flatnonzero(bad))} is too large for "
            f"{emb.r.dtype} distances (or not finite); compute it in float64 or scale it down"
        )
    with RowPool(cpu_workers(xp)) as pool:  # one set of refresh threads for the seeding
        return _kmeans_pp(emb, budget, rng, xp, block, progress, pool)


def _kmeans_pp(emb, budget, rng, xp, block, progress, pool) -> np.ndarray:
    sampler = _BoundSampler(emb, xp, block, pool)
    sampler.accept(int(xp.argmax(emb.sq_norms())))
    bar = progress_bar(total=budget, enabled=progress, desc="k-means++", unit="center",
                       leave=False)
    bar.update(1)
    # Each pass accepts a center or rejects a proposal. After rejection_limit + 1
    # rejections the bound is refreshed and the next proposal is an exact draw
    # (below), so a center takes at most rejection_limit + 2 passes and this
    # bound is never reached: no input makes the loop spin.
    for _ in range((budget - 1) * (sampler.rejection_limit + 2)):
        if len(sampler.centers) == budget:
            break
        if sampler.needs_refresh():
            sampler.refresh()
        if sampler.total <= 0.0:
            # Every remaining sample coincides with a center: D² is 0 everywhere,
            # so k-means++ is undefined; take an unchosen sample uniformly.
            sampler.accept(int(rng.choice(np.flatnonzero(~sampler.chosen))))
            bar.update(1)
            continue
        u_draw, u_accept = rng.random(2)
        x = sampler.propose(u_draw)
        # Right after a refresh (nothing pending) U is D², so the proposal is an
        # exact D² draw: accept it without the test (which it would pass). Ending
        # a run of rejections this way keeps the distribution exact: each
        # proposal is accepted as x with probability U(x)/ΣU · D(x)²/U(x) ∝ D(x)²,
        # the same for every x whatever rejections came before, and the exact
        # draw is ∝ D(x)² too, so the center is ∝ D(x)² however the run ends.
        if not sampler.pending or u_accept * sampler.bound[x] < sampler.exact_sq_distance(x):
            sampler.accept(x)
            bar.update(1)
        else:
            sampler.rejections += 1
    bar.close()
    if len(sampler.centers) < budget:
        raise RuntimeError(f"k-means++ stopped at {len(sampler.centers)} of {budget} centers "
                           "after its bound on proposals; this is a bug")
    log.debug("k-means++: %d centers, %d proposals rejected, %d refreshes (%d after the "
              "rejection limit), u products for %.0f%% of the dense work", budget,
              sampler.total_rejections + sampler.rejections, sampler.refreshes,
              sampler.limit_refreshes,
              100 * sampler.computed_rows / max(1, sampler.refreshes * len(emb)))
    return np.asarray(sampler.centers, dtype=np.int64)


class _BoundSampler:
    """State of the seeding: chosen centers, the bound ``U`` and its CDF on the host."""

    def __init__(self, emb: FactorizedEmbedding, xp: Any, block: int, pool: RowPool) -> None:
        self.emb, self.xp, self.block, self.pool = emb, xp, block, pool
        self.scratch = Scratch(xp)
        n, k, d = len(emb), emb.r.shape[1], emb.u.shape[1]
        dtype = emb.r.dtype
        self.sq_norms = emb.sq_norms()
        self.device_bound = xp.full(n, xp.inf, dtype=dtype)
        self.pend_r = xp.empty((block, k), dtype=dtype)
        self.pend_u = xp.empty((block, d), dtype=dtype)
        self.pend_a = xp.empty(block, dtype=dtype)
        self.pending: list[int] = []
        self.centers: list[int] = []
        self.chosen = np.zeros(n, dtype=bool)
        self.bound = np.full(n, np.inf)  # host float64 copy of U, valid after refresh
        self.cdf = np.zeros(n)
        self.total = 0.0
        # Rejections since the last refresh; past this many, the bound is refreshed.
        self.rejection_limit = 4 * min(block, REJECTION_BLOCK) + 16
        self.rejections = 0
        self.total_rejections = 0
        self.refreshes = 0
        self.limit_refreshes = 0
        self.computed_rows = 0

    def accept(self, x: int) -> None:
        """Make ``x`` a center; it joins the pending block."""
        p = len(self.pending)
        self.pend_r[p] = self.emb.r[x]
        self.pend_u[p] = self.emb.u[x]
        self.pend_a[p] = self.sq_norms[x]
        self.pending.append(x)
        self.centers.append(x)
        self.chosen[x] = True

    def needs_refresh(self) -> bool:
        # A full block, or a stale bound wasting proposals (rejections beyond
        # a few per center): refreshing is cheaper than rejecting on.
        return bool(self.pending) and (
            len(self.pending) >= self.block or self.rejections > self.rejection_limit
            or self.total <= 0.0
        )

    def refresh(self) -> None:
        """Make ``U`` exact against all centers (one pass of matrix products)."""
        p = len(self.pending)
        xp = self.xp
        self.limit_refreshes += self.rejections > self.rejection_limit
        self.computed_rows += lower_bound_inplace(
            self.emb, self.pend_r[:p], self.pend_u[:p], self.pend_a[:p],
            xp.sqrt(xp.einsum("ij,ij->i", self.pend_u[:p], self.pend_u[:p])),
            self.device_bound, xp=xp, scratch=self.scratch, pool=self.pool)
        self.device_bound[xp.asarray(np.asarray(self.pending))] = 0.0
        self.bound = asnumpy(self.device_bound).astype(np.float64)
        self.bound[self.chosen] = 0.0
        np.cumsum(self.bound, out=self.cdf)
        self.total = float(self.cdf[-1])
        self.pending = []
        self.total_rejections += self.rejections
        self.rejections = 0
        self.refreshes += 1

    def propose(self, uniform: float) -> int:
        """Sample index with probability ``U(x)/ΣU`` (zero-bound samples never)."""
        x = int(np.searchsorted(self.cdf, uniform * self.total, side="right"))
        if x < len(self.cdf):
            return x
        # uniform·ΣU rounded up to ΣU: the last sample with U > 0
        return int(np.searchsorted(self.cdf, self.total, side="left"))

    def exact_sq_distance(self, x: int) -> float:
        """``D(x)²``: the bound, lowered by the centers added since the last refresh."""
        if self.chosen[x]:
            return 0.0
        d2 = self.bound[x]
        p = len(self.pending)
        if p:
            xp = self.xp
            rr = self.pend_r[:p] @ self.emb.r[x]
            uu = self.pend_u[:p] @ self.emb.u[x]
            to_pending = expanded_sq_distances(rr * uu, self.sq_norms[x], self.pend_a[:p])
            d2 = min(d2, float(xp.min(to_pending)))
        return d2
