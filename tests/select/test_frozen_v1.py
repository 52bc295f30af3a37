"""Selection on the frozen schema-1 caches picks exactly what it picked before schema 2.

The known answers below were obtained by running every registered strategy
through ``mmal.select.select(path, strategy, 8, seed=0, precision=...)`` on
``tests/data/cache-v1.h5`` (concat) and ``tests/data/cache-v1-sum.h5`` (fusion
"sum", the feature sum schema 2 calls "feature-sum") with the code of commit
d9a9446, the last one before schema 2, and copying the selected ids here.
A v1 cache must keep reading exactly as it did, so these ids must not change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mmal.cache import open_cache
from mmal.select import select

DATA = Path(__file__).parent.parent / "data"

#: file -> (strategy, precision) -> the 8 ids selected at commit d9a9446 (seed 0).
KNOWN = {
    "cache-v1.h5": {
        ("badge", "float32"): [72, 207, 3, 223, 224, 214, 49, 94],
        ("badge", "float64"): [72, 207, 3, 223, 224, 214, 49, 94],
        ("bald", None): [55, 214, 192, 72, 86, 224, 223, 119],
        ("bmmal", "float32"): [72, 207, 3, 223, 224, 214, 94, 81],
        ("bmmal", "float64"): [72, 207, 3, 223, 224, 214, 94, 81],
        ("coregcn", None): [228, 224, 94, 78, 86, 230, 81, 214],
        ("coreset", None): [55, 78, 81, 230, 214, 192, 224, 223],
        ("deepfool", None): [192, 72, 3, 228, 49, 119, 94, 207],
        ("entropy", None): [72, 49, 94, 192, 228, 223, 3, 119],
        ("gcn", None): [228, 224, 94, 78, 86, 230, 81, 214],
        ("kmeans", None): [55, 78, 223, 161, 72, 224, 64, 230],
        ("least-confidence", None): [72, 192, 49, 94, 228, 3, 223, 119],
        ("margin", None): [192, 72, 3, 228, 119, 94, 49, 223],
        ("random", None): [119, 49, 230, 81, 72, 64, 3, 86],
        ("uncertaingcn", None): [230, 228, 78, 86, 81, 224, 94, 64],
    },
    "cache-v1-sum.h5": {
        ("badge", "float32"): [49, 169, 15, 199, 205, 135, 161, 29],
        ("badge", "float64"): [49, 169, 15, 199, 205, 135, 161, 29],
        ("bald", None): [22, 217, 49, 8, 47, 29, 135, 101],
        ("bmmal", "float32"): [49, 169, 8, 205, 161, 196, 217, 101],
        ("bmmal", "float64"): [49, 169, 8, 205, 161, 196, 217, 101],
        ("coregcn", None): [217, 221, 47, 49, 101, 15, 29, 188],
        ("coreset", None): [49, 35, 22, 217, 169, 47, 161, 135],
        ("deepfool", None): [221, 15, 44, 135, 205, 101, 161, 188],
        ("entropy", None): [15, 205, 44, 135, 221, 196, 101, 161],
        ("gcn", None): [217, 221, 47, 49, 101, 15, 29, 188],
        ("kmeans", None): [49, 35, 101, 15, 199, 196, 161, 205],
        ("least-confidence", None): [15, 205, 135, 44, 221, 196, 101, 188],
        ("margin", None): [221, 135, 15, 44, 205, 188, 196, 101],
        ("random", None): [135, 15, 221, 47, 35, 29, 8, 49],
        ("uncertaingcn", None): [47, 8, 135, 196, 221, 49, 199, 15],
    },
}

CASES = [(file, strategy, precision) for file, picks in KNOWN.items()
         for strategy, precision in picks]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("file,strategy,precision", CASES)
def test_v1_cache_selects_what_it_selected_before_schema_2(tmp_path, file, strategy, precision):
    index = select(DATA / file, strategy, 8, seed=0, out=tmp_path / "pick.json",
                   precision=precision)
    assert index.ids.tolist() == KNOWN[file][strategy, precision]


def test_v1_sum_cache_reads_as_feature_sum():
    with open_cache(DATA / "cache-v1-sum.h5") as cache:
        assert cache.schema_version == 1
        assert cache.meta.fusion == "feature-sum"
        assert cache.meta.fused_dim == 4
