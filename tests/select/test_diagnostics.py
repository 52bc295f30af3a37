"""Reading back a selection's diagnostics archive: known answers and bad files."""

from __future__ import annotations

import numpy as np
import pytest

from mmal.errors import IndexFileError
from mmal.select import select
from mmal.select.api import diagnostics_path
from mmal.select.diagnostics import summarize_diagnostics
from mmal.stamp import STAMP_KEYS


@pytest.mark.parametrize("strategy", ["bmmal", "random"])
def test_summary_matches_the_archive(cache_factory, tmp_path, strategy):
    index = select(cache_factory("concat3"), strategy, 4, out=tmp_path / "s.json")
    path = diagnostics_path(index.path)
    summary = summarize_diagnostics(path)
    with np.load(path) as archive:
        phi_means = archive["Phi"].mean(axis=0)
        assert summary["samples"] == len(archive["ids"]) > 0
        assert summary["arrays"]["Phi"] == f"{archive['Phi'].shape} float64"
        assert set(summary["arrays"]) == set(archive.files) - set(STAMP_KEYS)
        assert str(archive["mmal_type"]) == "mmal-selection-diagnostics"
    assert summary["schema_version"] == 1
    assert summary["strategy"] == strategy and summary["modalities"] == ["m0", "m1", "m2"]
    assert list(summary["mean_Phi"]) == ["m0", "m1", "m2"]
    np.testing.assert_allclose(list(summary["mean_Phi"].values()), phi_means, rtol=1e-12)
    assert summary["read_with"] == f"numpy.load({str(path)!r})"


def _text(path):
    path.write_text("id,label\n1,cat\n")


def _other_npz(path):
    np.savez(path, a=np.arange(3))


def _pickled(path):
    np.savez(path, ids=np.array([{"x": 1}], dtype=object), modalities=np.array(["a"]),
             strategy=np.array("s"))


@pytest.mark.parametrize("write, message", [
    (None, "no such diagnostics file; `mmal select` writes it next to the index file"),
    (_text, "is not a NumPy .npz archive; pass the <stem>.diagnostics.npz written by mmal select"),
    (_other_npz, "is not a diagnostics file written by mmal select (no 'ids' array)"),
    (_pickled, "cannot be read as a NumPy .npz archive (Object arrays cannot be loaded"),
])
def test_bad_archives_name_the_file(tmp_path, write, message):
    path = tmp_path / "d.npz"
    if write:
        write(path)
    with pytest.raises(IndexFileError) as err:
        summarize_diagnostics(path)
    assert str(err.value).startswith(f"{path}: {message}")
