"""Human-label commands: ``export`` (ids to annotate) and ``label`` (import the labels)."""

from __future__ import annotations

from pathlib import Path

import click

from mmal.commands.options import FILE_PATH, workspace_option
from mmal.errors import WorkspaceError

# Library code is imported inside each command body, so that `mmal --help` and the other
# commands do not load what these need (NumPy, h5py).


@click.command("export")
@click.argument("index_file", metavar="SELECTION", type=FILE_PATH)
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "label-studio"]),
              default="csv", show_default=True,
              help="File format for the annotation tool; label-studio writes a task list and "
                   "its labeling config.")
@click.option("--out", type=FILE_PATH, default=None,
              help="File to write  [default: next to SELECTION, <name>.csv, <name>.jsonl or "
                   "<name>.label-studio.json]")
@click.option("--local-files-root", type=click.Path(file_okay=False, path_type=Path),
              default=None,
              help="label-studio: the folder Label Studio serves local files from "
                   "(LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT); task URLs are relative to it  "
                   "[default: the dataset root]")
@workspace_option
@click.option("--force", is_flag=True, default=False,
              help="Replace an existing output instead of stopping with an error.")
@click.option("--unlabeled-only", is_flag=True, default=False,
              help="Leave out ids that already have a label (dataset's or imported).")
def export_command(index_file, fmt, out, local_files_root, workspace, force, unlabeled_only):
    """Write the ids of SELECTION with each modality's file path, for annotation.

    SELECTION is an index file from `mmal select` (or a round's labeled.json).
    Columns: id, name (the id as in the data), label (empty, to fill in with
    class names; multi-label: a|b), then one per modality with the absolute
    path of its file (or the inline text). Bring the filled file back with
    `mmal label` after `mmal next`.

    With --format label-studio: a Label Studio task list (one task per id,
    files as /data/local-files/?d=... URLs, text inline) and beside it the
    labeling config (.xml) to paste into the project. For a selection, each
    task carries the round model's top class as a prediction. Export the
    annotated project as JSON and bring it back with `mmal label`
    (docs/loop.md, "Label Studio").

    \b
    Example:
      mmal export rounds/002/selections/bmmal-b50-s0.json --out to-label.csv
      mmal export rounds/000/labeled.json --unlabeled-only
      mmal next --selection rounds/002/selections/bmmal-b50-s0.json
      mmal label --round 3 to-label.csv
      mmal export rounds/002/selections/bmmal-b50-s0.json --format label-studio
    """
    from mmal.annotation import export_ids, export_label_studio
    from mmal.labels import read_sheet
    from mmal.workspace import find_workspace

    try:
        root = find_workspace(workspace)
    except WorkspaceError:  # run from elsewhere: the workspace holding SELECTION
        root = find_workspace(index_file.parent)
    if local_files_root is not None and fmt != "label-studio":
        raise click.UsageError("--local-files-root is for --format label-studio")
    if fmt != "label-studio":
        path = export_ids(root, index_file, fmt=fmt, out=out, overwrite=force,
                          unlabeled_only=unlabeled_only)
        click.echo(f"wrote {len(read_sheet(path))} ids to {path}")
        return
    done = export_label_studio(root, index_file, out=out, overwrite=force,
                               unlabeled_only=unlabeled_only, local_files_root=local_files_root)
    click.echo(f"wrote {done.count} Label Studio tasks to {done.tasks}")
    click.echo(f"labeling config (paste into the project's Labeling Interface): {done.config}")
    if done.local_files_root is not None:
        click.echo("serve the files: LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true "
                   f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={done.local_files_root}")
    if done.predictions_from is not None:
        click.echo(f"predictions: the top class of the model of {done.predictions_from}")
    else:
        click.echo(f"no predictions: {done.no_predictions}")


@click.command("label")
@click.argument("label_file", metavar="FILE", type=FILE_PATH)
@click.option("--round", "round_", type=click.IntRange(min=0), required=True,
              help="Round whose labeled set the ids belong to (the round `mmal next` started).")
@click.option("--resolve", type=click.Choice(["error", "majority"]), default="error",
              show_default=True,
              help="Label Studio tasks whose annotators disagree: stop with an error naming "
                   "them, or take the label most annotators gave.")
@workspace_option
def label_command(label_file, round_, resolve, workspace):
    """Import human labels from FILE into rounds/RRR/labels.json.

    FILE is CSV with columns id and label (class names; extra columns such as
    those of `mmal export` are ignored) or JSON Lines ({"id": 7, "label":
    "cat"}); the id may also be the sample's own id as written in the data
    (the export's name column). Rows with an empty label are skipped, so a
    partial file is fine; the ids of the round still without a label are listed. An id outside the
    round's labeled set or an unknown class rejects the file, naming the line.
    Importing again merges (a later file wins for an id it labels again).

    FILE may also be Label Studio's JSON export (a .json list of tasks) of a
    project made from `mmal export --format label-studio`: each task takes the
    choices of its latest non-cancelled annotation; skipped tasks stay
    unlabeled; annotators who disagree are an error unless --resolve majority.

    \b
    Example:
      mmal label --round 3 to-label.csv
      mmal label --round 3 project-1-at-2024-05-01.json --resolve majority
    """
    from mmal.annotation import import_labels
    from mmal.workspace import find_workspace

    root = find_workspace(workspace)
    result = import_labels(root, round_, label_file, resolve=resolve)
    click.echo(f"imported {result.imported} labels into {result.path}")
    if result.majority:
        click.echo(f"settled by majority vote: {len(result.majority)} tasks: "
                   f"{', '.join(map(str, result.majority[:10]))}"
                   f"{' ...' if len(result.majority) > 10 else ''}")
    if result.replaced:
        click.echo(f"changed the earlier label of {len(result.replaced)} ids: "
                   f"{result.show_ids(result.replaced, 10)}")
    if result.overrode_dataset:
        click.echo(f"these labels replace the dataset's own for {len(result.overrode_dataset)} "
                   f"ids: {result.show_ids(result.overrode_dataset, 10)}")
    if len(result.missing):
        click.echo(f"still without a label in round {round_:03d}: {len(result.missing)} ids: "
                   f"{result.show_ids(result.missing.tolist(), 10)}")
    else:
        click.echo(f"every id added in round {round_:03d} has a label")
