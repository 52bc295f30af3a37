"""BALD (Houlsby et al., 2011; Gal et al., 2017) from the cache's MC-dropout logits.

The mutual information between the prediction and the model parameters,
estimated from ``T`` stochastic forward passes ``p_t``:

    I = H(mean_t p_t) - mean_t H(p_t)

Softmax heads use the categorical entropy over classes. Multi-label heads
treat every class as its own Bernoulli ``p_tk = sigmoid(l_tk)`` and sum the
per-class mutual informations, ``Σ_k [H_b(mean_t p_tk) - mean_t H_b(p_tk)]``
(exact for independent classes). The ``budget`` unlabeled samples of largest
``I`` are selected, largest first; equal scores go to the lower row position.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmal.cache.reader import Cache
from mmal.errors import SelectionError
from mmal.select.registry import Selection, register
from mmal.select.scoring import score_unlabeled, top_scores
from mmal.select.strategies.uncertainty import (
    binary_entropy_from_logits,
    log_softmax,
    sigmoid,
)


def _xlogx(p: Any, xp: Any) -> Any:
    """``p log p`` with ``0 log 0 = 0``."""
    return p * xp.log(xp.where(p > 0, p, 1.0))


def mutual_information(mc_logits: Any, *, multi_label: bool = False, xp: Any = np) -> Any:
    """(n,) float64 BALD score of (n, T, K) MC-dropout logits, in nats (>= 0 up to rounding)."""
    n, t, k = mc_logits.shape
    if multi_label:
        z = mc_logits.astype(xp.float64)
        mean_p = sigmoid(z, xp).mean(axis=1)
        h_mean = -(_xlogx(mean_p, xp) + _xlogx(1.0 - mean_p, xp))
        mean_h = binary_entropy_from_logits(z, xp).mean(axis=1)
        return (h_mean - mean_h).sum(axis=1)
    logp = log_softmax(mc_logits.reshape(n * t, k), xp).reshape(n, t, k)
    p = xp.exp(logp)
    mean_p = p.mean(axis=1)
    h_mean = -_xlogx(mean_p, xp).sum(axis=1)
    mean_h = -(p * logp).sum(axis=2).mean(axis=1)
    return h_mean - mean_h


@register("bald", "largest mutual information between prediction and weights (MC dropout)",
          needs_mc_dropout=True)
def select_bald(cache: Cache, budget: int, *, rng: np.random.Generator, xp: Any = np) -> Selection:
    """The ``budget`` unlabeled samples of largest BALD score (``rng`` unused).

    Raises
    ------
    SelectionError
        When the cache holds no ``mc_logits``.
    """
    if not cache.has_mc_logits:
        raise SelectionError(
            f"{cache.path}: strategy 'bald' needs MC-dropout logits and this cache has none; "
            "rerun `mmal extract --mc-dropout T` (e.g. T=20) or pick another strategy"
        )
    meta = cache.meta
    positions, scores = score_unlabeled(
        cache, lambda rows: cache.mc_logits(rows),
        lambda block: mutual_information(block, multi_label=meta.multi_label, xp=xp),
        # several float64 temporaries per element: size blocks by them, not by the float32 read
        row_bytes=32 * meta.mc_samples * meta.num_classes, xp=xp,
    )
    return Selection(positions=top_scores(positions, scores, budget, largest=True))
