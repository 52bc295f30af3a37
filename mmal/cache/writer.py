"""Crash-safe, resumable writer of feature caches.

The cache is written to ``<path>.partial`` and renamed to ``<path>`` only once
every row and the head are in and the content fingerprint is stamped, so an
interrupted write never looks like a complete cache. The partial file records
how many rows are safely on disk (``rows_written``, updated after each batch is
flushed); reopening a compatible partial file resumes after those rows.

The partial file is created exclusively (never through a link planted at its
name) and HDF5 reaches it through :class:`_DiskFile`, mmal's own descriptor. A
write that fails (a full disk) never reaches HDF5, which could not close the
file after it and would crash the process at exit; the writer instead closes
cleanly, removes the partial file and raises a one-line :class:`CacheError`.
Before each batch it checks that the disk has room for it, so a disk that
fills up usually stops the writer between batches, with the partial file
intact for a resume.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import h5py
import numpy as np

from mmal.atomic import check_replaceable, publish
from mmal.cache.integrity import check_structure, read_dataset
from mmal.cache.schema import (
    CACHE_TYPE,
    SCHEMA_VERSION,
    CacheMeta,
    field_specs,
    head_specs,
)
from mmal.errors import CacheError, one_line, preview
from mmal.stamp import carries, stamp

log = logging.getLogger(__name__)

_TARGET_CHUNK_BYTES = 1 << 20
#: Room kept free beyond a batch's chunks for HDF5's own bookkeeping (chunk index, headers).
_METADATA_SLACK_BYTES = 256 << 10


def partial_path(path: str | os.PathLike) -> Path:
    """Where an unfinished cache for ``path`` lives."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


