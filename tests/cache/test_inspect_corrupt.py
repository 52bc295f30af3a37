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


@pytest.mark.parametrize("attribute,value", [
    ("model_fingerprint", b"synthetic-seed0"),
    ("extra", b"mmal.cache.synthetic"),
    ("feature_dtype", b"float32"),
])
def test_an_attribute_that_is_not_utf8_is_one_error_line_naming_it(cache, tmp_path, attribute,
                                                                    value):
    """h5py reads such bytes as surrogate escapes, which used to crash the CLI's echo."""
    data = bytearray(cache.read_bytes())
    assert data.count(value) == 1
    at = data.find(value)
    data[at:at + 4] = b"\xff\xfe\xff\xfe"
    path = tmp_path / "bad-attribute.h5"
    path.write_bytes(bytes(data))
    result = _inspect(path)
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {path}: attribute '{attribute}' is not UTF-8 text, the file "
                             "is damaged; rewrite the cache\n")
