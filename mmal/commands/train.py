"""``mmal train``: fit a round's multimodal model on its labeled set and test it."""

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


@click.command("train")
@click.option("--round", "round_", type=click.IntRange(min=0), default=None,
              help="Round to train  [default: newest round with a labeled set]")
@workspace_option
@device_option
@click.option("--no-resume", is_flag=True, default=False,
              help="Ignore an interrupted run's model.pt.partial and start from scratch.")
@click.option("--quiet", "-q", is_flag=True, default=False, help="No progress bars.")
@click.option("--tensorboard", is_flag=True, default=False,
              help="Write losses, learning rates and test metrics to rounds/RRR/tensorboard/ "
                   "(on even where mmal.toml has train.tensorboard = false).")
@no_store_option
@force_option
def train_command(round_, workspace, device, no_resume, quiet, tensorboard, no_store,
                  force):
    """Train a round's model from scratch on rounds/RRR/labeled.json.

    Uses the [modalities], [model] and [train] sections of mmal.toml, then tests
    the model on the test split. Writes rounds/RRR/model.pt and metrics.json
    (top-1 of the fused and each unimodal head, mean Shapley contribution of
    each modality at the true class). An interrupted run resumes after its last
    finished epoch when rerun. An existing model.pt is an error unless --force.

    Under torchrun it trains with DistributedDataParallel: train.batch_size is
    the global batch, split across the ranks; rank 0 writes model.pt and the
    metrics of the whole test split (docs/distributed.md).

    With --tensorboard (or train.tensorboard = true) it also writes TensorBoard
    event files to rounds/RRR/tensorboard/ (docs/training.md); every training
    of a round replaces that folder.

    \b
    Example:
      mmal train                      # newest round, GPU if there is one
      mmal train --round 2 --device cpu --workspace uci-run
      mmal train --tensorboard && tensorboard --logdir rounds/
      torchrun --nproc-per-node 4 -m mmal train --round 2
    """
    from mmal.distributed import env_rank
    from mmal.train import train_round
    from mmal.workspace import find_workspace, round_paths

    root = find_workspace(workspace)
    metrics = train_round(root, round_, device=device, resume=not no_resume, force=force,
                          progress=not quiet, tensorboard=True if tensorboard else None,
                          store=not no_store)
    if env_rank() != 0:
        return
    test = metrics["test"]
    top1 = ", ".join(f"{k} {v:.4f}" for k, v in test["top1"].items())
    share = ", ".join(f"{k} {v:.3f}"
                      for k, v in test["shapley_true_class"]["contribution_mean"].items())
    click.echo(f"round {metrics['round']:03d}: trained on {metrics['num_labeled']} samples for "
               f"{metrics['epochs']} epochs")
    click.echo(f"test top-1: {top1}")
    if "map" in test:
        click.echo("test mAP: " + ", ".join(f"{k} {v:.4f}" for k, v in test["map"].items()))
    click.echo(f"mean contribution at the true class: {share}")
    paths = round_paths(root, metrics["round"])
    click.echo(f"wrote {paths.model} and {paths.metrics}")
    if paths.tensorboard.is_dir():  # each training removes it unless it logs
        click.echo(f"wrote TensorBoard events to {paths.tensorboard}")
