"""Index files: round trip, atomic writes, validation."""

from __future__ import annotations

import numpy as np
import pytest

from mmal.cache import read_index, write_index
from mmal.errors import IndexFileError

PROVENANCE = dict(strategy="bmmal", params={"block": 64}, seed=3, budget=4, cache="c.h5",
                  cache_fingerprint="abc", backend="numpy", wall_time_s=0.5)


def test_round_trip_keeps_order_and_provenance(tmp_path):
    ids = np.array([40, 2, 17, 9], dtype=np.int64)
    path = write_index(tmp_path / "sel.json", ids, kind="selection", provenance=PROVENANCE)
    index = read_index(path)
    np.testing.assert_array_equal(index.ids, ids)
    assert index.kind == "selection"
    assert index.provenance["params"] == {"block": 64}
    assert index.provenance["mmal_version"]
    assert index.path == path
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left behind


def test_existing_file_is_kept_without_overwrite(tmp_path):
    path = write_index(tmp_path / "sel.json", [1, 2], kind="labeled", provenance={})
    before = path.read_text()
    with pytest.raises(IndexFileError, match="already exists; pass --force"):
        write_index(path, [3], kind="labeled", provenance={})
    assert path.read_text() == before
    write_index(path, [3], kind="labeled", provenance={}, overwrite=True)
    np.testing.assert_array_equal(read_index(path).ids, [3])


def test_failed_write_leaves_the_old_file(tmp_path):
    path = write_index(tmp_path / "sel.json", [1, 2], kind="labeled", provenance={})
    with pytest.raises(TypeError):
        write_index(path, [5], kind="labeled", provenance={"bad": object()}, overwrite=True)
    np.testing.assert_array_equal(read_index(path).ids, [1, 2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sel.json"]


def test_numpy_values_in_provenance_are_stored(tmp_path):
    path = write_index(tmp_path / "s.json", np.arange(3), kind="selection",
                       provenance={**PROVENANCE, "seed": np.int64(4), "wall_time_s": np.float32(1)})
    assert read_index(path).provenance["seed"] == 4
