"""Peak memory of this process while a block of code runs, sampled by a thread (benchmarks only).

``RssPeak`` samples the resident set size (``/proc/self/statm``); ``AnonPeak``
only anonymous memory (``RssAnon`` of ``/proc/self/status``), which leaves out
the pages of memory-mapped files such as a spilled working set.
"""

from __future__ import annotations

import os
import threading


class RssPeak:
    """Peak resident set size of this process while the context is open (sampled)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssPeak:
        self.start = self.current()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


class AnonPeak(RssPeak):
    """Peak ``RssAnon`` of this process (anonymous memory, no file-backed pages), sampled."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(interval)

    @staticmethod
    def current() -> int:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        return 0
