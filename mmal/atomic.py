"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Everything mmal writes outside HDF5 (index files, checkpoints, metrics, configs,
diagnostics) goes through :func:`atomic_open`: a temporary file created
exclusively in the target's folder (``O_CREAT | O_EXCL | O_NOFOLLOW``, so never
through a link planted there), flushed and fsynced, then renamed over the
target. On any exception the temporary file is removed and the target is left
as it was; a write error (a full disk) names the target.

A temporary file is called ``.<target>.<host>-<pid>.<random>.tmp``. A process
killed before it could remove its own leaves one behind; the next write of the
same target removes those whose process is gone (:func:`remove_stale_temps`).

:func:`check_replaceable` is ``--force``'s rule: a file may be replaced only by
one of its own kind, never a folder, a link, a device or another kind of file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import IO, Any

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"


class AtomicFile:
    """What :func:`atomic_open` yields: the temporary file's handle, remembering its first write error.

    ``temp`` is the temporary file's path (complete once ``flush()`` returns,
    before the rename). A library that swallows the ``OSError`` of a failed
    write into its own exception (``torch.save`` raises ``RuntimeError:
    [enforce fail ...]``) still ends in a clean error: :func:`atomic_open`
    raises the remembered ``OSError`` instead.
    """

    def __init__(self, handle: IO[Any], temp: Path):
        self._handle = handle
        self.temp = temp
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._handle.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        try:
            self._handle.flush()
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *,
                encoding: str | None = None) -> Iterator[AtomicFile]:
    """Open a temporary file that replaces ``path`` when the ``with`` block succeeds.

    Parameters
    ----------
    path : path-like
        Target file; its folder is created if missing.
    mode : {"w", "wb"}
        Text or binary.
    encoding : str, optional
        Text encoding (default UTF-8 in text mode).

    Raises
    ------
    OSError
        With ``filename`` the target, when writing, syncing or renaming fails
        (``errno.ENOSPC`` on a full disk); the target is unchanged.

    Examples
    --------
    >>> with atomic_open("out.json") as fh:  # doctest: +SKIP
    ...     json.dump(data, fh)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files; mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    fd, tmp = make_temp(path)
    out = None
    try:
        try:
            handle = os.fdopen(fd, mode, encoding=(encoding or "utf-8") if mode == "w" else None)
        except BaseException:
            os.close(fd)
            raise
        out = AtomicFile(handle, tmp)
        with handle:
            yield out
            out.flush()
            os.fsync(handle.fileno())
        try:
            publish(tmp, path)
        except OSError as exc:
            raise _named(exc, path) from None
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if out is not None and out.error is not None and exc is not out.error:
            raise _named(out.error, path) from None  # e.g. torch.save's RuntimeError
        if isinstance(exc, OSError) and exc.filename is None:
            raise _named(exc, path) from None
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


# ----------------------------------------------------------------------------- temporary files

def make_temp(path: str | os.PathLike) -> tuple[int, Path]:
    """A new, empty temporary file for ``path`` in its folder: ``(descriptor, temp path)``.

    Created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (``tempfile.mkstemp``) under a
    name that carries this host and process, with the mode a plain ``open``
    would give. Stale temporary files of ``path`` are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_owner()}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _default_mode())  # mkstemp makes 0600; give what open() would
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return fd, Path(tmp)


_ANY_TEMP = re.compile(r"\..+\.[0-9a-f]{8}-\d+\.\w+\.tmp")


def is_temp_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like one of :func:`make_temp`'s files (never a result)."""
    return _ANY_TEMP.fullmatch(Path(path).name) is not None


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of ``path`` whose process has died; return them.

    Only files named as :func:`make_temp` names them, made on this host, by a
    process that no longer runs. Files of a live process (or of another host
    sharing the folder) stay.
    """
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + r"([0-9a-f]{8})-(\d+)\.\w+\.tmp")
    host = _host()
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if not match or match[1] != host or _alive(int(match[2])):
            continue
        if entry.is_file(follow_symlinks=False) or entry.is_symlink():
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def publish(temp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Rename the finished ``temp`` over ``path`` and sync the folder.

    A link at ``path`` is replaced, never followed. A folder, device, pipe or
    socket at ``path`` is refused (``OSError`` naming it): mmal replaces files only.
    """
    path = Path(path)
    kind = _special(path)
    if kind is not None:
        raise OSError(errno.EEXIST, f"is {kind}, not a file mmal may replace", str(path))
    os.replace(temp, path)
    fsync_dir(path.parent)
    return path


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename in ``directory`` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- --force's rule

def check_replaceable(path: str | os.PathLike, *, what: str, error: type[Exception],
                      is_kind: Callable[[Path], bool] | None = None) -> None:
    """Raise ``error`` unless ``path`` is absent or a regular file ``--force`` may replace.

    Parameters
    ----------
    path : path-like
        The output about to be replaced.
    what : str
        The kind being written, for the message ("an mmal index file").
    error : Exception subclass
        Raised with one line naming ``path``, what it is and what to do.
    is_kind : callable, optional
        True when the regular file at ``path`` is of the kind being written
        (its stamp read). Default, for outputs mmal does not stamp (sheets,
        reports): the file is not one mmal stamps (no HDF5 file, zip archive
        or JSON document with an ``mmal_type``).

    Examples
    --------
    >>> check_replaceable("/dev/null", what="an mmal index file", error=ValueError)
    Traceback (most recent call last):
    ValueError: /dev/null: is a device node; --force replaces only an mmal index file; ...
    """
    path = Path(path)
    fix = f"--force replaces only {what}"
    if path.is_symlink():
        raise error(f"{path}: is a symbolic link; {fix}, never a link: remove the link or "
                    "choose another output")
    kind = _special(path)
    if kind is not None:
        raise error(f"{path}: is {kind}; {fix}; choose another output")
    if not path.exists():
        return
    same = is_kind(path) if is_kind is not None else not looks_stamped(path)
    if not same:
        raise error(f"{path}: is not {what}; {fix}: move it away or choose another output")


def looks_stamped(path: str | os.PathLike) -> bool:
    """True when ``path`` looks like a file mmal stamps: HDF5, a zip archive (``.pt``,
    ``.npz``) or a JSON object with an ``mmal_type`` key near its start."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    if head.startswith((_HDF5_MAGIC, _ZIP_MAGIC)):
        return True
    return head.lstrip().startswith(b"{") and b'"mmal_type"' in head


# ----------------------------------------------------------------------------- helpers

def _special(path: Path) -> str | None:
    """What ``path`` is when it is neither absent, a regular file nor a link."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device node"


def _owner() -> str:
    """``<host>-<pid>``: 8 hex digits of this host's name, and this process's id."""
    return f"{_host()}-{os.getpid()}"  # the pid is read each time: a forked child has its own


@cache
def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` as an OSError naming ``path`` (the target, not the temporary file)."""
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


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
