"""The k-means++ bound refresh: ``U(x) = min(U(x), D²(x, c))`` for a block of new centers.

This is where exact k-means++ spends its time on large pools: every row against
every new center. Two things make it cheap.

**Skipping pairs.** By Cauchy-Schwarz,
``‖g_x - g_c‖² >= ‖g_x‖² + ‖g_c‖² - 2 |r_x·r_c| ‖u_x‖ ‖u_c‖``, which needs only
the K-wide ``r`` products; the D-wide ``u`` product of a pair is computed only
when this lower bound, less a rounding margin (:func:`skip_margin`), is below
``U(x)``. Pairs that pass are few and concentrated: a row can come closer only
to centers with a large ``r_x·r_c``, i.e. of its own pseudo-label. So the
centers are sorted by their largest ``|r|`` entry and split into groups; each
group multiplies only the rows that need one of its centers.

The margin is proven, not tuned: a skipped pair's distance, computed in
floating point by any summation order, is at least ``U(x)`` and is not snapped
to 0, so skipping lowers no bound less than the dense refresh (every pair
computed) would (:func:`skip_margin` gives the argument).

**Row chunks on every core.** The pool is cut into near-equal row chunks whose
boundaries depend on the pool's size only, and they run on the threads of a
:class:`mmal.select.threads.RowPool`; a chunk's rows are computed by the same
operations on any thread, so the bound does not depend on the number of
threads, bit for bit.

The products a chunk computes have the shapes its skipping leaves (a group's
gathered rows); a BLAS may round a product of another shape differently
(OpenBLAS takes other kernels for a single row or a handful of rows). So
another chunk size or group width can move a bound by the rounding of its
products (an ulp on typical data; hundreds of ``eps`` for adversarial
near-parallel vectors), as another BLAS or a GPU can, and the seeding stays
exact D² sampling for the distances as computed.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from mmal.select.backend import backend_name
from mmal.select.embedding import ROUNDING_TOLERANCE, FactorizedEmbedding, nearest_sq_distances
from mmal.select.threads import (
    CHUNK_MULTIPLE,
    RowPool,
    cpu_workers,
    row_chunks,
    row_parallel_map,
)

#: Rows per chunk on a CPU. Each worker runs whole chunks with a one-thread
#: BLAS, so a chunk only needs to be wide enough for an efficient product and
#: small enough that every worker gets several (load balance) and the
#: temporaries stay small (measured on a 2-core CPU, docs/performance.md).
REFRESH_CHUNK_ROWS = 4096

#: Centers per product group on a CPU: narrow enough that a row multiplies few
#: centers it cannot come closer to, wide enough for an efficient product.
#: Measured on a 2-core CPU: groups of 8 do less work per refresh on one thread,
#: but on two threads their extra Python calls contend for the GIL (VGGSound
#: scale: 7.6-8.2 s against 6.7 s for groups of 16 or 32).
CENTER_GROUP = 32

#: A center that more than this share of a chunk's rows need gets a group of its
#: own (a small ``‖g_c‖`` can come closer to most rows): it would otherwise make
#: its pseudo-label's group dense. Measured at VGGSound scale: early in the
#: seeding two of 128 centers were needed by 99% of the rows, the rest by 0.3%.
WIDE_SHARE = 0.25

#: Copying one row of ``u`` out of the pool costs about as much as this many of
#: its D-wide products with centers (4·D bytes at memory speed against 2·D
#: flops at matrix-product speed; measured on a 2-core CPU). Decides between
#: one product of every needed row with all centers and one per center group.
GATHER_COST = 24

#: Rows per chunk on a GPU (fewer kernel launches).
GPU_CHUNK_ROWS = 65536

#: Roundings besides the two inner products that the margin's argument counts
#: (:func:`skip_margin`), with room to spare for second-order terms.
OTHER_ROUNDINGS = 16


def skip_margin(width: int, dtype: Any) -> float:
    """Relative margin of the skip test: skipping a pair never changes the refreshed bound.

    A pair ``(x, c)`` is skipped when, in floating point,
    ``2|r̂r|·n_x·n_c - a_c <= a_x - U(x) - margin·(a_x + a_c_max)``, where
    ``r̂r`` is the computed ``r_x·r_c`` (the same value the distance uses),
    ``n = sqrt(fl(‖u‖²))`` and ``a = ‖g‖²`` as computed. The distance the dense
    refresh would compute is ``fl(a_x + a_c - 2·fl(r̂r·ûu))`` with ``ûu`` the
    computed ``u_x·u_c``. With ``ε`` the unit roundoff (half of ``eps``) and
    ``γ_D = Dε/(1 - Dε)``:

    * ``|ûu| <= (1 + γ_D) ‖u_x‖ ‖u_c‖`` for any summation order (the standard
      bound on a computed inner product), and ``‖u_x‖ <= n_x (1 + γ_D/2 + 2ε)``
      (``‖u‖²`` is itself a computed sum of D squares, then a square root);
    * so ``2|r̂r·ûu|`` exceeds ``2|r̂r| n_x n_c`` by at most
      ``(2γ_D + 6ε)·S`` with ``S = a_x + a_c_max`` (``2|r̂r| n_x n_c`` is about
      ``2‖g_x‖‖g_c‖ <= S``);
    * the test's own arithmetic and the distance's additions are a handful of
      roundings of values below ``S``: at most ``12ε·S``, counted with
      second-order terms in :data:`OTHER_ROUNDINGS` ``·eps``.

    A skipped pair's computed distance is therefore at least
    ``U(x) + margin·S - (2γ_D + OTHER_ROUNDINGS·eps)·S``. With ``margin``
    ``= 2γ_D + (OTHER_ROUNDINGS + ROUNDING_TOLERANCE)·eps`` that is at least
    ``U(x)``, and above the snap-to-0 threshold ``ROUNDING_TOLERANCE·eps·S`` of
    :func:`mmal.select.embedding.expanded_sq_distances`: the pair could not
    have lowered the bound.

    The argument needs the products in ``dtype``'s own precision: CuPy with
    ``CUPY_TF32=1`` (float32 products on TF32 tensor cores, 10-bit mantissas)
    breaks it, so leave that unset for selection.

    Parameters
    ----------
    width : int
        D, the width of ``u``.
    dtype : dtype
        The dtype the products are computed in.

    Returns
    -------
    float
        About ``(D + 80)·eps``: 1.3e-4 in float32 at D = 1,024 (the measured
        margin used before was ``2·ROUNDING_TOLERANCE·eps``, 1.5e-5).
    """
    eps = float(np.finfo(dtype).eps)
    unit = eps / 2
    gamma = width * unit / (1 - width * unit)
    return 2 * gamma + (OTHER_ROUNDINGS + ROUNDING_TOLERANCE) * eps


def refresh_blocking(xp: Any) -> tuple[int, int]:
    """(rows per chunk, centers per group) for :func:`lower_bound_inplace` on ``xp``.

    On a CPU, center groups skip most of the ``u`` products (measured at
    VGGSound scale: a row needs about 1.3 of 128 centers late in the seeding,
    almost always of its own pseudo-label).
    On a GPU the dense products are nearly free and every group costs kernel
    launches and a host sync, so one group of all centers and large chunks.
    """
    if backend_name(xp) == "numpy":
        return REFRESH_CHUNK_ROWS, CENTER_GROUP
    return GPU_CHUNK_ROWS, 1 << 30


def lower_bound_inplace(emb: FactorizedEmbedding, r_c: Any, u_c: Any, sq_norms_c: Any,
                        u_norms_c: Any, bound: Any, *, xp: Any = np,
                        chunk_rows: int | None = None, group: int | None = None,
                        workers: int | None = None, scratch: Scratch | None = None,
                        pool: RowPool | None = None) -> int:
    """``bound = minimum(bound, squared distance to the nearest of the m centers)``, in place.

    Pairs that cannot come closer than ``bound`` are skipped (:func:`skip_margin`
    proves that they could not have lowered it); row chunks run on ``workers``
    threads and give the same bits on any number of them.

    Parameters
    ----------
    emb : FactorizedEmbedding
        ``n`` rows.
    r_c, u_c, sq_norms_c, u_norms_c : arrays (m, K), (m, D), (m,), (m,)
        The centers' factors, squared norms and ``‖u_c‖``.
    bound : array (n,)
        Current upper bound, updated in place.
    chunk_rows, group : int, optional
        Rows per chunk and centers per product group; default
        :func:`refresh_blocking` for ``xp``. Speed only, up to the last bit of
        products that a BLAS computes in another order for another shape.
    workers : int, optional
        Threads running chunks (default :func:`mmal.select.threads.cpu_workers`).
    scratch : Scratch, optional
        Per-thread buffers to reuse across calls (default: fresh ones).
    pool : RowPool, optional
        Threads to run the chunks on, kept across calls (default: a pool of
        ``workers`` threads for this call).

    Returns
    -------
    int
        ``u`` products computed, counted in rows with all ``m`` centers (``n`` is
        the work of one dense pass; for logging).
    """
    default_chunk, default_group = refresh_blocking(xp)
    workers = cpu_workers(xp) if workers is None else workers
    refresh = _Refresh(emb, r_c, u_c, sq_norms_c, u_norms_c, bound, xp, group or default_group,
                       scratch or Scratch(xp))
    chunks = row_chunks(len(emb), chunk_rows or default_chunk,
                        CHUNK_MULTIPLE if backend_name(xp) == "numpy" else 1)
    if pool is not None:
        return int(round(sum(pool.map(refresh.chunk, chunks))))
    return int(round(sum(row_parallel_map(refresh.chunk, chunks, workers))))


class Scratch:
    """Reusable per-thread buffers for the refresh's (rows × centers) temporaries.

    A chunk's temporaries are megabytes each; allocated afresh, every chunk
    pays page faults for them (measured: a tenth of the seeding's time at
    KineticsSound scale). Keep one :class:`Scratch`, and one
    :class:`mmal.select.threads.RowPool` (whose threads hold the buffers), for
    a whole seeding.
    """

    def __init__(self, xp: Any = np) -> None:
        self.xp = xp
        self._local = threading.local()

    def array(self, name: str, shape: tuple[int, ...], dtype: Any) -> Any:
        """A C-contiguous array of ``shape`` and ``dtype``, this thread's own, contents undefined."""
        size = int(np.prod(shape))
        held = getattr(self._local, name, None)
        if held is None or held.size < size or held.dtype != np.dtype(dtype):
            held = self.xp.empty(size, dtype=dtype)
            setattr(self._local, name, held)
        return held[:size].reshape(shape)


