"""Task functions for tests of mmal.loop.jobs: workers import them by name."""

from __future__ import annotations

import os
import time


def work(key: tuple, how: dict, *, emit) -> list:
    """Emit two events, then do what ``how[key]`` says: return, fail, raise, die or sleep.

    ``sleep`` emits ``"pid <worker pid>"`` and then sends nothing for minutes
    (a long training step).
    """
    emit(f"{key[0]} started")
    emit(f"{key[0]} halfway")
    action = how.get(key[0], "ok")
    if action == "raise":
        raise ValueError(f"{key[0]} could not")
    if action == "die":
        os._exit(3)
    if action == "sleep":
        emit(f"pid {os.getpid()}")
        time.sleep(300)
    return [] if action == "ok" else [f"{key[0]} failed"]


def environment(key: tuple, *, emit) -> tuple:
    """The worker's OMP_WAIT_POLICY and torch thread count."""
    import torch

    return os.environ.get("OMP_WAIT_POLICY"), torch.get_num_threads()
