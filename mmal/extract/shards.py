"""Distributed extraction: one shard cache per rank, then rank 0 joins them into the round's cache.

Under torchrun every rank extracts a contiguous share of the pool's rows
(:func:`mmal.distributed.split_rows`, aligned to the batch size so each rank
runs exactly the batches a single process would) into its own cache file::

    rounds/RRR/cache.shards/rank-00001-of-00008.h5

Each shard is a complete, resumable cache written by
:class:`mmal.cache.CacheWriter` (its ``extra.shard`` records the rank, world
size and rows). Once every shard is finished, rank 0 copies them in row blocks,
in rank order, into ``rounds/RRR/cache.h5`` — the same rows, values, metadata
and content fingerprint as a single-process run — and removes the shard folder.

A rerun keeps every finished shard whose metadata still matches, resumes the
unfinished ones after their flushed rows, and resumes an interrupted join.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

from mmal.cache import CacheMeta, CacheWriter, open_cache, partial_path
from mmal.cache.schema import field_specs
from mmal.distributed import split_rows
from mmal.errors import CacheError, WorkspaceError

log = logging.getLogger(__name__)

SHARD_DIR = "cache.shards"
STALL_ENV = "MMAL_SHARD_STALL_S"
DEFAULT_STALL_S = 1800.0
JOIN_BLOCK_BYTES = 64 << 20


def shard_dir(cache: Path) -> Path:
    """Folder of the shards of ``cache`` (``rounds/RRR/cache.shards``)."""
    return cache.with_name(SHARD_DIR)


def shard_path(cache: Path, rank: int, world_size: int) -> Path:
    """Shard file of ``rank`` in a job of ``world_size`` ranks."""
    return shard_dir(cache) / f"rank-{rank:05d}-of-{world_size:05d}.h5"


def shard_meta(meta: CacheMeta, rank: int, world_size: int, rows: range) -> CacheMeta:
    """``meta`` plus ``extra.shard`` = {rank, world_size, rows: [start, stop]}."""
    shard = {"rank": rank, "world_size": world_size, "rows": [rows.start, rows.stop]}
    return replace(meta, extra={**meta.extra, "shard": shard})


def plan(num_rows: int, world_size: int, batch_size: int) -> list[range]:
    """Every rank's rows, in rank order (empty ranges for ranks without work)."""
    return [split_rows(num_rows, world_size, r, align=batch_size) for r in range(world_size)]


def shard_ready(path: Path, meta: CacheMeta, num_rows: int) -> bool:
    """True when ``path`` is a finished shard written for exactly ``meta`` and ``num_rows``."""
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            attrs = f.attrs
            return (bool(attrs.get("complete", False))
                    and int(attrs.get("num_samples", -1)) == num_rows
                    and all(attrs.get(k) == v for k, v in meta.to_attrs().items()))
    except OSError:
        return False


def wait_for_shards(expected: list[tuple[int, Path, CacheMeta, int]], *,
                    stall_s: float | None = None, poll_s: float = 0.5,
                    clock: Callable[[], float] = time.monotonic) -> None:
    """Block until every ``(rank, path, meta, rows)`` shard is finished.

    Waiting lasts as long as some unfinished shard's partial file keeps
    changing; after ``stall_s`` seconds (default ``MMAL_SHARD_STALL_S`` or
    1800) without any change it raises :class:`WorkspaceError` naming the
    ranks whose shards are missing.
    """
    stall_s = stall_timeout() if stall_s is None else stall_s
    last, last_change = None, clock()
    while True:
        waiting = [(r, p) for r, p, m, n in expected if not shard_ready(p, m, n)]
        if not waiting:
            return
        signature = [_stat(partial_path(p)) for _, p in waiting]
        if signature != last:
            last, last_change = signature, clock()
        elif clock() - last_change > stall_s:
            ranks = ", ".join(str(r) for r, _ in waiting)
            raise WorkspaceError(
                f"rank(s) {ranks} did not finish {waiting[0][1]}"
                f"{' and others' if len(waiting) > 1 else ''}: no progress for {stall_s:.0f} s "
                "(the rank died or hangs, or the workspace is not on storage every node shares); "
                "see torchrun's report, then rerun the same command to resume the unfinished shards")
        time.sleep(poll_s)


def join_shards(cache: Path, meta: CacheMeta, shards: list[tuple[Path, range]], num_rows: int, *,
                overwrite: bool, resume: bool) -> Path:
    """Copy finished ``shards`` (path, pool rows), in order, into the cache at ``cache``.

    The copy goes through :class:`CacheWriter` with the single-process ``meta``,
    so the result (values, ids order, content fingerprint) is the cache one
    process would write; an interrupted join resumes after its flushed rows.
    """
    covered = [rows for _, rows in shards]
    if [r.start for r in covered] != [0, *[r.stop for r in covered[:-1]]] or \
            covered[-1].stop != num_rows:
        raise CacheError(f"{shard_dir(cache)}: shards do not cover rows 0..{num_rows} in order")
    specs = field_specs(meta)
    block = max(1, JOIN_BLOCK_BYTES // sum(s.dtype.itemsize * int(np.prod(s.row_shape))
                                           for s in specs))
    writer = CacheWriter(cache, meta, num_rows, overwrite=overwrite, resume=resume)
    try:
        head = None
        for path, rows in shards:
            with open_cache(path) as shard:
                head = _same_head(head, shard.head(), path)
                first = max(writer.rows_written - rows.start, 0)
                for lo in range(first, len(rows), block):
                    hi = min(lo + block, len(rows))
                    writer.append({s.path: shard.read(s.path, slice(lo, hi)) for s in specs})
        writer.write_head(*head)
        return writer.finalize()
    except BaseException:
        writer.close()
        raise


def stall_timeout() -> float:
    """Seconds a shard may go without progress: ``MMAL_SHARD_STALL_S`` or 1800."""
    raw = os.environ.get(STALL_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_STALL_S
    except ValueError:
        value = -1.0
    if value <= 0:
        raise WorkspaceError(f"environment variable {STALL_ENV}={raw!r}: expected a positive "
                             "number of seconds, e.g. 1800")
    return value


def _same_head(head, new, path: Path):
    if head is not None and not all(np.array_equal(a, b) for a, b in zip(head, new, strict=True)):
        raise CacheError(f"{path}: its head differs from the first shard's; the model changed "
                         "during extraction, rerun with --force")
    return new


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
