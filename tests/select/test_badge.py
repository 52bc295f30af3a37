"""BADGE on synthetic caches: the embedding it seeds on, first pick, precision, backends."""

from __future__ import annotations

import numpy as np
import pytest

from mmal.cache import open_cache
from mmal.errors import SelectionError
from mmal.select.embedding import cache_embedding
from mmal.select.strategies.badge import select_badge

KINDS = ["concat2", "featuresum2", "concat3", "featuresum3", "sum2", "sum3", "nlgate2", "nlgate3",
         "multilabel", "float16"]


@pytest.mark.parametrize("kind", KINDS)
def test_cache_embedding_is_the_head_gradient_of_unlabeled_rows(cache_factory, kind):
    with open_cache(cache_factory(kind)) as cache:
        positions, emb = cache_embedding(cache, dtype="float64", block_rows=37)
        rows = np.flatnonzero(~cache.labeled)
        np.testing.assert_array_equal(positions, rows)
        logits = cache.logits("mm", rows).astype(np.float64)
        if cache.meta.multi_label:
            p = 1 / (1 + np.exp(-logits))
            r = p - (p >= 0.5)
        else:
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            r = p - np.eye(cache.meta.num_classes)[logits.argmax(axis=1)]
        feats = [cache.features(m, rows).astype(np.float64) for m in cache.meta.modalities]
        h = {"concat": lambda: np.concatenate(feats, 1), "sum": lambda: np.concatenate(feats, 1),
             "feature-sum": lambda: sum(feats),
             "nl-gate": lambda: cache.read("head_input", rows).astype(np.float64),
             }[cache.meta.fusion]()
        g = (r[:, :, None] * h[:, None, :]).reshape(len(rows), -1)
        np.testing.assert_allclose(emb.materialize(), g, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_first_pick_is_the_largest_gradient_norm_and_no_labeled(cache_factory, kind):
    with open_cache(cache_factory(kind)) as cache:
        positions, emb = cache_embedding(cache, dtype="float64")
        sel = select_badge(cache, 12, rng=np.random.default_rng(1), precision="float64")
        assert sel.positions[0] == positions[np.argmax(emb.sq_norms())]
        assert not cache.labeled[sel.positions].any()
        assert len(np.unique(sel.positions)) == 12


def test_float32_and_float64_pick_alike_on_a_small_cache(cache_factory):
    with open_cache(cache_factory("concat2")) as cache:
        a = select_badge(cache, 15, rng=np.random.default_rng(3), precision="float32")
        b = select_badge(cache, 15, rng=np.random.default_rng(3), precision="float64")
    np.testing.assert_array_equal(a.positions, b.positions)


@pytest.mark.parametrize("kind", ["concat3", "sum2", "nlgate2"])
def test_numpy_and_backend_pick_the_same_rows_in_float64(cache_factory, xp, kind):
    with open_cache(cache_factory(kind)) as cache:
        cpu = select_badge(cache, 20, rng=np.random.default_rng(0), precision="float64")
        dev = select_badge(cache, 20, rng=np.random.default_rng(0), xp=xp, precision="float64")
    np.testing.assert_array_equal(cpu.positions, dev.positions)


def test_whole_unlabeled_pool_can_be_selected(cache_factory):
    with open_cache(cache_factory("concat2")) as cache:
        n = cache.num_unlabeled
        sel = select_badge(cache, n, rng=np.random.default_rng(0), block_size=7)
        assert sorted(sel.positions.tolist()) == np.flatnonzero(~cache.labeled).tolist()


def test_bad_precision_names_the_choices(cache_factory):
    with open_cache(cache_factory("concat2")) as cache, \
            pytest.raises(SelectionError, match="precision must be one of float32, float64"):
        select_badge(cache, 3, rng=np.random.default_rng(0), precision="half")
