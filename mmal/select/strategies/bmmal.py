"""BMMAL (Shen et al., ACM MM 2023): BADGE with modality-balanced gradient embeddings.

Per unlabeled sample: Shapley values ``phi`` of the modalities for the model
outcome ``V(S)`` (probability of the pseudo-label with the modalities outside
``S`` zeroed, read from the cache's ``coalitions``), contributions
``Phi_m = |phi_m| / Σ_j |phi_j|``, weights ``w_m = 1 - (Phi_max - Phi_m)``, and
the embedding ``(p - e_ŷ) ⊗ (w_1 z_1 ⊕ w_2 z_2 ⊕ ...)`` (``Σ w_m z_m`` for sum
fusion). Then exact k-means++ over the whole pool.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmal.cache.reader import Cache
from mmal.select.backend import asnumpy
from mmal.select.embedding import cache_embedding, check_precision
from mmal.select.kmeanspp import kmeans_pp
from mmal.select.registry import Selection, register
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


@register("bmmal", "BADGE over modality-balanced gradient embeddings (Shapley-weighted, Shen et al. 2023)")
def select_bmmal(
    cache: Cache,
    budget: int,
    *,
    rng: np.random.Generator,
    xp: Any = np,
    precision: str = "float32",
    block_size: int | None = None,
    progress: bool = False,
) -> Selection:
    """Exact k-means++ over ``(p - e_ŷ) ⊗ (w_1 z_1 ⊕ ...)`` of every unlabeled sample.

    Diagnostics (per unlabeled sample, in cache row order): ``phi``, ``Phi``,
    ``weights`` (n, M) and ``rho`` (n,); summary: :func:`dominance_summary`.
    """
    meta = cache.meta
    parts: dict[str, list[np.ndarray]] = {"phi": [], "Phi": [], "weights": [], "rho": []}

    def weights_of_block(rows, keep, logits):
        coalitions = xp.asarray(cache.coalitions(rows)[keep])
        balance = modality_balance(logits, coalitions, multi_label=meta.multi_label, xp=xp)
        for key, values in parts.items():
            values.append(asnumpy(balance[key]))
        return balance["weights"]

    positions, emb = cache_embedding(cache, xp=xp, dtype=check_precision(precision),
                                     modality_weights=weights_of_block)
    diagnostics = {key: np.concatenate(values) if values else np.zeros((0, meta.num_modalities))
                   for key, values in parts.items()}
    picks = kmeans_pp(emb, budget, rng=rng, xp=xp, block_size=block_size, progress=progress)
    summary = dominance_summary(diagnostics["Phi"], diagnostics["weights"], list(meta.modalities))
    return Selection(positions=positions[picks], diagnostics=diagnostics, summary=summary)
