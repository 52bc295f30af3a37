"""BMMAL (Shen et al., ACM MM 2023): BADGE with modality-balanced gradient embeddings.

Per unlabeled sample: Shapley values ``phi`` of the modalities for the model
outcome ``V(S)`` (probability of the pseudo-label with the modalities outside
``S`` zeroed, read from the cache's ``coalitions``), contributions
``Phi_m = |phi_m| / Σ_j |phi_j|``, weights ``w_m = 1 - (Phi_max - Phi_m)``, and
the embedding ``(p - e_ŷ) ⊗ (w_1 z_1 ⊕ w_2 z_2 ⊕ ...)`` over the cache's
embedding blocks ``z_m`` (``Σ w_m z_m`` for ``feature-sum`` fusion; for
``nl-gate`` each block is the fused latent with only that modality present).
Then exact k-means++ over the whole pool.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmal.cache.reader import Cache
from mmal.select.backend import asnumpy
from mmal.select.balance import dominance_summary, modality_balance
from mmal.select.embedding import cache_embedding
from mmal.select.kmeanspp import DEFAULT_BLOCK_SIZE, kmeans_pp
from mmal.select.memory import WorkingSet
from mmal.select.registry import Selection, register


@register("bmmal", "BADGE over modality-balanced gradient embeddings (Shapley-weighted, Shen et al. 2023)")
def select_bmmal(
    cache: Cache,
    budget: int,
    *,
    rng: np.random.Generator,
    xp: Any = np,
    precision: str = "float32",
    block_size: int = DEFAULT_BLOCK_SIZE,
    progress: bool = False,
    memory: WorkingSet | None = None,
) -> Selection:
    """Exact k-means++ over ``(p - e_ŷ) ⊗ (w_1 z_1 ⊕ ...)`` of every unlabeled sample.

    Diagnostics (per unlabeled sample, in cache row order): ``phi``, ``Phi``,
    ``weights`` (n, M) and ``rho`` (n,); summary: :func:`dominance_summary`.
    """
    meta = cache.meta
    # keyed by the block's first row: a float64 rereading of the cache calls again per block
    parts: dict[str, dict[int, np.ndarray]] = {"phi": {}, "Phi": {}, "weights": {}, "rho": {}}

    def weights_of_block(rows, keep, logits):
        coalitions = xp.asarray(cache.coalitions(rows)[keep])
        balance = modality_balance(logits, coalitions, multi_label=meta.multi_label, xp=xp)
        for key, values in parts.items():
            values[rows.start] = asnumpy(balance[key])
        return balance["weights"]

    positions, emb = cache_embedding(cache, xp=xp, dtype=precision,
                                     modality_weights=weights_of_block, memory=memory)
    diagnostics = {key: np.concatenate([values[start] for start in sorted(values)]) if values
                   else np.zeros((0, meta.num_modalities)) for key, values in parts.items()}
    picks = kmeans_pp(emb, budget, rng=rng, xp=xp, block_size=block_size, progress=progress)
    summary = dominance_summary(diagnostics["Phi"], diagnostics["weights"], list(meta.modalities))
    return Selection(positions=positions[picks], diagnostics=diagnostics, summary=summary)
