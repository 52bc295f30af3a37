"""Type and version stamps on every file mmal writes and reads back.

Each such file starts with the same four fields: ``mmal_type`` (the kind of
file), ``schema_version`` (the layout of that kind), ``mmal_version`` and
``created``. :func:`stamp` makes them, :func:`check_stamp` checks them, so every
kind refuses a newer version the same way ("upgrade mmal") and keeps loading
every older one. :data:`FILE_KINDS` lists the kinds and their current versions;
``docs/files.md`` is its prose form.

Light on purpose (no numpy, torch or h5py): caches, checkpoints, labels,
metrics and the run files all import it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mmal import __version__

CACHE = "mmal-feature-cache"
INDEX = "mmal-index-file"
MODEL = "mmal-model"
LABELS = "mmal-labels"
METRICS = "mmal-metrics"
DIAGNOSTICS = "mmal-selection-diagnostics"
RUN_PLAN = "mmal-run-plan"
RUN_STATUS = "mmal-run-status"
ENCODED = "mmal-encoded-features"

STAMP_KEYS = ("mmal_type", "schema_version", "mmal_version", "created")
#: ``FileKind.legacy`` of kinds whose files from before the stamp carry none.
UNSTAMPED = "unstamped"


@dataclass(frozen=True)
class FileKind:
    """One kind of file: its current schema version and how its pre-stamp files look.

    Attributes
    ----------
    version : int
        What this mmal writes and the newest it reads.
    files : str
        Which files are of this kind (for the docs).
    legacy : str or None
        None: every file of the kind carries the stamp. :data:`UNSTAMPED`:
        files written before the stamp carry nothing and read as version 1.
        A key name ("format", "type"): such files name the kind under that key
        and the version under ``version``.
    """

    version: int
    files: str
    legacy: str | None = None


FILE_KINDS: dict[str, FileKind] = {
    CACHE: FileKind(2, "rounds/RRR/cache.h5, cache.shards/*.h5"),
    INDEX: FileKind(1, "rounds/RRR/labeled.json, rounds/RRR/selections/*.json"),
    MODEL: FileKind(2, "rounds/RRR/model.pt (and model.pt.partial)", legacy="format"),
    LABELS: FileKind(1, "rounds/RRR/labels.json", legacy="type"),
    METRICS: FileKind(1, "rounds/RRR/metrics.json", legacy=UNSTAMPED),
    DIAGNOSTICS: FileKind(1, "rounds/RRR/selections/*.diagnostics.npz", legacy=UNSTAMPED),
    RUN_PLAN: FileKind(1, "runs/plan.json", legacy=UNSTAMPED),
    RUN_STATUS: FileKind(1, "runs/status.json", legacy=UNSTAMPED),
    ENCODED: FileKind(1, "encoded/<split>/<modality>.h5"),
}


def stamp(file_type: str, version: int | None = None) -> dict[str, Any]:
    """The fields every mmal file starts with (``version`` defaults to :data:`FILE_KINDS`'s)."""
    if version is None:
        version = FILE_KINDS[file_type].version
    return {
        "mmal_type": file_type,
        "schema_version": int(version),
        "mmal_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def stamped(file_type: str, document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with the stamp of ``file_type`` in front: a JSON file's content.

    >>> stamped(METRICS, {"round": 0})["schema_version"]
    1
    """
    return {**stamp(file_type), **document}


def check_stamp(
    attrs: Any, *, expected_type: str, supported: int | None = None, path: str,
    error: type[Exception], what: str | None = None, fix: str = "pass the right file",
) -> int:
    """Check ``attrs`` carries ``expected_type`` at a version this mmal reads.

    Parameters
    ----------
    attrs : mapping
        Anything with ``.get``: HDF5 attributes, a JSON object, a checkpoint
        dict, the arrays of an ``.npz`` archive.
    expected_type : str
        A key of :data:`FILE_KINDS`; its pre-stamp form (``FileKind.legacy``)
        is accepted too.
    supported : int, optional
        Newest version read; default the table's current version.
    path : str
        Named in every error.
    error : Exception subclass
        Raised on a wrong type or version.
    what, fix : str
        What the file should be (default ``expected_type``) and what to do
        when it is not.

    Returns
    -------
    int
        The file's schema version (1 for a pre-stamp file).
    """
    kind = FILE_KINDS.get(expected_type)
    if supported is None:
        supported = FILE_KINDS[expected_type].version
    file_type, version_key = _plain(attrs.get("mmal_type")), "schema_version"
    legacy = kind.legacy if kind is not None and file_type is None else None
    if legacy == UNSTAMPED:
        return 1
    if legacy is not None:
        file_type, version_key = _plain(attrs.get(legacy)), "version"
    if file_type != expected_type:
        found = f"type {file_type!r}" if file_type else "no mmal type stamp"
        raise error(f"{path}: is not {what or 'an ' + expected_type} ({found}); {fix}")
    try:
        version = int(_plain(attrs.get(version_key)))
    except (TypeError, ValueError):
        raise error(f"{path}: field '{version_key}' is missing or not an integer") from None
    if version > supported:
        raise error(
            f"{path}: schema version {version} is newer than this mmal "
            f"({__version__}) reads (up to {supported}); upgrade mmal"
        )
    if version < 1:
        raise error(f"{path}: unknown schema version {version}; rewrite the file with mmal")
    return version


def carries(attrs: Any, kind: str) -> bool:
    """True when ``attrs`` name ``kind`` by its stamp or its pre-stamp form, at any version.

    What ``--force`` asks before replacing a file: is it of the kind being
    written? A kind whose old files carry nothing (:data:`UNSTAMPED`) needs
    the stamp here, since an unstamped file could be anything.
    """
    legacy = FILE_KINDS[kind].legacy
    keys = ["mmal_type"] + ([legacy] if legacy not in (None, UNSTAMPED) else [])
    for key in keys:
        value = _plain(attrs.get(key))
        if isinstance(value, str) and value == kind:
            return True
    return False


def json_carries(path: str | os.PathLike, kind: str) -> bool:
    """True when ``path`` holds a JSON object that :func:`carries` ``kind``."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and carries(document, kind)


def read_stamped_json(path: str | os.PathLike, file_type: str, *, error: type[Exception],
                      fix: str) -> dict[str, Any]:
    """The JSON object in ``path``, its stamp checked by :func:`check_stamp`.

    ``fix`` says what to do about a file that is not valid JSON, not an object,
    or of another type; a newer version always says "upgrade mmal".
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: is not valid JSON ({exc}); {fix}") from None
    if not isinstance(document, dict):
        raise error(f"{path}: is not an {file_type} (top level is not an object); {fix}")
    check_stamp(document, expected_type=file_type, path=str(path), error=error, fix=fix)
    return document


def _plain(value: Any) -> Any:
    """Python value of an HDF5 bytes attribute or a 0-d NumPy array (as ``.npz`` stores)."""
    if getattr(value, "ndim", None) == 0:
        value = value.item()
    return value.decode() if isinstance(value, bytes) else value
