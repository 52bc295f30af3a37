"""Known-answer tests of mmal.shapley: enumeration over orderings, efficiency, contributions."""

from __future__ import annotations

import itertools
from math import factorial

import numpy as np
import pytest

from mmal.shapley import (
    balance_weights,
    coalition_values,
    contributions,
    pseudo_labels,
    shapley_matrix,
    shapley_values,
)


def _brute_force_shapley(values_row, num_modalities):
    """Average marginal contribution over all M! orderings (the textbook definition)."""
    phi = np.zeros(num_modalities)
    for order in itertools.permutations(range(num_modalities)):
        mask = 0
        for m in order:
            phi[m] += values_row[mask | (1 << m)] - values_row[mask]
            mask |= 1 << m
    return phi / factorial(num_modalities)


@pytest.mark.parametrize("num_modalities", [2, 3])
def test_shapley_equals_enumeration_and_is_efficient(num_modalities, xp):
    rng = np.random.default_rng(num_modalities)
    values = rng.uniform(size=(40, 2**num_modalities))
    phi = shapley_values(xp.asarray(values), xp=xp)
    phi = phi.get() if hasattr(phi, "get") else phi
    expected = np.stack([_brute_force_shapley(v, num_modalities) for v in values])
    np.testing.assert_allclose(phi, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(phi.sum(axis=1), values[:, -1] - values[:, 0], rtol=1e-12)


def test_two_modality_formula_from_the_paper():
    v = np.array([[0.1, 0.5, 0.3, 0.9]])  # V(∅), V(z1), V(z2), V(z1, z2)
    phi = shapley_values(v)[0]
    assert phi[0] == pytest.approx(0.5 * (0.9 - 0.3 + 0.5 - 0.1))
    assert phi[1] == pytest.approx(0.5 * (0.9 - 0.5 + 0.3 - 0.1))


def test_shapley_matrix_columns_sum_to_zero():
    # A constant value function gives phi = 0 for every modality (dummy axiom).
    for m in (1, 2, 3, 4):
        np.testing.assert_allclose(shapley_matrix(m).sum(axis=0), 0.0, atol=1e-15)


@pytest.mark.parametrize("multi_label", [False, True])
def test_coalition_values_are_probabilities_of_the_target(multi_label):
    rng = np.random.default_rng(1)
    coalitions = rng.normal(size=(7, 4, 5)) * 3
    target = pseudo_labels(coalitions[:, -1])
    values = coalition_values(coalitions, target, multi_label=multi_label)
    picked = coalitions[np.arange(7), :, target]
    if multi_label:
        expected = 1 / (1 + np.exp(-picked))
    else:
        e = np.exp(coalitions - coalitions.max(axis=2, keepdims=True))
        expected = (e / e.sum(axis=2, keepdims=True))[np.arange(7), :, target]
    np.testing.assert_allclose(values, expected, rtol=1e-12)


def test_contributions_normalize_and_fall_back_to_uniform():
    phi = np.array([[0.3, -0.1], [0.0, 0.0], [0.2, 0.2], [0.0, 0.0]])[:, :2]
    share = contributions(phi)
    np.testing.assert_allclose(share, [[0.75, 0.25], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    three = contributions(np.zeros((1, 3)))
    np.testing.assert_allclose(three, [[1 / 3] * 3])


def test_weights_dominant_is_one_others_lowered_by_gap():
    share = np.array([[0.7, 0.2, 0.1], [0.25, 0.5, 0.25]])
    np.testing.assert_allclose(balance_weights(share), [[1.0, 0.5, 0.4], [0.75, 1.0, 0.75]])


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_coalition_values_equal_the_float64_softmax_bit_for_bit(dtype):
    # Computed without a float64 copy of the logits; the result must be the
    # plain float64 softmax exactly, so selections do not change.
    rng = np.random.default_rng(21)
    coalitions = (rng.normal(size=(300, 4, 17)) * rng.uniform(0.1, 60, size=(300, 1, 1)))
    coalitions = coalitions.astype(dtype)
    target = rng.integers(0, 17, size=300)
    z = coalitions.astype(np.float64)
    top = z.max(axis=2, keepdims=True)
    log_norm = np.log(np.exp(z - top).sum(axis=2)) + top[..., 0]
    expected = np.exp(z[np.arange(300), :, target] - log_norm)
    np.testing.assert_array_equal(coalition_values(coalitions, target), expected)


@pytest.mark.parametrize("num_modalities", [2, 3])
def test_shapley_values_of_a_row_do_not_depend_on_the_rows_beside_it(num_modalities, xp):
    # The streaming pass computes phi per cache block, and the blocks follow
    # --max-memory: a row alone in its block must get the bits it gets in a full one.
    rng = np.random.default_rng(5)
    values = xp.asarray(rng.uniform(size=(50, 2**num_modalities)))
    whole = shapley_values(values, xp=xp)
    for rows in (1, 2, 3, 7):
        parts = xp.concatenate([shapley_values(values[i:i + rows], xp=xp)
                                for i in range(0, 50, rows)])
        assert bool((parts == whole).all()), f"blocks of {rows} rows differ"
