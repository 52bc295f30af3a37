"""Damaged and hostile caches: checksummed chunks, `inspect --verify`, refused links and storage.

Reproduces issue 15's items 7 (scrambled bytes went unnoticed), 8 (links and
external storage were followed) and 3b (external storage in a FIFO hung).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from mmal.cache import CacheMeta, open_cache
from mmal.cache.integrity import check_structure
from mmal.cache.synthetic import make_synthetic_cache
from mmal.cli import cli
from mmal.errors import CacheError
from mmal.extract.shards import join_shards

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
V1_FINGERPRINT = "10542fa768bb86e37ff6b7dfcd5ac2da"


def _one_line_error(result, path: Path, pattern: str) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: {path}: "), lines[0]
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def _select(path: Path, tmp_path: Path, strategy: str = "bmmal"):
    return CliRunner().invoke(cli, ["select", "-s", strategy, "-b", "5", "--cache", str(path),
                                    "--out", str(tmp_path / "picks.json")])


def _scramble_chunk(path: Path, field: str, chunk: int = 0, nbytes: int = 64) -> None:
    """Overwrite ``nbytes`` inside one stored chunk of ``field`` with other bytes."""
    with h5py.File(path, "r") as f:
        info = f[field].id.get_chunk_info(chunk)
    start = info.byte_offset + info.size // 2
    with open(path, "r+b") as fh:
        fh.seek(start)
        old = fh.read(nbytes)
        fh.seek(start)
        fh.write(bytes(b ^ 0x5A for b in old))


# -- checksums -------------------------------------------------------------------------


def test_writer_checksums_every_dataset(small_cache):
    with h5py.File(small_cache, "r") as f:
        datasets = []
        f.visititems(lambda name, obj: datasets.append(obj)
                     if isinstance(obj, h5py.Dataset) else None)
        assert len(datasets) == 12  # ids, labeled, labels, 2 features, 3 logits, coalitions,
        # mc_logits, head/weight, head/bias
        assert all(ds.fletcher32 and ds.chunks for ds in datasets)


@pytest.mark.parametrize("field", ["features/m0", "coalitions", "head/weight"])
def test_scrambled_chunk_is_a_one_line_error_on_read(small_cache, field):
    _scramble_chunk(small_cache, field)
    with open_cache(small_cache) as cache:
        with pytest.raises(CacheError, match=rf"field '{field}' cannot be read: a chunk fails its "
                                             r"checksum.*`mmal extract --force`"):
            cache.read(field)


def test_nl_gate_head_input_is_checksummed_and_badge_reports_its_damage(tmp_path):
    path = make_synthetic_cache(tmp_path / "c.h5", num_samples=200, feature_dims=(6, 6),
                                fusion="nl-gate", seed=1)
    with h5py.File(path, "r") as f:
        assert f["head_input"].fletcher32 and f["head_input"].chunks
    _scramble_chunk(path, "head_input")
    _one_line_error(_select(path, tmp_path, "badge"), path,
                    "field 'head_input' cannot be read: a chunk fails its checksum")


def test_scrambled_ids_are_refused_at_open(small_cache):
    _scramble_chunk(small_cache, "ids")
    with pytest.raises(CacheError, match="field 'ids' cannot be read: a chunk fails its checksum"):
        open_cache(small_cache)


def test_scrambled_features_fail_select_inspect_and_verify(small_cache, tmp_path):
    _scramble_chunk(small_cache, "features/m1")
    pattern = "field 'features/m1' cannot be read: a chunk fails its checksum"
    _one_line_error(_select(small_cache, tmp_path), small_cache, pattern)
    assert not (tmp_path / "picks.json").exists()
    for extra in ([], ["--verify"]):
        result = CliRunner().invoke(cli, ["inspect", str(small_cache), *extra])
        _one_line_error(result, small_cache, pattern)


def test_four_thousand_scrambled_bytes_never_pass(tmp_path):
    """The issue's trial: 4,000 random bytes in the middle of a cache changed 718 values."""
    path = make_synthetic_cache(tmp_path / "cache.h5", num_samples=2000, num_classes=10,
                                feature_dims=(64, 32), seed=0)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4000] = np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    _one_line_error(result, path, r"field '[a-z/0-9]+' cannot be read: a chunk fails its checksum")


