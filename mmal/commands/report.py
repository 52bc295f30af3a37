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
@click.option("--target", type=click.FloatRange(0, 1, min_open=True), default=None,
              metavar="ACC",
              help="Test top-1 (a fraction) each head must reach in the labels-needed table  "
                   "[default: per head, the best mean top-1 random sampling reaches]")
def report_command(workspace, out, target):
    """Summarize `mmal run`: a table per round and strategy, PNG plots, one HTML page.

    Writes results.csv and results.md (test top-1 of the fused and each
    unimodal head and each modality's contribution Φ, mean ± std over seeds,
    and selection time), accuracy.png,
    contribution.png (modality contribution Φ), weaker_weight.png (BMMAL's
    weaker-modality weight per dominated sub-pool) and ttest.png/ttest.csv
    (rounds where a strategy beats another in a paired two-sided t-test at 90%),
    and index.html: all of it with the run's strategies, seeds, budgets, config
    and mmal version in one page that needs no network. Partial runs work:
    missing seeds or rounds are listed.

    Labels needed (labels_needed.csv/.png, a table in results.md and on the
    page): for each strategy and head, the labeled samples at which its mean
    test top-1 over seeds first reaches the target (linearly interpolated
    between rounds; "not reached" if never), and the labels it saves relative
    to random.

    \b
    Example:
      mmal report --workspace uci-run
      mmal report --out figures/
      mmal report --target 0.435       # the paper's VGGSound target
    """
    from mmal.report import make_report
    from mmal.workspace import find_workspace

    root = find_workspace(workspace)
    report = make_report(root, out, target=target)
    click.echo(report.table, nl=False)
    if report.labels_table:
        click.echo("\nLabels needed (mean curve over seeds, interpolated; saved vs random):")
        click.echo(report.labels_table, nl=False)
    for line in report.warnings:
        click.echo(f"warning: {line}", err=True)
    click.echo(f"wrote {', '.join(p.name for p in report.files)} to {report.out}")
