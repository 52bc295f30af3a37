"""Shared by the reference implementations: BMMAL's weights and factors, the plain way.

Written for the benchmark from the method's description (issue 3), vectorised
NumPy, whole arrays at once; the references differ only in how they seed
k-means++.
"""

from __future__ import annotations

import numpy as np


def bmmal_factors(logits, coalitions, features, fusion):
    """(r, u): softmax-gradient factor (N, K) and BMMAL-scaled head input (N, D), float32."""
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    target = p.argmax(axis=1)
    # V(S): probability of the pseudo-label under every coalition.
    c = coalitions.astype(np.float64)
    c = np.exp(c - c.max(axis=2, keepdims=True))
    values = c[np.arange(len(c)), :, target] / c.sum(axis=2)
    phi = _shapley(values, len(features))
    mag = np.abs(phi)
    total = mag.sum(axis=1, keepdims=True)
    share = np.where(total > 0, mag / np.where(total > 0, total, 1), 1 / len(features))
    weights = 1 - (share.max(axis=1, keepdims=True) - share)
    parts = [w[:, None] * f for w, f in zip(weights.T, features, strict=True)]
    # the weighted blocks: summed for feature-sum, concatenated for every other fusion
    u = sum(parts) if fusion == "feature-sum" else np.concatenate(parts, axis=1)
    r = p
    r[np.arange(len(r)), target] -= 1
    return r.astype(np.float32), u.astype(np.float32)


def _shapley(values, m_total):
    """Shapley values by enumerating, for each modality, the coalitions without it."""
    from math import factorial

    phi = np.zeros((len(values), m_total))
    for m in range(m_total):
        for mask in range(2**m_total):
            if mask >> m & 1:
                continue
            size = bin(mask).count("1")
            weight = factorial(size) * factorial(m_total - size - 1) / factorial(m_total)
            phi[:, m] += weight * (values[:, mask | 1 << m] - values[:, mask])
    return phi


def draw(d2, chosen, rng):
    """One center ∝ D² with a fresh scipy rv_discrete, redrawn while already chosen."""
    from scipy import stats

    dist = stats.rv_discrete(name="d2", values=(np.arange(len(d2)), d2 / d2.sum()))
    index = int(dist.rvs(size=1, random_state=rng)[0])
    while index in chosen:
        index = int(dist.rvs(size=1, random_state=rng)[0])
    return index
