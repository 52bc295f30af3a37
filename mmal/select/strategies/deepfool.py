"""DeepFool selection (Ducoffe & Precioso, 2018): smallest adversarial perturbation first.

For the cached linear head ``f(h) = W h + b`` DeepFool's perturbation is exact
in one step, so it is computed in closed form. The region where class ``ŷ``
wins is the convex polytope ``{h : f_ŷ(h) >= f_k(h) for all k}``; the distance
from ``h`` to its boundary is the distance to the nearest facet hyperplane:

    d(h) = min_{k != ŷ} (f_ŷ(h) - f_k(h)) / ‖w_ŷ - w_k‖

Multi-label (sigmoid) heads predict class ``k`` when ``l_k > 0``; the smallest
change of the predicted label vector flips one class at its hyperplane
``l_k = 0``:

    d(h) = min_k |l_k(h)| / ‖w_k‖

``f(h)`` is read from ``logits/mm`` (exactly ``W h + b`` of the stored head
input), so only the logits are streamed, in row blocks, plus the (K, D) head
weight. A pair of classes with identical weight rows cannot be separated by a
perturbation and counts as infinitely far (unless already tied, distance 0).
The ``budget`` unlabeled samples with the smallest ``d`` are selected,
smallest first; equal distances go to the lower row position.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmal.cache.reader import Cache
from mmal.select.registry import Selection, register
from mmal.select.scoring import score_unlabeled, top_scores


def class_pair_distances(weight: Any, xp: Any = np) -> Any:
    """(K, K) float64 ``‖w_j - w_k‖`` between the head's weight rows (K, D)."""
    w = xp.asarray(weight).astype(xp.float64)
    gram = w @ w.T
    sq = xp.diag(gram)
    return xp.sqrt(xp.clip(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0, None))


def _ratio(gap: Any, norm: Any, xp: Any) -> Any:
    """``gap / norm``; ``inf`` for a zero norm unless the gap is 0 too."""
    safe = xp.where(norm > 0, norm, 1.0)
    return xp.where(norm > 0, gap / safe, xp.where(gap > 0, xp.inf, 0.0))


def boundary_distances(logits: Any, weight: Any, *, multi_label: bool = False, xp: Any = np,
                       pair_norms: Any = None) -> Any:
    """(n,) float64 distance in head-input space from each sample to a decision change.

    Parameters
    ----------
    logits : (n, K) array
        ``W h + b`` of each sample.
    weight : (K, D) array
        Head weight ``W``.
    multi_label : bool
    pair_norms : (K, K) array, optional
        Precomputed :func:`class_pair_distances` (softmax heads).
    """
    z = logits.astype(xp.float64)
    if multi_label:
        w = xp.asarray(weight).astype(xp.float64)
        return _ratio(xp.abs(z), xp.sqrt((w * w).sum(axis=1))[None, :], xp).min(axis=1)
    if pair_norms is None:
        pair_norms = class_pair_distances(weight, xp)
    top = xp.argmax(z, axis=1)
    gap = z[xp.arange(len(z)), top][:, None] - z
    dist = _ratio(gap, pair_norms[top], xp)
    dist[xp.arange(len(z)), top] = xp.inf
    return dist.min(axis=1)


@register("deepfool", "smallest perturbation of the fused features that flips the linear head")
def select_deepfool(cache: Cache, budget: int, *, rng: np.random.Generator, xp: Any = np) -> Selection:
    """The ``budget`` unlabeled samples closest to the head's decision boundary (``rng`` unused)."""
    weight, _ = cache.head()
    multi_label = cache.meta.multi_label
    w = xp.asarray(weight)
    pair_norms = None if multi_label else class_pair_distances(w, xp)
    k = cache.meta.num_classes
    positions, scores = score_unlabeled(
        cache, lambda rows: cache.logits("mm", rows),
        lambda block: boundary_distances(block, w, multi_label=multi_label, xp=xp,
                                         pair_norms=pair_norms),
        row_bytes=24 * k, xp=xp,
    )
    return Selection(positions=top_scores(positions, scores, budget, largest=False))
