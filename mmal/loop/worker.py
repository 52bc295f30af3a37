"""The body of one ``mmal run --jobs`` worker process (:mod:`mmal.loop.jobs`).

``python -m mmal.loop.worker FD``: reads two pickles from stdin, ``(sys.path,
log level, torch threads or None)`` and then ``(target, key, args)``, runs
``target(key, *args, emit=...)``, and writes ``("event", event)`` for each
``emit`` and a last ``("result", value)`` to file descriptor FD, pickled. An
exception out of ``target`` becomes a one-line ``str`` result; Ctrl-C (SIGINT
from the parent) ends the process quietly with code 130 (the parent reports it
once). A worker whose parent has died (SIGKILL, which runs no cleanup there)
interrupts itself as the parent's Ctrl-C would, within :data:`_ORPHAN_POLL_S`
seconds, rather than going on alone with a long step while holding its locks.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import sys
import threading
import time

from mmal.errors import one_line

log = logging.getLogger(__name__)
_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"  # as `mmal`'s own (mmal/cli.py)
_ORPHAN_POLL_S = 1.0  # how often a worker checks that its parent is alive


def _stop_when_orphaned(parent: int) -> None:
    """SIGINT to this process once ``parent`` is gone (this one was reparented)."""
    while os.getppid() == parent:
        time.sleep(_ORPHAN_POLL_S)
    os.kill(os.getpid(), signal.SIGINT)


def main() -> None:
    out = int(sys.argv[1])
    lock = threading.Lock()
    threading.Thread(target=_stop_when_orphaned, args=(os.getppid(),), daemon=True,
                     name="mmal-run orphan check").start()

    def send(kind: str, value) -> None:
        data = memoryview(pickle.dumps((kind, value)))
        with lock:
            try:
                while data:
                    data = data[os.write(out, data):]
            except BrokenPipeError:  # the parent is gone (killed): stop as Ctrl-C would
                raise SystemExit(1) from None

    try:
        paths, level, threads = pickle.load(sys.stdin.buffer)
        sys.path[:0] = [p for p in paths if p not in sys.path]
        logging.basicConfig(level=level, format=_LOG_FORMAT)
        if threads is not None:
            # deferred: a task that trains imports torch anyway; one that does not, never
            import torch

            torch.set_num_threads(threads)
        target, key, args = pickle.load(sys.stdin.buffer)
        try:
            result = target(key, *args, emit=lambda event: send("event", event))
        except Exception as exc:  # noqa: BLE001 - reported by the parent, naming the task
            log.debug("task %s failed", key, exc_info=True)
            result = f"{type(exc).__name__}: {one_line(exc)}"
        send("result", result)
    except KeyboardInterrupt:
        sys.exit(130)  # the parent stopped this one; it reports the interruption once


if __name__ == "__main__":
    main()
