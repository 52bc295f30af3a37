"""``make_report``: every table and plot of a comparison run, written to one folder.

Outputs (``out``, default ``<workspace>/report``)::

    results.csv        mean/std over seeds per (strategy, round): top-1, Φ, selection time
    results.md         the same as a Markdown table, the t-test matrix, what is missing
    accuracy.png       test top-1 vs labeled samples, multimodal and each modality (Fig. 4)
    contribution.png   modality contribution Φ per round (Figs. 2-3)
    weaker_weight.png  weaker-modality weight per dominated sub-pool (Fig. 6)
    ttest.png          pairwise t-test wins (Fig. 5)
    ttest.csv          the same matrix as CSV
    labels_needed.csv  labels each strategy needs to reach a target top-1, per head, and the
                       labels it saves relative to random (mmal.report.labels)
    labels_needed.png  the same as bars, one panel per head
    index.html         all of the above in one self-contained page (no network needed)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmal.atomic import check_replaceable, write_text_atomic
from mmal.errors import WorkspaceError
from mmal.report import plots
from mmal.report.collect import RunData, collect
from mmal.report.labels import (
    LABELS_NOTE,
    LabelsNeeded,
    default_targets,
    labels_csv,
    labels_needed,
    labels_table,
)
from mmal.report.page import render_page
from mmal.report.plots import REPORT_FILE, head_name
from mmal.report.tables import (
    RESULTS_NOTE,
    TTEST_NOTE,
    PairwiseTTests,
    aggregate,
    markdown,
    matrix_csv,
    matrix_table,
    results_table,
    to_csv,
    ttest_matrix,
    ttest_title,
)
from mmal.workspace import CONFIG_NAME

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Report:
    """What :func:`make_report` wrote and found."""

    out: Path
    files: list[Path]
    table: str
    warnings: list[str] = field(default_factory=list)
    data: RunData | None = None
    ttests: PairwiseTTests | None = None
    labels: list[LabelsNeeded] = field(default_factory=list)
    labels_table: str = ""

    @property
    def wins(self) -> np.ndarray | None:
        """(S, S) rounds where row strategy beats column strategy (see :attr:`ttests`)."""
        return None if self.ttests is None else self.ttests.wins


def make_report(workspace: str | os.PathLike, out: str | os.PathLike | None = None, *,
                confidence: float = 0.9, target: float | None = None) -> Report:
    """Write the tables and plots of the comparison run in ``workspace`` to ``out``.

    ``target`` is the test top-1 (a fraction in (0, 1]) of the labels-needed
    table, for every head; None: per head, the best mean top-1 random sampling
    reaches (no table, and a warning, when the run has no random strategy).

    Works on partial runs: missing seeds or rounds are left out of the means
    and listed in :attr:`Report.warnings` (also at the end of results.md).
    """
    if target is not None and not 0 < target <= 1:
        raise WorkspaceError(f"target top-1 {target!r} is not a fraction in (0, 1]; "
                             "pass e.g. --target 0.435 for 43.5%")
    workspace = Path(workspace)
    out = Path(out) if out is not None else workspace / "report"
    data = collect(workspace)
    rows = aggregate(data)
    results = results_table(rows, data.modalities)
    table = markdown(results)
    tests = ttest_matrix(data, confidence=confidence)
    matrix = matrix_table(tests)
    warnings = data.warnings()
    files = [_write(out / "results.csv", to_csv(rows, data.modalities))]
    files.append(_write(out / "ttest.csv", matrix_csv(tests)))
    files.append(plots.plot_accuracy(rows, data, out / "accuracy.png"))
    files.append(plots.plot_contribution(rows, data, out / "contribution.png"))
    weaker = plots.plot_weaker_weight(data, out / "weaker_weight.png")
    if weaker is None:
        warnings.append("no selection has a balance summary (sub-pool weights); "
                        "weaker_weight.png not written")
    else:
        files.append(weaker)
    files.append(plots.plot_ttest(tests, out / "ttest.png"))
    heads = ["mm", *data.modalities]
    targets = ({h: float(target) for h in heads} if target is not None
               else default_targets(rows, heads))
    needed, needed_table, needed_md = [], None, ""
    if targets is None:
        warnings.append("the run has no random strategy to take the target from; pass "
                        "--target ACC for the labels-needed table")
    else:
        heads = [h for h in heads if h in targets]
        needed = labels_needed(rows, data.strategies, targets)
        needed_table = labels_table(needed, heads, {h: head_name(h) for h in heads})
        needed_md = markdown(needed_table)
        files.append(_write(out / "labels_needed.csv", labels_csv(needed)))
        files.append(plots.plot_labels_needed(needed, heads, data.strategies,
                                              out / "labels_needed.png"))
    md = ["# Comparison run", "", f"Strategies: {', '.join(data.strategies)}; seeds: "
          f"{', '.join(map(str, data.seeds))}; rounds 0-{data.rounds}.", "",
          RESULTS_NOTE, "", table, "", f"## {ttest_title(tests, data.rounds)}", "",
          TTEST_NOTE, "", markdown(matrix)]
    if needed_table is not None:
        md += ["", "## Labels needed", "", LABELS_NOTE, "", needed_md]
    if warnings:
        md += ["", "## Missing", ""] + [f"- {w}" for w in warnings]
    files.insert(1, _write(out / "results.md", "\n".join(md) + "\n"))
    config = workspace / CONFIG_NAME
    page = render_page(
        data, workspace=str(workspace), results=results, ttests=matrix,
        ttest_heading=ttest_title(tests, data.rounds),
        plots=[p for p in files if p.suffix == ".png"], warnings=warnings,
        config=(CONFIG_NAME, config.read_text(encoding="utf-8")) if config.is_file() else None,
        labels_needed=needed_table)
    files.append(_write(out / "index.html", page))
    for line in warnings:
        log.info("missing: %s", line)  # callers show Report.warnings; the CLI prints them once
    return Report(out, files, table, warnings, data, tests, needed, needed_md)


def _write(path: Path, text: str) -> Path:
    check_replaceable(path, what=REPORT_FILE, error=WorkspaceError)  # never a file mmal stamps
    return write_text_atomic(path, text)
