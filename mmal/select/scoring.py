"""Shared plumbing of the baseline strategies: stream the unlabeled rows, rank scores.

Caches can be far larger than one comfortable read (``mc_logits`` of 180k
samples, 20 passes and 309 classes is 4.4 GB), so every per-sample score is
computed over row blocks sized by bytes and only the (n_unlabeled,) float64
score vector is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from mmal.cache.reader import Cache
from mmal.select.backend import asnumpy
from mmal.select.numerics import refuse_overflowing_points

#: Bytes of one field read per block: large enough for efficient HDF5 reads,
#: small enough that a few float64 temporaries of the block stay cheap.
BLOCK_BYTES = 64 * 2**20


def block_rows(row_bytes: int, target_bytes: int = BLOCK_BYTES) -> int:
    """Rows per block so one block of ``row_bytes``-wide rows is about ``target_bytes``."""
    return max(1, int(target_bytes) // max(1, int(row_bytes)))


def unlabeled_positions(cache: Cache) -> np.ndarray:
    """(n_unlabeled,) int64 row positions of the unlabeled samples, increasing."""
    return np.flatnonzero(~cache.labeled).astype(np.int64)


def iter_masked_blocks(
    cache: Cache, read: Callable[[slice], np.ndarray], mask: np.ndarray, rows_per_block: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(positions, values)`` for the rows where ``mask`` is True, block by block.

    Reads contiguous slices (fast in HDF5) and drops the unmasked rows in memory,
    rather than asking h5py for scattered rows (slow for many indices).

    Parameters
    ----------
    cache : Cache
    read : callable
        ``read(rows: slice) -> array (n_rows, ...)``, e.g. ``lambda r: cache.logits("mm", r)``.
    mask : (N,) bool
    rows_per_block : int
    """
    for rows in cache.row_blocks(rows_per_block):
        keep = mask[rows]
        if not keep.any():
            continue
        values = read(rows)
        yield np.arange(rows.start, rows.stop, dtype=np.int64)[keep], values[keep]


def gather_rows(
    cache: Cache, read: Callable[[slice], np.ndarray], mask: np.ndarray, width: int,
    dtype: Any = np.float32,
) -> np.ndarray:
    """(mask.sum(), width) array of ``read``'s rows where ``mask`` is True, streamed.

    Peak memory is the output plus one block, not the whole field twice.
    """
    out = np.empty((int(mask.sum()), width), dtype=dtype)
    itemsize = np.dtype(dtype).itemsize
    filled = 0
    for _, values in iter_masked_blocks(cache, read, mask, block_rows(width * itemsize)):
        out[filled:filled + len(values)] = values
        filled += len(values)
    return out


def head_inputs(cache: Cache, mask: np.ndarray) -> np.ndarray:
    """(mask.sum(), D_fused) C-contiguous float32 head inputs ``h`` of the masked rows.

    ``h`` is what the multimodal head reads (``Cache.head_input``): computed
    from the blocks for the linear fusions, the stored field for ``nl-gate``.
    For FAISS, which computes distances in float32: rows whose squared norm
    would overflow them are refused with a :class:`SelectionError` naming the ids.
    """
    points = gather_rows(cache, cache.head_input, mask, cache.meta.fused_dim, np.float32)
    refuse_overflowing_points(points, cache, np.flatnonzero(mask))
    return points


def score_unlabeled(
    cache: Cache, read: Callable[[slice], np.ndarray], score: Callable[[Any], Any], *,
    row_bytes: int, xp: Any = np,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample scores of every unlabeled row, computed block by block on ``xp``.

    Parameters
    ----------
    read : callable
        ``read(rows: slice) -> np.ndarray (n_rows, ...)``.
    score : callable
        ``score(values on xp) -> (n,) array on xp``.
    row_bytes : int
        Bytes of one row of ``read``'s output (sets the block size).

    Returns
    -------
    positions : (n_unlabeled,) int64, increasing
    scores : (n_unlabeled,) float64 on the host
    """
    mask = ~cache.labeled
    positions = np.flatnonzero(mask).astype(np.int64)
    scores = np.empty(len(positions), dtype=np.float64)
    filled = 0
    for _, values in iter_masked_blocks(cache, read, mask, block_rows(row_bytes)):
        block = asnumpy(score(xp.asarray(values))).astype(np.float64)
        scores[filled:filled + len(block)] = block
        filled += len(block)
    return positions, scores


def top_scores(positions: np.ndarray, scores: np.ndarray, budget: int, *, largest: bool = True) -> np.ndarray:
    """The ``budget`` positions with the largest (or smallest) scores, best first.

    Ties go to the lower row position (a stable sort over increasing positions),
    so the result is a deterministic function of the scores.

    Parameters
    ----------
    positions : (n,) int64, increasing
    scores : (n,) float
    budget : int, ``<= n``
    largest : bool
        Rank by decreasing score (True) or increasing score.

    Returns
    -------
    (budget,) int64 positions.
    """
    key = -scores if largest else scores
    order = np.argsort(key, kind="stable")[:budget]
    return positions[order].astype(np.int64)
