"""Option decorators shared by several commands."""

from __future__ import annotations

from pathlib import Path

import click


class FilePath(click.Path):
    """A file path; an empty one is refused (``Path("")`` would quietly mean ``.``)."""

    def __init__(self):
        super().__init__(dir_okay=False, path_type=Path)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("is empty; pass a file name", param, ctx)
        return super().convert(value, param, ctx)


#: The type of every file argument and option.
FILE_PATH = FilePath()

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


#: ``--no-store`` of ``mmal train`` and ``mmal extract`` (docs/training.md, the encoder-output store).
no_store_option = click.option(
    "--no-store", is_flag=True, default=False,
    help="Run frozen encoders on decoded media instead of reading their outputs from the "
         "workspace's store (encoded/<split>/<modality>.h5).")
