"""Type and version stamps on everything mmal writes to disk.

One helper writes them, one checks them, so every file kind refuses unknown
versions the same way and tells the user how to fix it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mmal import __version__


def stamp(file_type: str, version: int) -> dict[str, Any]:
    """The attributes every mmal file starts with."""
    return {
        "mmal_type": file_type,
        "schema_version": int(version),
        "mmal_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def check_stamp(
    attrs: Any, *, expected_type: str, supported: int, path: str, error: type[Exception]
) -> int:
    """Check ``attrs`` carries ``expected_type`` at a version this mmal reads.

    Returns the file's schema version; raises ``error`` naming ``path`` otherwise.
    """
    file_type = attrs.get("mmal_type")
    if isinstance(file_type, bytes):
        file_type = file_type.decode()
    if file_type != expected_type:
        found = f"type {file_type!r}" if file_type else "no mmal type stamp"
        raise error(f"{path}: is not an {expected_type} ({found}); pass the right file")
    try:
        version = int(attrs.get("schema_version"))
    except (TypeError, ValueError):
        raise error(f"{path}: field 'schema_version' is missing or not an integer") from None
    if version > supported:
        raise error(
            f"{path}: schema version {version} is newer than this mmal "
            f"({__version__}) reads (up to {supported}); upgrade mmal"
        )
    if version < 1:
        raise error(f"{path}: unknown schema version {version}; rewrite the file with mmal")
    return version
