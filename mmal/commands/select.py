"""Commands of the selection stage: ``select`` and ``strategies``."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import click

from mmal.commands.options import (
    FILE_PATH,
    device_option,
    force_option,
    seed_option,
    workspace_option,
)
from mmal.select.params import PRECISIONS

# Library code is imported inside each command body, so that `mmal --help` and the other
# commands do not load what these need (NumPy, h5py, strategy modules).


def _parse_params(pairs: tuple[str, ...]) -> dict:
    """``("block_size=64", "precision=float64")`` -> dict; values parsed as JSON when they are."""
    params = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--param")
        try:
            params[key.replace("-", "_")] = json.loads(raw)
        except ValueError:  # not JSON (a JSONDecodeError), or an integer of over 4,300 digits
            params[key.replace("-", "_")] = raw
    return params


def _round_to_read(cache: Path | None, round_: int | None, workspace: Path | None):
    """The workspace round (--round, default the newest with a cache), or None for --cache."""
    if cache is not None:
        if round_ is not None or workspace is not None:
            raise click.UsageError("pass either --cache or --round/--workspace, not both")
        return None
    from mmal.workspace import find_workspace, latest_round, open_round

    root = workspace if workspace is not None else find_workspace()
    chosen = open_round(root, round_, having="cache.h5")
    newest = latest_round(root)
    if round_ is None and newest > chosen.number:
        click.echo(f"note: round {newest:03d} has no cache.h5 yet (`mmal train`, `mmal extract`); "
                   f"selecting from round {chosen.number:03d}'s", err=True)
    return chosen


@click.command("select")
@click.option("--strategy", "-s", required=True,
              help="Strategy name; `mmal strategies` lists them (e.g. bmmal, badge, random).")
@click.option("--budget", "-b", type=int, required=True,
              help="Number of unlabeled samples to pick (at most the unlabeled count).")
@click.option("--round", "round_", type=click.IntRange(min=0), default=None,
              help="Workspace round whose cache.h5 to read  [default: newest round with a cache]")
@click.option("--cache", type=FILE_PATH, default=None,
              help="Read this cache file instead of a workspace round.")
@workspace_option
@seed_option
@device_option
@click.option("--out", type=FILE_PATH, default=None,
              help="Index file to write  [default: <cache folder>/selections/"
                   "<strategy>-b<budget>-s<seed>.json]")
@force_option
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="Embedding precision of badge/bmmal; float64 makes CPU and GPU pick the "
                   "same ids  [default: float32]")
@click.option("--max-memory", metavar="SIZE", default=None,
              help="Host memory for the badge/bmmal working set, e.g. 12G or 512M; past it, "
                   "the embedding spills to a temporary file beside the output (same ids, "
                   "slower)  [default: 60% of the available memory]")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="Strategy parameter, repeatable (e.g. -p block_size=64); values are JSON "
                   "when they parse as JSON, else strings.")
def select_command(strategy, budget, round_, cache, workspace, seed, device, out, force,
                   precision, max_memory, params):
    """Pick the next samples to label from a round's feature cache.

    Reads only the cache, runs the strategy and writes an index file of the
    chosen sample ids (in pick order) with its provenance, and next to it the
    per-sample modality balance (Shapley values, contributions, BMMAL weights)
    as <index stem>.diagnostics.npz.

    \b
    Examples:
      mmal select --strategy bmmal --budget 500
      mmal select -s badge -b 500 --round 3 --seed 1 --device cpu
      mmal select -s bmmal -b 50 --cache pool.h5 --out picks.json -p block_size=64
      mmal select -s bmmal -b 5000 --cache big.h5 --max-memory 8G
    """
    from mmal.select.api import select
    from mmal.select.registry import get_strategy

    get_strategy(strategy)  # an unknown name is the one error, before anything else is said
    rnd = _round_to_read(cache, round_, workspace)
    # a round is read under its shared lock: selects run together, a train or extract waits
    with rnd.locked("mmal select", shared=True) if rnd is not None else nullcontext():
        # a workspace cache must come from the round's checkpoint
        path = cache if rnd is None else rnd.checked_cache()
        index = select(path, strategy, budget, seed=seed, device=device, out=out,
                       params=_parse_params(params), overwrite=force, precision=precision,
                       progress=True, max_memory=max_memory)
    prov = index.provenance
    click.echo(f"selected {len(index)} samples with {prov['strategy']} on {prov['backend']} "
               f"in {prov['wall_time_s']:.2f} s -> {index.path}")
    if "diagnostics" in prov:
        click.echo(f"diagnostics -> {Path(index.path).parent / prov['diagnostics']}")


@click.command("strategies")
def strategies_command():
    """List the selection strategies (built-in and from plugins).

    Third-party packages add strategies through the `mmal.strategies` entry point.

    \b
    Example:
      mmal strategies
    """
    from mmal.select import available_strategies

    strategies = available_strategies()
    width = max(len(name) for name in strategies)
    for name, strat in strategies.items():
        needs = "  [needs mmal extract --mc-dropout]" if strat.needs_mc_dropout else ""
        click.echo(f"{name:<{width}}  {strat.description}{needs}")
