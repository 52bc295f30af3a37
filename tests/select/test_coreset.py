"""k-center greedy against a brute-force greedy in float64; coreset on caches."""

from __future__ import annotations

import numpy as np
import pytest

from mmal.cache.reader import open_cache
from mmal.cache.synthetic import make_synthetic_cache
from mmal.select.strategies.coreset import k_center_greedy, select_coreset


def brute_k_center(points, budget, centers=None, first=None):
    """Plain greedy k-center with full float64 distance recomputation."""
    p = points.astype(np.float64)
    if centers is not None:
        d = ((p[:, None, :] - centers.astype(np.float64)[None]) ** 2).sum(-1).min(axis=1)
        picks = []
    else:
        picks = [first]
        d = ((p - p[first]) ** 2).sum(axis=1)
    while len(picks) < budget:
        d[picks] = -1.0
        j = int(np.argmax(d))
        picks.append(j)
        d = np.minimum(d, ((p - p[j]) ** 2).sum(axis=1))
    return np.array(picks)


@pytest.mark.parametrize("block_size", [1, 3, 256])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_brute_force_from_centers(xp, block_size, seed):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(150, 6)).astype(np.float32)
    centers = rng.normal(size=(12, 6)).astype(np.float32)
    got = k_center_greedy(points, 40, centers=centers, rng=np.random.default_rng(9), xp=xp,
                          block_size=block_size)
    np.testing.assert_array_equal(got, brute_k_center(points, 40, centers))
    assert got.dtype == np.int64


@pytest.mark.parametrize("block_size", [1, 4, 256])
def test_without_centers_the_first_is_drawn_from_rng(block_size):
    points = np.random.default_rng(4).normal(size=(120, 5)).astype(np.float32)
    got = k_center_greedy(points, 30, rng=np.random.default_rng(7), block_size=block_size)
    first = int(np.random.default_rng(7).integers(120))
    np.testing.assert_array_equal(got, brute_k_center(points, 30, first=first))
    other = k_center_greedy(points, 30, rng=np.random.default_rng(8), block_size=block_size)
    assert other[0] == np.random.default_rng(8).integers(120)


def test_duplicates_and_full_budget_never_repeat():
    rng = np.random.default_rng(1)
    points = np.repeat(rng.normal(size=(10, 3)), 4, axis=0).astype(np.float32)  # 40 rows, 10 distinct
    got = k_center_greedy(points, 40, centers=points[:1] + 1.0, rng=rng, block_size=3)
    assert sorted(got.tolist()) == list(range(40))
    # the first 10 picks cover the 10 distinct points
    assert len({tuple(points[i]) for i in got[:10]}) == 10


def test_budget_out_of_range():
    with pytest.raises(ValueError, match="budget must be in"):
        k_center_greedy(np.zeros((3, 2), np.float32), 4, rng=np.random.default_rng(0))


@pytest.mark.parametrize("kind", ["concat2", "featuresum3", "sum2", "nlgate2", "float16"])
def test_coreset_on_cache_equals_brute_force(cache_factory, xp, kind):
    with open_cache(cache_factory(kind)) as cache:
        chosen = select_coreset(cache, 25, rng=np.random.default_rng(0), xp=xp, block_size=8).positions
        h = cache.head_input()
        unl = np.flatnonzero(~cache.labeled)
        expected = unl[brute_k_center(h[unl], 25, centers=h[cache.labeled])]
    np.testing.assert_array_equal(chosen, expected)


def test_coreset_with_no_labeled_sample(tmp_path):
    path = make_synthetic_cache(tmp_path / "c.h5", num_samples=80, labeled_fraction=0.0, seed=2)
    with open_cache(path) as cache:
        a = select_coreset(cache, 10, rng=np.random.default_rng(3)).positions
        b = select_coreset(cache, 10, rng=np.random.default_rng(3)).positions
        h = cache.head_input()
    np.testing.assert_array_equal(a, b)
    first = int(np.random.default_rng(3).integers(80))
    np.testing.assert_array_equal(a, brute_k_center(h, 10, first=first))
