"""Files written by released schema versions keep loading with their exact contents."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmal.cache import open_cache, read_index
from mmal.cache.consistency import coalition_error

DATA = Path(__file__).parent.parent / "data"


def test_schema_v1_cache_still_loads():
    with open_cache(DATA / "cache-v1.h5") as cache:
        assert cache.schema_version == 1
        assert cache.fingerprint == "10542fa768bb86e37ff6b7dfcd5ac2da"
        assert cache.meta.modalities == ("image", "text")
        assert cache.meta.feature_dims == (4, 3)
        assert cache.meta.mc_samples == 2
        np.testing.assert_array_equal(cache.ids[:5], [3, 49, 55, 59, 64])
        np.testing.assert_array_equal(cache.labels[:8], [-1, -1, -1, 2, -1, -1, -1, -1])
        np.testing.assert_allclose(cache.logits("mm")[0], [-0.64922583, -1.1781095, -0.71759117],
                                   rtol=1e-6)
        assert coalition_error(cache) < 1e-5
        cache.validate()


def test_index_v1_still_loads():
    index = read_index(DATA / "labeled-v1.json")
    assert index.kind == "labeled"
    np.testing.assert_array_equal(index.ids, [3, 49, 64])
    assert index.provenance["round"] == 0


def test_schema_v1_sum_cache_reads_as_feature_sum():
    """Schema 1 called the feature sum "sum"; the name now means the paper's summation."""
    with open_cache(DATA / "cache-v1-sum.h5") as cache:
        assert cache.schema_version == 1
        assert cache.fingerprint == "29327f4da374c53e542fc5eb18d72197"
        assert (cache.meta.fusion, cache.meta.feature_dims, cache.meta.fused_dim) == \
            ("feature-sum", (4, 4), 4)
        assert not cache.meta.stores_head_input
        feats = [cache.features(m) for m in cache.meta.modalities]
        np.testing.assert_array_equal(cache.head_input(), feats[0] + feats[1])
        assert coalition_error(cache) < 1e-5
        assert cache.verify() == cache.fingerprint
