"""The seed streams stay what they were: a renumbered stream would change every result."""

from __future__ import annotations

import numpy as np
import pytest

from mmal.seeds import derive_seed, rng, selection_seed


@pytest.mark.parametrize(("parts", "expected"), [
    ((0, 1, 0), 8514611595815388268),  # model initialisation of round 1, seed 0
    ((5, 0), 36127972902307485),       # augmentation base of round 0, seed 5
])
def test_derive_seed_known_answers(parts, expected):
    assert derive_seed(*parts) == expected
    assert 0 <= derive_seed(*parts) < 2**63  # torch.manual_seed takes it


@pytest.mark.parametrize(("seed", "round", "expected"), [(0, 1, 253989330), (3, 2, 796109925)])
def test_selection_seed_known_answers(seed, round, expected):
    assert selection_seed(seed, round) == expected


def test_rng_is_the_stream_default_rng_gives_for_the_same_parts():
    a, b = rng(4, 2, 7), np.random.default_rng([4, 2, 7])
    np.testing.assert_array_equal(a.permutation(50), b.permutation(50))
    assert not np.array_equal(rng(4, 2, 7).permutation(50), rng(4, 2, 8).permutation(50))
