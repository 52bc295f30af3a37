"""Checks that a cache's logits agree with its own head, blocks and head input.

For the linear fusions every stored coalition logit is recomputed as the head
applied to the head input of that coalition (absent modalities' blocks
zeroed). ``nl-gate`` fuses nonlinearly, so only what follows from the stored
fields is checked (:func:`recomputable_coalitions`):

* ``logits/mm`` and the full coalition are the head applied to ``head_input``;
* the coalition of modality ``m`` alone is the head applied to ``features/m``
  (the block *is* the fused latent with only ``m`` present);
* the empty coalition is the same row for every sample (the network run on
  zeros alone).

Coalitions of two or more modalities but not all of them (M >= 3) cannot be
recomputed without the model; they are not checked.
"""

from __future__ import annotations

import numpy as np

from mmal.cache.fusion import coalition_present, head_input
from mmal.cache.reader import Cache
from mmal.cache.schema import CacheMeta


def recomputable_coalitions(meta: CacheMeta) -> list[int]:
    """Coalition masks whose logits :func:`coalition_error` checks, in increasing order.

    Every coalition for the linear fusions; for the others the empty one, each
    single modality and the full one.
    """
    every = range(meta.num_coalitions)
    if not meta.stores_head_input:
        return list(every)
    singles = {1 << m for m in range(meta.num_modalities)}
    return [s for s in every if s in singles or s in (0, meta.num_coalitions - 1)]


def coalition_error(cache: Cache, block_rows: int = 16384) -> float:
    """Largest |stored - recomputed| over ``logits/mm`` and the checkable coalition logits.

    Recomputes ``W h_S + b`` in float64, streaming the pool in row blocks: with
    ``h_S`` the head input of coalition ``S`` from the blocks (linear fusions),
    or as listed in the module docstring (``nl-gate``; the empty coalition is
    compared with the first sample's).
    """
    weight, bias = (a.astype(np.float64) for a in cache.head())
    meta = cache.meta
    masks = recomputable_coalitions(meta)
    empty = cache.coalitions(slice(0, 1))[0, 0] if meta.stores_head_input else bias
    worst = 0.0
    for rows in cache.row_blocks(block_rows):
        feats = [cache.features(m, rows).astype(np.float64) for m in meta.modalities]
        stored = cache.coalitions(rows)
        h = (cache.head_input(rows).astype(np.float64) if meta.stores_head_input
             else head_input(feats, meta.fusion, xp=np))
        full = h @ weight.T + bias
        for mask in masks:
            expected = _coalition_logits(meta, feats, full, mask, weight, bias, empty)
            worst = max(worst, float(np.max(np.abs(stored[:, mask] - expected))))
        worst = max(worst, float(np.max(np.abs(cache.logits("mm", rows) - full))))
    return worst


def _coalition_logits(meta, feats, full, mask, weight, bias, empty):
    """(n, K) or (K,) expected logits of coalition ``mask`` (one of ``recomputable_coalitions``)."""
    if not meta.stores_head_input:
        present = coalition_present(mask, meta.num_modalities)
        return head_input(feats, meta.fusion, present=present, xp=np) @ weight.T + bias
    if mask == meta.num_coalitions - 1:
        return full
    if mask == 0:
        return empty
    return feats[mask.bit_length() - 1] @ weight.T + bias
