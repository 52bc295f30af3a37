"""The k-means++ bound refresh: equal to the dense refresh bit for bit, whatever skips or threads."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

import mmal.select.refresh as refresh
from mmal.select.backend import asnumpy
from mmal.select.embedding import ROUNDING_TOLERANCE, FactorizedEmbedding, expanded_sq_distances
from mmal.select.refresh import lower_bound_inplace, skip_margin


def _dense(emb, centers, start):
    """The refresh with every pair computed: min(start, computed distance to each center)."""
    return np.minimum(start, asnumpy(emb.sq_distances(centers.r, centers.u,
                                                      centers.sq_norms())).min(axis=1))


@pytest.mark.parametrize(("chunk_rows", "group"), [(4, None), (1000, None), (7, 1), (1000, 3)])
def test_pruned_bound_update_equals_brute_force(xp, chunk_rows, group):
    rng = np.random.default_rng(12)
    # Clustered labels make many r·r_c small, so the pruning path is exercised.
    r = rng.normal(size=(60, 5)) * (rng.uniform(size=(60, 1)) < 0.5)
    emb = FactorizedEmbedding(xp.asarray(r), xp.asarray(rng.normal(size=(60, 7))))
    g = asnumpy(emb.materialize())
    start = cdist(g, g[:3], "sqeuclidean").min(axis=1)  # bound against 3 earlier centers
    bound = xp.asarray(start.copy())
    centers = [10, 20, 30, 40]
    c = FactorizedEmbedding(emb.r[centers], emb.u[centers])
    computed = lower_bound_inplace(emb, c.r, c.u, c.sq_norms(), c.u_norms(), bound, xp=xp,
                                   chunk_rows=chunk_rows, group=group)
    expected = np.minimum(start, cdist(g, g[centers], "sqeuclidean").min(axis=1))
    np.testing.assert_allclose(asnumpy(bound), expected, rtol=1e-9, atol=1e-9)
    assert 0 < computed < 60  # some rows pruned, some computed


def test_center_groups_skip_pairs_that_cannot_come_closer():
    # Two far-apart pseudo-label clusters: a row can come closer only to the
    # centers of its own cluster, so per-group products compute about half the
    # pairs of one dense product, with the same bound.
    rng = np.random.default_rng(14)
    label = np.repeat([0, 1], 200)
    r = np.where(np.arange(2)[None, :] == label[:, None], -0.9, 0.0)
    r = np.concatenate([r, 0.05 * rng.uniform(size=(400, 6))], axis=1)
    u = rng.normal(size=(400, 12)) + 3.0
    emb = FactorizedEmbedding(r, u)
    centers = [0, 1, 2, 3, 200, 201, 202, 203]
    c = FactorizedEmbedding(r[centers], u[centers])
    bounds, work = {}, {}
    start = cdist(emb.materialize(), emb.materialize()[[10, 210]], "sqeuclidean").min(axis=1)
    for group in (1, 4, 8):
        bounds[group] = start.copy()
        work[group] = lower_bound_inplace(emb, c.r, c.u, c.sq_norms(), c.u_norms(), bounds[group],
                                          group=group)
    np.testing.assert_array_equal(bounds[1], bounds[8])
    np.testing.assert_array_equal(bounds[4], bounds[8])
    assert work[4] < 0.75 * work[8]


def _near_parallel(d=4096, n=48, seed=0):
    """Rows whose ``u`` are one large entry and many of 2^-12: their squares vanish beside 1 in a
    sequential ``‖u‖²`` but not in a blocked product, so the computed ``u_x·u_c`` exceeds
    the product of the computed norms by hundreds of ``eps`` (float32, D = 4,096)."""
    rng = np.random.default_rng(seed)
    signs = np.sign(rng.normal(size=d)) * np.where(rng.uniform(size=(n, d)) < 0.02, -1, 1)
    u = (2.0 ** -12 * signs).astype(np.float32)
    u[:, 0] = 1.0 + rng.uniform(size=n).astype(np.float32) * 0.05
    r = np.tile(np.array([-0.9, 0.3, 0.1], np.float32), (n, 1))
    return FactorizedEmbedding(r, u)


def _skipped_pairs_that_come_closer(emb, centers, start):
    """Pairs the refresh skips whose distance, computed with some product shape, is below the bound.

    Shapes: the row alone or in blocks of 2, 5, 7, 12 rows or all of them (as
    chunks and gathers give), with one center or all of them (as groups give).
    """
    ref = refresh._Refresh(emb, centers.r, centers.u, centers.sq_norms(), centers.u_norms(),
                           start.copy(), np, 1, refresh.Scratch())
    rows = slice(0, len(emb))
    skipped = ~ref.needs(rows, emb.r @ ref.r_c.T)
    found = []
    for x, j in zip(*np.nonzero(skipped), strict=True):
        for size in (1, 2, 5, 7, 12, len(emb)):
            block = np.arange(x, min(x + size, len(emb))) if size < len(emb) else np.arange(len(emb))
            at = int(np.flatnonzero(block == x)[0])
            for cols in ([j], slice(None)):
                products = ((emb.u[block] @ ref.u_c[cols].T) * (emb.r[block] @ ref.r_c[cols].T))
                column = 0 if isinstance(cols, list) else j
                d2 = expanded_sq_distances(products[at:at + 1, column:column + 1],
                                           emb.sq_norms()[x], ref.sq_norms_c[j])[0, 0]
                if d2 < start[x]:
                    found.append((x, j, size))
    return found


def test_skipped_pairs_cannot_come_closer_in_any_product_shape(monkeypatch):
    # Near-parallel rows (_near_parallel): a computed u_x·u_c exceeds the product of the
    # computed norms by hundreds of eps, and how much depends on the product's shape. Each
    # row's bound sits 40 eps units above its distance to the nearest center, whose
    # Cauchy-Schwarz lower bound is up to ~200 units above that distance.
    emb = _near_parallel()
    centers = list(range(0, 48, 3))
    c = FactorizedEmbedding(emb.r[centers], emb.u[centers])
    d2 = emb.sq_distances(c.r, c.u, c.sq_norms())
    d2[centers, np.arange(len(centers))] = np.inf
    eps = float(np.finfo(np.float32).eps)
    scale = emb.sq_norms().astype(np.float64) + float(c.sq_norms().max())
    start = (d2.min(axis=1) + 40 * eps * scale).astype(np.float32)
    start[centers] = 0.0
    # the margin of 2·ROUNDING_TOLERANCE units used before skips pairs that come closer
    monkeypatch.setattr(refresh, "skip_margin", lambda width, dtype: 2 * ROUNDING_TOLERANCE * eps)
    assert _skipped_pairs_that_come_closer(emb, c, start)
    monkeypatch.undo()
    assert _skipped_pairs_that_come_closer(emb, c, start) == []


def test_skip_margin_known_values():
    # 2·γ_D + (16 + ROUNDING_TOLERANCE)·eps, γ_D = D·ε/(1 - D·ε), ε = eps/2: about (D + 80)·eps
    eps32 = float(np.finfo(np.float32).eps)
    assert skip_margin(1024, np.float32) == pytest.approx((1024 + 80) * eps32, rel=1e-3)
    assert skip_margin(4096, np.float32) == pytest.approx((4096 + 80) * eps32, rel=1e-3)
    assert skip_margin(1024, np.float64) == pytest.approx((1024 + 80) * np.finfo(np.float64).eps)


def _clustered(n=2000, k=12, d=40, dtype=np.float32, seed=23):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, k, size=n)
    r = 0.05 * rng.uniform(size=(n, k))
    r[np.arange(n), label] = -0.9
    u = 3 * rng.normal(size=(k, d))[label] + rng.normal(size=(n, d))
    return FactorizedEmbedding(r.astype(dtype), u.astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_workers_change_no_bit_and_blocking_only_rounding(dtype):
    emb = _clustered(dtype=dtype)
    rng = np.random.default_rng(3)
    earlier, new = rng.choice(len(emb), 40, replace=False), rng.choice(len(emb), 60, replace=False)
    start = _dense(emb, FactorizedEmbedding(emb.r[earlier], emb.u[earlier]),
                   np.full(len(emb), np.inf, dtype=dtype))
    c = FactorizedEmbedding(emb.r[new], emb.u[new])
    dense = _dense(emb, c, start)
    tolerance = 16 * np.finfo(dtype).eps * (emb.sq_norms() + c.sq_norms().max())
    for chunk_rows, group in [(None, None), (7, 5), (333, 1), (2000, 1 << 30)]:
        bounds = {}
        for workers in (1, 2, 3):
            bounds[workers] = start.copy()
            computed = lower_bound_inplace(emb, c.r, c.u, c.sq_norms(), c.u_norms(),
                                           bounds[workers], workers=workers,
                                           chunk_rows=chunk_rows, group=group)
            assert 0 < computed < len(emb)  # pairs were skipped
        # the same bits on any number of threads; other blockings only round products of
        # other shapes differently (a BLAS's small-matrix and single-row paths)
        np.testing.assert_array_equal(bounds[2], bounds[1])
        np.testing.assert_array_equal(bounds[3], bounds[1])
        np.testing.assert_array_less(np.abs(bounds[1] - dense), tolerance + 1e-300)
        assert np.array_equal(bounds[1] == start, dense == start)  # the same rows lowered
