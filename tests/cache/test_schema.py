"""Schema 2's metadata rules per fusion, the head_input field, and schema-1 attributes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from mmal.cache import CacheMeta, CacheWriter, open_cache
from mmal.cache.schema import V1_FUSION_NAMES, field_specs
from mmal.errors import CacheError
from tests.cache.batches import random_batches


def _meta(**kwargs):
    base = dict(modalities=("a", "b"), feature_dims=(4, 4), fusion="concat", num_classes=3)
    return CacheMeta(**{**base, **kwargs})


@pytest.mark.parametrize("fusion,dims,fused_dim", [
    ("concat", (4, 3), 7), ("sum", (4, 3), 7), ("sum", (2, 3, 5), 10), ("feature-sum", (4, 4), 4),
])
def test_linear_fusions_derive_fused_dim(fusion, dims, fused_dim):
    names = tuple(f"m{i}" for i in range(len(dims)))
    meta = _meta(modalities=names, feature_dims=dims, fusion=fusion)
    assert meta.fused_dim == fused_dim
    assert _meta(modalities=names, feature_dims=dims, fusion=fusion, fused_dim=fused_dim) == meta
    assert not meta.stores_head_input
    assert "head_input" not in {s.path for s in field_specs(meta)}


def test_nl_gate_stores_head_input_in_the_feature_dtype():
    meta = _meta(fusion="nl-gate", fused_dim=4, feature_dtype="float16")
    assert meta.stores_head_input
    spec = {s.path: s for s in field_specs(meta)}["head_input"]
    assert (spec.row_shape, spec.dtype, spec.finite) == ((4,), np.dtype("float16"), True)


@pytest.mark.parametrize("kwargs,message", [
    (dict(fusion="attention"), "fusion 'attention' is not one of ('concat', 'sum', 'feature-sum', "
                               "'nl-gate')"),
    (dict(fusion="feature-sum", feature_dims=(4, 3)),
     "feature-sum fusion needs equal feature widths, got [4, 3]; store the projected features"),
    (dict(fusion="nl-gate"), "nl-gate fusion needs fused_dim, the width of the stored head_input"),
    (dict(fusion="nl-gate", feature_dims=(4, 3), fused_dim=4),
     "nl-gate fusion needs equal feature widths, got [4, 3]"),
    (dict(fusion="nl-gate", fused_dim=8),
     "nl-gate fusion needs feature widths equal to fused_dim=8, got [4, 4]"),
    (dict(fusion="sum", fused_dim=4),
     "fused_dim=4 disagrees with sum fusion of widths [4, 4], which gives 8; pass 0 to derive it"),
    (dict(fused_dim=-1), "fused_dim must be >= 0 (0 = derive it), got -1"),
])
def test_bad_metadata_names_the_rule(kwargs, message):
    with pytest.raises(CacheError) as err:
        _meta(**kwargs)
    assert str(err.value).startswith(f"invalid cache metadata: {message}")


@pytest.mark.parametrize("fusion", ["concat", "feature-sum"])
def test_schema_1_attributes_read_back_as_the_same_metadata(fusion):
    meta = _meta(fusion=fusion, extra={"x": 1})
    attrs = meta.to_attrs(1)
    assert "fused_dim" not in attrs
    assert attrs["fusion"] == {"concat": "concat", "feature-sum": "sum"}[fusion]
    assert CacheMeta.from_attrs({**attrs, "schema_version": 1}) == meta
    assert CacheMeta.from_attrs({**meta.to_attrs(), "schema_version": 2}) == meta


def test_schema_1_has_no_paper_sum_or_nl_gate():
    assert set(V1_FUSION_NAMES) == {"concat", "sum"}
    with pytest.raises(CacheError, match="fusion 'sum' has no schema-1 form"):
        _meta(fusion="sum").to_attrs(1)
    attrs = {**_meta(fusion="nl-gate", fused_dim=4).to_attrs(), "schema_version": 1}
    with pytest.raises(CacheError, match="attribute 'fusion' is 'nl-gate', which schema version 1 "
                                         "does not have"):
        CacheMeta.from_attrs(attrs, "c.h5")


def test_schema_2_needs_fused_dim():
    attrs = {**_meta().to_attrs(), "schema_version": 2}
    del attrs["fused_dim"]
    with pytest.raises(CacheError, match="c.h5: attribute 'fused_dim' is missing"):
        CacheMeta.from_attrs(attrs, "c.h5")


def _write(path, meta, batches):
    with CacheWriter(path, meta, sum(len(b["ids"]) for b in batches)) as writer:
        for batch in batches:
            writer.append(batch)
        writer.write_head(np.ones((meta.num_classes, meta.fused_dim)), np.zeros(meta.num_classes))
    return path


def test_writer_refuses_a_batch_without_the_head_input_its_fusion_stores(tmp_path):
    meta = _meta(fusion="nl-gate", fused_dim=4)
    batch = next(random_batches(meta, 5, 5))
    del batch["head_input"]
    writer = CacheWriter(tmp_path / "c.h5", meta, 5)
    with pytest.raises(CacheError, match="nl-gate fusion stores its head input: the batch needs "
                                         "the field 'head_input'"):
        writer.append(batch)
    writer.close()


@pytest.mark.parametrize("fusion", ["concat", "sum", "feature-sum"])
def test_writer_refuses_a_head_input_its_fusion_computes(tmp_path, fusion):
    meta = _meta(fusion=fusion)
    batch = next(random_batches(meta, 5, 5))
    batch["head_input"] = np.zeros((5, meta.fused_dim), np.float32)
    writer = CacheWriter(tmp_path / "c.h5", meta, 5)
    with pytest.raises(CacheError, match=f"{fusion} fusion computes its head input from the "
                                         "features: the batch must not have the field"):
        writer.append(batch)
    writer.close()


def test_reader_refuses_a_stray_head_input(tmp_path):
    meta = _meta()
    path = _write(tmp_path / "c.h5", meta, list(random_batches(meta, 6, 6)))
    with h5py.File(path, "r+") as f:
        f["head_input"] = np.zeros((6, 8), np.float32)
    with pytest.raises(CacheError, match="has a field 'head_input' that concat fusion computes "
                                         "from the features and never stores"):
        open_cache(path)


def test_reader_refuses_an_nl_gate_cache_without_head_input(tmp_path):
    meta = _meta(fusion="nl-gate", fused_dim=4)
    path = _write(tmp_path / "c.h5", meta, list(random_batches(meta, 6, 6)))
    with h5py.File(path, "r+") as f:
        del f["head_input"]
    with pytest.raises(CacheError, match="field 'head_input' is missing"):
        open_cache(path)


def test_fingerprint_covers_head_input(tmp_path):
    meta = _meta(fusion="nl-gate", fused_dim=4)
    path = _write(tmp_path / "c.h5", meta, list(random_batches(meta, 6, 6)))
    with h5py.File(path, "r+") as f:
        f["head_input"][2, 1] += 1.0
    with open_cache(path) as cache, pytest.raises(CacheError, match="content fingerprint mismatch"):
        cache.verify()


def test_head_input_with_nan_names_the_sample(tmp_path):
    meta = _meta(fusion="nl-gate", fused_dim=4)
    batch = next(random_batches(meta, 6, 6))
    path = _write(tmp_path / "c.h5", meta, [batch])
    with h5py.File(path, "r+") as f:
        f["head_input"][4, 0] = np.nan
    with open_cache(path) as cache, pytest.raises(CacheError, match=(
            f"field 'head_input' has NaN or Inf for sample ids {batch['ids'][4]};")):
        cache.head_input()