class CacheWriter:
    """Write a cache of ``num_samples`` rows in batches.

    Parameters
    ----------
    path : path-like
        Final location of the cache (``.h5``).
    meta : CacheMeta
        Metadata; fixes every field's shape and dtype.
    num_samples : int
        ``N``, the number of pool samples the finished cache holds.
    overwrite : bool
        Replace an existing complete cache at ``path``; otherwise that is an error.
    resume : bool
        Continue a compatible ``.partial`` file instead of starting over.

    Examples
    --------
    >>> with CacheWriter("cache.h5", meta, num_samples=n) as w:  # doctest: +SKIP
    ...     for batch in batches[w.rows_written // batch_size:]:
    ...         w.append(batch)
    ...     w.write_head(weight, bias)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        meta: CacheMeta,
        num_samples: int,
        *,
        overwrite: bool = False,
        resume: bool = True,
    ) -> None:
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.meta = meta
        self.num_samples = int(num_samples)
        if self.num_samples < 1:
            raise CacheError(f"{self.path}: a cache needs at least one sample")
        if os.path.lexists(self.path):
            if not overwrite:
                raise CacheError(f"{self.path}: already exists; pass --force to replace it")
            check_replaceable(self.path, what="an mmal feature cache", error=CacheError,
                              is_kind=is_cache_file)
        self._specs = {s.path: s for s in field_specs(meta)}
        self._head_specs = {s.path: s for s in head_specs(meta)}
        self._disk: _DiskFile | None = None
        self._file: h5py.File | None = None
        self._chunk_rows: dict[str, int] | None = None  # rows per chunk, for the room check
        self._file = self._open_partial(resume)

    # -- opening -----------------------------------------------------------------

    def _open_partial(self, resume: bool) -> h5py.File:
        if resume:
            f = self._try_resume()
            if f is not None:
                return f
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _discard(self.partial)
        try:
            fd = os.open(self.partial, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            raise CacheError(f"{self.partial}: was created by another process while this one "
                             "started the cache; let one mmal write it at a time") from None
        self._disk = _DiskFile(fd, self.partial)
        f = self._file = h5py.File(self._disk, "w")
        f.attrs.update(stamp(CACHE_TYPE, SCHEMA_VERSION))
        f.attrs.update(self.meta.to_attrs())
        f.attrs.update({"num_samples": self.num_samples, "rows_written": 0,
                        "head_written": False, "complete": False})
        for spec in self._specs.values():
            shape = (self.num_samples, *spec.row_shape)
            f.create_dataset(spec.path, shape=shape, dtype=spec.dtype,
                             chunks=_chunk_shape(shape, spec.dtype), fletcher32=True)
        for spec in self._head_specs.values():  # chunked by h5py, as a checksum needs chunks
            f.create_dataset(spec.path, shape=spec.row_shape, dtype=spec.dtype, fletcher32=True)
        self._flush()
        return f

    def _try_resume(self) -> h5py.File | None:
        """The partial file opened for appending, or None (after a warning) to start over."""
        try:
            disk = _DiskFile.open_existing(self.partial)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("%s is unusable (%s); starting the cache over", self.partial,
                        one_line(exc))
            return None
        try:
            f = h5py.File(disk, "r+")
        except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError for bad files
            disk.close()
            log.warning("%s is unreadable (%s); starting the cache over", self.partial,
                        one_line(exc, limit=200))
            return None
        problem = self._resume_problem(f, disk)
        if problem is not None:
            f.close()
            disk.close()
            log.warning("%s %s; starting the cache over", self.partial, problem)
            return None
        self._disk = disk
        log.warning("resuming %s after %d rows (written before an interruption)", self.partial,
                    int(f.attrs["rows_written"]))
        return f

    def _resume_problem(self, f: h5py.File, disk: _DiskFile) -> str | None:
        """Why ``f`` cannot be continued ("was written for other settings"), or None."""
        try:
            check_structure(f, self.partial)  # a planted partial may link elsewhere: never write there
            same = (
                f.attrs.get("mmal_type") == CACHE_TYPE
                and int(f.attrs.get("schema_version", -1)) == SCHEMA_VERSION
                and int(f.attrs.get("num_samples", -1)) == self.num_samples
                and all(f.attrs.get(k) == v for k, v in self.meta.to_attrs().items())
            )
            if not same:
                return "was written for other settings"
            return _damage(f, disk, self._specs.values(), self._head_specs.values(),
                           self.num_samples)
        except Exception as exc:  # a damaged file fails in many ways; all mean: start over
            return f"is damaged ({one_line(exc, limit=200)})"

    # -- writing -----------------------------------------------------------------

    @property
    def rows_written(self) -> int:
        """Rows safely on disk; a resumed writer continues from here."""
        return int(self._file.attrs["rows_written"])

    def append(self, batch: Mapping[str, Any]) -> None:
        """Append one batch of rows.

        Parameters
        ----------
        batch : mapping of field path to array
            Every per-sample field of the schema (``ids``, ``labeled``,
            ``labels``, ``features/<m>``, ``head_input`` when the fusion
            stores it (``meta.stores_head_input``), ``logits/mm``,
            ``logits/<m>``, ``coalitions`` and ``mc_logits`` when
            ``meta.mc_samples > 0``), each with the same leading length ``b``.
        """
        missing = sorted(set(self._specs) - set(batch))
        unknown = sorted(set(batch) - set(self._specs))
        if "head_input" in missing or "head_input" in unknown:
            raise CacheError(
                f"{self.partial}: " + (
                    f"{self.meta.fusion} fusion stores its head input: the batch needs the "
                    "field 'head_input'" if "head_input" in missing else
                    f"{self.meta.fusion} fusion computes its head input from the features: the "
                    "batch must not have the field 'head_input'"))
        if missing or unknown:
            raise CacheError(
                f"{self.partial}: batch fields disagree with the schema "
                f"(missing {missing}, unknown {unknown})"
            )
        arrays = {p: np.asarray(batch[p]) for p in self._specs}
        b = len(arrays["ids"])
        start = self.rows_written
        if start + b > self.num_samples:
            raise CacheError(
                f"{self.partial}: {start + b} rows exceed the {self.num_samples} declared"
            )
        for p, spec in self._specs.items():
            arr = arrays[p]
            if arr.shape != (b, *spec.row_shape):
                raise CacheError(
                    f"{self.partial}: field '{p}' has shape {arr.shape}, "
                    f"expected {(b, *spec.row_shape)}"
                )
            if spec.finite and not np.all(np.isfinite(arr)):
                bad = np.asarray(arrays["ids"])[~np.isfinite(arr).reshape(b, -1).all(axis=1)]
                raise CacheError(
                    f"{self.partial}: field '{p}' has NaN or Inf for sample ids "
                    f"{preview(bad)}; check the model and inputs of those samples"
                )
        self._check_space(start, b)
        for p, spec in self._specs.items():
            self._file[p][start:start + b] = arrays[p].astype(spec.dtype, copy=False)
        self._flush()
        self._file.attrs["rows_written"] = start + b
        self._flush()

    def write_head(self, weight: Any, bias: Any) -> None:
        """Store the multimodal head: ``weight`` (K, D_fused), ``bias`` (K,)."""
        for spec, value in zip(self._head_specs.values(), (weight, bias), strict=True):
            arr = np.asarray(value, dtype=spec.dtype)
            if arr.shape != spec.row_shape:
                raise CacheError(
                    f"{self.partial}: field '{spec.path}' has shape {arr.shape}, "
                    f"expected {spec.row_shape}"
                )
            if not np.all(np.isfinite(arr)):
                raise CacheError(f"{self.partial}: field '{spec.path}' has NaN or Inf")
            self._file[spec.path][...] = arr
        self._file.attrs["head_written"] = True
        self._flush()

    def finalize(self) -> Path:
        """Check completeness, stamp the fingerprint, rename into place."""
        if self.rows_written != self.num_samples:
            raise CacheError(
                f"{self.partial}: only {self.rows_written} of {self.num_samples} rows written"
            )
        if not bool(self._file.attrs["head_written"]):
            raise CacheError(f"{self.partial}: the head was never written (call write_head)")
        ids = self._file["ids"][:]
        if len(np.unique(ids)) != len(ids):
            raise CacheError(f"{self.partial}: duplicate sample ids {preview(_duplicates(ids))}")
        self._file.attrs["content_fingerprint"] = content_fingerprint(self._file)
        self._file.attrs["complete"] = True
        self._flush()
        self._file.close()
        self._check_disk()
        try:
            os.fsync(self._disk.fd)  # the bytes are on disk before the name says "complete"
        except OSError as exc:
            self._disk.error = exc
            self._check_disk()
        self._disk.close()
        try:
            publish(self.partial, self.path)
        except OSError as exc:
            raise CacheError(f"{self.path}: cannot be replaced ({exc.strerror}); the finished "
                             f"cache stays at {self.partial}") from None
        return self.path

    def close(self) -> None:
        """Close without finishing; the partial file stays for a later resume.

        Unless a write failed while closing (a full disk): then the partial
        file, which no longer holds what HDF5 wrote, is removed.
        """
        if self._file is not None and self._file.id.valid:
            self._file.close()
        if self._disk is not None and not self._disk.closed:
            self._disk.close()
            if self._disk.error is not None:
                log.warning("%s: %s while closing it; removed it, the next run starts the "
                            "cache over", self.partial, self._disk.error.strerror)
                self.partial.unlink(missing_ok=True)

    # -- disk errors and room ------------------------------------------------------

    def _flush(self) -> None:
        """Flush HDF5's buffers to the file; a failed write ends the writer (_check_disk)."""
        self._file.flush()
        self._check_disk()

    def _check_disk(self) -> None:
        """Raise CacheError, after removing the partial file, if a write to it failed."""
        if self._disk is not None and self._disk.error is not None:
            self._fail(self._disk.error)

    def _fail(self, error: OSError) -> NoReturn:
        # HDF5 never saw the failed write, so closing is clean; the file on disk is not
        # what HDF5 believes it wrote, so it must not be resumed.
        if self._file is not None and self._file.id.valid:
            self._file.close()
        self._disk.close()
        self.partial.unlink(missing_ok=True)
        fix = ("free some space and rerun" if error.errno in _FULL
               else "check the disk and rerun")
        raise CacheError(f"{self.partial}: {error.strerror or error} while writing the cache; "
                         f"removed the unfinished file, {fix} (the cache starts over)")

    def _check_space(self, start: int, b: int) -> None:
        """Raise CacheError when the disk lacks room for rows ``start:start + b``.

        Stopping here, before any byte of the batch is written, leaves the
        partial file as it was after the last batch: a rerun resumes from it.
        """
        if self._chunk_rows is None:
            self._chunk_rows = {p: self._file[p].chunks[0] for p in self._specs}
        need = _METADATA_SLACK_BYTES
        for p, spec in self._specs.items():
            rows = self._chunk_rows[p]
            first = -(-start // rows) * rows  # chunks starting in the batch are new on disk
            need += len(range(first, start + b, rows)) * rows * _row_bytes(spec)
        free = _free_bytes(self.partial.parent)
        if free is not None and free < need:
            raise CacheError(
                f"{self.partial}: No space left on device ({free / 2**20:.1f} MiB free, the "
                f"next batch needs about {need / 2**20:.1f} MiB); free some space and rerun "
                f"to resume after {self.rows_written} rows")

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.finalize()
        else:
            self.close()


#: Bytes of one field read per block by :func:`content_fingerprint`: the hash
#: streams a pool larger than memory with this much resident.
FINGERPRINT_BLOCK_BYTES = 64 << 20


def content_fingerprint(f: h5py.File, block_bytes: int = FINGERPRINT_BLOCK_BYTES) -> str:
    """SHA-256 over the schema's fields and metadata, streamed in row blocks.

    The metadata is hashed as the file's schema version stores it, so a
    version-1 file's fingerprint is recomputed as the version-1 writer made it.
    Each field is read in blocks of about ``block_bytes``; the hash is the
    same for any block size.
    """
    meta = CacheMeta.from_attrs(f.attrs, str(f.filename))
    version = int(f.attrs.get("schema_version", 1))
    digest = hashlib.sha256()
    for key, value in sorted(meta.to_attrs(version).items()):
        digest.update(f"{key}={value};".encode())
    for spec in [*field_specs(meta), *head_specs(meta)]:
        ds = f[spec.path]
        digest.update(spec.path.encode())
        n = ds.shape[0] if ds.ndim else 1
        rows = max(1, block_bytes // max(1, _row_bytes(spec)))
        for start in range(0, n, rows):
            block = read_dataset(ds, slice(start, start + rows), f.filename, spec.path)
            digest.update(memoryview(np.ascontiguousarray(block)).cast("B"))  # no bytes copy
    return digest.hexdigest()[:32]


def _row_bytes(spec) -> int:
    return int(np.prod(spec.row_shape, dtype=np.int64)) * spec.dtype.itemsize


def _chunk_shape(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    rows = max(1, min(shape[0], _TARGET_CHUNK_BYTES // max(row_bytes, 1)))
    return (rows, *shape[1:])


def _duplicates(ids: np.ndarray) -> np.ndarray:
    values, counts = np.unique(ids, return_counts=True)
    return values[counts > 1]


#: errno values of a full disk or quota.
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_cache_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is an HDF5 file stamped as an mmal feature cache (any version)."""
    try:
        with h5py.File(path, "r") as f:
            return carries(f.attrs, CACHE_TYPE)
    except Exception:  # not HDF5, unreadable, damaged: not a cache --force may replace
        return False


class _DiskFile(io.RawIOBase):
    """The partial cache's bytes for h5py's ``fileobj`` driver, through a descriptor mmal owns.

    Why not h5py's own driver: when a write fails there (ENOSPC), HDF5 cannot
    flush or close the file any more ("Slist already enabled?") and the
    half-closed file crashes the process at exit (SIGSEGV). Here the first
    failed write is kept in ``error`` and every later write is dropped, so HDF5
    sees only successes and closes cleanly; the writer then reports ``error``
    and removes the file. The descriptor holds an exclusive ``flock``, so a
    second writer of the same partial file is refused.
    """

    def __init__(self, fd: int, path: Path):
        try:
            _lock(fd, path)
        except CacheError:
            os.close(fd)
            raise
        super().__init__()
        self.fd, self.path, self.pos = fd, path, 0
        self.error: OSError | None = None

    @classmethod
    def open_existing(cls, path: Path) -> _DiskFile:
        """Open a partial file to resume; OSError when it is a link or not a regular file."""
        # O_NOFOLLOW: a link is never followed (ELOOP); O_NONBLOCK: a FIFO does not hang
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        return cls(fd, path)

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos,
                os.SEEK_END: os.fstat(self.fd).st_size}[whence]
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view):
            got = os.preadv(self.fd, [view[done:]], self.pos + done)
            if got == 0:
                view[done:] = bytes(len(view) - done)  # past the end reads as zeros, as in HDF5
                break
            done += got
        self.pos += len(view)
        return len(view)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if self.error is None:
            try:
                done = 0
                while done < len(view):
                    done += os.pwrite(self.fd, view[done:], self.pos + done)
            except OSError as exc:
                self.error = exc
        self.pos += len(view)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        size = self.pos if size is None else size
        if self.error is None:
            try:
                os.ftruncate(self.fd, size)
            except OSError as exc:
                self.error = exc
        return size

    def flush(self) -> None:
        pass  # every write went straight to the descriptor

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


def _discard(partial: Path) -> None:
    """Remove an old partial file (or whatever has its name) before starting over.

    A link is removed, not followed. A folder is refused, and so is a file
    another process still writes (it holds the ``flock``).
    """
    try:
        fd = os.open(partial, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError:
        fd = None  # a link (ELOOP) or an unreadable entry: removing it is enough
    if fd is not None:
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                raise CacheError(f"{partial}: is a folder; move it away, mmal writes the "
                                 "unfinished cache under that name")
            if stat.S_ISREG(os.fstat(fd).st_mode):
                _lock(fd, partial)  # refused while another writer holds it
        finally:
            os.close(fd)
    partial.unlink(missing_ok=True)


def _lock(fd: int, path: Path) -> None:
    """Take ``fd``'s exclusive ``flock``; CacheError when another writer holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CacheError(f"{path}: another process is writing this cache; wait for it to "
                         "finish or stop it") from None
    except OSError:
        pass  # a filesystem without locks (some network mounts): go on unlocked


def _damage(f: h5py.File, disk: _DiskFile, specs, heads, num_samples: int) -> str | None:
    """What is wrong with a partial file's layout, or None; raises on a damaged file.

    A write interrupted by a full disk (before this writer guarded against it)
    left files whose chunk index points past the file's end ("addr overflow"
    on the next write): every chunk is located here, so such a file is found
    before resuming.
    """
    size = os.fstat(disk.fd).st_size
    for spec in specs:
        ds = f[spec.path]
        if ds.shape != (num_samples, *spec.row_shape):
            return f"has field '{spec.path}' of shape {ds.shape}"
        ends = _chunk_ends(ds)
        if ends and max(ends) > size:
            return f"is damaged (field '{spec.path}' has chunks past the end of the file)"
    for spec in heads:
        if f[spec.path].shape != spec.row_shape:
            return f"has field '{spec.path}' of shape {f[spec.path].shape}"
    rows = int(f.attrs["rows_written"])
    if not 0 <= rows <= num_samples:
        return f"says {rows} rows were written of {num_samples}"
    return None


def _chunk_ends(ds: h5py.Dataset) -> list[int]:
    """Where each stored chunk of ``ds`` ends in the file (reads the whole chunk index)."""
    ends: list[int] = []
    try:
        ds.id.chunk_iter(lambda chunk: ends.append(chunk.byte_offset + chunk.size))
    except AttributeError:  # HDF5 before 1.12.3 has no chunk iteration: one at a time
        for i in range(ds.id.get_num_chunks()):
            info = ds.id.get_chunk_info(i)
            ends.append(info.byte_offset + info.size)
    return ends


def _free_bytes(folder: Path) -> int | None:
    """Bytes an unprivileged writer may still use in ``folder``'s filesystem; None if unknown."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    if st.f_blocks == 0:  # pseudo filesystems report no sizes at all
        return None
    return st.f_bavail * st.f_frsize
