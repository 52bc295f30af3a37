"""Task functions for tests of mmal.loop.jobs: workers import them by name."""

from __future__ import annotations

import os


def work(key: tuple, how: dict, *, emit) -> list:
    """Emit two events, then do what ``how[key]`` says: return, fail, raise or die."""
    emit(f"{key[0]} started")
    emit(f"{key[0]} halfway")
    action = how.get(key[0], "ok")
    if action == "raise":
        raise ValueError(f"{key[0]} could not")
    if action == "die":
        os._exit(3)
    return [] if action == "ok" else [f"{key[0]} failed"]
