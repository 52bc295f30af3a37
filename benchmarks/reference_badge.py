"""Reference (b): the BADGE authors' factorized seeding, for comparison only.

Keeps the embedding as its factors (r, u) and, for each new center, computes
the distance of every sample to it from ``‖r‖²‖u‖²`` and the two dot products
(one matrix-vector product per factor), then draws the next center with a new
scipy ``rv_discrete`` over D².
"""

from __future__ import annotations

import numpy as np
from reference_common import bmmal_factors, draw


def select(logits, coalitions, features, fusion, budget, rng, stop_after=None):
    """Chosen rows in pick order; ``stop_after`` centers only (for timing a prefix)."""
    r, u = bmmal_factors(logits, coalitions, features, fusion)
    sq_norms = np.einsum("ij,ij->i", r, r) * np.einsum("ij,ij->i", u, u)
    centers = [int(np.argmax(sq_norms))]
    chosen = set(centers)
    d2 = np.full(len(r), np.inf, dtype=np.float32)
    stop = min(budget, stop_after or budget)
    while len(centers) < stop:
        last = centers[-1]
        to_new = sq_norms + sq_norms[last] - 2 * (r @ r[last]) * (u @ u[last])
        d2 = np.minimum(d2, np.maximum(to_new, 0))
        d2[centers] = 0
        index = draw(d2.astype(np.float64), chosen, rng)
        centers.append(index)
        chosen.add(index)
    return np.asarray(centers)
