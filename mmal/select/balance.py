"""Per-sample modality balance: Shapley values, contributions, BMMAL weights, Fig. 6 summary.

BMMAL uses these to damp its gradient embedding; ``select`` writes them next to
every index file, whatever the strategy, so selections can be compared by how
balanced the samples they pick are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmal.cache.reader import Cache
from mmal.select.backend import asnumpy
from mmal.select.scoring import block_rows, iter_masked_blocks
from mmal.shapley import (
    balance_weights,
    coalition_values,
    contributions,
    pseudo_labels,
    shapley_values,
)


def modality_balance(logits_mm: Any, coalitions: Any, *, multi_label: bool = False,
                     xp: Any = np) -> dict[str, Any]:
    """Shapley values, contributions and BMMAL weights of each sample's modalities.

    Parameters
    ----------
    logits_mm : array (n, K)
        Multimodal logits; the pseudo-label is their argmax (the most probable
        class, for softmax and sigmoid heads alike).
    coalitions : array (n, 2^M, K)
        Logits of every modality coalition (bit m set = modality m present).
    multi_label : bool
        Sigmoid probabilities for ``V(S)`` instead of softmax.

    Returns
    -------
    dict with float64 arrays on ``xp``: ``phi`` (n, M), ``Phi`` (n, M),
    ``weights`` (n, M) and ``rho`` (n,) = Phi_max - Phi_min.
    """
    values = coalition_values(coalitions, pseudo_labels(logits_mm, xp=xp),
                              multi_label=multi_label, xp=xp)
    phi = shapley_values(values, xp=xp)
    share = contributions(phi, xp=xp)
    return {"phi": phi, "Phi": share, "weights": balance_weights(share, xp=xp),
            "rho": share.max(axis=1) - share.min(axis=1)}


def dominance_summary(share: np.ndarray, weights: np.ndarray, modalities: list[str]) -> dict:
    """The paper's Fig. 6 numbers: per dominant modality, its sub-pool and the weaker weights.

    Parameters
    ----------
    share : (n, M) contributions Phi; a sample's dominant modality is its argmax
        (the first on ties).
    weights : (n, M) BMMAL weights.
    modalities : M names.

    Returns
    -------
    dict ``{"pool_size": n, "subpools": {name: {"size", "share",
    "mean_weaker_weight", "mean_weight": {other: mean}}}}``; means are None
    for an empty sub-pool.
    """
    n = len(share)
    dominant = np.argmax(share, axis=1)
    subpools = {}
    for m, name in enumerate(modalities):
        members = dominant == m
        others = [j for j in range(len(modalities)) if j != m]
        size = int(members.sum())
        sub = weights[members]
        subpools[name] = {
            "size": size,
            "share": size / n if n else 0.0,
            "mean_weaker_weight": float(sub[:, others].mean()) if size and others else None,
            "mean_weight": {modalities[j]: float(sub[:, j].mean()) if size else None
                            for j in others},
        }
    return {"pool_size": n, "subpools": subpools}


def unlabeled_balance(cache: Cache, *, xp: Any = np) -> tuple[dict[str, np.ndarray], dict]:
    """:func:`modality_balance` of every unlabeled row (in row order) and its Fig. 6 summary.

    Streams ``logits/mm`` and ``coalitions`` in row blocks; returns host arrays.
    """
    meta = cache.meta
    mask = ~cache.labeled
    row_bytes = 4 * meta.num_classes * (meta.num_coalitions + 1)
    parts: dict[str, list[np.ndarray]] = {"phi": [], "Phi": [], "weights": [], "rho": []}

    def read(rows: slice) -> np.ndarray:
        return np.concatenate([cache.logits("mm", rows)[:, None, :], cache.coalitions(rows)], axis=1)

    for _, block in iter_masked_blocks(cache, read, mask, block_rows(row_bytes)):
        block = xp.asarray(block)
        balance = modality_balance(block[:, 0], block[:, 1:], multi_label=meta.multi_label, xp=xp)
        for key, values in parts.items():
            values.append(asnumpy(balance[key]))
    diagnostics = {key: np.concatenate(values) if values else np.zeros((0, meta.num_modalities))
                   for key, values in parts.items()}
    summary = dominance_summary(diagnostics["Phi"], diagnostics["weights"], list(meta.modalities))
    return diagnostics, summary

