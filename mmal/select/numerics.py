"""Overflow limits for the squared distances selection computes.

Squared Euclidean distances are computed by expansion, ``‖a‖² + ‖b‖² - 2 a·b``
(BLAS for the gradient embedding, FAISS for the fused features). When a
squared norm is close to the largest float of the working dtype, that sum
overflows to Inf, and ``Inf - Inf`` is NaN: a NaN distance is never accepted
by k-means++ and never ordered by a search. One feature value of 1e20 is
enough in float32 (its square is 1e40 > 3.4e38). These helpers find the rows
whose squared norms leave too little headroom, so callers can compute in
float64 or refuse with a message that names the samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmal.errors import SelectionError, preview

#: Squared norms may reach ``finfo(dtype).max / OVERFLOW_HEADROOM``. The
#: expansion adds two of them and subtracts twice a product bounded by their
#: geometric mean (Cauchy-Schwarz), so every intermediate stays below half the
#: largest float, with room for rounding.
OVERFLOW_HEADROOM = 8


def sq_norm_limit(dtype: Any, n: int = 1) -> float:
    """Largest safe squared norm in ``dtype`` when ``n`` distances are summed in float64.

    k-means++ sums the ``n`` squared distances on the host in float64; for a
    float64 embedding that sum, not the single distance, is the binding limit.
    """
    big = float(np.finfo(dtype).max) / OVERFLOW_HEADROOM
    return min(big, float(np.finfo(np.float64).max) / (OVERFLOW_HEADROOM * max(1, n)))


def overflowing_factor_rows(r_sq: np.ndarray, u_sq: np.ndarray, dtype: Any) -> np.ndarray:
    """(n,) bool: rows of a factorized embedding ``g = r ⊗ u`` whose distances can overflow.

    Parameters
    ----------
    r_sq, u_sq : (n,) host arrays
        ``‖r‖²`` and ``‖u‖²`` per row, as computed in ``dtype`` (Inf where they
        overflowed).
    dtype : dtype
        The embedding's dtype.

    Returns
    -------
    (n,) bool
        True where a squared norm is not finite, or where ``‖u‖²`` is too large
        for ``max ‖r‖² · ‖u‖²`` (which bounds every ``(r_a·r_b)(u_a·u_b)``) to
        stay under :func:`sq_norm_limit`. ``r`` is a logit gradient, at most 1
        per class, so an overflow is blamed on the ``u`` (feature) side.
    """
    r_sq = np.asarray(r_sq, dtype=np.float64)
    u_sq = np.asarray(u_sq, dtype=np.float64)
    limit = sq_norm_limit(dtype, len(r_sq))
    bad = ~(np.isfinite(r_sq) & np.isfinite(u_sq))
    r_max = float(r_sq[~bad].max(initial=0.0))
    bad |= (r_sq > limit) | (u_sq > limit / max(r_max, 1.0))
    return bad


def refuse_overflowing_points(points: np.ndarray, cache: Any, positions: np.ndarray) -> None:
    """SelectionError when a row of ``points`` is too large for float32 distances.

    For strategies that search with FAISS, which computes in float32 only.

    Parameters
    ----------
    points : (n, D) float32 host array
    cache : mmal.cache.Cache
        Names the file and maps ``positions`` to sample ids in the message.
    positions : (n,) int
        Cache rows of ``points``.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", points, points)  # float32: Inf where it overflows
    limit = sq_norm_limit(np.float32)
    bad = ~(sq <= limit)  # NaN and Inf included
    if bad.any():
        raise SelectionError(
            f"{cache.path}: the fused features of sample ids {preview(cache.ids[positions[bad]])} are too "
            f"large for float32 distances (squared norm above {limit:.1e}); re-extract the cache "
            "or drop those samples (badge and bmmal compute such samples in float64)"
        )
