"""A writer killed mid-way leaves no complete-looking cache; resuming gives the same file."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from mmal.cache import CacheMeta, CacheWriter, open_cache, partial_path
from mmal.cache.schema import field_specs, head_specs
from mmal.errors import CacheError
from tests.cache.batches import random_batches

META = CacheMeta(modalities=("img", "txt"), feature_dims=(6, 4), fusion="concat", num_classes=3,
                 mc_samples=2, round=1, model_fingerprint="abc")
N, ROWS = 95, 10
HEAD = (np.ones((3, 10), np.float32), np.zeros(3, np.float32))

KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from mmal.cache import CacheWriter
    from tests.cache.batches import random_batches
    from tests.cache.test_writer_crash import META, N, ROWS
    stop_after = int(sys.argv[2])
    writer = CacheWriter(sys.argv[1], META, N)
    for b, batch in enumerate(random_batches(META, N, ROWS)):
        if b < writer.rows_written // ROWS:
            continue
        if b == stop_after:
            os.kill(os.getpid(), signal.SIGKILL)
        writer.append(batch)
""")


def _write_all(path, skip_written=True):
    writer = CacheWriter(path, META, N)
    done = writer.rows_written // ROWS if skip_written else 0
    for b, batch in enumerate(random_batches(META, N, ROWS)):
        if b >= done:
            writer.append(batch)
    writer.write_head(*HEAD)
    writer.finalize()


def _kill_writer_after(path, batches):
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(path), str(batches)],
                          capture_output=True, text=True, cwd=str(pytest.rootdir))
    assert proc.returncode == -9, proc.stderr


@pytest.fixture(autouse=True)
def _rootdir(request):
    pytest.rootdir = request.config.rootpath


def test_killed_writer_leaves_nothing_that_opens_as_complete(tmp_path):
    path = tmp_path / "cache.h5"
    _kill_writer_after(path, 4)
    assert not path.exists()
    assert partial_path(path).exists()
    with pytest.raises(CacheError, match="interrupted write is at .*cache.h5.partial"):
        open_cache(path)
    with pytest.raises(CacheError, match="incomplete"):
        open_cache(partial_path(path))
    with h5py.File(partial_path(path)) as f:
        assert f.attrs["rows_written"] == 4 * ROWS


@pytest.mark.parametrize("kills", [[3], [2, 6]])
def test_resume_gives_the_same_contents_as_an_uninterrupted_write(tmp_path, kills):
    reference = tmp_path / "reference.h5"
    _write_all(reference)
    resumed = tmp_path / "resumed.h5"
    for stop in kills:
        _kill_writer_after(resumed, stop)
    with h5py.File(partial_path(resumed)) as f:
        assert f.attrs["rows_written"] == kills[-1] * ROWS
    _write_all(resumed)
    assert not partial_path(resumed).exists()

    with open_cache(reference) as a, open_cache(resumed) as b:
        assert a.fingerprint == b.fingerprint
        for spec in [*field_specs(META), *head_specs(META)]:
            np.testing.assert_array_equal(a.read(spec.path), b.read(spec.path))


def test_partial_for_other_settings_starts_over(tmp_path):
    path = tmp_path / "cache.h5"
    _kill_writer_after(path, 3)
    other = CacheMeta(modalities=("img", "txt"), feature_dims=(6, 4), fusion="concat",
                      num_classes=3, mc_samples=2, round=1, model_fingerprint="new-model")
    writer = CacheWriter(path, other, N)
    assert writer.rows_written == 0
    writer.close()


def test_unreadable_partial_starts_over(tmp_path):
    path = tmp_path / "cache.h5"
    partial_path(path).write_bytes(b"garbage, not hdf5")
    writer = CacheWriter(path, META, N)
    assert writer.rows_written == 0
    writer.close()


def test_finalize_refuses_a_short_cache(tmp_path):
    writer = CacheWriter(tmp_path / "c.h5", META, N)
    writer.append(next(random_batches(META, N, ROWS)))
    writer.write_head(*HEAD)
    with pytest.raises(CacheError, match=f"only {ROWS} of {N} rows written"):
        writer.finalize()
    assert not (tmp_path / "c.h5").exists()
