"""Fixtures for cache tests."""

from __future__ import annotations

import pytest

from mmal.cache.synthetic import make_synthetic_cache


@pytest.fixture
def small_cache(tmp_path):
    """A valid 2-modality concat cache with MC logits (N=200, K=5)."""
    return make_synthetic_cache(tmp_path / "cache.h5", num_samples=200, num_classes=5,
                                feature_dims=(8, 6), mc_samples=3, seed=1)
