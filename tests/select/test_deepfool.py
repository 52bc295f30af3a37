"""DeepFool's closed form against a numerical minimal perturbation, and on caches."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from mmal.cache.reader import open_cache
from mmal.select.backend import asnumpy
from mmal.select.strategies.deepfool import (
    boundary_distances,
    class_pair_distances,
    select_deepfool,
)


def numerical_min_flip(h, weight, bias):
    """min ‖δ‖ such that some class k ≠ ŷ reaches ŷ's logit at h + δ, by SLSQP per class."""
    logits = weight @ h + bias
    top = int(np.argmax(logits))
    best = np.inf
    for k in range(len(bias)):
        if k == top:
            continue
        diff_w, diff_b = weight[k] - weight[top], bias[k] - bias[top]
        constraint = {"type": "ineq", "fun": lambda d, w=diff_w, c=diff_b: w @ (h + d) + c,
                      "jac": lambda d, w=diff_w: w}
        res = minimize(lambda d: d @ d, np.zeros_like(h), jac=lambda d: 2 * d, method="SLSQP",
                       constraints=[constraint], options={"ftol": 1e-14, "maxiter": 500})
        assert res.success, res.message
        best = min(best, float(np.sqrt(res.fun)))
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_equals_numerical_minimum(xp, seed):
    rng = np.random.default_rng(seed)
    weight, bias = rng.normal(size=(4, 5)), rng.normal(size=4)
    h = rng.normal(size=(6, 5))
    logits = h @ weight.T + bias
    got = asnumpy(boundary_distances(xp.asarray(logits), xp.asarray(weight), xp=xp))
    expected = [numerical_min_flip(row, weight, bias) for row in h]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("seed", [3, 4])
def test_distance_is_tight(seed):
    """Slightly beyond d along the optimal direction flips; nothing shorter does (random probes)."""
    rng = np.random.default_rng(seed)
    weight, bias = rng.normal(size=(3, 4)), rng.normal(size=3)
    h = rng.normal(size=4)
    top = int(np.argmax(weight @ h + bias))
    d = float(boundary_distances((weight @ h + bias)[None], weight)[0])
    dirs = rng.normal(size=(20000, 4))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    inside = (h + 0.999 * d * dirs) @ weight.T + bias
    assert (inside.argmax(axis=1) == top).all()
    def facet_distance(k):
        diff = weight[top] - weight[k]
        return (diff @ h + bias[top] - bias[k]) / np.linalg.norm(diff)

    k = min((k for k in range(3) if k != top), key=facet_distance)
    step = (weight[k] - weight[top]) / np.linalg.norm(weight[k] - weight[top])
    assert np.argmax((h + 1.001 * d * step) @ weight.T + bias) != top


def test_multilabel_distance_to_the_nearest_class_hyperplane():
    weight = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    logits = np.array([[10.0, -1.0, 3.0], [0.0, 5.0, 5.0]])
    np.testing.assert_allclose(boundary_distances(logits, weight, multi_label=True),
                               [min(10 / 5, 1 / 1, 3 / 2), 0.0])


def test_identical_weight_rows_cannot_be_separated():
    weight = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(class_pair_distances(weight)[0], [0.0, 0.0, np.sqrt(2.0)])
    logits = np.array([[2.0, 1.0, -100.0], [2.0, 2.0, -100.0]])  # class 1 differs only by bias
    got = boundary_distances(logits, weight)
    np.testing.assert_allclose(got, [102.0 / np.sqrt(2.0), 0.0])


@pytest.mark.parametrize("kind", ["concat2", "featuresum3", "sum2", "nlgate2", "multilabel",
                                  "float16"])
def test_selection_on_cache_equals_brute_force(cache_factory, kind):
    with open_cache(cache_factory(kind)) as cache:
        chosen = select_deepfool(cache, 20, rng=np.random.default_rng(0)).positions
        weight, bias = (a.astype(np.float64) for a in cache.head())
        h = cache.head_input().astype(np.float64)
        unl = np.flatnonzero(~cache.labeled)
        multi = cache.meta.multi_label
    logits = h[unl] @ weight.T + bias
    dist = []
    for row in logits:  # per-sample loops over classes, no shared closed form
        if multi:
            dist.append(min(abs(row[k]) / np.linalg.norm(weight[k]) for k in range(len(row))))
        else:
            t = int(np.argmax(row))
            dist.append(min((row[t] - row[k]) / np.linalg.norm(weight[t] - weight[k])
                            for k in range(len(row)) if k != t))
    np.testing.assert_array_equal(chosen, unl[np.argsort(dist, kind="stable")[:20]])
