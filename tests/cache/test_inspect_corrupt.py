"""`mmal inspect` on a damaged cache: one `Error:` line naming the file, never a traceback."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from mmal.cache.synthetic import make_synthetic_cache
from mmal.cli import cli


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("intact") / "pool.h5"
    make_synthetic_cache(path, num_samples=300, feature_dims=(8, 6), seed=0)
    return path


def _inspect(path):
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}")
    return result


def test_a_truncated_cache_is_one_error_line(cache, tmp_path):
    path = tmp_path / "cut.h5"
    shutil.copy(cache, path)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 3)
    result = _inspect(path)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {path}: cannot be ")
    assert result.stderr.count("\n") == 1


def test_scrambled_bytes_anywhere_in_the_metadata_never_give_a_traceback(cache, tmp_path):
    """h5py reports damaged object headers, heaps and B-trees as KeyError, RuntimeError or OSError."""
    rng = np.random.default_rng(0)
    path = tmp_path / "scrambled.h5"
    corrupt = 0
    for offset in range(0, 12_000, 97):
        shutil.copy(cache, path)
        with open(path, "r+b") as handle:
            handle.seek(offset)
            handle.write(rng.integers(0, 256, 48, dtype=np.uint8).tobytes())
        result = _inspect(path)
        if result.exit_code == 0:
            continue  # bytes nobody reads (padding, free space) or a value still in range
        assert result.exit_code == 1
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: "), result.stderr
        corrupt += "cannot be read, the file is corrupted" in lines[0]
    assert corrupt  # some damage is found only while reading, past open_cache's own checks
