"""k-means selection: distinct nearest samples, blobs, brute-force matching, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from mmal.cache.reader import open_cache
from mmal.errors import SelectionError
from mmal.select.knn import kmeans
from mmal.select.strategies.kmeans import kmeanspp_seeds, nearest_distinct, select_kmeans


def brute_matching(centroids, points):
    """Greedy matching over all (centroid, point) pairs by increasing distance."""
    d = cdist(centroids, points, "sqeuclidean")
    owner, row = np.unravel_index(np.lexsort((np.arange(d.size) % d.shape[1],
                                              np.arange(d.size) // d.shape[1], d.ravel())), d.shape)
    used_c, used_p, picks = set(), set(), []
    for c, p in zip(owner, row, strict=True):
        if c not in used_c and p not in used_p:
            used_c.add(c)
            used_p.add(p)
            picks.append(p)
    return np.array(picks)


def test_collision_goes_to_the_closer_centroid():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    centroids = np.array([[0.3, 0.0], [0.1, 0.0]])  # both nearest to point 0; centroid 1 is closer
    np.testing.assert_array_equal(nearest_distinct(centroids, points), [0, 1])


def test_identical_centroids_get_distinct_points():
    points = np.random.default_rng(0).normal(size=(30, 3))
    centroids = np.zeros((30, 3))  # every centroid wants the same points: forces deeper searches
    got = nearest_distinct(centroids, points)
    assert sorted(got.tolist()) == list(range(30))
    np.testing.assert_array_equal(got, np.argsort((points ** 2).sum(axis=1), kind="stable"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matching_equals_brute_force(xp, seed):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(80, 4))
    centroids = points[rng.choice(80, 25)] + 0.3 * rng.normal(size=(25, 4))
    got = nearest_distinct(xp.asarray(centroids), xp.asarray(points), xp=xp)
    np.testing.assert_array_equal(got, brute_matching(centroids, points))


@pytest.mark.parametrize("seed", range(10))
def test_one_pick_per_blob_nearest_its_mean(seed):
    rng = np.random.default_rng(3)
    means = np.array([[0.0, 0.0], [30.0, 0.0], [0.0, 30.0], [30.0, 30.0]])
    points = np.concatenate([m + rng.normal(size=(40, 2)) for m in means])
    init = kmeanspp_seeds(points, 4, rng=np.random.default_rng(seed))
    picks = nearest_distinct(kmeans(points, 4, seed=1, init_centroids=init), points)
    assert sorted(picks // 40) == [0, 1, 2, 3]
    for p in picks:
        blob = points[(p // 40) * 40:(p // 40 + 1) * 40]
        nearest = np.argmin(((blob - blob.mean(axis=0)) ** 2).sum(axis=1)) + (p // 40) * 40
        assert p == nearest


def test_kmeanspp_seeds_are_distinct_points():
    points = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    seeds = kmeanspp_seeds(points, 12, rng=np.random.default_rng(1))
    rows = [int(np.flatnonzero((points == s).all(axis=1))[0]) for s in seeds]
    assert len(set(rows)) == 12
    assert rows[0] == int(np.argmax((points.astype(np.float64) ** 2).sum(axis=1)))


@pytest.mark.parametrize("init", ["k-means++", "random"])
@pytest.mark.parametrize("kind", ["concat2", "multilabel", "featuresum3", "sum2", "nlgate2"])
def test_strategy_is_kmeans_then_matching(cache_factory, kind, init):
    with open_cache(cache_factory(kind)) as cache:
        chosen = select_kmeans(cache, 15, rng=np.random.default_rng(4), init=init).positions
        again = select_kmeans(cache, 15, rng=np.random.default_rng(4), init=init).positions
        unl = np.flatnonzero(~cache.labeled)
        h = cache.head_input()[unl]
    rng = np.random.default_rng(4)
    seeds = kmeanspp_seeds(h, 15, rng=rng) if init == "k-means++" else None
    centroids = kmeans(h, 15, seed=int(rng.integers(2**31)), init_centroids=seeds)
    np.testing.assert_array_equal(chosen, unl[brute_matching(centroids, h)])
    np.testing.assert_array_equal(chosen, again)


def test_unknown_init_is_an_error(cache_factory):
    with open_cache(cache_factory("concat2")) as cache:
        with pytest.raises(SelectionError, match="kmeans init must be"):
            select_kmeans(cache, 3, rng=np.random.default_rng(0), init="forgy")
