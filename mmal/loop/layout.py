"""Where a comparison run keeps its files inside a workspace.

::

    workspace/
      mmal.toml                       the base config (from `mmal init`)
      runs/
        .lock                         held while plan.json or status.json is written
        plan.json                     strategies, seeds, rounds, budgets of every `mmal run`
        status.json                   outcome of the last `mmal run` per trajectory
        configs/seed<k>.toml          the base config with al.seed = k and the run's budgets
        round0/seed<k>/               round 0 of seed k, computed once: a workspace of its own
                                      (its .lock is held while round 0 is made or checked)
        <strategy>/seed<k>/           one trajectory: a workspace whose rounds/000 files are
                                      hard links (or copies) of round0/seed<k>'s (its .lock is
                                      held for each round the run works on)
        tensorboard/<strategy>-seed<k>/   `mmal run --tensorboard`: one TensorBoard run per
                                      trajectory, rewritten from its metrics.json files

Every trajectory is an ordinary workspace, so ``mmal train/extract/select/next``
work on it unchanged, and so does :mod:`mmal.report`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmal import atomic
from mmal.errors import WorkspaceError
from mmal.lock import folder_lock
from mmal.stamp import RUN_PLAN, RUN_STATUS, check_stamp, read_stamped_json

RUNS_DIR = "runs"
SHARED = "round0"
TENSORBOARD = "tensorboard"
PLAN_NAME = "plan.json"
STATUS_NAME = "status.json"
#: Folders of runs/ that are not strategies (and so names no strategy may take).
RESERVED = (SHARED, "configs", TENSORBOARD)
_SEED_DIR = re.compile(r"^seed(\d+)$")


@dataclass(frozen=True)
class RunLayout:
    """Paths of the comparison run in ``workspace``."""

    workspace: Path

    @property
    def root(self) -> Path:
        return self.workspace / RUNS_DIR

    @property
    def plan(self) -> Path:
        return self.root / PLAN_NAME

    @property
    def status(self) -> Path:
        return self.root / STATUS_NAME

    @property
    def lock(self) -> Path:
        """Held while ``plan.json`` or ``status.json`` is read and written (:mod:`mmal.lock`)."""
        return folder_lock(self.root)

    def config(self, seed: int) -> Path:
        return self.root / "configs" / f"seed{seed}.toml"

    def shared(self, seed: int) -> Path:
        """The round-0 workspace of ``seed``."""
        return self.root / SHARED / f"seed{seed}"

    def trajectory(self, strategy: str, seed: int) -> Path:
        """The workspace of one (strategy, seed) trajectory."""
        return self.root / strategy / f"seed{seed}"

    @property
    def tensorboard_root(self) -> Path:
        """Where ``mmal run --tensorboard`` writes: ``tensorboard --logdir`` this folder."""
        return self.root / TENSORBOARD

    def tensorboard(self, strategy: str, seed: int) -> Path:
        """The TensorBoard run of one trajectory."""
        return self.tensorboard_root / f"{strategy}-seed{seed}"

    def trajectories(self) -> list[tuple[str, int]]:
        """(strategy, seed) pairs that have a folder, sorted."""
        if not self.root.is_dir():
            return []
        found = []
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or folder.name in RESERVED:
                continue
            for sub in folder.iterdir():
                match = _SEED_DIR.match(sub.name)
                if match and sub.is_dir():
                    found.append((folder.name, int(match.group(1))))
        return sorted(found)

    def read_plan(self) -> dict[str, Any] | None:
        """The stored plan, or None before the first run."""
        if not self.plan.is_file():
            return None
        return read_stamped_json(self.plan, RUN_PLAN, error=WorkspaceError, fix="move it away "
                                 "and rerun `mmal run` with the same options")

    def read_status(self) -> dict[str, Any] | None:
        """The outcome of the last run, or None before the first (or when unreadable)."""
        if not self.status.is_file():
            return None
        try:
            status = json.loads(self.status.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None  # it only lists the last run's failures; the report goes on without
        if not isinstance(status, dict):
            return None
        check_stamp(status, expected_type=RUN_STATUS, path=str(self.status), error=WorkspaceError,
                    fix="move it away (the next `mmal run` rewrites it)")
        return status


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` via a temporary file and a rename."""
    atomic.write_json_atomic(path, data, indent=1)


def link_or_copy(source: Path, target: Path) -> str:
    """Hard-link ``source`` to ``target`` (copy where links are impossible); atomic.

    Returns "link" or "copy". Safe to share: every mmal stage replaces files
    by rename and never writes into an existing one.
    """
    fd, tmp = atomic.make_temp(target)  # a fresh name no one else can have planted
    os.close(fd)
    try:
        try:
            tmp.unlink()
            os.link(source, tmp)  # fails rather than follow anything put at tmp meanwhile
            how = "link"
        except OSError:
            with open(source, "rb") as src, atomic.atomic_open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            shutil.copystat(source, target)
            return "copy"
        atomic.publish(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return how

