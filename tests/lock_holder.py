"""Another process that holds an mmal lock, for tests of whoever waits for it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).parents[1]

#: A child process that takes a lock, says "held", and keeps it until its stdin closes.
HOLDER = textwrap.dedent("""
    import sys
    from mmal.lock import hold
    with hold(sys.argv[1], sys.argv[2], shared=sys.argv[3] == "shared"):
        print("held", flush=True)
        sys.stdin.read()
""")


class Holder:
    """Another process holding ``path`` until :meth:`release` (or a kill)."""

    def __init__(self, path: Path, command: str = "mmal train", *, shared: bool = False):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), command, "shared" if shared else "x"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout.readline().strip() == "held"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=20) == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=20)
        self.proc.stdin.close()