class _Refresh:
    """One refresh's centers, sorted into pseudo-label groups; :meth:`chunk` updates a row chunk."""

    def __init__(self, emb, r_c, u_c, sq_norms_c, u_norms_c, bound, xp, group, scratch):
        self.emb, self.bound, self.xp, self.scratch = emb, bound, xp, scratch
        self.a, self.un = emb.sq_norms(), emb.u_norms()
        order = xp.argsort(xp.argmax(xp.abs(r_c), axis=1))  # one pseudo-label's centers side by side
        self.r_c, self.u_c = r_c[order], u_c[order]
        self.sq_norms_c = sq_norms_c[order]
        self.two_u_norms_c = 2.0 * u_norms_c[order]
        self.m = len(r_c)
        self.group = group
        self.groups = [slice(g0, min(g0 + group, self.m)) for g0 in range(0, self.m, group)]
        self.margin = skip_margin(emb.u.shape[1], self.a.dtype)
        self.a_c_max = float(sq_norms_c.max())

    def chunk(self, rows: slice) -> float:
        """Refresh ``bound[rows]``; returns the ``u`` products computed, in rows of all centers."""
        xp, emb, bound, a, buffer = self.xp, self.emb, self.bound, self.a, self.scratch.array
        n, m, dtype = rows.stop - rows.start, self.m, self.a.dtype
        rr = xp.matmul(emb.r[rows], self.r_c.T, out=buffer("rr", (n, m), dtype))
        need = self.needs(rows, rr)
        computed = 0.0
        for cols, hit in self._plan(need):
            width, skipped = _width(cols), n - len(hit)
            computed += len(hit) * width / m
            if skipped * width <= len(hit) * GATHER_COST:
                # Multiplying the few rows that need nothing costs less than gathering
                # the rest; their distances cannot lower the bound (skip_margin).
                idx, u_rows, rr_rows = rows, emb.u[rows], rr[:, cols]
            else:
                idx, u_rows, rr_rows = hit + rows.start, emb.u[hit + rows.start], rr[hit][:, cols]
            shape = (len(u_rows), width)
            products = xp.matmul(u_rows, self.u_c[cols].T, out=buffer("products", shape, dtype))
            products *= rr_rows
            nearest = nearest_sq_distances(products, a[idx], self.sq_norms_c[cols],
                                           work=buffer("sums", shape, dtype))
            bound[idx] = xp.minimum(bound[idx], nearest)
        return computed

    def needs(self, rows: slice, rr: Any) -> Any:
        """(rows, m) bool: the pairs whose Cauchy-Schwarz lower bound, less the margin, is below ``bound``.

        ``rr`` holds the rows' ``r`` products with the (sorted) centers. Every
        other pair's distance, however computed, is at least ``bound``
        (:func:`skip_margin`).
        """
        xp, a, buffer = self.xp, self.a, self.scratch.array
        # 2|r_x·r_c|‖u_x‖‖u_c‖ - ‖g_c‖² > ‖g_x‖² - bound: the pair's lower bound is below bound
        excess = xp.abs(rr, out=buffer("excess", rr.shape, rr.dtype))
        excess *= self.two_u_norms_c
        excess *= self.un[rows, None]
        excess -= self.sq_norms_c
        limit = a[rows] - self.bound[rows]
        limit -= self.margin * (a[rows] + self.a_c_max)
        return xp.greater(excess, limit[:, None], out=buffer("need", rr.shape, bool))

    def _plan(self, need: Any) -> list[tuple[Any, Any]]:
        """(columns, chunk rows that need one of them) per product to compute.

        The columns are a center group (a slice of one pseudo-label's centers
        and its neighbours), or the *wide* centers that more than
        :data:`WIDE_SHARE` of the rows need (a small ``‖g_c‖`` can come closer
        to most rows; in its pseudo-label's group it would make that whole
        group dense), or all centers, when one product of every needed row
        costs less than one per group (:data:`GATHER_COST`). Groups that no row
        needs are left out. Counts come from two small matrix products of the
        (rows × centers) mask, exact in floating point (integers below 2^24).
        """
        xp, groups = self.xp, self.groups
        if len(groups) == 1:
            every = xp.flatnonzero(need.any(axis=1))
            return [(groups[0], every)] if len(every) else []
        mask = need.astype(self.a.dtype)
        wide = xp.flatnonzero(xp.ones(len(mask), dtype=mask.dtype) @ mask > WIDE_SHARE * len(mask))
        if 0 < len(wide) < self.m:
            narrow = xp.ones(self.m, dtype=bool)
            narrow[wide] = False
            groups = [wide] + [cols for cols in (xp.flatnonzero(narrow[g]) + g.start for g in groups)
                               if len(cols)]
        members = xp.zeros((self.m, len(groups)), dtype=mask.dtype)
        for j, cols in enumerate(groups):
            members[cols, j] = 1.0
        per_group = mask @ members > 0
        hits = [xp.flatnonzero(per_group[:, j]) for j in range(len(groups))]
        every = xp.flatnonzero(per_group.any(axis=1))
        if _product_cost(len(every), self.m) <= sum(_product_cost(len(h), _width(c))
                                                    for h, c in zip(hits, groups, strict=True)):
            groups, hits = [slice(0, self.m)], [every]
        return [(cols, hit) for cols, hit in zip(groups, hits, strict=True) if len(hit)]


def _width(columns: Any) -> int:
    """Number of centers in ``columns`` (a slice or an index array)."""
    return columns.stop - columns.start if isinstance(columns, slice) else len(columns)


def _product_cost(rows: int, centers: int) -> float:
    """Cost of the ``u`` products of ``rows`` gathered rows with ``centers`` centers."""
    return rows * (centers + GATHER_COST)
