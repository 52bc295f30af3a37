"""Workspace commands: ``init`` (create a workspace) and ``next`` (start the next round)."""

from __future__ import annotations

from pathlib import Path

import click

from mmal.commands.options import FILE_PATH, force_option, workspace_option

# Library code is imported inside each command body, so that `mmal --help` and the other
# commands do not load what these need (NumPy, h5py).


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--config", "config_path", required=True,
              type=FILE_PATH,
              show_default=True, help="TOML configuration to start from (see docs/config.md).")
@force_option
def init_command(directory, config_path, force):
    """Create a workspace in DIRECTORY from a TOML config.

    Checks the config, both splits and that every file they name exists, writes
    DIRECTORY/mmal.toml
    (the config with every default spelled out and absolute paths) and round 0's
    labeled set rounds/000/labeled.json: al.initial_budget ids drawn at random
    with seed al.seed. An existing workspace is an error unless --force.

    \b
    Example:
      mmal init uci-run --config examples/uci.toml
      cd uci-run && mmal train && mmal extract && mmal select --strategy bmmal --budget 50
    """
    from mmal.workspace import init_workspace, open_round

    init_workspace(directory, config_path, force=force)
    round0 = open_round(directory, 0)
    click.echo(f"created workspace {directory}: round 0's labeled set of {len(round0.labeled)} "
               f"ids in {round0.paths.labeled}")
    _say_what_needs_labels(round0)


@click.command("next")
@click.option("--selection", "selection_path", required=True,
              type=FILE_PATH,
              show_default=True, help="Selection index file written by `mmal select`.")
@workspace_option
@force_option
def next_command(selection_path, workspace, force):
    """Start the next round: labeled(r+1) = labeled(r) + the selection's ids.

    Round r is the round whose selections/ folder holds the file, else the round
    whose cache the selection was made from (a selection from no round's cache is
    refused). Writes rounds/<r+1>/labeled.json; an existing one is
    an error unless --force.

    \b
    Example:
      mmal next --selection rounds/000/selections/bmmal-b50-s0.json
      mmal train        # trains round 001
    """
    from mmal.workspace import find_workspace, next_round, open_round

    workspace = find_workspace(workspace)
    new = open_round(workspace, next_round(workspace, selection_path, force=force))
    click.echo(f"started round {new.number:03d}: {len(new.labeled)} labeled ids in "
               f"{new.paths.labeled}")
    _say_what_needs_labels(new)


def _say_what_needs_labels(round) -> None:
    """Print the next step when some of the round's ids have no label yet (unlabeled pools)."""
    missing = round.unlabeled_ids()
    if len(missing):
        workspace = round.workspace
        here = Path.cwd().resolve()
        inside = here == workspace.resolve() or workspace.resolve() in here.parents
        where = "" if inside else f" --workspace {workspace}"
        click.echo(f"{len(missing)} of them have no label yet "
                   f"({round.pool('train').show_ids(missing)}): "
                   f"`mmal export {round.paths.labeled} --unlabeled-only`, "
                   f"fill in the label column, then `mmal label --round {round.number} "
                   f"FILE{where}` before `mmal train`")
