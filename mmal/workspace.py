"""Workspace layout: a folder with ``mmal.toml`` and one sub-folder per round.

::

    workspace/
      mmal.toml                 the configuration
      rounds/000/labeled.json   index file (kind "labeled")
      rounds/000/model.pt       checkpoint from `mmal train`
      rounds/000/metrics.json   test metrics from `mmal train`
      rounds/000/cache.h5       feature cache from `mmal extract`
      rounds/000/selections/    index files from `mmal select`

Every stage finds its inputs and outputs through this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mmal.errors import WorkspaceError

CONFIG_NAME = "mmal.toml"
ROUNDS_DIR = "rounds"


@dataclass(frozen=True)
class RoundPaths:
    """Files of one round."""

    root: Path
    round: int

    @property
    def labeled(self) -> Path:
        return self.root / "labeled.json"

    @property
    def model(self) -> Path:
        return self.root / "model.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def cache(self) -> Path:
        return self.root / "cache.h5"

    @property
    def selections(self) -> Path:
        return self.root / "selections"


def find_workspace(start: str | os.PathLike | None = None) -> Path:
    """The workspace containing ``start`` (default: the current directory)."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_NAME).is_file():
            return folder
    raise WorkspaceError(
        f"{here}: not inside an mmal workspace (no {CONFIG_NAME} here or above); "
        "create one with `mmal init DIR --config FILE` or pass --workspace"
    )


def round_paths(workspace: str | os.PathLike, round: int) -> RoundPaths:
    """Paths of round ``round`` (the folder may not exist yet)."""
    if round < 0:
        raise WorkspaceError(f"round must be >= 0, got {round}")
    return RoundPaths(Path(workspace) / ROUNDS_DIR / f"{round:03d}", round)


def list_rounds(workspace: str | os.PathLike) -> list[int]:
    """Round numbers that have a folder, ascending."""
    rounds_dir = Path(workspace) / ROUNDS_DIR
    if not rounds_dir.is_dir():
        return []
    return sorted(int(p.name) for p in rounds_dir.iterdir() if p.is_dir() and p.name.isdigit())


def latest_round(workspace: str | os.PathLike, *, having: str | None = None) -> int:
    """Newest round, or the newest whose folder holds the file ``having``."""
    rounds = [r for r in list_rounds(workspace)
              if having is None or (round_paths(workspace, r).root / having).exists()]
    if not rounds:
        what = f"with {having}" if having else "at all"
        raise WorkspaceError(f"{workspace}: no round {what} yet; see `mmal --help` for the stages")
    return rounds[-1]
