"""BADGE (Ash et al., ICLR 2020): k-means++ seeding over gradient embeddings."""

from __future__ import annotations

from typing import Any

import numpy as np

from mmal.cache.reader import Cache
from mmal.select.embedding import cache_embedding
from mmal.select.kmeanspp import DEFAULT_BLOCK_SIZE, kmeans_pp
from mmal.select.memory import WorkingSet
from mmal.select.registry import Selection, register


@register("badge", "k-means++ over the gradient embedding (p - e_y) ⊗ h of the multimodal head")
def select_badge(
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
    """Exact k-means++ over ``(p - e_ŷ) ⊗ h`` of every unlabeled sample.

    ``precision`` is the float type of the embedding factors ("float64" makes
    NumPy and CuPy pick the same ids); ``block_size`` is the number of centers
    per bound refresh (speed only).
    """
    positions, emb = cache_embedding(cache, xp=xp, dtype=precision, memory=memory)
    picks = kmeans_pp(emb, budget, rng=rng, xp=xp, block_size=block_size, progress=progress)
    return Selection(positions=positions[picks])

