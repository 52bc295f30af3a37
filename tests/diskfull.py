"""A small filesystem that really fills up, for the full-disk tests.

As root, :func:`small_disk` mounts a tmpfs of a few MiB in the test's
temporary folder; writes there fail with ``ENOSPC`` once it is full, exactly
as on a full disk. Where mounting is impossible (not root, a container without
the right to mount) the tests that use it skip, saying why.

Use it as a fixture by naming it in a test module::

    from tests import diskfull

    small_disk = diskfull.small_disk  # a fixture
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

MiB = 1 << 20


class SmallDisk:
    """A mounted tmpfs at ``path``: fill it, free it, or grow it."""

    def __init__(self, path: Path):
        self.path = path
        self.ballast = path / "ballast"

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Take all but ``leave`` bytes (rounded to pages) with a ballast file."""
        take = max(self.free_bytes() - leave, 0)
        with open(self.ballast, "ab") as fh:
            block = bytes(MiB)
            while take > 0:
                step = min(take, MiB)
                fh.write(block[:step])
                take -= step

    def empty(self) -> None:
        """Free what :meth:`fill` took."""
        self.ballast.unlink(missing_ok=True)


def _mount(path: Path, size_mib: int) -> str | None:
    """Mount a tmpfs at ``path``; None on success, else why not."""
    if os.geteuid() != 0:
        return "needs root to mount a small filesystem"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs",
                           str(path)], capture_output=True, text=True)
    return None if done.returncode == 0 else f"cannot mount a tmpfs here: {done.stderr.strip()}"


@pytest.fixture
def small_disk(tmp_path):
    """A 32 MiB tmpfs at ``tmp_path/disk``, unmounted after the test."""
    path = tmp_path / "disk"
    path.mkdir()
    why = _mount(path, 32)
    if why is not None:
        pytest.skip(why)
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
