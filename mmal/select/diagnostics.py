"""Reading back a selection's ``<index stem>.diagnostics.npz`` (format: docs/index-files.md)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from mmal.errors import IndexFileError
from mmal.stamp import DIAGNOSTICS, STAMP_KEYS, check_stamp

#: Arrays every diagnostics archive written by ``select`` holds.
REQUIRED = ("ids", "modalities", "strategy")
_HINT = "pass the <stem>.diagnostics.npz written by mmal select"


def summarize_diagnostics(path: str | os.PathLike) -> dict[str, Any]:
    """Strategy, sample count, array shapes and per-modality mean ``Phi`` of a diagnostics archive.

    Parameters
    ----------
    path : path
        A ``<index stem>.diagnostics.npz`` written by :func:`mmal.select.select`.

    Returns
    -------
    dict
        JSON-serialisable: ``file``, ``type`` ("selection-diagnostics"),
        ``schema_version`` (1 for archives from before the stamp), ``strategy``,
        ``samples`` (unlabeled samples covered), ``modalities``, ``arrays``
        (name -> "shape dtype", the stamp left out), ``mean_Phi`` (modality -> mean
        contribution Φ_m over the samples; absent without ``Phi``) and
        ``read_with``.

    Raises
    ------
    IndexFileError
        When the file is missing, not an ``.npz`` archive, stamped as another
        kind or a newer version, or lacks the arrays ``select`` writes.

    Examples
    --------
    >>> summarize_diagnostics("selections/bmmal-b500-s0.diagnostics.npz")  # doctest: +SKIP
    """
    path = Path(path)
    arrays = _load(path)
    version = check_stamp(arrays, expected_type=DIAGNOSTICS, path=str(path), error=IndexFileError,
                          fix=_HINT)
    missing = [name for name in REQUIRED if name not in arrays]
    if missing:
        raise IndexFileError(
            f"{path}: is not a diagnostics file written by mmal select (no {missing[0]!r} array); "
            "inspect the selection's <stem>.diagnostics.npz"
        )
    modalities = [str(m) for m in arrays["modalities"]]
    summary: dict[str, Any] = {
        "file": str(path),
        "type": "selection-diagnostics",
        "schema_version": version,
        "strategy": str(arrays["strategy"]),
        "samples": int(len(arrays["ids"])),
        "modalities": modalities,
        "arrays": {name: f"{value.shape} {value.dtype}" for name, value in arrays.items()
                   if name not in STAMP_KEYS},
    }
    contributions = arrays.get("Phi")
    if contributions is not None and contributions.shape == (len(arrays["ids"]), len(modalities)):
        means = contributions.mean(axis=0).tolist() if len(contributions) else [None] * len(modalities)
        summary["mean_Phi"] = dict(zip(modalities, means, strict=True))
    summary["read_with"] = f"numpy.load({str(path)!r})"
    return summary


def _load(path: Path) -> dict[str, np.ndarray]:
    """Every array of the archive at ``path`` (no pickled objects)."""
    if not path.exists():
        raise IndexFileError(f"{path}: no such diagnostics file; `mmal select` writes it next to "
                             "the index file")
    if not zipfile.is_zipfile(path):
        raise IndexFileError(f"{path}: is not a NumPy .npz archive; {_HINT}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise IndexFileError(
            f"{path}: cannot be read as a NumPy .npz archive ({str(exc).splitlines()[0]}); {_HINT}"
        ) from None
