"""Exact k-means++ pair probabilities, shared by the D² sampling tests."""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.spatial.distance import cdist


def pair_probabilities(points):
    """P(second = s, third = t) of exact k-means++ on ``points`` (N, D), largest norm first.

    Returns ``(first, probs)``: the index of the first center and a dict from
    ``(s, t)`` index pairs to their probability (the values sum to 1).
    """
    d2 = cdist(points, points, "sqeuclidean")
    first = int(np.argmax((points**2).sum(axis=1)))
    p_second = d2[first] / d2[first].sum()
    probs = {}
    for s in range(len(points)):
        if s == first:
            continue
        nearest = np.minimum(d2[first], d2[s])
        for t in range(len(points)):
            if t not in (first, s):
                probs[(s, t)] = p_second[s] * nearest[t] / nearest.sum()
    return first, probs


def chi_square_of_pairs(picks, probs, runs):
    """p-value of the observed (second, third) pairs of ``picks`` against ``probs``.

    ``picks`` holds ``runs`` index arrays of at least 3 centers; cells under 5
    expected are merged into one, so the chi-square approximation holds.
    """
    counts = dict.fromkeys(probs, 0)
    for p in picks:
        counts[(int(p[1]), int(p[2]))] += 1
    cells = sorted(probs)
    observed = np.array([counts[c] for c in cells], dtype=float)
    expected = np.array([probs[c] for c in cells]) * runs
    small = expected < 5
    if small.any():
        observed = np.append(observed[~small], observed[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
    return stats.chisquare(observed, expected).pvalue