# -- inspect --verify ------------------------------------------------------------------


def test_verify_passes_a_good_cache(small_cache):
    with open_cache(small_cache) as cache:
        stored = cache.fingerprint
        assert cache.verify() == stored
    result = CliRunner().invoke(cli, ["inspect", str(small_cache), "--verify"])
    assert result.exit_code == 0, result.output
    assert result.output == f"{small_cache}: content fingerprint ok ({stored})\n"


def test_verify_passes_the_frozen_v1_cache_without_checksums():
    with h5py.File(DATA / "cache-v1.h5", "r") as f:
        assert not f["features/image"].fletcher32  # written before the checksums
    result = CliRunner().invoke(cli, ["inspect", str(DATA / "cache-v1.h5"), "--verify", "--json"])
    assert result.exit_code == 0, result.output
    assert '"content_fingerprint": "' + V1_FINGERPRINT in result.output


def _changed_v1(tmp_path: Path) -> Path:
    path = tmp_path / "cache-v1.h5"
    shutil.copy(DATA / "cache-v1.h5", path)
    with h5py.File(path, "r+") as f:
        f["features/text"][5, 1] += 0.25
    return path


def test_verify_detects_a_changed_value_in_a_v1_cache(tmp_path):
    path = _changed_v1(tmp_path)
    # without a checksum the plain reader cannot tell: that is what --verify is for
    assert CliRunner().invoke(cli, ["inspect", str(path)]).exit_code == 0
    result = CliRunner().invoke(cli, ["inspect", str(path), "--verify"])
    line = _one_line_error(result, path, "content fingerprint mismatch")
    assert f"stored {V1_FINGERPRINT}, recomputed " in line
    assert "`mmal extract --force`" in line


def test_verify_detects_changed_metadata(small_cache):
    with h5py.File(small_cache, "r+") as f:
        f.attrs["round"] = 7
    result = CliRunner().invoke(cli, ["inspect", str(small_cache), "--verify"])
    _one_line_error(result, small_cache, "content fingerprint mismatch")


def test_verify_takes_only_caches(tmp_path):
    path = tmp_path / "labeled.json"
    path.write_text("{}")
    result = CliRunner().invoke(cli, ["inspect", str(path), "--verify"])
    assert result.exit_code == 2
    assert "--verify checks a feature cache (.h5), not a .json file" in result.output


# -- links and outside storage ---------------------------------------------------------


def _replace(path: Path, field: str, make) -> None:
    with h5py.File(path, "r+") as f:
        del f[field]
        make(f, field)


def external_link_to_text(path, tmp_path):
    text = tmp_path / "hostname"
    text.write_text("victim\n")
    _replace(path, "head/bias", lambda f, k: f.__setitem__(k, h5py.ExternalLink(str(text), "/")))
    return "'/head/bias' is an external link"


def external_link_to_hdf5(path, tmp_path):
    other = make_synthetic_cache(tmp_path / "other.h5", num_samples=200, num_classes=5,
                                 feature_dims=(8, 6), mc_samples=3, seed=2)
    _replace(path, "features/m0",
             lambda f, k: f.__setitem__(k, h5py.ExternalLink(str(other), "/features/m0")))
    return "'/features/m0' is an external link"


def dangling_soft_link(path, tmp_path):
    _replace(path, "ids", lambda f, k: f.__setitem__(k, h5py.SoftLink("/nowhere")))
    return "'/ids' is a soft link"


def soft_link_outside_the_schema(path, tmp_path):
    with h5py.File(path, "r+") as f:
        f["features/alias"] = h5py.SoftLink("/features/m0")
    return "'/features/alias' is a soft link"


def virtual_dataset(path, tmp_path):
    other = make_synthetic_cache(tmp_path / "other.h5", num_samples=200, num_classes=5,
                                 feature_dims=(8, 6), mc_samples=3, seed=2)

    def make(f, k):
        layout = h5py.VirtualLayout(shape=(200,), dtype="int64")
        layout[:] = h5py.VirtualSource(str(other), "ids", shape=(200,))
        f.create_virtual_dataset(k, layout)
    _replace(path, "ids", make)
    return "'/ids' is a virtual dataset"


