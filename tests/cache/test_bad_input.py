"""Malformed caches and index files give one-line errors naming the file and the field."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from mmal.cache import write_index
from mmal.cli import cli


def _replace(f, name, data):
    del f[name]
    f.create_dataset(name, data=data)


def missing_field(path):
    with h5py.File(path, "r+") as f:
        del f["coalitions"]
    return "field 'coalitions' is missing"


def wrong_shape(path):
    with h5py.File(path, "r+") as f:
        _replace(f, "logits/mm", np.zeros((200, 6), np.float32))
    return r"field 'logits/mm' has shape \(200, 6\), expected \(200, 5\)"


def wrong_dtype(path):
    with h5py.File(path, "r+") as f:
        _replace(f, "features/m0", f["features/m0"][:].astype(np.float64))
    return "field 'features/m0' has dtype float64, expected float32"


def nan_value(path):
    with h5py.File(path, "r+") as f:
        ids = f["ids"][:]
        f["features/m1"][17, 2] = np.nan
        f["logits/m0"][40, 0] = np.inf
    return f"field 'features/m1' has NaN or Inf for sample ids {ids[17]};"


def unknown_version(path):
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = 99
    return "schema version 99 is newer than this mmal .* upgrade mmal"


def truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "cannot be opened, the file is truncated or corrupted"


def not_hdf5(path):
    path.write_text("id,label\n1,cat\n")
    return "is not an HDF5 file"


def duplicate_ids(path):
    with h5py.File(path, "r+") as f:
        ids = f["ids"][:]
        f["ids"][3] = ids[2]
    return f"field 'ids' has duplicate sample ids {ids[2]}"


def not_a_cache(path):
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    return "is not an mmal-feature-cache"


CACHE_CASES = [missing_field, wrong_shape, wrong_dtype, nan_value, unknown_version, truncated,
               not_hdf5, duplicate_ids, not_a_cache]


def _assert_one_line_error(result, path, pattern):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert "Traceback" not in result.output
    assert lines[-1].startswith(f"Error: {path}: ")
    import re
    assert re.search(pattern, lines[-1]), lines[-1]


@pytest.mark.parametrize("corrupt", CACHE_CASES, ids=lambda f: f.__name__)
def test_bad_cache_gives_one_line_error(small_cache, corrupt):
    pattern = corrupt(small_cache)
    result = CliRunner().invoke(cli, ["inspect", str(small_cache)])
    _assert_one_line_error(result, small_cache, pattern)
    assert len(result.output.strip().splitlines()) == 1


def test_missing_cache_names_the_file(tmp_path):
    path = tmp_path / "nope.h5"
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    _assert_one_line_error(result, path, "no such cache file; run `mmal extract` first")


def _index(tmp_path, initial_ids, **changes):
    path = write_index(tmp_path / "sel.json", initial_ids, kind="labeled", provenance={"round": 0})
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))
    return path


INDEX_CASES = [
    (dict(ids=[5, 9, 5], count=3), r"field 'ids' lists ids 5 more than once"),
    (dict(schema_version=2), "schema version 2 is newer"),
    (dict(mmal_type="something"), "is not an mmal-index-file"),
    (dict(ids=[1, "x"], count=2), "field 'ids' must be a list of integers"),
    (dict(count=7), "field 'count' is 7 but 'ids' lists 2"),
    (dict(kind="picked"), "field 'kind' is 'picked'"),
]


@pytest.mark.parametrize("changes,pattern", INDEX_CASES)
def test_bad_index_file_gives_one_line_error(tmp_path, changes, pattern):
    path = _index(tmp_path, [1, 2], **changes)
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    _assert_one_line_error(result, path, pattern)


def test_index_file_that_is_not_json(tmp_path):
    path = tmp_path / "sel.json"
    path.write_text("{not json")
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    _assert_one_line_error(result, path, "is not valid JSON")


def test_index_naming_ids_absent_from_the_cache(tmp_path, small_cache):
    from mmal.cache import open_cache

    known = open_cache(small_cache).ids[:2].tolist()
    path = write_index(tmp_path / "sel.json", [*known, -5, 10**9], kind="labeled",
                       provenance={})
    result = CliRunner().invoke(cli, ["inspect", str(path), "--cache", str(small_cache)])
    _assert_one_line_error(result, path, rf"ids -5, {10**9} are absent from the cache")
    ok = write_index(tmp_path / "ok.json", known, kind="labeled", provenance={})
    assert CliRunner().invoke(cli, ["inspect", str(ok), "--cache", str(small_cache)]).exit_code == 0


def test_selection_index_requires_provenance(tmp_path):
    from mmal.errors import IndexFileError

    with pytest.raises(IndexFileError, match=r"provenance lacks \['strategy'"):
        write_index(tmp_path / "s.json", [1], kind="selection", provenance={})
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("name", ["README.md", "labels.csv", "cache.h5"])
def test_inspect_of_a_file_it_cannot_read_lists_what_it_takes(tmp_path, name):
    path = tmp_path / name
    path.write_text("# not a cache\n")
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 1
    assert result.output == (f"Error: {path}: is not an HDF5 file; mmal inspect takes a cache (.h5), "
                             "an index file (.json) or a selection's diagnostics (.npz)\n")


def test_inspect_summarises_a_selection_diagnostics_archive(tmp_path, small_cache):
    out = tmp_path / "sel.json"
    assert CliRunner().invoke(cli, ["select", "-s", "bmmal", "-b", "3", "--cache", str(small_cache),
                                    "--out", str(out)]).exit_code == 0
    diagnostics = tmp_path / "sel.diagnostics.npz"
    result = CliRunner().invoke(cli, ["inspect", str(diagnostics), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    with np.load(diagnostics) as archive:
        expected = archive["Phi"].mean(axis=0)
    assert summary["type"] == "selection-diagnostics" and summary["strategy"] == "bmmal"
    np.testing.assert_allclose([summary["mean_Phi"]["m0"], summary["mean_Phi"]["m1"]], expected)
    text = CliRunner().invoke(cli, ["inspect", str(diagnostics)])
    assert "mean_Phi:\n  m0: " in text.output and "read_with: numpy.load(" in text.output


def test_inspect_of_a_bad_npz_is_one_line(tmp_path):
    path = tmp_path / "x.npz"
    path.write_text("not a zip")
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    _assert_one_line_error(result, path, r"is not a NumPy \.npz archive; pass the <stem>\.diagnostics\.npz")
