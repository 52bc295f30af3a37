"""The file of one frozen encoder's outputs over one split: ``encoded/<split>/<modality>.h5``.

Layout (HDF5, root attributes carry the common stamp, :data:`mmal.stamp.ENCODED`):

- ``features`` (N, D) float32: the encoder's output for pool row ``i`` in row ``i``;
- ``ids`` (N,) int64: the pool's sample ids, in row order;
- attributes ``modality``, ``split``, ``fingerprint`` (what made the features:
  see :func:`mmal.encoded.encode.store_key`), ``num_samples``, ``dim``.

The file is written whole into a temporary file beside it and renamed into
place (:func:`mmal.atomic.make_temp`, :func:`mmal.atomic.publish`), so a reader
sees a complete store or none; a killed writer leaves a temporary file that the
next write removes. The datasets carry fletcher32 checksums, so a damaged file
reads as stale and is computed again rather than feeding wrong features.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py
import numpy as np

from mmal.atomic import make_temp, publish
from mmal.errors import CacheError
from mmal.stamp import ENCODED, check_stamp, stamp

log = logging.getLogger(__name__)

FIX = "delete it; the next `mmal train` or `mmal extract` computes it again"


def write_store(path: str | os.PathLike, features: np.ndarray, ids: np.ndarray, *,
                modality: str, split: str, fingerprint: str) -> Path:
    """Write ``features`` (N, D) float32 and ``ids`` (N,) int64 to ``path``, atomically.

    Raises CacheError naming ``path`` when it cannot be written (a full disk);
    the old file, if any, stays as it was.
    """
    path = Path(path)
    features = np.ascontiguousarray(features, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if features.ndim != 2 or len(features) != len(ids):
        raise ValueError(f"features {features.shape} and ids {ids.shape} do not match")
    fd, tmp = make_temp(path)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update({**stamp(ENCODED), "modality": modality, "split": split,
                            "fingerprint": fingerprint, "num_samples": len(ids),
                            "dim": features.shape[1]})
            checked = {"fletcher32": True} if len(ids) else {}  # filters need a chunked dataset
            f.create_dataset("features", data=features, **checked)
            f.create_dataset("ids", data=ids, **checked)
        _fsync(tmp)
        publish(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CacheError(f"{path}: cannot be written ({exc.strerror or exc}); free some space "
                         "and run the stage again") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_store(path: str | os.PathLike, fingerprint: str | None = None
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """``(features (N, D) float32, ids (N,) int64)`` of the store at ``path``.

    Returns None when ``fingerprint`` is given and differs from the file's
    (the encoder, its config or the data changed: the caller computes it
    again), or when the file cannot be read (missing, truncated, a checksum
    mismatch), which is logged.

    Raises
    ------
    CacheError
        The file is of another kind, or of a newer schema version ("upgrade mmal").
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            check_stamp(f.attrs, expected_type=ENCODED, path=str(path), error=CacheError,
                        what="an mmal encoder-output store", fix=FIX)
            if fingerprint is not None and f.attrs.get("fingerprint") != fingerprint:
                log.info("%s: made by another encoder, config or data; computing it again", path)
                return None
            return f["features"][...].astype(np.float32, copy=False), f["ids"][...]
    except (OSError, KeyError) as exc:
        log.warning("%s: unreadable (%s); computing it again", path, exc)
        return None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
