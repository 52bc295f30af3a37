"""``mmal extract``: write a round's feature cache from its model."""

from __future__ import annotations

import click

from mmal.commands.options import (
    device_option,
    force_option,
    no_store_option,
    workspace_option,
)

# Library code is imported inside each command body, so that `mmal --help` and the other
# commands do not load what this one needs (torch).


@click.command("extract")
@click.option("--round", "round_", type=click.IntRange(min=0), default=None,
              help="Round to extract  [default: newest round with a model.pt]")
@workspace_option
@click.option("--mc-dropout", type=click.IntRange(min=0), default=0, show_default=True,
              help="MC-dropout samples T of the fused logits per sample (needs model.dropout > 0).")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32",
              show_default=True, help="Storage dtype of the features (logits stay float32).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Samples per forward pass.")
@click.option("--num-workers", type=click.IntRange(min=0), default=None,
              help="DataLoader worker processes  [default: train.num_workers of mmal.toml]")
@device_option
@click.option("--keep-shards", is_flag=True, default=False,
              help="Under torchrun: keep rounds/RRR/cache.shards/ after joining the shards.")
@click.option("--no-resume", is_flag=True, default=False,
              help="Start over instead of continuing an interrupted cache.h5.partial.")
@click.option("--quiet", "-q", is_flag=True, default=False, help="No progress bar.")
@no_store_option
@force_option
def extract_command(round_, workspace, mc_dropout, dtype, batch_size, num_workers, device,
                    keep_shards, no_resume, quiet, no_store, force):
    """Run a round's model over the whole pool and write rounds/RRR/cache.h5.

    Stores every modality's features, the fused, unimodal and 2^M coalition
    logits, optional MC-dropout logits, the fused head and the fingerprints of
    model.pt and the pool; labels only for the round's labeled ids. An
    interrupted run continues where it stopped when rerun with the same
    options. An existing cache is an error unless --force.

    Under torchrun every rank extracts a contiguous share of the pool into
    rounds/RRR/cache.shards/, then rank 0 joins the shards into the same
    cache.h5 one process writes; a rerun keeps finished shards (docs/distributed.md).

    \b
    Example:
      mmal extract                             # newest trained round
      mmal extract --round 3 --mc-dropout 20 --dtype float16 --device cuda
      torchrun --nproc-per-node 8 -m mmal extract --round 3
    """
    from mmal.distributed import env_rank
    from mmal.extract import extract_round
    from mmal.workspace import find_workspace

    root = find_workspace(workspace)
    path = extract_round(root, round_, device=device, mc_dropout=mc_dropout, dtype=dtype,
                         batch_size=batch_size, num_workers=num_workers, force=force,
                         resume=not no_resume, progress=not quiet, keep_shards=keep_shards,
                         store=not no_store)
    if env_rank() == 0:
        click.echo(f"wrote {path}")
