"""Every field written by CacheWriter reads back unchanged through open_cache."""

from __future__ import annotations

import numpy as np
import pytest

from mmal.cache import CacheMeta, CacheWriter, open_cache
from mmal.cache.schema import field_specs
from tests.cache.batches import random_batches

CASES = {
    "concat": dict(modalities=("image", "text"), feature_dims=(8, 5), fusion="concat",
                   num_classes=4),
    "feature-sum-3mod-mc": dict(modalities=("a", "b", "c"), feature_dims=(6, 6, 6),
                                fusion="feature-sum", num_classes=3, mc_samples=4),
    "multilabel-f16": dict(modalities=("audio", "video"), feature_dims=(7, 3), fusion="concat",
                           num_classes=6, multi_label=True, feature_dtype="float16"),
    "sum": dict(modalities=("image", "text"), feature_dims=(8, 5), fusion="sum", num_classes=4,
                mc_samples=2),
    "nl-gate": dict(modalities=("video", "audio"), feature_dims=(6, 6), fusion="nl-gate",
                    fused_dim=6, num_classes=5, mc_samples=2),
    "nl-gate-f16-3mod": dict(modalities=("a", "b", "c"), feature_dims=(4, 4, 4), fusion="nl-gate",
                             fused_dim=4, num_classes=3, feature_dtype="float16"),
}


@pytest.mark.parametrize("kwargs", CASES.values(), ids=CASES)
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
        assert cache.schema_version == 2
        assert cache.head_input(rows).shape == (3, meta.fused_dim)
        assert ("head_input" in cache._specs) == (meta.fusion == "nl-gate")
        cache.verify()


@pytest.mark.parametrize("kwargs", CASES.values(), ids=CASES)
def test_head_input_is_what_the_head_reads(tmp_path, kwargs):
    """Concatenated blocks (concat, sum), their sum (feature-sum), or the stored field (nl-gate)."""
    meta = CacheMeta(**kwargs)
    batches = list(random_batches(meta, 23, batch_rows=10))
    with CacheWriter(tmp_path / "c.h5", meta, 23) as writer:
        for batch in batches:
            writer.append(batch)
        writer.write_head(np.ones((meta.num_classes, meta.fused_dim)), np.zeros(meta.num_classes))
    blocks = [np.concatenate([b[f"features/{m}"] for b in batches]).astype(np.float32)
              for m in meta.modalities]
    expected = {"concat": lambda: np.concatenate(blocks, 1),
                "sum": lambda: np.concatenate(blocks, 1),
                "feature-sum": lambda: np.sum(blocks, axis=0),
                "nl-gate": lambda: np.concatenate([b["head_input"] for b in batches]),
                }[meta.fusion]()
    with open_cache(tmp_path / "c.h5") as cache:
        h = cache.head_input()
        assert h.dtype == np.float32
        np.testing.assert_allclose(h, expected.astype(meta.feature_dtype), rtol=1e-6)
        np.testing.assert_array_equal(cache.head_input(slice(3, 9)), h[3:9])


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
