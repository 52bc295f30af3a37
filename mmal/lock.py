"""Advisory locks that keep two mmal processes from writing the same files at once.

Every command that writes into a workspace holds a lock while it decides what
to write and writes it (docs/files.md, "Lock files"): a round's
``rounds/RRR/.lock``, a workspace's ``.lock`` (``mmal run``'s trajectories and
shared round 0), ``runs/.lock``, or ``.<name>.lock`` beside an output file.
A second writer waits for the first, logging once who holds the lock, and gives
up after ``MMAL_LOCK_TIMEOUT`` seconds (default 600) with a one-line
:class:`~mmal.errors.LockError`.

The lock is ``fcntl.flock`` on the lock file: the kernel drops it when its
holder exits, however it exits, so a killed process never leaves a workspace
locked. The file itself only tells waiters who holds it (pid, command, since);
it stays behind, empty, and is never removed, since removing a lock file that
another process has just opened would let two processes lock two different
files of one name.

A thread may take a lock it already holds (the count goes up): ``mmal run``
holds a round while the stages it calls take the same round again. Another
thread, or another process, waits. Under torchrun only rank 0 takes locks; the
other ranks work under rank 0's.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mmal.errors import LockError
from mmal.settings import env_seconds

log = logging.getLogger(__name__)

#: Environment variable: seconds a writer waits for a lock before it gives up.
TIMEOUT_ENV = "MMAL_LOCK_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
#: The lock file of a folder (a round, a workspace, ``runs/``).
LOCK_NAME = ".lock"
_POLL_S = (0.05, 0.5)  # first and longest pause between two tries
_QUIET_S = 1.0  # a wait shorter than this (another writer finishing a small file) goes unsaid
_held = threading.local()
_process_fds: set[int] = set()  # every lock descriptor this process holds, in any thread


def _forget_in_child() -> None:
    # A forked child (a DataLoader worker) inherits the descriptors, and a flock belongs to
    # the open file: the child would keep the lock after this process is killed. The parent
    # still holds its own descriptor, so closing the child's copies releases nothing.
    for fd in _process_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    _process_fds.clear()
    _held.table = {}


os.register_at_fork(after_in_child=_forget_in_child)


@dataclass
class _Held:
    fd: int
    shared: bool
    count: int = 1


def folder_lock(folder: str | os.PathLike) -> Path:
    """The lock file of ``folder``: ``<folder>/.lock``."""
    return Path(folder) / LOCK_NAME


def output_lock(path: str | os.PathLike) -> Path:
    """The lock file of the output file ``path`` (and of files published with it): ``.<name>.lock``."""
    path = Path(path)
    if not path.name:
        raise LockError(f"{path}: names no file; pass a file name")
    return path.with_name(f".{path.name}.lock")


def is_lock_file(path: str | os.PathLike) -> bool:
    """True for a lock file's name (``.lock``, ``.<name>.lock``)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(".lock")


def lock_timeout() -> float:
    """Seconds to wait for a lock: ``$MMAL_LOCK_TIMEOUT``, default 600; 0 fails at once."""
    return env_seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT_S, zero_ok=True)


@contextmanager
def hold(path: str | os.PathLike, command: str, *, shared: bool = False,
         timeout: float | None = None) -> Iterator[Path]:
    """Hold the lock file ``path`` for the ``with`` block, waiting while another process does.

    Parameters
    ----------
    path : path-like
        The lock file; it and its folder are created when missing.
    command : str
        What the holder does, for the message of whoever waits (``"mmal train"``).
    shared : bool
        Take a shared lock, for work that reads what the lock guards and writes
        elsewhere (``mmal select`` reading a round): shared holders run together,
        an exclusive one waits for all of them (and they for it).
    timeout : float, optional
        Seconds to wait; default :func:`lock_timeout`.

    Raises
    ------
    LockError
        Still held by another process after ``timeout`` seconds, naming the lock
        file and its holder; or the lock file cannot be opened (a symlink, a folder).

    Examples
    --------
    >>> with hold("rounds/002/.lock", "mmal train"):  # doctest: +SKIP
    ...     ...  # decide what to write, and write it
    """
    path = Path(path)
    key = os.path.join(os.path.realpath(path.parent), path.name)
    table = _table()
    if key in table or _other_rank():
        held = table.get(key)
        if held is not None:
            # an exclusive lock covers a shared use; the reverse would need an upgrade that
            # flock makes by unlocking first, letting another writer in between
            assert shared or not held.shared, f"{path}: held shared, then asked exclusive"
            held.count += 1
        try:
            yield path
        finally:
            if held is not None:
                held.count -= 1
        return
    fd = _acquire(path, command, shared, lock_timeout() if timeout is None else timeout)
    table[key] = _Held(fd, shared)
    try:
        yield path
    finally:
        del table[key]
        _release(fd, shared)


