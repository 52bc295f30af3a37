"""BADGE's gradient embedding in factorized form, never materialized.

The gradient of the loss at the pseudo-label with respect to the multimodal
head's weight ``W`` (K, D) is the outer product ``g = r ⊗ u``:

* ``r`` (K,) is the gradient with respect to the logits: ``p - e_ŷ`` for a
  softmax head (``ŷ = argmax p``), ``sigmoid(l) - 1[sigmoid(l) >= 0.5]`` for a
  multi-label (sigmoid, binary cross-entropy) head;
* ``u`` (D,) is the head input ``h`` (BADGE: ``Cache.head_input``) or BMMAL's
  weighted blocks ``w_1 z_1 ⊕ w_2 z_2 ⊕ ...`` (concatenated for the fusions
  ``concat``, ``sum`` and ``nl-gate``) / ``Σ w_m z_m`` (``feature-sum``).

Flattened row-major, ``g = (r[:, None] * u[None, :]).ravel()`` has ``K·D``
entries, too many to store for large pools (229 GB at VGGSound scale). Every
quantity k-means++ needs follows from ``r`` and ``u``:

    ‖g_a‖² = ‖r_a‖² ‖u_a‖²
    ‖g_a - g_b‖² = ‖g_a‖² + ‖g_b‖² - 2 (r_a·r_b)(u_a·u_b)

so memory stays O(N(K + D)). All functions take the array module ``xp``
(NumPy or CuPy) and work on either.

The expansion cancels: for exact duplicates it gives rounding noise of about
``eps·(‖g_a‖² + ‖g_b‖²)`` (either sign) instead of 0. Every squared distance
here goes through :func:`expanded_sq_distances`, which reads values within
:data:`ROUNDING_TOLERANCE` such units of 0 as exactly 0, so a duplicate of a
chosen k-means++ center has ``D² = 0`` and never wins a draw on noise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmal.errors import SelectionError, preview
from mmal.select.backend import asnumpy
from mmal.select.memory import WorkingSet
from mmal.select.numerics import overflowing_factor_rows
from mmal.select.params import PRECISIONS
from mmal.select.threads import cpu_workers, row_parallel_map

log = logging.getLogger(__name__)

#: Squared distances at most ``ROUNDING_TOLERANCE · eps · (‖g_a‖² + ‖g_b‖²)``
#: (``eps`` of the working dtype) are taken as exactly 0. The expansion's noise
#: for exact duplicates measured at most ~13 such units (K = 100, D = 4096);
#: 64 leaves room for larger D and other BLAS summation orders, and is still
#: below any distance the expansion can resolve (7.6e-6 relative in float32).
ROUNDING_TOLERANCE = 64

#: Rows per matrix-product chunk in :func:`FactorizedEmbedding.sq_distances`;
#: keeps the (chunk, n_centers) temporaries small and cache-friendly.
DISTANCE_CHUNK_ROWS = 8192

def logit_gradient(logits: Any, *, multi_label: bool = False, xp: Any = np, dtype: Any = None) -> Any:
    """``r``: gradient of the pseudo-label loss with respect to the logits.

    Parameters
    ----------
    logits : array (n, K)
        Multimodal logits (``logits/mm``).
    multi_label : bool
        Sigmoid head with binary cross-entropy against ``1[p >= 0.5]`` instead
        of softmax cross-entropy against ``argmax p``.
    xp : array module
    dtype : dtype, optional
        Output dtype; default float64 computation cast back to the input's
        floating dtype.

    Returns
    -------
    r : array (n, K)
    """
    out_dtype = dtype or logits.dtype
    z = logits.astype(xp.float64)
    if multi_label:
        p = 1.0 / (1.0 + xp.exp(-z))
        return (p - (p >= 0.5).astype(xp.float64)).astype(out_dtype)
    z = z - z.max(axis=1, keepdims=True)
    p = xp.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    top = xp.argmax(p, axis=1)
    p[xp.arange(len(p)), top] -= 1.0
    return p.astype(out_dtype)


def scaled_head_input(
    features: Sequence[Any], fusion: str, *, weights: Any = None, xp: Any = np, dtype: Any = None
) -> Any:
    """``u`` from the blocks: each modality scaled by its per-sample weight, then fused.

    The blocks are fused as BMMAL embeds them (:func:`bmmal_fusion`): summed
    for ``feature-sum``, concatenated for every other fusion. For the linear
    fusions, ``weights=None`` gives the head input ``h`` itself (BADGE's
    ``u``); ``nl-gate``'s ``h`` is not a function of the blocks and comes from
    the cache instead (``Cache.head_input``).

    Parameters
    ----------
    features : sequence of arrays (n, D_m)
        Modality blocks in the cache's modality order.
    fusion : {"concat", "sum", "feature-sum", "nl-gate"}
    weights : array (n, M), optional
        BMMAL weights ``w``; None leaves the blocks unscaled.
    xp : array module
    dtype : dtype, optional
        Output dtype (default the features' dtype).

    Returns
    -------
    u : array (n, D) with ``D = sum(D_m)``, or ``D_m`` for ``feature-sum``
    """
    summed = bmmal_fusion(fusion) == "feature-sum"
    width = features[0].shape[1] if summed else sum(z.shape[1] for z in features)
    u = xp.empty((len(features[0]), width), dtype=dtype or features[0].dtype)
    write_scaled_head_input(u, features, fusion, weights=weights, xp=xp)
    return u


def write_scaled_head_input(target: Any, features: Sequence[Any], fusion: str, *,
                            weights: Any = None, xp: Any = np) -> None:
    """:func:`scaled_head_input` written into ``target`` (n, D), computed in its dtype.

    Each block times its weight, side by side (concatenating fusions) or summed
    in modality order (``feature-sum``; in float64 for precision="float64", as
    before schema 2). NumPy widens float16 and float32 blocks exactly before
    multiplying, so no widened copy of a block is made.
    """
    w = None if weights is None else weights.astype(target.dtype, copy=False)
    summed = bmmal_fusion(fusion) == "feature-sum"
    start = 0
    for m, z in enumerate(features):
        if summed and m:
            target += z if w is None else z * w[:, m, None]
            continue
        cols = slice(None) if summed else slice(start, start + z.shape[1])
        start += z.shape[1]
        if w is None:
            target[:, cols] = z
        else:
            xp.multiply(z, w[:, m, None], out=target[:, cols])


def bmmal_fusion(fusion: str) -> str:
    """The linear fusion BMMAL's weighted blocks follow: ``feature-sum`` adds, all others concatenate."""
    return "feature-sum" if fusion == "feature-sum" else "concat"


def embedding_width(meta: Any, *, weighted: bool) -> int:
    """Width of ``u``: ``D_fused`` for BADGE, the weighted blocks' width for BMMAL."""
    if not weighted or bmmal_fusion(meta.fusion) == "feature-sum":
        return meta.fused_dim
    return sum(meta.feature_dims)


@dataclass
class FactorizedEmbedding:
    """The gradient embedding ``g_i = r_i ⊗ u_i`` of ``n`` samples, stored as factors.

    Attributes
    ----------
    r : array (n, K)
        Logit-gradient factor.
    u : array (n, D)
        (Scaled) head-input factor on the array module of ``r``; the dtype of
        ``r``, or a narrower one (a float16 memmap of a spilled working set,
        :func:`working_dtypes`), which the products widen to ``r``'s.
    u_sq : array (n,), optional
        ``‖u‖²`` in ``r``'s dtype, when the caller computed it while filling
        ``u`` (saves a pass over ``u``, and a float16 ``u`` never sums in float16).
    """

    r: Any
    u: Any
    u_sq: Any = None

    def __post_init__(self) -> None:
        if self.r.shape[0] != self.u.shape[0]:
            raise ValueError(f"r has {self.r.shape[0]} rows but u has {self.u.shape[0]}")
        self._r_sq = None
        self._u_sq = self.u_sq
        self._sq_norms = None
        self._u_norms = None

    def __len__(self) -> int:
        return int(self.r.shape[0])

    @property
    def dim(self) -> int:
        """``K·D``, the width of the (never stored) embedding."""
        return int(self.r.shape[1] * self.u.shape[1])

    def factor_sq_norms(self) -> tuple[Any, Any]:
        """(n,) ``‖r‖²`` and (n,) ``‖u‖²`` (computed once; Inf where they overflow)."""
        # einsum: no (n, D) temporary, which would double the embedding's memory.
        xp = _array_module_of(self.r)
        if self._r_sq is None:
            self._r_sq = xp.einsum("ij,ij->i", self.r, self.r)
        if self._u_sq is None:
            self._u_sq = xp.einsum("ij,ij->i", self.u, self.u, dtype=self.r.dtype)
        return self._r_sq, self._u_sq

    def sq_norms(self) -> Any:
        """(n,) squared norms ``‖r‖²‖u‖²`` (computed once)."""
        if self._sq_norms is None:
            r_sq, u_sq = self.factor_sq_norms()
            self._sq_norms = r_sq * u_sq
        return self._sq_norms

    def u_norms(self) -> Any:
        """(n,) ``‖u‖`` (computed once)."""
        if self._u_norms is None:
            self._u_norms = _array_module_of(self.u).sqrt(self.factor_sq_norms()[1])
        return self._u_norms

    def overflowing_rows(self) -> np.ndarray:
        """(n,) host bool: rows whose squared distances would overflow this dtype.

        See :func:`mmal.select.numerics.overflowing_factor_rows`; an embedding
        with none of them gives finite distances everywhere.
        """
        r_sq, u_sq = self.factor_sq_norms()
        return overflowing_factor_rows(asnumpy(r_sq), asnumpy(u_sq), self.r.dtype)

    def sq_distances(self, r_b: Any, u_b: Any, sq_norms_b: Any, rows: Any = None) -> Any:
        """Squared distances from rows of this embedding to the points ``(r_b, u_b)``.

        Parameters
        ----------
        r_b : array (m, K)
        u_b : array (m, D)
        sq_norms_b : array (m,)
            ``‖r_b‖²‖u_b‖²``.
        rows : slice or int array, optional
            Rows of this embedding (default all).

        Returns
        -------
        array (n_rows, m), >= 0; rounding noise around 0 is exactly 0
        (:func:`expanded_sq_distances`).
        """
        r_a = self.r if rows is None else self.r[rows]
        u_a = self.u if rows is None else self.u[rows]
        a = self.sq_norms() if rows is None else self.sq_norms()[rows]
        return expanded_sq_distances((r_a @ r_b.T) * (u_a @ u_b.T), a[:, None], sq_norms_b[None, :])

    def materialize(self) -> Any:
        """(n, K·D) explicit embedding: only for tests and tiny pools."""
        return (self.r[:, :, None] * self.u[:, None, :]).reshape(len(self), -1)


def expanded_sq_distances(products: Any, sq_norms_a: Any, sq_norms_b: Any) -> Any:
    """``‖g_a‖² + ‖g_b‖² - 2·products``, with rounding noise around 0 set to exactly 0.

    Parameters
    ----------
    products : array
        ``(r_a·r_b)(u_a·u_b)`` (or a bound on it); overwritten with the result.
    sq_norms_a, sq_norms_b : arrays
        ``‖g_a‖²`` and ``‖g_b‖²``, broadcastable against ``products``.

    Returns
    -------
    array
        ``products`` itself; values ``<= ROUNDING_TOLERANCE · eps · (‖g_a‖² + ‖g_b‖²)``
        (negative ones included) are 0.
    """
    xp = _array_module_of(products)
    total = sq_norms_a + sq_norms_b
    d2 = products
    d2 *= -2.0
    d2 += total
    total *= ROUNDING_TOLERANCE * float(xp.finfo(d2.dtype).eps)
    xp.putmask(d2, d2 <= total, 0.0)
    return d2


def nearest_sq_distances(products: Any, sq_norms_a: Any, sq_norms_b: Any, *,
                         work: Any = None) -> Any:
    """Row minima of :func:`expanded_sq_distances`, the same values with fewer passes.

    Parameters
    ----------
    products : array (n, m)
        ``(r_a·r_b)(u_a·u_b)``; overwritten.
    sq_norms_a : array (n,)
    sq_norms_b : array (m,)
    work : array (n, m), optional
        Scratch space for ``a + b`` (default: allocated).

    Returns
    -------
    array (n,)
        ``expanded_sq_distances(products, a[:, None], b[None, :]).min(axis=1)``, bit for
        bit: the snapping to 0 is tested only on the rows whose minimum is within
        the largest threshold a row can have (rounding is monotone, so no other
        row has a value to snap).
    """
    xp = _array_module_of(products)
    d2 = products
    d2 *= -2.0
    d2 += xp.add(sq_norms_a[:, None], sq_norms_b[None, :], out=work)
    nearest = d2.min(axis=1)
    scale = ROUNDING_TOLERANCE * float(xp.finfo(d2.dtype).eps)
    suspect = xp.flatnonzero(nearest <= (sq_norms_a + sq_norms_b.max()) * scale)
    if len(suspect):
        rows = d2[suspect]
        threshold = sq_norms_a[suspect, None] + sq_norms_b[None, :]
        threshold *= scale
        xp.putmask(rows, rows <= threshold, 0.0)
        nearest[suspect] = rows.min(axis=1)
    return nearest


def _array_module_of(array: Any) -> Any:
    if type(array).__module__.split(".")[0] == "cupy":
        import cupy  # deferred: CuPy is optional, and only a CuPy array gets here

        return cupy
    return np


def pairwise_sq_distances(a: FactorizedEmbedding, b: FactorizedEmbedding) -> Any:
    """(n_a, n_b) squared distances between two factorized embeddings."""
    return a.sq_distances(b.r, b.u, b.sq_norms())


def min_sq_distances(emb: FactorizedEmbedding, r_c: Any, u_c: Any, sq_norms_c: Any, *,
                     xp: Any = np, chunk_rows: int = DISTANCE_CHUNK_ROWS) -> Any:
    """(n,) squared distance from every row of ``emb`` to its nearest of the ``m`` centers.

    Works in row chunks so the temporaries are (chunk_rows, m), not (n, m).
    """
    n = len(emb)
    out = xp.empty(n, dtype=emb.r.dtype)
    for start in range(0, n, chunk_rows):
        rows = slice(start, min(start + chunk_rows, n))
        out[rows] = emb.sq_distances(r_c, u_c, sq_norms_c, rows).min(axis=1)
    return out


def check_precision(precision: str) -> str:
    """The embedding dtype name for ``precision``; SelectionError when it is neither."""
    if precision not in PRECISIONS:
        raise SelectionError(
            f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )
    return precision


#: Cache rows read per block when building an embedding: bounds the temporaries
#: (coalitions in float64 are the largest: block_rows · 2^M · K · 8 bytes).
CACHE_BLOCK_ROWS = 8192


def cache_embedding(
    cache: Any,
    *,
    xp: Any = np,
    dtype: str = "float32",
    modality_weights: Any = None,
    block_rows: int = CACHE_BLOCK_ROWS,
    memory: WorkingSet | None = None,
    workers: int | None = None,
) -> tuple[np.ndarray, FactorizedEmbedding]:
    """Factorized embedding of a cache's unlabeled rows, in one streaming pass.

    The pass reads the cache in contiguous row blocks (logits, features and,
    through ``modality_weights``, coalitions) and writes each block's ``r``,
    ``u`` and ``‖u‖²`` into the working set; no field of the cache is ever
    resident whole. ``u``'s values keep the precision :func:`working_dtypes`
    gives: a float16 cache's ``u`` is float16-rounded in float32 precision.

    When a float32 embedding would overflow (squared norms near 3.4e38, i.e.
    feature values around 1e19 and up), it is read again in float64, with a
    warning naming the samples; the float64 embedding of a cache, whose values
    are finite float32 or float16, cannot overflow.

    Parameters
    ----------
    cache : mmal.cache.Cache
    xp : array module
        Where ``r`` and ``u`` are stored and computed.
    dtype : {"float32", "float64"}
        Precision of ``r`` and ``u``.
    modality_weights : callable, optional
        ``modality_weights(rows, keep, logits)`` with ``rows`` the block's slice,
        ``keep`` the (b,) host bool mask of its unlabeled rows and ``logits``
        their (n_b, K) multimodal logits on ``xp``; returns (n_b, M) weights on
        ``xp``, which scale the blocks (BMMAL, :func:`scaled_head_input`).
        Default: ``u`` is the head input ``h`` (BADGE). It is called again for every block when the embedding is read a second time
        in float64, so it must not accumulate across calls for the same block.
    block_rows : int
        Most rows per read (fewer when ``memory`` is tight).
    memory : WorkingSet, optional
        Allocates ``r`` and ``u`` within its budget, spilling them to a
        memory-mapped file past it (:mod:`mmal.select.memory`); default: in
        memory on ``xp``, without a limit. The ids do not depend on it.
    workers : int, optional
        Threads streaming row blocks (default
        :func:`mmal.select.threads.cpu_workers`); the result does not depend on it.

    Returns
    -------
    positions : np.ndarray
        (n,) int64 cache rows of the unlabeled samples, increasing.
    emb : FactorizedEmbedding
        ``n`` rows in the order of ``positions``.

    Raises
    ------
    SelectionError
        When the embedding overflows even in float64, naming the samples.
    """
    dtype = check_precision(dtype)
    workers = cpu_workers(xp) if workers is None else max(1, workers)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is detected below
        positions, emb = _read_embedding(cache, xp, dtype, modality_weights, block_rows, memory,
                                         workers)
    bad = emb.overflowing_rows()
    if bad.any() and dtype != "float64":
        log.warning("%s: the %s gradient embedding of sample ids %s overflows; computing it in "
                    "float64", cache.path, dtype, preview(cache.ids[positions[bad]]))
        del emb  # not held twice
        positions, emb = _read_embedding(cache, xp, "float64", modality_weights, block_rows,
                                         memory, workers)
        bad = emb.overflowing_rows()
    if bad.any():
        raise SelectionError(
            f"{cache.path}: the gradient embedding of sample ids "
            f"{preview(cache.ids[positions[bad]])} is not finite in {emb.r.dtype} (feature values "
            "too large); re-extract the cache or drop those samples"
        )
    return positions, emb


def working_dtypes(meta: Any, precision: str) -> tuple[str, str]:
    """(dtype of ``r`` and of the products, precision of ``u``'s values) for ``precision``.

    ``r`` is in ``precision``. ``u``'s values are no finer than the cache's
    features when ``precision`` is float32: a float16 cache gives
    float16-rounded values of ``u`` (BMMAL's ``w_m z_m`` with ``0 <= w_m <= 1``
    is rounded once, an error as large as the one the cache already made
    storing ``z_m``). In memory they are held in float32, which holds them
    exactly and multiplies fastest; a spilled ``u`` is stored in float16, half
    the file and half the bytes read per refresh. Both give the same products,
    so the ids do not depend on where ``u`` is. float64 is the exact mode (NumPy
    and CuPy pick the same ids), so there ``u`` is float64, as ``r`` is.
    """
    if precision == "float32" and np.dtype(meta.feature_dtype).itemsize < 4:
        return precision, str(meta.feature_dtype)
    return precision, precision


def _stream_row_bytes(meta: Any, width: int) -> int:
    """Bytes of temporaries per row in the streaming pass (float64 coalitions and logits,
    the blocks and ``u`` in float32, twice for copies)."""
    return 8 * (meta.num_coalitions + 2) * meta.num_classes + 2 * 4 * (sum(meta.feature_dims) + width)


def _read_embedding(cache, xp, dtype, modality_weights, block_rows, memory, workers):
    """``cache_embedding`` in ``dtype`` without the overflow check: the streaming pass.

    Row blocks run on ``workers`` threads; each writes only its own rows of
    ``r``, ``u`` and ``‖u‖²``, so the result does not depend on their number
    (nor on the block size: every value is a function of its row alone).
    """
    meta = cache.meta
    labeled = np.asarray(cache.labeled)  # read once, not once per block
    positions = np.flatnonzero(~labeled).astype(np.int64)
    n = len(positions)
    width = embedding_width(meta, weighted=modality_weights is not None)
    r_dtype, u_dtype = working_dtypes(meta, dtype)
    shapes = {"u": ((n, width), r_dtype, u_dtype), "r": ((n, meta.num_classes), r_dtype, r_dtype)}
    if memory is None:
        u, r = (xp.empty(shape, dtype=dt) for shape, dt, _ in shapes.values())
    else:
        u, r = memory.allocate(shapes, rows=n, xp=xp, workers=workers)
        block_rows = memory.block_rows(_stream_row_bytes(meta, width) * workers, block_rows)
    u_sq = xp.empty(n, dtype=r_dtype)
    blocks, filled = [], 0
    for rows in cache.row_blocks(max(1, min(block_rows, -(-len(labeled) // workers)))):
        keep = ~labeled[rows]
        count = int(keep.sum())
        if count:
            blocks.append((rows, keep, slice(filled, filled + count)))
            filled += count

    in_place = u.dtype == np.dtype(r_dtype)
    rounded = np.dtype(u_dtype) != np.dtype(r_dtype)

    def fill(block):
        with np.errstate(over="ignore", invalid="ignore"):  # per thread; overflow is checked after
            _fill(*block)

    def _fill(rows, keep, out):
        logits = xp.asarray(cache.logits("mm", rows)[keep])
        weights = modality_weights(rows, keep, logits) if modality_weights else None
        r[out] = logit_gradient(logits, multi_label=meta.multi_label, xp=xp, dtype=r_dtype)
        # u's rows are written in place when u holds r's dtype, else through a block
        values = u[out] if in_place else xp.empty((len(logits), width), dtype=r_dtype)
        _write_u(values, cache, rows, keep, weights, xp)
        if rounded:  # to u's precision, then widened back exactly: the values u holds
            values[...] = values.astype(u_dtype)
        if not in_place:
            u[out] = values
        u_sq[out] = xp.einsum("ij,ij->i", values, values)

    row_parallel_map(fill, blocks, workers)
    return positions, FactorizedEmbedding(r, u, u_sq)


def _write_u(target, cache, rows, keep, weights, xp):
    """Write the (n_b, D) ``u`` of a block's unlabeled rows into ``target``, in its dtype:
    BMMAL's weighted blocks, BADGE's ``h`` (:func:`write_scaled_head_input`), or
    the stored ``h`` of a fusion whose head input is no function of the blocks."""
    meta = cache.meta
    if weights is None and meta.stores_head_input:
        target[...] = xp.asarray(cache.head_input(rows)[keep])
        return
    features = [xp.asarray(cache.features(name, rows)[keep]) for name in meta.modalities]
    write_scaled_head_input(target, features, meta.fusion, weights=weights, xp=xp)
