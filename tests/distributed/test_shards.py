"""mmal.extract.shards: shard identity, waiting with a stall limit, joining in row blocks."""

from __future__ import annotations

import numpy as np
import pytest

from mmal.cache import CacheWriter, open_cache, partial_path
from mmal.cache.synthetic import make_synthetic_cache
from mmal.errors import WorkspaceError
from mmal.extract import shards


def _split_cache(tmp_path, n=50, world=3, batch=8, **synthetic):
    """A synthetic cache and its rows written as ``world`` shard files."""
    whole = make_synthetic_cache(tmp_path / "whole.h5", num_samples=n, seed=1, **synthetic)
    cache = tmp_path / "rounds" / "000" / "cache.h5"
    with open_cache(whole) as src:
        meta = src.meta
        out = []
        for rank, rows in enumerate(shards.plan(n, world, batch)):
            smeta = shards.shard_meta(meta, rank, world, rows)
            path = shards.shard_path(cache, rank, world)
            with CacheWriter(path, smeta, len(rows)) as w:
                w.append({s: src.read(s, slice(rows.start, rows.stop)) for s in src._specs})
                w.write_head(*src.head())
            out.append((rank, path, smeta, len(rows)))
    return whole, cache, meta, out


def test_join_equals_the_whole_cache_and_resumes(tmp_path, monkeypatch):
    whole, cache, meta, parts = _split_cache(tmp_path)
    rows = shards.plan(50, 3, 8)
    assert [len(r) for r in rows] == [16, 16, 18]
    monkeypatch.setattr(shards, "JOIN_BLOCK_BYTES", 1)  # one row per block
    real, calls = CacheWriter.append, [0]

    def failing(self, batch):
        calls[0] += 1
        if calls[0] == 21:
            raise RuntimeError("disk full")
        real(self, batch)

    monkeypatch.setattr(CacheWriter, "append", failing)
    joined = [(p, rows[r]) for r, p, _, _ in parts]
    with pytest.raises(RuntimeError, match="disk full"):
        shards.join_shards(cache, meta, joined, 50, overwrite=False, resume=True)
    assert partial_path(cache).exists() and not cache.exists()
    monkeypatch.setattr(CacheWriter, "append", real)
    shards.join_shards(cache, meta, joined, 50, overwrite=False, resume=True)
    with open_cache(cache) as got, open_cache(whole) as want:
        assert got.fingerprint == want.fingerprint
        for spec in want._specs:
            np.testing.assert_array_equal(got.read(spec), want.read(spec), err_msg=spec)


def test_join_of_an_nl_gate_cache_carries_its_head_input(tmp_path):
    whole, cache, meta, parts = _split_cache(tmp_path, feature_dims=(6, 6), fusion="nl-gate")
    rows = shards.plan(50, 3, 8)
    shards.join_shards(cache, meta, [(p, rows[r]) for r, p, _, _ in parts], 50, overwrite=False,
                       resume=True)
    with open_cache(cache) as got, open_cache(whole) as want:
        assert got.fingerprint == want.fingerprint and got.meta.fused_dim == 6
        np.testing.assert_array_equal(got.head_input(), want.head_input())


def test_shard_ready_requires_matching_finished_file(tmp_path):
    _, cache, meta, parts = _split_cache(tmp_path)
    rank, path, smeta, count = parts[1]
    assert shards.shard_ready(path, smeta, count)
    assert not shards.shard_ready(path, smeta, count + 1)
    other_split = shards.shard_meta(meta, 1, 2, range(16, 50))
    assert not shards.shard_ready(path, other_split, count)
    assert not shards.shard_ready(shards.shard_path(cache, 5, 9), smeta, count)


def test_wait_names_the_ranks_that_stopped(tmp_path):
    _, cache, meta, parts = _split_cache(tmp_path)
    missing = shards.shard_path(cache, 3, 4)
    partial_path(missing).write_bytes(b"x")
    expected = [*parts, (3, missing, shards.shard_meta(meta, 3, 4, range(50, 60)), 10)]
    ticks = iter(range(0, 1000, 10))
    with pytest.raises(WorkspaceError, match=r"rank\(s\) 3 did not finish .*rank-00003-of-00004"
                                             r"\.h5: no progress for 25 s"):
        shards.wait_for_shards(expected, stall_s=25, poll_s=0, clock=lambda: next(ticks))
    shards.wait_for_shards(parts, stall_s=25, poll_s=0)  # all finished: returns at once
