"""Every field written by CacheWriter reads back unchanged through open_cache."""

from __future__ import annotations

import numpy as np
import pytest

from mmal.cache import CacheMeta, CacheWriter, open_cache
from mmal.cache.schema import field_specs
from tests.cache.batches import random_batches

CASES = [
    dict(modalities=("image", "text"), feature_dims=(8, 5), fusion="concat", num_classes=4),
    dict(modalities=("a", "b", "c"), feature_dims=(6, 6, 6), fusion="sum", num_classes=3,
         mc_samples=4),
    dict(modalities=("audio", "video"), feature_dims=(7, 3), fusion="concat", num_classes=6,
         multi_label=True, feature_dtype="float16"),
]


@pytest.mark.parametrize("kwargs", CASES, ids=["concat", "sum-3mod-mc", "multilabel-f16"])
def test_round_trip_of_every_field(tmp_path, kwargs):
    meta = CacheMeta(round=3, model_fingerprint="m", pool_fingerprint="p",
                     extra={"note": "x"}, **kwargs)
    n = 53
    batches = list(random_batches(meta, n, batch_rows=10))
    weight = np.random.default_rng(0).normal(size=(meta.num_classes, meta.fused_dim))
    bias = np.arange(meta.num_classes, dtype=np.float32)
    with CacheWriter(tmp_path / "c.h5", meta, n) as writer:
        for batch in batches:
            writer.append(batch)
        writer.write_head(weight, bias)

    with open_cache(tmp_path / "c.h5") as cache:
        assert cache.meta == meta
        assert cache.num_samples == n
        assert len(cache.fingerprint) == 32
        for spec in field_specs(meta):
            expected = np.concatenate([b[spec.path] for b in batches])
            got = cache.read(spec.path)
            assert got.dtype == spec.dtype
            np.testing.assert_array_equal(got, expected.astype(spec.dtype))
        got_w, got_b = cache.head()
        np.testing.assert_array_equal(got_w, weight.astype(np.float32))
        np.testing.assert_array_equal(got_b, bias)
        rows = np.array([1, 7, 30])
        np.testing.assert_array_equal(
            cache.features(meta.modalities[0], rows),
            np.concatenate([b[f"features/{meta.modalities[0]}"] for b in batches])[rows])


def test_fingerprint_depends_on_content_only(tmp_path):
    meta = CacheMeta(modalities=("a", "b"), feature_dims=(3, 2), fusion="concat", num_classes=2)
    prints = []
    for name, seed in [("x.h5", 0), ("y.h5", 0), ("z.h5", 1)]:
        with CacheWriter(tmp_path / name, meta, 20) as writer:
            for batch in random_batches(meta, 20, 8, seed=seed):
                writer.append(batch)
            writer.write_head(np.ones((2, 5)), np.zeros(2))
        prints.append(open_cache(tmp_path / name).fingerprint)
    assert prints[0] == prints[1] != prints[2]


def test_existing_cache_is_not_overwritten_without_force(small_cache):
    meta = open_cache(small_cache).meta
    with pytest.raises(Exception, match="already exists; pass --force"):
        CacheWriter(small_cache, meta, 200)
