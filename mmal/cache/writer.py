"""Crash-safe, resumable writer of feature caches.

The cache is written to ``<path>.partial`` and renamed to ``<path>`` only once
every row and the head are in and the content fingerprint is stamped, so an
interrupted write never looks like a complete cache. The partial file records
how many rows are safely on disk (``rows_written``, updated after each batch is
flushed); reopening a compatible partial file resumes after those rows.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mmal.cache.integrity import read_dataset
from mmal.cache.schema import (
    CACHE_TYPE,
    SCHEMA_VERSION,
    CacheMeta,
    field_specs,
    head_specs,
)
from mmal.errors import CacheError, preview
from mmal.stamp import stamp

log = logging.getLogger(__name__)

_TARGET_CHUNK_BYTES = 1 << 20


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
        if self.path.exists() and not overwrite:
            raise CacheError(f"{self.path}: already exists; pass --force to replace it")
        self._specs = {s.path: s for s in field_specs(meta)}
        self._head_specs = {s.path: s for s in head_specs(meta)}
        self._file = self._open_partial(resume)

    # -- opening -----------------------------------------------------------------

    def _open_partial(self, resume: bool) -> h5py.File:
        if resume and self.partial.exists():
            f = self._try_resume()
            if f is not None:
                return f
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = h5py.File(self.partial, "w")
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
        f.flush()
        return f

    def _try_resume(self) -> h5py.File | None:
        try:
            f = h5py.File(self.partial, "r+")
        except OSError as exc:
            log.warning("%s is unreadable (%s); starting the cache over", self.partial, exc)
            return None
        same = (
            f.attrs.get("mmal_type") == CACHE_TYPE
            and int(f.attrs.get("schema_version", -1)) == SCHEMA_VERSION
            and int(f.attrs.get("num_samples", -1)) == self.num_samples
            and all(f.attrs.get(k) == v for k, v in self.meta.to_attrs().items())
        )
        if not same:
            f.close()
            log.warning("%s was written for other settings; starting the cache over", self.partial)
            return None
        log.warning("resuming %s after %d rows (written before an interruption)", self.partial,
                    int(f.attrs["rows_written"]))
        return f

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
            ``labels``, ``features/<m>``, ``logits/mm``, ``logits/<m>``,
            ``coalitions`` and ``mc_logits`` when ``meta.mc_samples > 0``),
            each with the same leading length ``b``.
        """
        missing = sorted(set(self._specs) - set(batch))
        unknown = sorted(set(batch) - set(self._specs))
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
            self._file[p][start:start + b] = arr.astype(spec.dtype, copy=False)
        self._file.flush()
        self._file.attrs["rows_written"] = start + b
        self._file.flush()

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
        self._file.flush()

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
        self._file.flush()
        self._file.close()
        os.replace(self.partial, self.path)
        _fsync_dir(self.path.parent)
        return self.path

    def close(self) -> None:
        """Close without finishing; the partial file stays for a later resume."""
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.finalize()
        else:
            self.close()


def content_fingerprint(f: h5py.File, block_rows: int = 65536) -> str:
    """SHA-256 over the schema's fields and metadata, streamed in row blocks."""
    meta = CacheMeta.from_attrs(f.attrs, str(f.filename))
    digest = hashlib.sha256()
    for key, value in sorted(meta.to_attrs().items()):
        digest.update(f"{key}={value};".encode())
    for spec in [*field_specs(meta), *head_specs(meta)]:
        ds = f[spec.path]
        digest.update(spec.path.encode())
        n = ds.shape[0] if ds.ndim else 1
        for start in range(0, n, block_rows):
            block = read_dataset(ds, slice(start, start + block_rows), f.filename, spec.path)
            digest.update(np.ascontiguousarray(block).tobytes())
    return digest.hexdigest()[:32]


def _chunk_shape(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    rows = max(1, min(shape[0], _TARGET_CHUNK_BYTES // max(row_bytes, 1)))
    return (rows, *shape[1:])


def _duplicates(ids: np.ndarray) -> np.ndarray:
    values, counts = np.unique(ids, return_counts=True)
    return values[counts > 1]


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
