"""The cache writer follows no link, shares no partial file, and survives a full disk."""

from __future__ import annotations

import logging
import os
import stat
import struct

import h5py
import numpy as np
import pytest

from mmal.cache import CacheMeta, CacheWriter, open_cache, partial_path
from mmal.cache import writer as writer_module
from mmal.errors import CacheError
from tests import diskfull
from tests.cache.batches import random_batches

small_disk = diskfull.small_disk  # a fixture

META = CacheMeta(modalities=("img", "txt"), feature_dims=(6, 4), fusion="concat", num_classes=3,
                 round=1, model_fingerprint="abc")
N, ROWS = 50, 10
# Wide rows, so a few batches take MiBs of the small disk.
WIDE = CacheMeta(modalities=("img", "txt"), feature_dims=(2048, 1024), fusion="concat",
                 num_classes=3, round=1, model_fingerprint="abc")
WIDE_N, WIDE_ROWS = 600, 100


def _head(meta):
    return np.ones((meta.num_classes, meta.fused_dim), np.float32), np.zeros(3, np.float32)


def _write(path, meta=META, n=N, rows=ROWS, **kwargs):
    """Write (or resume) the whole cache at ``path``; the writer's first rows_written."""
    writer = CacheWriter(path, meta, n, **kwargs)
    first = writer.rows_written
    for b, batch in enumerate(random_batches(meta, n, rows)):
        if b >= first // rows:
            writer.append(batch)
    writer.write_head(*_head(meta))
    writer.finalize()
    return first


def _fingerprint(path):
    with open_cache(path) as cache:
        return cache.fingerprint


# -- the partial file: never through a link, never shared ------------------------------------

@pytest.mark.parametrize("resume", [True, False])
def test_a_link_planted_at_the_partial_name_is_replaced_not_followed(tmp_path, resume, caplog):
    victim = tmp_path / "victim.h5"
    _write(victim)  # a valid partial-looking target would tempt a resume most
    before = victim.read_bytes()
    path = tmp_path / "cache.h5"
    partial_path(path).symlink_to(victim)
    with caplog.at_level(logging.WARNING, logger="mmal.cache.writer"):
        _write(path, resume=resume)
    assert victim.read_bytes() == before
    assert stat.S_ISREG(os.lstat(path).st_mode)
    assert not os.path.lexists(partial_path(path))
    assert _fingerprint(path) == _fingerprint(victim)
    if resume:
        assert "cache.h5.partial is unusable" in caplog.text
        assert "starting the cache over" in caplog.text


def test_a_partial_holding_an_external_link_is_started_over_not_written_through(tmp_path,
                                                                                 caplog):
    path = tmp_path / "cache.h5"
    writer = CacheWriter(path, META, N)
    for batch in list(random_batches(META, N, ROWS))[:2]:
        writer.append(batch)
    writer.close()  # interrupted: a partial with 20 rows
    target = tmp_path / "elsewhere.h5"
    with h5py.File(target, "w") as f:
        f["x"] = np.arange(3)
    before = target.read_bytes()
    with h5py.File(partial_path(path), "r+") as f:
        f["planted"] = h5py.ExternalLink(str(target), "/x")
    with caplog.at_level(logging.WARNING, logger="mmal.cache.writer"):
        assert _write(path) == 0  # started over, not resumed
    assert "is damaged" in caplog.text and "external link" in caplog.text
    assert target.read_bytes() == before
    with h5py.File(path, "r") as f:
        assert "planted" not in f


def test_a_fifo_at_the_partial_name_is_replaced_without_hanging(tmp_path):
    path = tmp_path / "cache.h5"
    os.mkfifo(partial_path(path))
    assert _write(path) == 0
    assert stat.S_ISREG(os.lstat(path).st_mode)


def test_a_folder_at_the_partial_name_is_refused(tmp_path):
    path = tmp_path / "cache.h5"
    partial_path(path).mkdir()
    with pytest.raises(CacheError, match=r"cache.h5.partial: is a folder; move it away"):
        CacheWriter(path, META, N, resume=False)


def test_a_second_writer_of_the_same_partial_file_is_refused(tmp_path):
    path = tmp_path / "cache.h5"
    first = CacheWriter(path, META, N)
    try:
        for resume in (True, False):
            with pytest.raises(CacheError, match="cache.h5.partial: another process is writing"):
                CacheWriter(path, META, N, resume=resume)
    finally:
        first.close()
    assert CacheWriter(path, META, N).rows_written == 0


def test_the_finished_cache_replaces_a_link_at_its_name_not_its_target(tmp_path):
    victim = tmp_path / "victim.h5"
    _write(victim)
    before = victim.read_bytes()
    path = tmp_path / "cache.h5"
    path.symlink_to(victim)
    with pytest.raises(CacheError, match="cache.h5: is a symbolic link; --force replaces only an "
                                         "mmal feature cache, never a link"):
        CacheWriter(path, META, N, overwrite=True)
    path.unlink()
    _write(path, overwrite=True)
    assert victim.read_bytes() == before


