"""Index files: ordered lists of sample ids with provenance, as JSON.

A selection (the ids a strategy picked, in pick order) and a round's labeled
set are both index files. ``docs/index-files.md`` specifies the format.
Writes are atomic (temporary file + rename); reads validate everything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmal.atomic import check_replaceable, write_json_atomic
from mmal.cache.writer import _duplicates
from mmal.errors import IndexFileError, preview
from mmal.stamp import check_stamp, json_carries, stamp

INDEX_TYPE = "mmal-index-file"
INDEX_VERSION = 1
KINDS = ("selection", "labeled")
#: What an index file is called in ``--force``'s refusals.
INDEX_WHAT = "an mmal index file"
SELECTION_PROVENANCE = (
    "strategy", "params", "seed", "budget", "cache", "cache_fingerprint", "backend", "wall_time_s",
)


@dataclass(frozen=True)
class IndexFile:
    """Sample ids in order, what kind of list they are, and where they came from.

    Attributes
    ----------
    ids : np.ndarray
        (n,) int64, unique, in selection order.
    kind : {"selection", "labeled"}
    provenance : dict
        For selections: strategy, params, seed, budget, cache, cache_fingerprint,
        backend, wall_time_s (and mmal_version, created). Free-form for labeled sets.
    """

    ids: np.ndarray
    kind: str
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.ids)


def write_index(
    path: str | os.PathLike,
    ids: Iterable[int],
    *,
    kind: str,
    provenance: Mapping[str, Any],
    overwrite: bool = False,
) -> Path:
    """Write an index file atomically; returns its path.

    Raises
    ------
    IndexFileError
        If ``path`` exists and ``overwrite`` is False, ids repeat, or a
        selection lacks a provenance key.
    """
    path = Path(path)
    ids = ids if isinstance(ids, np.ndarray) else _int64_ids(list(ids), f"{path}: ids")
    ids = np.asarray(ids, dtype=np.int64)
    _check_content(ids, kind, provenance, str(path))
    if os.path.lexists(path):
        if not overwrite:
            raise IndexFileError(f"{path}: already exists; pass --force to replace it")
        check_replaceable(path, what=INDEX_WHAT, error=IndexFileError, is_kind=is_index_file)
    header = stamp(INDEX_TYPE, INDEX_VERSION)
    document = {
        **header,
        "kind": kind,
        "count": int(len(ids)),
        "provenance": {"mmal_version": header["mmal_version"], "created": header["created"],
                       **dict(provenance)},
        "ids": [int(i) for i in ids],
    }
    return write_json_atomic(path, document, indent=1, default=_json_default)


def is_index_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a JSON file stamped as an index file (any version)."""
    return json_carries(path, INDEX_TYPE)


def read_index(path: str | os.PathLike) -> IndexFile:
    """Read and validate an index file."""
    path = Path(path)
    if not path.exists():
        raise IndexFileError(f"{path}: no such index file")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFileError(f"{path}: is not valid JSON ({exc}); pass an index file written by mmal") from None
    if not isinstance(document, dict):
        raise IndexFileError(f"{path}: is not an index file (top level is not an object)")
    check_stamp(document, expected_type=INDEX_TYPE, supported=INDEX_VERSION,
                path=str(path), error=IndexFileError)
    kind = document.get("kind")
    provenance = document.get("provenance", {})
    raw_ids = document.get("ids")
    if not isinstance(raw_ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in raw_ids
    ):
        raise IndexFileError(f"{path}: field 'ids' must be a list of integers")
    if not isinstance(provenance, dict):
        raise IndexFileError(f"{path}: field 'provenance' must be an object")
    ids = _int64_ids(raw_ids, f"{path}: field 'ids'")
    if document.get("count") != len(ids):
        raise IndexFileError(
            f"{path}: field 'count' is {document.get('count')} but 'ids' lists {len(ids)}; "
            "the file was edited or truncated, rewrite it"
        )
    _check_content(ids, kind, provenance, str(path))
    return IndexFile(ids=ids, kind=str(kind), provenance=provenance, path=path)


def check_ids_in_cache(index: IndexFile, cache_ids: np.ndarray, cache_path: str) -> np.ndarray:
    """Positions of ``index.ids`` in ``cache_ids``; error naming any absent id."""
    cache_ids = np.asarray(cache_ids)
    order = np.argsort(cache_ids, kind="stable")
    pos = np.searchsorted(cache_ids, index.ids, sorter=order)
    pos = np.minimum(pos, len(cache_ids) - 1)
    rows = order[pos]
    absent = cache_ids[rows] != index.ids
    if absent.any():
        raise IndexFileError(
            f"{index.path}: ids {preview(index.ids[absent])} are absent from the cache "
            f"{cache_path}; the index file belongs to another pool"
        )
    return rows


def _int64_ids(values: list, where: str) -> np.ndarray:
    """``values`` as int64; an id outside int64's range is an error, not an OverflowError."""
    info = np.iinfo(np.int64)
    wide = [v for v in values if isinstance(v, int) and not info.min <= v <= info.max]
    if wide:
        raise IndexFileError(f"{where} holds {preview(wide)}, outside the range of sample ids "
                             f"(64-bit integers, {info.min} to {info.max}); the file was edited "
                             "or made by another tool: restore it, or write it again with mmal")
    return np.asarray(values, dtype=np.int64)


def _check_content(ids: np.ndarray, kind: Any, provenance: Mapping[str, Any], path: str) -> None:
    if kind not in KINDS:
        raise IndexFileError(f"{path}: field 'kind' is {kind!r}, expected one of {KINDS}")
    if ids.ndim != 1:
        raise IndexFileError(f"{path}: field 'ids' must be a flat list")
    dup = _duplicates(ids)
    if dup.size:
        raise IndexFileError(f"{path}: field 'ids' lists ids {preview(dup)} more than once")
    if kind == "selection":
        missing = [k for k in SELECTION_PROVENANCE if k not in provenance]
        if missing:
            raise IndexFileError(f"{path}: provenance lacks {missing} required of selections")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in an index file")
