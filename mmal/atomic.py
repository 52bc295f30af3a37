"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Everything mmal writes outside HDF5 (index files, checkpoints, metrics, configs,
diagnostics) goes through :func:`atomic_open`: a temporary file in the target's
folder, flushed and fsynced, then renamed over the target. On any exception the
temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *,
                encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` when the ``with`` block succeeds.

    Parameters
    ----------
    path : path-like
        Target file; its folder is created if missing.
    mode : {"w", "wb"}
        Text or binary.
    encoding : str, optional
        Text encoding (default UTF-8 in text mode).

    Examples
    --------
    >>> with atomic_open("out.json") as fh:  # doctest: +SKIP
    ...     json.dump(data, fh)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files; mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _default_mode())  # mkstemp makes 0600; give what open() would
        if mode == "w":
            handle = os.fdopen(fd, mode, encoding=encoding or "utf-8")
        else:
            handle = os.fdopen(fd, mode)
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Replace ``path`` with ``text`` atomically."""
    with atomic_open(path) as out:
        out.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: Any, **dump_kwargs: Any) -> Path:
    """Replace ``path`` with ``data`` as indented JSON (plus a final newline) atomically."""
    dump_kwargs.setdefault("indent", 2)
    with atomic_open(path) as out:
        json.dump(data, out, **dump_kwargs)
        out.write("\n")
    return Path(path)


def _default_mode() -> int:
    """0o666 less the process umask, the mode a plain ``open(path, "w")`` would create."""
    return 0o666 & ~_umask()


def _umask() -> int:
    # Linux reports the umask without changing it; os.umask() must set one to read it,
    # which would race with threads creating files.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask
