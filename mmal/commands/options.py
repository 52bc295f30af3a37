"""Option decorators shared by several commands."""

from __future__ import annotations

from pathlib import Path

import click

seed_option = click.option(
    "--seed", type=click.IntRange(min=0), default=0, show_default=True,
    help="Random seed; the same inputs and seed give the same outputs.",
)
force_option = click.option(
    "--force", is_flag=True, default=False,
    help="Replace an existing output instead of stopping with an error.",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, default=False, help="Print JSON instead of text.",
)
device_option = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="Where to compute: 'auto' takes the GPU when one is available.",
)
workspace_option = click.option(
    "--workspace", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Workspace folder  [default: the one containing the current directory]",
)
