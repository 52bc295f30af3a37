"""Known-answer tests of the factorized gradient embedding (torch autograd, brute force)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from mmal.cache import open_cache
from mmal.cache.fusion import head_input
from mmal.select.backend import asnumpy
from mmal.select.embedding import (
    FactorizedEmbedding,
    bmmal_fusion,
    cache_embedding,
    logit_gradient,
    min_sq_distances,
    pairwise_sq_distances,
    scaled_head_input,
    working_dtypes,
)


def _autograd_head_gradients(h, weight, bias, multi_label):
    """Per-sample gradient of the pseudo-label loss w.r.t. the head weight, by torch autograd."""
    import torch

    grads = []
    for row in h:
        w = torch.tensor(weight, dtype=torch.float64, requires_grad=True)
        logits = torch.tensor(row, dtype=torch.float64) @ w.T + torch.tensor(bias, dtype=torch.float64)
        if multi_label:
            target = (torch.sigmoid(logits) >= 0.5).to(torch.float64).detach()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="sum")
        else:
            target = torch.argmax(logits).detach()
            loss = torch.nn.functional.cross_entropy(logits[None], target[None], reduction="sum")
        loss.backward()
        grads.append(w.grad.numpy().ravel())
    return np.stack(grads)


@pytest.mark.parametrize("multi_label", [False, True], ids=["softmax", "multilabel"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_equals_autograd(multi_label, seed):
    rng = np.random.default_rng(seed)
    n, k, d = 6, 7, 5
    h = rng.normal(size=(n, d))
    weight, bias = rng.normal(size=(k, d)) * 2, rng.normal(size=k)
    logits = h @ weight.T + bias
    emb = FactorizedEmbedding(logit_gradient(logits, multi_label=multi_label), h)
    expected = _autograd_head_gradients(h, weight, bias, multi_label)
    np.testing.assert_allclose(emb.materialize(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fusion", ["concat", "sum", "feature-sum", "nl-gate"])
def test_scaled_head_input_scales_each_modality(fusion):
    """Weighted blocks: added for feature-sum, concatenated for every other fusion (nl-gate too)."""
    rng = np.random.default_rng(4)
    z1, z2 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    w = rng.uniform(size=(5, 2))
    u = scaled_head_input([z1, z2], fusion, weights=w)
    a, b = w[:, :1] * z1, w[:, 1:] * z2
    adds = fusion == "feature-sum"
    np.testing.assert_allclose(u, a + b if adds else np.concatenate([a, b], axis=1))
    np.testing.assert_allclose(scaled_head_input([z1, z2], fusion),
                               z1 + z2 if adds else np.concatenate([z1, z2], axis=1))


def test_softmax_gradient_sums_to_zero_and_is_negative_at_pseudo_label():
    logits = np.random.default_rng(5).normal(size=(50, 9)).astype(np.float32)
    r = logit_gradient(logits)
    assert r.dtype == np.float32
    np.testing.assert_allclose(r.sum(axis=1), 0.0, atol=1e-6)
    top = logits.argmax(axis=1)
    assert np.all(r[np.arange(50), top] <= 0)
    assert np.all(np.delete(r.reshape(-1), np.arange(50) * 9 + top) >= 0)


def test_factorized_distances_equal_materialized(xp):
    rng = np.random.default_rng(6)
    a = FactorizedEmbedding(xp.asarray(rng.normal(size=(11, 4))), xp.asarray(rng.normal(size=(11, 6))))
    b = FactorizedEmbedding(xp.asarray(rng.normal(size=(7, 4))), xp.asarray(rng.normal(size=(7, 6))))
    ga, gb = asnumpy(a.materialize()), asnumpy(b.materialize())
    np.testing.assert_allclose(asnumpy(a.sq_norms()), (ga**2).sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(asnumpy(pairwise_sq_distances(a, b)), cdist(ga, gb, "sqeuclidean"),
                               rtol=1e-9, atol=1e-9)
    nearest = min_sq_distances(a, b.r, b.u, b.sq_norms(), xp=xp, chunk_rows=3)
    np.testing.assert_allclose(asnumpy(nearest), cdist(ga, gb, "sqeuclidean").min(axis=1),
                               rtol=1e-9, atol=1e-9)


def test_self_distance_is_zero_not_negative():
    rng = np.random.default_rng(7)
    emb = FactorizedEmbedding(rng.normal(size=(20, 5)).astype(np.float32),
                              1e3 * rng.normal(size=(20, 8)).astype(np.float32))
    d2 = pairwise_sq_distances(emb, emb)
    assert d2.min() >= 0.0
    assert np.all(np.diag(d2) <= 1e-4 * emb.sq_norms())


def test_mismatched_factors_are_rejected():
    with pytest.raises(ValueError, match="r has 3 rows but u has 2"):
        FactorizedEmbedding(np.zeros((3, 2)), np.zeros((2, 2)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_exact_duplicates_are_at_distance_exactly_zero(xp, dtype):
    from mmal.select.refresh import lower_bound_inplace

    rng = np.random.default_rng(13)
    rep = np.repeat(np.arange(4), 5)
    r = rng.normal(size=(4, 9))[rep] * rng.uniform(0.01, 1, size=(4, 1))[rep]
    u = rng.normal(size=(4, 300))[rep] * rng.uniform(0.1, 100, size=(4, 1))[rep]
    emb = FactorizedEmbedding(xp.asarray(r.astype(dtype)), xp.asarray(u.astype(dtype)))
    same = rep[:, None] == rep[None, :]
    d2 = asnumpy(pairwise_sq_distances(emb, emb))
    assert np.all(d2[same] == 0.0)
    assert np.all(d2[~same] > 0.0)
    centers = [0, 5]  # one copy of points 0 and 1
    c = FactorizedEmbedding(emb.r[centers], emb.u[centers])
    nearest = asnumpy(min_sq_distances(emb, c.r, c.u, c.sq_norms(), xp=xp))
    bound = xp.full(len(rep), np.inf, dtype=dtype)
    lower_bound_inplace(emb, c.r, c.u, c.sq_norms(), c.u_norms(), bound, xp=xp)
    for got in (nearest, asnumpy(bound)):
        np.testing.assert_array_equal(got == 0.0, rep < 2)


def test_rounding_tolerance_keeps_small_real_distances():
    # A squared distance 5e-7 of the squared norms, far above float64's tolerance, survives.
    u = np.ones((2, 50))
    u[1, 0] += 1e-3 * np.sqrt(50)
    emb = FactorizedEmbedding(np.ones((2, 1)), u)
    d2 = pairwise_sq_distances(emb, emb)
    np.testing.assert_allclose(d2[0, 1], 50e-6, rtol=1e-6)


@pytest.mark.parametrize("precision, rounding", [("float32", np.float16), ("float64", np.float64)])
def test_float16_cache_gives_float16_rounded_u_in_float32(cache_factory, precision, rounding):
    with open_cache(cache_factory("float16")) as cache:
        positions, emb = cache_embedding(cache, dtype=precision, block_rows=50)
        assert working_dtypes(cache.meta, precision) == (precision, np.dtype(rounding).name)
        # u is h computed in the precision, rounded as the working dtypes say, held in r's dtype
        h = cache.head_input(positions).astype(precision)
        np.testing.assert_array_equal(emb.u, h.astype(rounding).astype(precision))
        assert emb.u.dtype == emb.r.dtype == precision
        _, u_sq = emb.factor_sq_norms()
        np.testing.assert_allclose(u_sq, np.einsum("ij,ij->i", emb.u, emb.u), rtol=1e-6)
        # BMMAL's w·z is no float16 value: rounded once in float32 precision, kept in float64
        def third(rows, keep, logits):
            return np.full((len(logits), 2), 1 / 3)

        _, weighted = cache_embedding(cache, dtype=precision, modality_weights=third)
        exact = h.astype(np.float64) / 3
        w = np.array(1 / 3).astype(precision)
        np.testing.assert_array_equal(weighted.u, (h * w).astype(rounding).astype(precision))
        assert (np.abs(weighted.u - exact).max() > 1e-5) == (precision == "float32")


def test_float32_cache_keeps_float32_u():
    from mmal.cache.schema import CacheMeta

    meta = CacheMeta(modalities=("a", "b"), feature_dims=(2, 2), fusion="concat", num_classes=3,
                     multi_label=False, round=0, model_fingerprint="m", pool_fingerprint="p")
    assert working_dtypes(meta, "float32") == ("float32", "float32")
    assert working_dtypes(meta, "float64") == ("float64", "float64")


def test_given_u_norms_are_used_and_float16_norms_do_not_overflow():
    r = np.ones((2, 3), dtype=np.float32)
    u = np.full((2, 4096), 200.0, dtype=np.float16)  # ‖u‖² = 1.6e8, far past float16's 65504
    emb = FactorizedEmbedding(r, u)
    assert np.allclose(emb.factor_sq_norms()[1], 4096 * 200.0**2) and not emb.overflowing_rows().any()
    given = FactorizedEmbedding(r, u, np.array([1.0, 2.0], dtype=np.float32))
    np.testing.assert_array_equal(given.factor_sq_norms()[1], [1.0, 2.0])


@pytest.mark.parametrize("kind", ["concat2", "featuresum3", "sum2", "nlgate2", "float16"])
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_streaming_pass_is_the_same_on_any_number_of_threads_and_blocks(cache_factory, kind,
                                                                         precision, tmp_path):
    from mmal.select.memory import WorkingSet

    def weights(rows, keep, logits):  # a different weight per row and modality, from the row
        return 0.6 + 0.4 * np.tanh(logits[:, :cache.meta.num_modalities].astype(np.float64))

    with open_cache(cache_factory(kind)) as cache:
        for modality_weights in (None, weights):
            if modality_weights is None and cache.meta.stores_head_input:
                continue  # BADGE's u is read, not computed, for nl-gate
            runs = {}
            for workers, block_rows, memory in [(1, 8192, None), (3, 17, None),
                                                (2, 8192, WorkingSet(4096, tmp_path))]:
                positions, emb = cache_embedding(cache, dtype=precision, block_rows=block_rows,
                                                 modality_weights=modality_weights,
                                                 workers=workers, memory=memory)
                runs[workers] = (positions, *(np.asarray(a) for a in (emb.r, emb.u,
                                                                       emb.factor_sq_norms()[1])))
            for other in (2, 3):
                for got, want in zip(runs[other], runs[1], strict=True):
                    np.testing.assert_array_equal(got, want)
            # u is the cache's own fused head input (mmal.cache.fusion.head_input) of the
            # blocks and weights in the precision, then the working dtypes' rounding
            positions, u = runs[1][0], runs[1][2]
            features = [cache.features(m, positions).astype(precision)
                        for m in cache.meta.modalities]
            w = None if modality_weights is None else weights(
                None, None, cache.logits("mm", positions)).astype(precision)
            _, u_dtype = working_dtypes(cache.meta, precision)
            want = head_input(features, bmmal_fusion(cache.meta.fusion),
                              weights=None if w is None else list(w.T))
            np.testing.assert_array_equal(u, want.astype(u_dtype).astype(precision))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nearest_sq_distances_are_the_row_minima_bit_for_bit(dtype):
    from mmal.select.embedding import expanded_sq_distances, nearest_sq_distances

    rng = np.random.default_rng(8)
    r = rng.normal(size=(300, 6)).astype(dtype)
    u = (rng.normal(size=(300, 50)) * rng.uniform(0.01, 100, size=(300, 1))).astype(dtype)
    r[::7], u[::7] = r[1], u[1]  # exact duplicates of center 1: noise that must snap to 0
    emb = FactorizedEmbedding(r, u)
    centers = [1, 5, 9, 40, 41]
    c = FactorizedEmbedding(r[centers], u[centers])
    products = (r @ c.r.T) * (u @ c.u.T)
    want = expanded_sq_distances(products.copy(), emb.sq_norms()[:, None],
                                 c.sq_norms()[None, :]).min(axis=1)
    got = nearest_sq_distances(products.copy(), emb.sq_norms(), c.sq_norms())
    np.testing.assert_array_equal(got, want)
    assert np.all(got[::7] == 0.0) and np.count_nonzero(got == 0.0) == len(got[::7]) + len(centers)