def holder(path: str | os.PathLike) -> dict | None:
    """What the lock file ``path`` says about its holder (pid, command, since, host), or None."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(4096)
    except OSError:
        return None
    try:
        found = json.loads(text)
    except ValueError:  # empty (nobody holds it) or being rewritten
        return None
    return found if isinstance(found, dict) and isinstance(found.get("pid"), int) else None


# ----------------------------------------------------------------------------- internals

def _table() -> dict[str, _Held]:
    if not hasattr(_held, "table"):
        _held.table = {}
    return _held.table


def _other_rank() -> bool:
    # torchrun sets these (mmal.distributed.launched); that room is above this one
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    return os.environ["RANK"].strip() not in ("", "0")


def _acquire(path: Path, command: str, shared: bool, timeout: float) -> int:
    fd = _open(path)
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        began = time.monotonic()
        deadline = began + timeout
        pause, said = _POLL_S[0], False
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            if time.monotonic() >= deadline:
                raise LockError(f"{path}: {_describe(path)}; gave up after {timeout:g} s "
                                f"({TIMEOUT_ENV}); wait for it to finish, or set "
                                f"{TIMEOUT_ENV}=SECONDS to wait longer")
            if not said and time.monotonic() - began >= min(_QUIET_S, timeout / 2):
                log.warning("waiting for %s %s (up to %g s, %s) ...", path, _describe(path),
                            timeout, TIMEOUT_ENV)
                said = True
            time.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
            pause = min(pause * 2, _POLL_S[1])
        if said:
            log.info("got %s", path)
        _record(fd, command)
        _process_fds.add(fd)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        return os.open(path, flags, 0o666)  # the umask applies: anyone who may write may wait
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LockError(f"{path}: is a symbolic link; mmal's lock files are plain files, "
                            "remove the link") from None
        if exc.errno == errno.EISDIR:
            raise LockError(f"{path}: is a folder; mmal's lock files are plain files, move the "
                            "folder away") from None
        raise


def _record(fd: int, command: str) -> None:
    """Write who holds the lock, for the message of whoever waits next."""
    record = {"pid": os.getpid(), "command": command, "host": socket.gethostname(),
              "since": datetime.now(UTC).isoformat(timespec="seconds")}
    data = (json.dumps(record) + "\n").encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError:  # a full disk must not stop the work the lock guards; only the message
        log.debug("could not record the holder in the lock file", exc_info=True)


def _release(fd: int, shared: bool) -> None:
    try:
        if not shared:  # shared holders may overlap: the last one's record may still be true
            os.ftruncate(fd, 0)
    except OSError:
        pass
    finally:
        _process_fds.discard(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _describe(path: Path) -> str:
    """``held by pid 123 (mmal train) since 2024-05-01T10:00:00+00:00``, as far as is known."""
    found = holder(path)
    if found is None or not _alive(found):
        return "held by another process"
    where = "" if found.get("host") == socket.gethostname() else f" on {found.get('host')}"
    return (f"held by pid {found['pid']}{where} ({found.get('command', '?')}) "
            f"since {found.get('since', '?')}")


def _alive(found: dict) -> bool:
    if found.get("host") != socket.gethostname():
        return True  # cannot tell; the lock is held, so trust the record
    try:
        os.kill(found["pid"], 0)
    except ProcessLookupError:
        return False  # a stale record: the holder has written none (yet)
    except OSError:
        pass  # another user's process
    return True
