"""Shapley values of modalities from coalition logits (NumPy or CuPy).

Shared math: the cache summary, selection (BMMAL) and training metrics all use
it. For M modalities and a value V(S) per coalition S (bitmask, bit m set =
modality m present),

    phi_m = sum_{S not containing m} |S|! (M-|S|-1)! / M! * [V(S + m) - V(S)].

Since phi is linear in V, it is ``V @ C`` with the (2^M, M) coefficient
matrix of :func:`shapley_matrix` (summed term by term, so a row's value does
not depend on the rows computed with it).
"""

from __future__ import annotations

from functools import lru_cache
from math import factorial
from typing import Any

import numpy as np


@lru_cache(maxsize=16)
def shapley_matrix(num_modalities: int) -> np.ndarray:
    """(2^M, M) float64 ``C`` with ``phi = V @ C`` for values ``V`` (n, 2^M)."""
    m_total = num_modalities
    c = np.zeros((2**m_total, m_total))
    for mask in range(2**m_total):
        size = bin(mask).count("1")
        for m in range(m_total):
            if mask >> m & 1:  # S' = S + m with |S| = size - 1
                c[mask, m] += factorial(size - 1) * factorial(m_total - size) / factorial(m_total)
            else:  # S itself, |S| = size
                c[mask, m] -= factorial(size) * factorial(m_total - size - 1) / factorial(m_total)
    c.setflags(write=False)
    return c


def coalition_values(
    coalitions: Any, target: Any, *, multi_label: bool = False, xp: Any = np
) -> Any:
    """Model outcome V(S): probability of class ``target`` under each coalition.

    Parameters
    ----------
    coalitions : (n, 2^M, K) logits of every coalition.
    target : (n,) int class per sample (the pseudo-label or the true class).
    multi_label : sigmoid per class instead of softmax over classes.

    Returns
    -------
    (n, 2^M) float64 probabilities.
    """
    if multi_label:
        picked = _picked(coalitions, xp.asarray(target).astype(xp.int64), xp)
        return 1.0 / (1.0 + xp.exp(-picked))
    target = xp.asarray(target).astype(xp.int64)
    n = len(coalitions)
    # In slices of rows on a CPU, so that the float64 temporaries stay in cache
    # (every value depends on its own row only: the same bits in any slicing).
    step = VALUE_ROWS if xp is np else max(n, 1)
    out = xp.empty(coalitions.shape[:2], dtype=xp.float64)
    for start in range(0, n, step):
        rows = slice(start, start + step)
        out[rows] = _softmax_values(coalitions[rows], target[rows], xp)
    return out


#: Rows per slice in :func:`coalition_values` on a CPU: 1,024 rows of 4 coalitions
#: of 309 classes are a 10 MB float64 temporary (measured fastest on a 2-core CPU).
VALUE_ROWS = 1024


def _picked(coalitions: Any, target: Any, xp: Any) -> Any:
    """(n, 2^M) float64 logit of class ``target`` in each coalition."""
    idx = target[:, None, None]
    return xp.take_along_axis(coalitions, xp.broadcast_to(idx, (*coalitions.shape[:2], 1)),
                              axis=2)[..., 0].astype(xp.float64)


def _softmax_values(coalitions: Any, target: Any, xp: Any) -> Any:
    """(n, 2^M) softmax probability of ``target`` per coalition, in float64."""
    # The max is exact in the input's dtype, and the subtraction casts both operands
    # to float64 before subtracting, so this is the float64 computation bit for bit
    # without a float64 copy of the logits.
    top = coalitions.max(axis=2, keepdims=True)
    shifted = xp.subtract(coalitions, top, dtype=xp.float64)
    xp.exp(shifted, out=shifted)
    log_norm = xp.log(shifted.sum(axis=2)) + top[..., 0].astype(xp.float64)
    return xp.exp(_picked(coalitions, target, xp) - log_norm)


def shapley_values(values: Any, xp: Any = np) -> Any:
    """(n, M) Shapley values phi from coalition values ``values`` (n, 2^M)."""
    num_modalities = int(round(np.log2(values.shape[1])))
    if 2**num_modalities != values.shape[1]:
        raise ValueError(f"expected 2^M coalition values, got {values.shape[1]}")
    # Term by term rather than ``values @ C``: a matrix product rounds a lone row
    # (a matrix-vector kernel) differently from the same row in a larger block, and
    # the streaming pass's blocks follow --max-memory; this sum is the same bits
    # for a row whatever rows are beside it.
    coef = xp.asarray(shapley_matrix(num_modalities))
    phi = values[:, 0, None] * coef[0]
    for mask in range(1, values.shape[1]):
        phi += values[:, mask, None] * coef[mask]
    return phi


def contributions(phi: Any, xp: Any = np) -> Any:
    """(n, M) contributions Phi_m = |phi_m| / sum_j |phi_j| (1/M where all phi are 0)."""
    mag = xp.abs(phi)
    total = mag.sum(axis=1, keepdims=True)
    uniform = xp.full_like(mag, 1.0 / phi.shape[1])
    return xp.where(total > 0, mag / xp.where(total > 0, total, 1.0), uniform)


def balance_weights(phi_share: Any, xp: Any = np) -> Any:
    """(n, M) BMMAL weights w_m = 1 - (Phi_max - Phi_m); the dominant modality gets 1."""
    return 1.0 - (phi_share.max(axis=1, keepdims=True) - phi_share)


def pseudo_labels(logits_mm: Any, xp: Any = np) -> Any:
    """(n,) class with the largest multimodal logit (most probable class)."""
    return xp.argmax(logits_mm, axis=1)
