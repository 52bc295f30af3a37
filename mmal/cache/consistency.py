"""Checks that a cache's logits agree with its own head and features."""

from __future__ import annotations

import numpy as np

from mmal.cache.fusion import coalition_present, head_input
from mmal.cache.reader import Cache


def coalition_error(cache: Cache, block_rows: int = 16384) -> float:
    """Largest |stored - recomputed| over every coalition logit and ``logits/mm``.

    Recomputes ``W h_S + b`` with ``h_S`` the fused features of coalition ``S``
    (absent modalities zeroed), in float64, streaming the pool in row blocks.
    """
    weight, bias = (a.astype(np.float64) for a in cache.head())
    meta = cache.meta
    worst = 0.0
    for rows in cache.row_blocks(block_rows):
        feats = [cache.features(m, rows).astype(np.float64) for m in meta.modalities]
        stored = cache.coalitions(rows)
        for mask in range(meta.num_coalitions):
            present = coalition_present(mask, meta.num_modalities)
            expected = head_input(feats, meta.fusion, present=present, xp=np) @ weight.T + bias
            worst = max(worst, float(np.max(np.abs(stored[:, mask] - expected))))
        full = head_input(feats, meta.fusion, xp=np) @ weight.T + bias
        worst = max(worst, float(np.max(np.abs(cache.logits("mm", rows) - full))))
    return worst
