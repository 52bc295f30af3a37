"""Gather a comparison run's results into one list of records, and say what is missing.

One :class:`RoundRecord` per (strategy, seed, round) that has a
``metrics.json``, read from the trajectory workspaces of
:class:`mmal.loop.RunLayout`. The grid the run should fill comes from
``runs/plan.json`` (every strategy, seed and round ever asked of ``mmal run``),
or, without a plan, from what is on disk.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmal.cache.index import read_index
from mmal.errors import IndexFileError, WorkspaceError
from mmal.loop.layout import RunLayout
from mmal.workspace import list_rounds, read_metrics, round_paths

log = logging.getLogger(__name__)
_RETRAIN = "retrain the round with `mmal train --force`"


@dataclass(frozen=True)
class RoundRecord:
    """One trajectory round's results.

    Attributes
    ----------
    top1 : dict
        "mm" and each modality -> test top-1 accuracy (fraction in [0, 1]).
    contribution : dict
        Modality -> mean Shapley contribution Φ at the true class (test split).
    select_s : float or None
        Wall time in seconds of the selection made from this round's cache.
    summary : dict
        The selection's summary (BMMAL: ``pool_size`` and ``subpools``), or {}.
    """

    strategy: str
    seed: int
    round: int
    num_labeled: int
    top1: dict[str, float]
    contribution: dict[str, float]
    select_s: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunData:
    """Every record of a run, the expected grid, and the modality order.

    ``plan`` and ``status`` are ``runs/plan.json`` and ``runs/status.json`` as
    read (stamp included), or {} where the run has none.
    """

    records: list[RoundRecord]
    strategies: list[str]
    seeds: list[int]
    rounds: int
    modalities: list[str]
    missing_metrics: dict[tuple[str, int], list[int]]
    missing_selections: dict[tuple[str, int], list[int]]
    failures: list[dict[str, Any]]
    plan: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)

    def get(self, strategy: str, seed: int, round: int) -> RoundRecord | None:
        for rec in self.records:
            if (rec.strategy, rec.seed, rec.round) == (strategy, seed, round):
                return rec
        return None

    def warnings(self) -> list[str]:
        """One line per kind of gap (metrics, selections, failures of the last run)."""
        lines = []
        for what, gaps in (("metrics", self.missing_metrics),
                           ("selections", self.missing_selections)):
            if gaps:
                parts = [f"{s} seed {k} {_rounds_text(r, self.rounds, what)}"
                         for (s, k), r in sorted(gaps.items())]
                lines.append(f"missing {what}: " + "; ".join(parts))
        for f in self.failures:
            who = f.get("strategy") or "round 0 (all strategies)"
            lines.append(f"last run failed: {who} seed {f.get('seed')} round "
                         f"{int(f.get('round', 0)):03d} {f.get('step')}: {f.get('message')}")
        return lines


def collect(workspace: str | os.PathLike) -> RunData:
    """Read every trajectory of the comparison run in ``workspace``.

    Raises
    ------
    WorkspaceError
        If the workspace has no ``runs/`` folder or no trajectory with results.
    """
    layout = RunLayout(Path(workspace))
    if not layout.root.is_dir():
        raise WorkspaceError(f"{workspace}: has no {layout.root.name}/ folder; run "
                             "`mmal run --strategies ...` in it first")
    plan = layout.read_plan() or {}
    found = layout.trajectories()
    strategies = list(plan.get("strategies", [])) + sorted(
        {s for s, _ in found} - set(plan.get("strategies", [])))
    seeds = list(plan.get("seeds", [])) + sorted({k for _, k in found} - set(plan.get("seeds", [])))
    records: list[RoundRecord] = []
    for strategy, seed in found:
        folder = layout.trajectory(strategy, seed)
        for r in list_rounds(folder):
            paths = round_paths(folder, r)
            if paths.metrics.is_file():
                records.append(_record(strategy, seed, r, paths, round_paths(folder, r + 1)))
    if not records:
        raise WorkspaceError(f"{layout.root}: no trajectory has a trained round yet; run "
                             "`mmal run` (or resume it) first")
    rounds = int(plan.get("rounds", max(rec.round for rec in records)))
    have = {(rec.strategy, rec.seed, rec.round) for rec in records}
    with_selection = {(rec.strategy, rec.seed, rec.round) for rec in records
                      if rec.select_s is not None}
    missing_metrics, missing_selections = {}, {}
    for s in strategies:
        for k in seeds:
            gaps = [r for r in range(rounds + 1) if (s, k, r) not in have]
            if gaps:
                missing_metrics[(s, k)] = gaps
            unselected = [r for r in range(rounds) if (s, k, r) in have
                          and (s, k, r) not in with_selection]
            if unselected:
                missing_selections[(s, k)] = unselected
    status = layout.read_status() or {}
    return RunData(records, strategies, seeds, rounds, _modalities(records), missing_metrics,
                   missing_selections, list(status.get("failures", [])), plan, status)


def _record(strategy: str, seed: int, r: int, paths, after) -> RoundRecord:
    metrics = read_metrics(paths.metrics)
    try:
        test = metrics["test"]
        top1 = {k: float(v) for k, v in test["top1"].items()}
        contribution = {k: float(v) for k, v in
                        test["shapley_true_class"]["contribution_mean"].items()}
        num_labeled = int(metrics["num_labeled"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WorkspaceError(f"{paths.metrics}: lacks field {exc}; {_RETRAIN}") from None
    selection = _selection_of(strategy, paths, after)
    select_s, summary = None, {}
    if selection is not None:
        prov = selection.provenance
        select_s = float(prov["wall_time_s"]) if "wall_time_s" in prov else None
        summary = dict(prov.get("summary") or {})
    return RoundRecord(strategy, seed, r, num_labeled, top1, contribution, select_s, summary)


def _selection_of(strategy: str, paths, after):
    """The selection this round's cache gave: the one round r+1 was built from, else by name."""
    if after.labeled.is_file():
        try:
            named = read_index(after.labeled).provenance.get("selection")
            if named and Path(named).is_file():
                return read_index(named)
        except IndexFileError as exc:
            log.warning("%s", exc)
    if not paths.selections.is_dir():
        return None
    for path in sorted(paths.selections.glob("*.json")):
        try:
            index = read_index(path)
        except IndexFileError:
            continue
        if index.kind == "selection" and index.provenance.get("strategy") == strategy:
            return index
    return None


def _modalities(records: list[RoundRecord]) -> list[str]:
    names: list[str] = []
    for rec in records:
        names += [m for m in rec.top1 if m != "mm" and m not in names]
    return names


def _rounds_text(rounds: list[int], last: int, what: str) -> str:
    expected = last + 1 if what == "metrics" else last
    if len(rounds) == expected:
        return "(all rounds)"
    spans, start = [], rounds[0]
    for a, b in zip(rounds, rounds[1:] + [None], strict=True):
        if b != a + 1:
            spans.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ("round " if len(rounds) == 1 else "rounds ") + ", ".join(spans)
