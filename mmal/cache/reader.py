"""Lazy, validating reader of feature caches.

:func:`open_cache` refuses links and outside storage
(:func:`~mmal.cache.integrity.check_structure`), then checks the stamp, the
metadata and every field's shape and dtype without reading the data. Arrays
are read on request; a chunk that fails its checksum raises, and finite-valued
fields (features, logits, coalitions) are checked for NaN and Inf as they are
read, the error naming the sample ids that carry them.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mmal.cache.fusion import head_input
from mmal.cache.integrity import REEXTRACT, check_structure, damaged_file, read_dataset
from mmal.cache.schema import (
    CACHE_TYPE,
    SCHEMA_VERSION,
    CacheMeta,
    FieldSpec,
    attr_text,
    field_specs,
    head_specs,
)
from mmal.cache.writer import _duplicates, content_fingerprint, partial_path
from mmal.errors import CacheError, preview
from mmal.stamp import check_stamp

Rows = slice | np.ndarray | None


#: What to do about a cache whose structure is wrong.
_REWRITE = "re-extract it (`mmal extract --force`) or rewrite it with mmal's CacheWriter"


def open_cache(path: str | os.PathLike) -> Cache:
    """Open and validate the cache at ``path`` (no data is loaded).

    Raises
    ------
    CacheError
        Naming the file and the field when anything is missing or malformed.
    """
    path = Path(path)
    if not path.exists():
        hint = (
            f"; an interrupted write is at {partial_path(path)}, rerun the command that "
            "wrote it to resume" if partial_path(path).exists() else "; run `mmal extract` first"
        )
        raise CacheError(f"{path}: no such cache file{hint}")
    if not path.is_file():  # a FIFO or device would block or never end; a folder is no cache
        raise CacheError(f"{path}: is not a regular file; pass a cache written by mmal")
    if not h5py.is_hdf5(path):
        raise CacheError(f"{path}: is not an HDF5 file; pass a cache written by mmal")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise CacheError(
            f"{path}: cannot be opened, the file is truncated or corrupted "
            f"({str(exc).splitlines()[0]}); rewrite it"
        ) from None
    try:
        with damaged_file(path):
            return Cache(f, path)
    except BaseException:
        f.close()
        raise


class Cache:
    """A validated, open feature cache. Use :func:`open_cache` to make one.

    Attributes
    ----------
    path : Path
    meta : CacheMeta
    num_samples : int
        ``N``.
    fingerprint : str
        Content fingerprint stamped by the writer (data and metadata).
    """

    def __init__(self, f: h5py.File, path: Path) -> None:
        self._f = f
        self.path = path
        check_structure(f, path)  # first: every read below stays inside this file
        attrs = f.attrs
        self.schema_version = check_stamp(
            attrs, expected_type=CACHE_TYPE, supported=SCHEMA_VERSION,
            path=str(path), error=CacheError,
        )
        if not bool(attrs.get("complete", False)):
            raise CacheError(f"{path}: the cache is incomplete (an interrupted write); rewrite it")
        self.meta = CacheMeta.from_attrs(attrs, str(path))
        self.num_samples = int(attrs.get("num_samples", -1))
        self.fingerprint = attr_text(attrs, "content_fingerprint", str(path))
        self.created = attr_text(attrs, "created", str(path))
        self.mmal_version = attr_text(attrs, "mmal_version", str(path))
        self._specs = {s.path: s for s in field_specs(self.meta)}
        for spec in self._specs.values():
            self._check_field(spec, (self.num_samples, *spec.row_shape))
        for spec in head_specs(self.meta):
            self._check_field(spec, spec.row_shape)
        if "head_input" in f and "head_input" not in self._specs:
            raise CacheError(
                f"{path}: has a field 'head_input' that {self.meta.fusion} fusion computes from "
                f"the features and never stores; {_REWRITE}")
        ids = self.ids
        if len(np.unique(ids)) != len(ids):
            raise CacheError(
                f"{path}: field 'ids' has duplicate sample ids {preview(_duplicates(ids))}; "
                "every pool sample needs its own id"
            )
        self._check_labels()

    def _check_field(self, spec: FieldSpec, shape: tuple[int, ...]) -> None:
        if spec.path not in self._f:
            raise CacheError(f"{self.path}: field '{spec.path}' is missing; rewrite the cache")
        ds = self._f[spec.path]
        if not isinstance(ds, h5py.Dataset):
            raise CacheError(f"{self.path}: field '{spec.path}' is not a dataset; {_REWRITE}")
        if ds.shape != shape:
            raise CacheError(
                f"{self.path}: field '{spec.path}' has shape {ds.shape}, expected {shape}; "
                f"{_REWRITE}"
            )
        if ds.dtype != spec.dtype:
            raise CacheError(
                f"{self.path}: field '{spec.path}' has dtype {ds.dtype}, expected {spec.dtype}; "
                f"{_REWRITE}"
            )

    def _check_labels(self) -> None:
        labels, labeled = self.labels, self.labeled
        k = self.meta.num_classes
        if self.meta.multi_label:
            bad_unlabeled = ~labeled & np.any(labels != -1, axis=1)
            bad_labeled = labeled & np.any((labels != 0) & (labels != 1), axis=1)
        else:
            bad_unlabeled = ~labeled & (labels != -1)
            bad_labeled = labeled & ((labels < 0) | (labels >= k))
        if bad_unlabeled.any():
            raise CacheError(
                f"{self.path}: field 'labels' holds labels of unlabeled samples "
                f"(ids {preview(self.ids[bad_unlabeled])}); they must be -1"
            )
        if bad_labeled.any():
            rule = "0 or 1 per class" if self.meta.multi_label else f"in [0, {k})"
            raise CacheError(
                f"{self.path}: field 'labels' is not {rule} for labeled ids "
                f"{preview(self.ids[bad_labeled])}; fix those labels or {_REWRITE}"
            )

    # -- per-sample arrays ---------------------------------------------------------

    @cached_property
    def ids(self) -> np.ndarray:
        """(N,) int64 sample ids."""
        return self._read_raw("ids", slice(None))

    @cached_property
    def labeled(self) -> np.ndarray:
        """(N,) bool, True where the learner knows the label."""
        return self._read_raw("labeled", slice(None))

    @cached_property
    def labels(self) -> np.ndarray:
        """(N,) int64 class, or (N, K) int8 for multi-label; -1 where unlabeled."""
        return self._read_raw("labels", slice(None))

    def _read_raw(self, field: str, selection: Any) -> np.ndarray:
        """``field`` at ``selection``, unchecked but for damage (one-line error)."""
        return read_dataset(self._f[field], selection, self.path, field)

    @property
    def num_labeled(self) -> int:
        return int(self.labeled.sum())

    @property
    def num_unlabeled(self) -> int:
        return self.num_samples - self.num_labeled

    def read(self, field: str, rows: Rows = None) -> np.ndarray:
        """Read ``field`` (a schema path such as ``features/image``) for ``rows``.

        ``rows`` is None (all), a slice, or an increasing int array of positions.
        Finite-valued fields raise :class:`CacheError` naming the ids with NaN/Inf.
        """
        spec = self._specs.get(field) or {s.path: s for s in head_specs(self.meta)}.get(field)
        if spec is None:
            hint = " (the cache has no MC-dropout logits; rerun `mmal extract --mc-dropout T`)" \
                if field == "mc_logits" else ""
            raise CacheError(f"{self.path}: field '{field}' is not in this cache{hint}")
        data = self._read_raw(field, () if self._f[field].ndim == 0 else _as_selection(rows))
        if spec.finite:
            finite = np.isfinite(data)
            if not finite.all():
                if field.startswith("head/"):
                    raise CacheError(f"{self.path}: field '{field}' has NaN or Inf; {_REWRITE}")
                row_ok = finite.reshape(len(data), -1).all(axis=1)
                ids = self.ids[_as_selection(rows)] if rows is not None else self.ids
                raise CacheError(
                    f"{self.path}: field '{field}' has NaN or Inf for sample ids "
                    f"{preview(ids[~row_ok])}; re-extract the cache or drop those samples"
                )
        return data

    def features(self, modality: str, rows: Rows = None) -> np.ndarray:
        """(n, D_m) embedding block of ``modality`` as stored (float32 or float16)."""
        if modality not in self.meta.modalities:
            raise CacheError(
                f"{self.path}: no modality {modality!r}; it has {list(self.meta.modalities)}"
            )
        return self.read(f"features/{modality}", rows)

    def logits(self, name: str = "mm", rows: Rows = None) -> np.ndarray:
        """(n, K) float32 logits of the multimodal head (``mm``) or one modality's head."""
        return self.read(f"logits/{name}", rows)

    def coalitions(self, rows: Rows = None) -> np.ndarray:
        """(n, 2^M, K) float32 multimodal logits of every modality coalition."""
        return self.read("coalitions", rows)

    def mc_logits(self, rows: Rows = None) -> np.ndarray:
        """(n, T, K) float32 MC-dropout logits; error when the cache has none."""
        return self.read("mc_logits", rows)

    def head(self) -> tuple[np.ndarray, np.ndarray]:
        """Multimodal head: ``weight`` (K, D_fused) and ``bias`` (K,), float32."""
        return self.read("head/weight"), self.read("head/bias")

    def head_input(self, rows: Rows = None) -> np.ndarray:
        """(n, D_fused) float32 head input ``h``, what the multimodal head reads.

        Computed from the blocks for the linear fusions (``mmal.cache.fusion``),
        read from the field ``head_input`` for the others (``nl-gate``).
        """
        if self.meta.stores_head_input:
            return self.read("head_input", rows).astype(np.float32, copy=False)
        feats = [self.features(m, rows).astype(np.float32, copy=False) for m in self.meta.modalities]
        return head_input(feats, self.meta.fusion, xp=np)

    def row_blocks(self, block_rows: int = 65536):
        """Yield slices covering all rows in blocks (for streaming work)."""
        for start in range(0, self.num_samples, block_rows):
            yield slice(start, min(start + block_rows, self.num_samples))

    def validate(self, block_rows: int = 65536) -> None:
        """Read every finite-valued field once, raising on the first NaN/Inf."""
        for spec in [*self._specs.values(), *head_specs(self.meta)]:
            if not spec.finite:
                continue
            if spec.path.startswith("head/"):
                self.read(spec.path)
                continue
            for rows in self.row_blocks(block_rows):
                self.read(spec.path, rows)

    def verify(self) -> str:
        """Recompute the content fingerprint as the writer did and compare it with the stored one.

        Reads every field once. Catches any change to the data or the metadata
        since the writer stamped the file, checksummed or not (caches written
        before the checksums have none).

        Returns
        -------
        str
            The fingerprint, when it matches.

        Raises
        ------
        CacheError
            When the fingerprints differ, or a field cannot be read.
        """
        if not self.fingerprint:
            raise CacheError(f"{self.path}: has no content_fingerprint to verify; {REEXTRACT}")
        computed = content_fingerprint(self._f)
        if computed != self.fingerprint:
            raise CacheError(
                f"{self.path}: content fingerprint mismatch (stored {self.fingerprint}, "
                f"recomputed {computed}): the data changed after mmal wrote it; {REEXTRACT}"
            )
        return computed

    @property
    def has_mc_logits(self) -> bool:
        return self.meta.mc_samples > 0

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        m = self.meta
        return (f"Cache({str(self.path)!r}, N={self.num_samples}, K={m.num_classes}, "
                f"modalities={list(m.modalities)}, fusion={m.fusion!r})")


def _as_selection(rows: Rows) -> Any:
    if rows is None:
        return slice(None)
    if isinstance(rows, slice):
        return rows
    rows = np.asarray(rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    if rows.size > 1 and np.any(np.diff(rows) <= 0):
        raise ValueError("row positions must be strictly increasing")
    return rows
