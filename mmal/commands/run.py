"""``mmal run``: compare strategies over active-learning rounds from a shared round 0."""

from __future__ import annotations

import time

import click

from mmal.commands.options import device_option, workspace_option

# Library code is imported inside each command body, so that `mmal --help` and the other
# commands do not load what this one needs (NumPy, h5py, torch).


def _int_list(ctx, param, value: str) -> list[int]:
    try:
        values = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers "
                                 "(e.g. 0,1,2)") from None
    return _once_each(values, "seed")


def _name_list(ctx, param, value: str) -> list[str]:
    return _once_each([v.strip() for v in value.split(",") if v.strip()], "strategy")


def _once_each(values: list, what: str) -> list:
    """``values``, refused when one repeats (it would count as a trajectory it is not)."""
    twice = list(dict.fromkeys(v for k, v in enumerate(values) if v in values[:k]))
    if twice:
        raise click.BadParameter(f"names {', '.join(map(str, twice))} more than once; list "
                                 f"each {what} once")
    return values


@click.command("run")
@click.option("--strategies", required=True, callback=_name_list,
              help="Comma-separated strategy names (see `mmal strategies`), e.g. bmmal,badge,random.")
@click.option("--rounds", type=click.IntRange(min=1), required=True,
              help="Selection rounds R; rounds 0..R are trained and tested.")
@click.option("--budget", type=click.IntRange(min=1), required=True,
              help="Samples each strategy selects per round.")
@click.option("--initial-budget", type=click.IntRange(min=2), required=True,
              help="Size of round 0's random labeled set, shared by all strategies.")
@click.option("--seeds", default="0", show_default=True, callback=_int_list,
              help="Comma-separated seeds; one trajectory per strategy and seed.")
@workspace_option
@device_option
@click.option("--mc-dropout", type=click.IntRange(min=0), default=0, show_default=True,
              help="MC-dropout samples stored in each cache (needed by bald).")
@click.option("--quiet", "-q", is_flag=True, default=False,
              help="Only failures and the final summary.")
@click.option("--tensorboard", is_flag=True, default=False,
              help="Write each trajectory's test metrics per round to runs/tensorboard/"
                   "<strategy>-seed<k>/, and log every training this run does.")
def run_command(strategies, rounds, budget, initial_budget, seeds, workspace, device,
                mc_dropout, quiet, tensorboard):
    """Run every strategy for R rounds per seed, from a shared round 0, resumably.

    For each seed, round 0 (random labeled set, trained model, cache) is computed
    once in runs/round0/seed<k>/ and hard-linked into each strategy's trajectory
    runs/<strategy>/seed<k>/, an ordinary workspace that then goes select -> next
    -> train -> extract per round. Rerunning continues where a run stopped and
    never recomputes a finished step; it also extends a run with more seeds,
    strategies or rounds. A trajectory that fails is reported (strategy, seed,
    round, error) and the others go on; the exit code is then 1. Summarize with
    `mmal report`, or watch with --tensorboard: one TensorBoard run per strategy
    and seed, test top-1 and mean contribution against labeled samples
    (docs/loop.md).

    \b
    Example:
      mmal init uci-run --config examples/uci.toml
      mmal run --workspace uci-run --strategies bmmal,badge,random \\
               --rounds 4 --budget 50 --initial-budget 100 --seeds 0,1,2
      mmal report --workspace uci-run
      mmal run --workspace uci-run --strategies bmmal,random --rounds 4 --budget 50 \\
               --initial-budget 100 --tensorboard
      tensorboard --logdir uci-run/runs/tensorboard
    """
    from mmal.loop import run_comparison
    from mmal.workspace import find_workspace

    root = find_workspace(workspace)
    printer = _Printer(quiet)
    result = run_comparison(root, strategies, rounds=rounds, budget=budget,
                            initial_budget=initial_budget, seeds=seeds, device=device,
                            mc_dropout=mc_dropout, callback=printer, tensorboard=tensorboard)
    total = len(strategies) * len(seeds)
    click.echo(f"finished {len(result.completed)} of {total} trajectories in "
               f"{result.wall_s:.1f} s; results in {result.layout.root}")
    if result.failures:
        click.echo(f"{len(result.failures)} failed (rerun to retry them):", err=True)
        for failure in result.failures:
            click.echo(f"  {failure.describe()}", err=True)
        raise SystemExit(1)


class _Printer:
    """One concise line per finished (trajectory, round), and one per failure."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.began: dict[tuple, float] = {}
        self.skipped: dict[tuple, bool] = {}

    def __call__(self, event) -> None:
        key = (event.strategy, event.seed, event.round)
        if event.kind == "start":
            self.began.setdefault(key, time.perf_counter())
        elif event.kind == "done":
            self.skipped[key] = self.skipped.get(key, True) and event.info.get("skipped", False)
            if event.strategy is None and event.step == "extract" and not self.quiet:
                click.echo(f"round 000 shared seed {event.seed}: "
                           f"{'done earlier' if self.skipped[key] else 'trained and extracted'}")
        elif event.kind == "round" and not self.quiet:
            top1 = " ".join(f"{m} {v:.3f}" for m, v in event.info["top1"].items())
            sel = event.info.get("select_s")
            tail = f", selected in {sel:.2f} s" if sel is not None else ""
            spent = time.perf_counter() - self.began.pop(key, time.perf_counter())
            state = ("done earlier" if self.skipped.pop(key, False)
                     else "shared" if event.round == 0 else f"{spent:.1f} s")
            click.echo(f"round {event.round:03d} {event.strategy} seed {event.seed}: "
                       f"{event.info['num_labeled']} labeled, top-1 {top1}{tail} ({state})")
        elif event.kind == "failed":
            who = event.strategy or "shared round 0"
            click.echo(f"FAILED round {event.round:03d} {who} seed {event.seed} at "
                       f"{event.step}: {event.message}", err=True)
