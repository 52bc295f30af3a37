"""Reference (a): the published BMMAL/BADGE seeding, for comparison only.

Materializes the (N, K·D) gradient embedding, computes the distance of every
sample to each new center, and draws each center with a new scipy
``rv_discrete`` over D². Memory is O(N·K·D): it cannot run at VGGSound scale.
"""

from __future__ import annotations

import numpy as np
from reference_common import bmmal_factors, draw


def select(logits, coalitions, features, fusion, budget, rng):
    """Chosen rows (positions into the given unlabeled arrays), in pick order."""
    r, u = bmmal_factors(logits, coalitions, features, fusion)
    embedding = (r[:, :, None] * u[:, None, :]).reshape(len(r), -1)
    del r, u
    sq_norms = np.einsum("ij,ij->i", embedding, embedding)
    centers = [int(np.argmax(sq_norms))]
    chosen = set(centers)
    d2 = np.full(len(embedding), np.inf, dtype=np.float32)
    while len(centers) < budget:
        c = embedding[centers[-1]]
        to_new = sq_norms + sq_norms[centers[-1]] - 2 * (embedding @ c)
        d2 = np.minimum(d2, np.maximum(to_new, 0))
        d2[centers] = 0
        index = draw(d2.astype(np.float64), chosen, rng)
        centers.append(index)
        chosen.add(index)
    return np.asarray(centers)
