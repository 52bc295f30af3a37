"""FAISS wrapper: exact search against brute force, streaming, k-means, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from mmal.select import knn
from mmal.select.knn import FlatIndex, faiss_uses_gpu, kmeans


def _data(seed=0, n=300, m=40, d=9):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(m, d))


@pytest.mark.parametrize("seed", [0, 1])
def test_l2_search_equals_brute_force(xp, seed):
    base, queries = _data(seed)
    index = FlatIndex(base.shape[1], xp=xp)
    index.add(xp.asarray(base))
    dist, ids = index.search(xp.asarray(queries), 3)
    brute = cdist(queries, base, "sqeuclidean")
    expected = np.argsort(brute, axis=1)[:, :3]
    assert ids.dtype == np.int64 and dist.dtype == np.float32
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(dist, np.take_along_axis(brute, expected, axis=1), rtol=1e-4, atol=1e-4)


def test_ip_search_equals_brute_force(xp):
    base, queries = _data(2)
    index = FlatIndex(base.shape[1], metric="ip", xp=xp)
    index.add(xp.asarray(base))
    sims, ids = index.search(xp.asarray(queries), 4)
    brute = queries @ base.T
    expected = np.argsort(-brute, axis=1)[:, :4]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(sims, np.take_along_axis(brute, expected, axis=1), rtol=1e-4, atol=1e-4)


def test_search_in_blocks_equals_one_call(monkeypatch):
    base, queries = _data(3, m=50)
    index = FlatIndex(base.shape[1])
    index.add(base[:100])
    index.add(base[100:])  # ids continue across add calls
    whole = index.search(queries, 5)
    monkeypatch.setattr(knn, "SEARCH_BLOCK_ROWS", 7)
    blocked = index.search(queries, 5)
    assert len(index) == len(base)
    np.testing.assert_array_equal(whole[1], blocked[1])
    np.testing.assert_array_equal(whole[0], blocked[0])
    assert whole[1].max() >= 100


def test_l2_distances_never_negative():
    x = np.full((20, 64), 1000.0, dtype=np.float32)  # identical large vectors: rounding below 0
    index = FlatIndex(64)
    index.add(x)
    dist, _ = index.search(x, 20)
    assert (dist >= 0).all()


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(k=0), "k must be in"),
    (dict(k=11), "k must be in"),
    (dict(k=1, width=3), "expected vectors of shape"),
])
def test_bad_search_input(kwargs, message):
    index = FlatIndex(4)
    index.add(np.zeros((10, 4)))
    with pytest.raises(ValueError, match=message):
        index.search(np.zeros((2, kwargs.get("width", 4))), kwargs["k"])


def test_unknown_metric():
    with pytest.raises(ValueError, match="unknown metric"):
        FlatIndex(3, metric="cosine")


def test_numpy_never_uses_gpu_faiss():
    assert faiss_uses_gpu(np) is False


def test_kmeans_finds_separated_blobs_and_is_deterministic(xp):
    rng = np.random.default_rng(5)
    centers = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    x = np.concatenate([c + rng.normal(size=(60, 2)) for c in centers])
    found = kmeans(xp.asarray(x), 3, seed=11, xp=xp)
    assert found.shape == (3, 2) and found.dtype == np.float32
    match = cdist(centers, found).min(axis=1)
    assert (match < 0.5).all(), match
    np.testing.assert_array_equal(found, kmeans(x, 3, seed=11, xp=xp))


def test_kmeans_rejects_more_centroids_than_points():
    with pytest.raises(ValueError, match="k must be in"):
        kmeans(np.zeros((3, 2)), 4, seed=0)
