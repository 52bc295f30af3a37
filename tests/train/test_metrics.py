"""Test-split metrics against brute force: top-1, mAP, Shapley values at the true class."""

from __future__ import annotations

import itertools
from math import factorial

import numpy as np
import pytest

from mmal.train.metrics import mean_average_precision, summarize, top1, true_class_shapley


def test_top1_single_and_multi_label():
    logits = np.array([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert top1(logits, np.array([1, 1, 2])) == pytest.approx(2 / 3)
    multi = np.array([[0, 1, 1], [0, 1, 0], [1, 0, 1]], dtype=np.int8)
    assert top1(logits, multi) == pytest.approx(2 / 3)


def test_map_matches_hand_computed_average_precision():
    scores = np.array([[0.9], [0.8], [0.7], [0.6]])
    labels = np.array([[1], [0], [1], [0]], dtype=np.int8)
    # positives at ranks 1 and 3: precisions 1 and 2/3.
    assert mean_average_precision(scores, labels) == pytest.approx((1 + 2 / 3) / 2)
    two = np.concatenate([scores, -scores], axis=1)
    labels2 = np.concatenate([labels, np.array([[0], [0], [0], [1]], np.int8)], axis=1)
    assert mean_average_precision(two, labels2) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    assert np.isnan(mean_average_precision(scores, np.zeros_like(labels)))


def _brute_phi(values_by_coalition, m_total):
    phi = np.zeros(m_total)
    for m in range(m_total):
        others = [j for j in range(m_total) if j != m]
        for size in range(m_total):
            for subset in itertools.combinations(others, size):
                s = sum(1 << j for j in subset)
                w = factorial(size) * factorial(m_total - size - 1) / factorial(m_total)
                phi[m] += w * (values_by_coalition[s | 1 << m] - values_by_coalition[s])
    return phi


@pytest.mark.parametrize("m_total", [1, 2, 3])
def test_true_class_shapley_matches_enumeration(m_total):
    rng = np.random.default_rng(m_total)
    coal = rng.normal(size=(5, 2 ** m_total, 4))
    labels = rng.integers(0, 4, size=5)
    phi, share = true_class_shapley(coal, labels)
    for i in range(5):
        p = np.exp(coal[i]) / np.exp(coal[i]).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(phi[i], _brute_phi(p[:, labels[i]], m_total), atol=1e-12)
    np.testing.assert_allclose(share.sum(axis=1), 1.0)
    # efficiency: the values sum to V(all) - V(empty)
    full = np.exp(coal[:, -1]) / np.exp(coal[:, -1]).sum(1, keepdims=True)
    empty = np.exp(coal[:, 0]) / np.exp(coal[:, 0]).sum(1, keepdims=True)
    idx = np.arange(5)
    np.testing.assert_allclose(phi.sum(1), full[idx, labels] - empty[idx, labels], atol=1e-12)


def test_multi_label_shapley_counts_every_positive_pair_with_sigmoids():
    rng = np.random.default_rng(0)
    coal = rng.normal(size=(3, 4, 3))
    labels = np.array([[1, 0, 1], [0, 0, 1], [0, 0, 0]], dtype=np.int8)
    phi, _ = true_class_shapley(coal, labels)
    assert phi.shape == (3, 2)
    sig = 1 / (1 + np.exp(-coal))
    np.testing.assert_allclose(phi[1], _brute_phi(sig[0, :, 2], 2), atol=1e-12)


def test_summarize_reports_every_modality():
    rng = np.random.default_rng(1)
    coal = rng.normal(size=(6, 4, 3))
    labels = rng.integers(0, 3, 6)
    out = summarize(coal[:, -1], {"a": coal[:, 1], "b": coal[:, 2]}, coal, labels, ["a", "b"])
    assert out["samples"] == 6 and set(out["top1"]) == {"mm", "a", "b"} and "map" not in out
    shares = out["shapley_true_class"]["contribution_mean"]
    assert shares["a"] + shares["b"] == pytest.approx(1.0)