def external_raw_file(path, tmp_path):
    raw = tmp_path / "passwd"
    raw.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 64)
    _replace(path, "ids", lambda f, k: f.create_dataset(
        k, shape=(200,), dtype="int64", external=[(str(raw), 0, h5py.h5f.UNLIMITED)]))
    return "'/ids' is a dataset stored in an external raw file"


HOSTILE = [external_link_to_text, external_link_to_hdf5, dangling_soft_link,
           soft_link_outside_the_schema, virtual_dataset, external_raw_file]


@pytest.mark.parametrize("plant", HOSTILE, ids=lambda f: f.__name__)
def test_links_and_outside_storage_are_refused(small_cache, tmp_path, plant):
    pattern = plant(small_cache, tmp_path)
    with pytest.raises(CacheError, match=re.escape(pattern) + ".*not an mmal cache"):
        open_cache(small_cache)
    _one_line_error(CliRunner().invoke(cli, ["inspect", str(small_cache)]), small_cache,
                    re.escape(pattern))
    _one_line_error(_select(small_cache, tmp_path), small_cache, re.escape(pattern))


def _run_mmal(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "mmal", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_external_storage_in_a_fifo_is_refused_without_reading(small_cache, tmp_path):
    """Issue 15, 3b: reading a dataset stored in a FIFO blocks until someone writes to it."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    _replace(small_cache, "features/m0", lambda f, k: f.create_dataset(
        k, shape=(200, 8), dtype="float32", external=[(str(fifo), 0, h5py.h5f.UNLIMITED)]))
    for args in (["inspect", str(small_cache)],
                 ["select", "-s", "bmmal", "-b", "5", "--cache", str(small_cache),
                  "--out", str(tmp_path / "picks.json")]):
        done = _run_mmal(*args)  # a hang fails the test through the timeout
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip().splitlines() == [
            f"Error: {small_cache}: '/features/m0' is a dataset stored in an external raw file; "
            "mmal writes none, so this is not an mmal cache; re-extract it with "
            "`mmal extract --force`"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_as_the_cache_is_refused(tmp_path):
    fifo = tmp_path / "cache.h5"
    os.mkfifo(fifo)
    done = _run_mmal("inspect", str(fifo))
    assert done.returncode == 1
    assert done.stderr.strip() == f"Error: {fifo}: is not a regular file; pass a cache written by mmal"


def test_hard_link_cycles_end_the_walk(small_cache):
    with h5py.File(small_cache, "r+") as f:
        f["features/loop"] = f["features"]
    with h5py.File(small_cache, "r") as f:
        check_structure(f, small_cache)  # returns: each group is entered once
    with open_cache(small_cache) as cache:
        assert cache.num_samples == 200


def test_link_names_from_the_file_are_quoted(small_cache):
    with h5py.File(small_cache, "r+") as f:
        f["evil\nline\x1b[31m"] = h5py.SoftLink("/ids")
    with pytest.raises(CacheError) as info:
        open_cache(small_cache)
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)
    assert "'/evil\\nline\\x1b[31m' is a soft link" in str(info.value)


def test_a_link_name_that_is_not_utf8_is_one_line_not_a_system_error(small_cache):
    with h5py.File(small_cache, "r+") as f:
        f.id.links.create_hard(b"bad\x8fname", f.id, b"ids")  # as scrambled bytes leave it
    with pytest.raises(CacheError) as info:
        open_cache(small_cache)
    assert "x8fname' is a name that is not UTF-8" in str(info.value)
    assert "\n" not in str(info.value)


def test_joining_shards_checks_each_shard(small_cache, tmp_path):
    external_link_to_text(small_cache, tmp_path)
    with h5py.File(small_cache, "r") as f:
        meta = CacheMeta.from_attrs(f.attrs)
    with pytest.raises(CacheError, match="'/head/bias' is an external link"):
        join_shards(tmp_path / "joined.h5", meta, [(small_cache, range(200))], 200,
                    overwrite=False, resume=False)
