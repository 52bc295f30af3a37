"""Fixtures for selection tests: backends and small synthetic caches of every kind."""

from __future__ import annotations

import numpy as np
import pytest

from mmal.cache.synthetic import make_synthetic_cache
from mmal.select.backend import cuda_available


def _cupy():
    if not cuda_available():
        pytest.skip("needs CuPy and a CUDA GPU")
    import cupy

    return cupy


#: Array-module parameters: NumPy always, CuPy as a GPU case that skips without one.
XP_PARAMS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("cupy", id="cupy", marks=pytest.mark.gpu),
]


@pytest.fixture(params=XP_PARAMS)
def xp(request):
    """``numpy`` or ``cupy`` (skipped where no GPU is visible)."""
    return np if request.param == "numpy" else _cupy()


#: Every kind of synthetic cache: (id, make_synthetic_cache keyword arguments).
CACHE_KINDS = {
    "concat2": dict(feature_dims=(12, 8)),
    "featuresum2": dict(feature_dims=(10, 10), fusion="feature-sum"),
    "concat3": dict(feature_dims=(8, 6, 5)),
    "featuresum3": dict(feature_dims=(6, 6, 6), fusion="feature-sum"),
    "sum2": dict(feature_dims=(10, 6), fusion="sum"),
    "sum3": dict(feature_dims=(6, 5, 4), fusion="sum"),
    "nlgate2": dict(feature_dims=(8, 8), fusion="nl-gate"),
    "nlgate3": dict(feature_dims=(6, 6, 6), fusion="nl-gate"),
    "multilabel": dict(feature_dims=(8, 6), multi_label=True),
    "float16": dict(feature_dims=(8, 6), feature_dtype="float16"),
}


@pytest.fixture(scope="module")
def cache_factory(tmp_path_factory):
    """Build (once per module) a small cache of a named kind and return its path."""
    made = {}

    def make(kind: str = "concat2", **overrides):
        key = (kind, tuple(sorted(overrides.items())))
        if key not in made:
            kwargs = {"num_samples": 160, "num_classes": 5, "labeled_fraction": 0.25, "seed": 3,
                      **CACHE_KINDS[kind], **overrides}
            path = tmp_path_factory.mktemp(kind) / "cache.h5"
            made[key] = make_synthetic_cache(path, **kwargs)
        return made[key]

    return make


@pytest.fixture(scope="module")
def one_torch_thread():
    """The GCN strategies train on tiny graphs: torch threads only add contention."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