# -- full disks -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wide_reference(tmp_path_factory):
    """The wide cache written on a disk with room: what every recovered write must equal."""
    path = tmp_path_factory.mktemp("reference") / "cache.h5"
    _write(path, WIDE, WIDE_N, WIDE_ROWS)
    return _fingerprint(path)


def _fill_until_error(path, **kwargs):
    """Append wide batches until the writer raises; (writer, error)."""
    writer = CacheWriter(path, WIDE, WIDE_N, **kwargs)
    with pytest.raises(CacheError) as info:
        for batch in random_batches(WIDE, WIDE_N, WIDE_ROWS):
            writer.append(batch)
    return writer, info.value


def test_a_disk_without_room_for_the_next_batch_stops_the_writer_before_it(small_disk,
                                                                          wide_reference):
    path = small_disk.path / "cache.h5"
    small_disk.fill(leave=4 << 20)
    writer, error = _fill_until_error(path)
    rows = writer.rows_written
    writer.close()
    assert 0 < rows < WIDE_N
    message = str(error)
    assert message.startswith(f"{partial_path(path)}: No space left on device (")
    assert message.endswith(f"free some space and rerun to resume after {rows} rows")
    assert "\n" not in message
    small_disk.empty()
    assert _write(path, WIDE, WIDE_N, WIDE_ROWS) == rows  # resumed, not restarted
    assert _fingerprint(path) == wide_reference


def test_a_write_that_fails_anyway_ends_cleanly_and_the_next_run_starts_over(
        small_disk, wide_reference, monkeypatch):
    # Another process takes the room between the check and the write: HDF5's own write
    # fails. Its file cannot be trusted any more, so it goes; nothing crashes.
    monkeypatch.setattr(writer_module, "_free_bytes", lambda folder: None)
    path = small_disk.path / "cache.h5"
    small_disk.fill(leave=4 << 20)
    writer, error = _fill_until_error(path)
    writer.close()  # as extract's error path does: harmless after the failure
    assert str(error) == (f"{partial_path(path)}: No space left on device while writing the "
                          "cache; removed the unfinished file, free some space and rerun (the "
                          "cache starts over)")
    assert not os.path.lexists(partial_path(path))
    small_disk.empty()
    assert _write(path, WIDE, WIDE_N, WIDE_ROWS) == 0
    assert _fingerprint(path) == wide_reference


def _cut_end_of_address_space(partial):
    """Make ``partial`` what a flush cut short by a full disk left: chunk index entries
    pointing past the end of the file's address space (version-0 superblock's EOA field)."""
    data = bytearray(partial.read_bytes())
    assert data[:8] == b"\x89HDF\r\n\x1a\n" and data[8] == 0 and data[13] == 8
    offsets = []
    with h5py.File(partial) as f:
        f["ids"].id.chunk_iter(lambda chunk: offsets.append(chunk.byte_offset))
    struct.pack_into("<Q", data, 40, min(offsets))
    partial.write_bytes(data)


def test_a_partial_file_a_cut_flush_damaged_is_found_and_started_over(tmp_path, caplog):
    # Such a file (left by an older mmal on a full disk) resumed "after 0 rows", then
    # failed on every run with "addr overflow"; only --no-resume recovered.
    reference = tmp_path / "reference.h5"
    _write(reference)
    path = tmp_path / "cache.h5"
    writer = CacheWriter(path, META, N)
    for batch, _ in zip(random_batches(META, N, ROWS), range(3), strict=False):
        writer.append(batch)
    writer.close()
    _cut_end_of_address_space(partial_path(path))
    with caplog.at_level(logging.WARNING, logger="mmal.cache.writer"):
        assert _write(path) == 0
    assert "cache.h5.partial is damaged (Error iterating over dataset chunks (addr overflow" \
        in caplog.text
    assert _fingerprint(path) == _fingerprint(reference)


def test_a_cache_is_recognised_for_force_by_its_stamp(tmp_path):
    path = tmp_path / "cache.h5"
    _write(path)
    assert writer_module.is_cache_file(path)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    assert not writer_module.is_cache_file(tmp_path / "other.h5")
    (tmp_path / "index.json").write_text('{"mmal_type": "mmal-index-file"}')
    assert not writer_module.is_cache_file(tmp_path / "index.json")
    with pytest.raises(CacheError, match="other.h5: is not an mmal feature cache; --force "
                                         "replaces only an mmal feature cache: move it away"):
        CacheWriter(tmp_path / "other.h5", META, N, overwrite=True)
