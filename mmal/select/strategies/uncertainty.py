"""Uncertainty sampling from the multimodal logits: entropy, margin, least confidence.

Each strategy scores every unlabeled sample from ``logits/mm`` (streamed in row
blocks, computed in float64 on ``xp``) and takes the ``budget`` most uncertain,
most uncertain first; equal scores go to the lower row position.

Softmax heads (``p = softmax(logits)``):

* ``entropy``: ``H(p) = -Σ_k p_k log p_k``;
* ``margin``: ``p_(1) - p_(2)``, the gap between the two most probable classes
  (smallest first);
* ``least-confidence``: ``1 - p_(1)``.

Multi-label (sigmoid) heads, one Bernoulli ``p_k = sigmoid(l_k)`` per class:

* ``entropy``: the sum of the per-class binary entropies ``Σ_k H_b(p_k)``
  (the entropy of the label vector when classes are independent);
* ``margin``: the mean distance to the decision threshold,
  ``mean_k |p_k - 0.5|`` (smallest first);
* ``least-confidence``: the negative mean log-probability of the predicted
  label vector, ``-mean_k log max(p_k, 1 - p_k)`` (largest first). It ranks
  like one minus the geometric-mean confidence of the predicted label set and,
  unlike the product of confidences, does not underflow for many classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmal.cache.reader import Cache
from mmal.select.registry import Selection, register
from mmal.select.scoring import score_unlabeled, top_scores


def log_softmax(logits: Any, xp: Any = np) -> Any:
    """(n, K) float64 ``log softmax`` of (n, K) logits, stable for large logits."""
    z = logits.astype(xp.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=1, keepdims=True))


def sigmoid(logits: Any, xp: Any = np) -> Any:
    """Elementwise float64 logistic function, without overflow for large ``|l|``."""
    return 0.5 * (1.0 + xp.tanh(0.5 * logits.astype(xp.float64)))


def binary_entropy_from_logits(logits: Any, xp: Any = np) -> Any:
    """Elementwise ``H_b(sigmoid(l))`` in nats, float64: ``softplus(l) - l·sigmoid(l)``."""
    z = logits.astype(xp.float64)
    return xp.logaddexp(0.0, z) - z * sigmoid(z, xp)


def entropy_scores(logits: Any, *, multi_label: bool = False, xp: Any = np) -> Any:
    """(n,) float64 predictive entropy (nats) of (n, K) logits; larger = more uncertain."""
    if multi_label:
        return binary_entropy_from_logits(logits, xp).sum(axis=1)
    logp = log_softmax(logits, xp)
    return -(xp.exp(logp) * logp).sum(axis=1)


def margin_scores(logits: Any, *, multi_label: bool = False, xp: Any = np) -> Any:
    """(n,) float64 margin; smaller = more uncertain (see the module docstring)."""
    if multi_label:
        return xp.abs(sigmoid(logits, xp) - 0.5).mean(axis=1)
    p = xp.exp(log_softmax(logits, xp))
    k = p.shape[1]
    if k < 2:
        return p[:, 0]
    top2 = xp.partition(p, k - 2, axis=1)[:, k - 2:]
    return top2[:, 1] - top2[:, 0]


def least_confidence_scores(logits: Any, *, multi_label: bool = False, xp: Any = np) -> Any:
    """(n,) float64 lack of confidence; larger = more uncertain (see the module docstring)."""
    z = logits.astype(xp.float64)
    if multi_label:
        # log max(p, 1-p) = -softplus(-|l|): the predicted side's log-probability.
        return xp.logaddexp(0.0, -xp.abs(z)).mean(axis=1)
    return 1.0 - xp.exp(log_softmax(z, xp).max(axis=1))


def _select(cache: Cache, budget: int, score, largest: bool, xp: Any) -> Selection:
    multi_label = cache.meta.multi_label
    positions, scores = score_unlabeled(
        cache, lambda rows: cache.logits("mm", rows),
        lambda block: score(block, multi_label=multi_label, xp=xp),
        row_bytes=4 * cache.meta.num_classes, xp=xp,
    )
    return Selection(positions=top_scores(positions, scores, budget, largest=largest))


@register("entropy", "largest predictive entropy of the multimodal head")
def select_entropy(cache: Cache, budget: int, *, rng: np.random.Generator, xp: Any = np) -> Selection:
    """The ``budget`` unlabeled samples of largest predictive entropy (deterministic; ``rng`` unused)."""
    return _select(cache, budget, entropy_scores, True, xp)


@register("margin", "smallest gap between the two most probable classes")
def select_margin(cache: Cache, budget: int, *, rng: np.random.Generator, xp: Any = np) -> Selection:
    """The ``budget`` unlabeled samples of smallest margin (deterministic; ``rng`` unused)."""
    return _select(cache, budget, margin_scores, False, xp)


@register("least-confidence", "lowest probability of the predicted class")
def select_least_confidence(
    cache: Cache, budget: int, *, rng: np.random.Generator, xp: Any = np
) -> Selection:
    """The ``budget`` unlabeled samples the head is least confident about (``rng`` unused)."""
    return _select(cache, budget, least_confidence_scores, True, xp)
