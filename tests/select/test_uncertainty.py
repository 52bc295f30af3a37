"""Entropy, margin and least-confidence: hand-computed scores, brute-force rankings, ties."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, softmax
from scipy.stats import entropy as scipy_entropy

from mmal.cache.reader import open_cache
from mmal.select import scoring
from mmal.select.backend import asnumpy
from mmal.select.scoring import top_scores
from mmal.select.strategies.uncertainty import (
    entropy_scores,
    least_confidence_scores,
    margin_scores,
    select_entropy,
    select_least_confidence,
    select_margin,
)

LOG3 = np.log(3.0)
E = np.e


def test_softmax_scores_by_hand(xp):
    logits = xp.asarray(np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]], dtype=np.float32))
    # row 1: p = (e, 1, 1) / (e + 2); row 2: p = (e, e, 1) / (2e + 1)
    p1 = np.array([E, 1, 1]) / (E + 2)
    p2 = np.array([E, E, 1]) / (2 * E + 1)
    np.testing.assert_allclose(asnumpy(entropy_scores(logits, xp=xp)),
                               [LOG3, -(p1 * np.log(p1)).sum(), -(p2 * np.log(p2)).sum()], rtol=1e-12)
    np.testing.assert_allclose(asnumpy(margin_scores(logits, xp=xp)),
                               [0.0, (E - 1) / (E + 2), 0.0], atol=1e-12)
    np.testing.assert_allclose(asnumpy(least_confidence_scores(logits, xp=xp)),
                               [2 / 3, 1 - E / (E + 2), 1 - E / (2 * E + 1)], rtol=1e-12)


def test_multilabel_scores_by_hand(xp):
    logits = xp.asarray(np.array([[0.0, 0.0], [np.log(3.0), 0.0]]))  # p = (1/2, 1/2), (3/4, 1/2)
    hb = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    np.testing.assert_allclose(asnumpy(entropy_scores(logits, multi_label=True, xp=xp)),
                               [2 * np.log(2), hb + np.log(2)], rtol=1e-12)
    np.testing.assert_allclose(asnumpy(margin_scores(logits, multi_label=True, xp=xp)),
                               [0.0, (0.25 + 0.0) / 2], atol=1e-12)
    np.testing.assert_allclose(asnumpy(least_confidence_scores(logits, multi_label=True, xp=xp)),
                               [np.log(2), -(np.log(0.75) + np.log(0.5)) / 2], rtol=1e-12)


@pytest.mark.parametrize("multi_label", [False, True])
def test_scores_stay_finite_for_huge_logits(multi_label):
    logits = np.array([[1000.0, -1000.0, 0.0], [-800.0, -800.0, -800.0]])
    for score in (entropy_scores, margin_scores, least_confidence_scores):
        assert np.isfinite(score(logits, multi_label=multi_label)).all(), score.__name__


def test_top_scores_breaks_ties_by_lower_position():
    positions = np.array([3, 5, 8, 13, 21])
    scores = np.array([1.0, 2.0, 2.0, 0.5, 2.0])
    np.testing.assert_array_equal(top_scores(positions, scores, 3), [5, 8, 21])
    np.testing.assert_array_equal(top_scores(positions, scores, 2, largest=False), [13, 3])


def _brute(cache, kind):
    """Scores of every unlabeled row by scipy, in row order."""
    logits = cache.logits("mm").astype(np.float64)[~cache.labeled]
    if cache.meta.multi_label:
        p = expit(logits)
        return {"entropy": (scipy_entropy(np.stack([p, 1 - p]), axis=0)).sum(axis=1),
                "margin": -np.abs(p - 0.5).mean(axis=1),
                "least-confidence": -np.log(np.maximum(p, 1 - p)).mean(axis=1)}[kind]
    p = softmax(logits, axis=1)
    top2 = np.sort(p, axis=1)[:, -2:]
    return {"entropy": scipy_entropy(p, axis=1), "margin": top2[:, 0] - top2[:, 1],
            "least-confidence": 1 - p.max(axis=1)}[kind]


SELECT = {"entropy": select_entropy, "margin": select_margin, "least-confidence": select_least_confidence}


@pytest.mark.parametrize("name", list(SELECT))
@pytest.mark.parametrize("kind", ["concat2", "multilabel", "featuresum3"])
def test_selection_is_brute_force_top_b(cache_factory, xp, name, kind):
    with open_cache(cache_factory(kind)) as cache:
        chosen = SELECT[name](cache, 25, rng=np.random.default_rng(0), xp=xp).positions
        brute = _brute(cache, name)
        unlabeled = np.flatnonzero(~cache.labeled)
    expected = unlabeled[np.argsort(-brute, kind="stable")[:25]]
    np.testing.assert_array_equal(chosen, expected)
    # picks are in decreasing uncertainty
    rank = {p: s for p, s in zip(unlabeled, brute, strict=True)}
    assert all(rank[a] >= rank[b] - 1e-12 for a, b in zip(chosen, chosen[1:], strict=False))


def test_streaming_in_small_blocks_gives_the_same_picks(cache_factory, monkeypatch):
    with open_cache(cache_factory("concat2")) as cache:
        whole = select_entropy(cache, 30, rng=np.random.default_rng(0)).positions
        monkeypatch.setattr(scoring, "BLOCK_BYTES", 7 * 4 * cache.meta.num_classes)  # 7 rows
        blocked = select_entropy(cache, 30, rng=np.random.default_rng(0)).positions
    np.testing.assert_array_equal(whole, blocked)
