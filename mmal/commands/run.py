"""``mmal run``: compare strategies over active-learning rounds from a shared round 0."""

from __future__ import annotations

import re
import time

import click

from mmal.commands.options import device_option, workspace_option

# Library code is imported inside each command body, so that `mmal --help` and the other
# commands do not load what this one needs (NumPy, h5py, torch).


def _int_list(ctx, param, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        values = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers "
                                 "(e.g. 0,1,2)") from None
    return _once_each(values, "seed")


def _name_list(ctx, param, value: str | None) -> list[str] | None:
    if value is None:
        return None
    return _once_each([v.strip() for v in value.split(",") if v.strip()], "strategy")


def _once_each(values: list, what: str) -> list:
    """``values``, refused when one repeats (it would count as a trajectory it is not)."""
    twice = list(dict.fromkeys(v for k, v in enumerate(values) if v in values[:k]))
    if twice:
        raise click.BadParameter(f"names {', '.join(map(str, twice))} more than once; list "
                                 f"each {what} once")
    return values


def _only_list(ctx, param, values: tuple[str, ...]) -> list[tuple[str, int]] | None:
    """``--only bmmal:seed=1`` (repeatable, or comma-separated) as [("bmmal", 1)]."""
    if not values:
        return None
    pairs = []
    for spec in (v.strip() for value in values for v in value.split(",")):
        match = _ONLY.match(spec)
        if match is None:
            raise click.BadParameter(f"{spec!r} is not STRATEGY:seed=K; write e.g. "
                                     "bmmal:seed=1")
        pairs.append((match.group(1), int(match.group(2))))
    _once_each([f"{name}:seed={seed}" for name, seed in pairs], "trajectory")
    return pairs


_ONLY = re.compile(r"^([^\s:,=]+):seed=(\d+)$")


@click.command("run")
@click.option("--strategies", callback=_name_list, default=None,
              help="Comma-separated strategy names (see `mmal strategies`), e.g. bmmal,badge,random.")
@click.option("--rounds", type=click.IntRange(min=1), required=True,
              help="Selection rounds R; rounds 0..R are trained and tested.")
@click.option("--budget", type=click.IntRange(min=1), default=None,
              help="Samples each strategy selects per round  [default: al.budget of mmal.toml]")
@click.option("--initial-budget", type=click.IntRange(min=2), default=None,
              help="Size of round 0's random labeled set, shared by all strategies  "
                   "[default: al.initial_budget of mmal.toml]")
@click.option("--seeds", default=None, callback=_int_list,
              help="Comma-separated seeds; one trajectory per strategy and seed  [default: 0]")
@click.option("--only", multiple=True, callback=_only_list, metavar="STRATEGY:seed=K",
              help="Run only this trajectory (repeatable, or comma-separated), instead of "
                   "--strategies x --seeds: one trajectory per cluster job.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes: trajectories (and each seed's round 0) run in parallel, "
                   "with the same results as --jobs 1.")
@workspace_option
@device_option
@click.option("--mc-dropout", type=click.IntRange(min=0), default=0, show_default=True,
              help="MC-dropout samples stored in each cache (needed by bald).")
@click.option("--quiet", "-q", is_flag=True, default=False,
              help="One line per finished round, the failures and the summary; nothing else.")
@click.option("--tensorboard", is_flag=True, default=False,
              help="Write each trajectory's test metrics per round to runs/tensorboard/"
                   "<strategy>-seed<k>/, and log every training this run does.")
def run_command(strategies, rounds, budget, initial_budget, seeds, only, jobs, workspace, device,
                mc_dropout, quiet, tensorboard):
    """Run every strategy for R rounds per seed, from a shared round 0, resumably.

    For each seed, round 0 (random labeled set, trained model, cache) is computed
    once in runs/round0/seed<k>/ and hard-linked into each strategy's trajectory
    runs/<strategy>/seed<k>/, an ordinary workspace that then goes select -> next
    -> train -> extract per round. Rerunning continues where a run stopped and
    never recomputes a finished step; it also extends a run with more seeds,
    strategies or rounds. A trajectory that fails is reported (strategy, seed,
    round, error) and the others go on; the exit code is then 1. --budget and
    --initial-budget default to [al] of mmal.toml. --jobs N runs N trajectories
    at once; --only runs one trajectory, e.g. one per job of a Slurm array, and
    runs that share a workspace wait for each other's round 0. Summarize with
    `mmal report`, or watch with --tensorboard: one TensorBoard run per strategy
    and seed, test top-1 and mean contribution against labeled samples
    (docs/loop.md).

    \b
    Example:
      mmal init uci-run --config examples/uci.toml
      mmal run --workspace uci-run --strategies bmmal,badge,random \\
               --rounds 4 --seeds 0,1,2 --jobs 3
      mmal report --workspace uci-run
      mmal run --workspace uci-run --rounds 4 --only bmmal:seed=3    # one more trajectory
      mmal run --workspace uci-run --strategies bmmal,random --rounds 4 --tensorboard
      tensorboard --logdir uci-run/runs/tensorboard
    """
    from mmal.loop import run_comparison
    from mmal.workspace import find_workspace

    if only is not None and (strategies is not None or seeds is not None):
        raise click.UsageError("--only names the trajectories itself; leave out --strategies "
                               "and --seeds")
    if only is None and strategies is None:
        raise click.UsageError("Missing option '--strategies' (or --only STRATEGY:seed=K).")
    root = find_workspace(workspace)
    printer = _Printer(quiet)
    result = run_comparison(root, strategies, rounds=rounds, budget=budget,
                            initial_budget=initial_budget, seeds=seeds, only=only, jobs=jobs,
                            device=device, mc_dropout=mc_dropout, callback=printer,
                            tensorboard=tensorboard)
    total = len(only) if only is not None else len(strategies) * len(seeds or [0])
    click.echo(f"finished {len(result.completed)} of {total} trajectories in "
               f"{result.wall_s:.1f} s; results in {result.layout.root}")
    if result.failures:
        click.echo(f"{len(result.failures)} failed (rerun to retry them):", err=True)
        for failure in result.failures:
            click.echo(f"  {failure.describe()}", err=True)
        raise SystemExit(1)


class _Printer:
    """One concise line per finished (trajectory, round), and one per failure.

    A round's line: strategy, seed, round, labeled count, test top-1 of each head,
    the selection time, and the wall time of the round. Without ``quiet``, also
    one line per seed when its shared round 0 is ready.
    """

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
        elif event.kind == "round":  # also with -q: a long run says something every round
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
