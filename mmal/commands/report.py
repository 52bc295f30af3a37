"""``mmal report``: tables and plots of a comparison run."""

from __future__ import annotations

from pathlib import Path

import click

from mmal.commands.options import workspace_option

# Library code is imported inside each command body, so that `mmal --help` and the other
# commands do not load what this one needs (NumPy, h5py, matplotlib).


@click.command("report")
@workspace_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the outputs  [default: <workspace>/report]")
def report_command(workspace, out):
    """Summarize `mmal run`: a table per round and strategy, PNG plots, one HTML page.

    Writes results.csv and results.md (test top-1 of the fused and each
    unimodal head, mean ± std over seeds, and selection time), accuracy.png,
    contribution.png (modality contribution Φ), weaker_weight.png (BMMAL's
    weaker-modality weight per dominated sub-pool) and ttest.png/ttest.csv
    (rounds where a strategy beats another in a paired two-sided t-test at 90%),
    and index.html: all of it with the run's strategies, seeds, budgets, config
    and mmal version in one page that needs no network. Partial runs work:
    missing seeds or rounds are listed.

    \b
    Example:
      mmal report --workspace uci-run
      mmal report --out figures/
    """
    from mmal.report import make_report
    from mmal.workspace import find_workspace

    root = find_workspace(workspace)
    report = make_report(root, out)
    click.echo(report.table, nl=False)
    for line in report.warnings:
        click.echo(f"warning: {line}", err=True)
    click.echo(f"wrote {', '.join(p.name for p in report.files)} to {report.out}")
