"""``run_comparison``: drive several strategies through active-learning rounds, fairly.

For each seed k, round 0 is computed once in ``runs/round0/seed<k>`` (the
random initial labeled set drawn with seed k, its trained model, its cache)
and hard-linked into every strategy's trajectory ``runs/<strategy>/seed<k>``,
so all strategies start from the same labeled set and the same model (the
paper's protocol). Each trajectory then repeats, per round r < R:
select (from round r's cache) -> next -> train round r+1 -> extract round r+1.
Round R is trained (and tested) but neither extracted nor selected from.

In one process (``jobs=1``), work goes round-major (all seeds and strategies
finish round r before any starts r+1), so an interrupted run leaves comparable
results behind. With ``jobs`` > 1, round 0 of each seed and then each whole
trajectory run in worker processes (:mod:`mmal.loop.jobs`); every step reads and
writes the same files with the same seeds, so the results are the same. ``only``
restricts a run to some trajectories (one per cluster job); ``runs/status.json``
keeps every trajectory's latest outcome, whichever run it came from.

Resuming: every step is skipped when its output exists (``model.pt``,
``cache.h5``, the selection file, the next round's ``labeled.json``); those
outputs are written atomically and last by their stages, and training and
extraction themselves continue from their ``.partial`` files. So a rerun after a
kill recomputes nothing that finished, and ends with the same files as an
uninterrupted run.

Concurrency: work on a workspace goes under its lock (:mod:`mmal.lock`): round 0
of seed k under ``runs/round0/seed<k>/.lock``, each round of a trajectory under
``runs/<strategy>/seed<k>/.lock``, and ``runs/plan.json`` and ``status.json``
under ``runs/.lock``. Every skip decision is made under the lock, so a second
``mmal run`` on the same workspace waits where the first is working and then
skips what it finished; parallel trajectories share round 0 the same way.

Failures: an ``Exception`` in one trajectory is recorded (strategy, seed,
round, step, one-line message) and that trajectory stops for this run; the
others go on. ``KeyboardInterrupt`` and other ``BaseException`` stop
everything at once (a rerun resumes).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmal.cache.index import read_index
from mmal.data import load_pool
from mmal.errors import ConfigError, one_line
from mmal.lock import folder_lock, hold
from mmal.loop.jobs import Task, run_tasks
from mmal.loop.layout import RESERVED, RunLayout, link_or_copy
from mmal.loop.records import (
    check_plan,
    check_seed_config,
    write_plan,
    write_seed_config,
    write_status,
)
from mmal.loop.tensorboard import require_tensorboard, write_trajectory_events
from mmal.seeds import selection_seed
from mmal.select.api import select
from mmal.select.registry import get_strategy
from mmal.workspace import (
    CONFIG_NAME,
    find_workspace,
    init_workspace,
    load_workspace_config,
    next_round,
    read_metrics,
    round_paths,
)

log = logging.getLogger(__name__)

#: Round-0 files every trajectory shares with ``runs/round0/seed<k>`` (RoundPaths attributes).
SHARED_FILES = ("labeled", "model", "metrics", "cache")
STEPS = ("init", "train", "extract", "select", "next")


@dataclass(frozen=True)
class Event:
    """A progress report handed to the ``callback`` of :func:`run_comparison`.

    ``kind`` is "start" (a step begins), "done" (it finished; ``info["skipped"]``
    is True when its output already existed), "round" (a trajectory finished a
    round: ``info`` has ``top1``, ``num_labeled``, ``select_s``) or "failed"
    (``message`` holds the one-line error). ``strategy`` is None for the shared
    round 0.
    """

    kind: str
    strategy: str | None
    seed: int
    round: int
    step: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    message: str = ""


@dataclass(frozen=True)
class Failure:
    """One trajectory that stopped with an error."""

    strategy: str | None
    seed: int
    round: int
    step: str
    message: str

    def describe(self) -> str:
        who = self.strategy or "round 0 (all strategies)"
        return f"{who} seed {self.seed} round {self.round:03d} {self.step}: {self.message}"


@dataclass(frozen=True)
class RunResult:
    """What :func:`run_comparison` finished and what failed."""

    layout: RunLayout
    completed: list[tuple[str, int]]
    failures: list[Failure]
    wall_s: float


def run_comparison(
    workspace: str | os.PathLike,
    strategies: Sequence[str] | None = None,
    *,
    rounds: int,
    budget: int | None = None,
    initial_budget: int | None = None,
    seeds: Sequence[int] | None = None,
    only: Sequence[tuple[str, int]] | None = None,
    jobs: int = 1,
    device: str = "auto",
    mc_dropout: int = 0,
    params: dict[str, dict[str, Any]] | None = None,
    callback: Callable[[Event], None] | None = None,
    tensorboard: bool = False,
) -> RunResult:
    """Run (or resume) every (strategy, seed) trajectory for ``rounds`` selection rounds.

    Parameters
    ----------
    workspace : path-like
        A workspace (``mmal init``); its ``mmal.toml`` is the base config.
    strategies : sequence of str
        Registered strategy names (``mmal strategies``); one trajectory per
        strategy and seed. Leave out when ``only`` is given.
    rounds : int
        Selection rounds R >= 1: round r = 0..R-1 selects ``budget`` samples;
        rounds 0..R are trained and tested.
    budget, initial_budget : int, optional
        Samples per selection; size of round 0's random labeled set. Default:
        ``al.budget`` and ``al.initial_budget`` of ``mmal.toml``; a value that
        differs from the config's is logged (one warning line each).
    seeds : sequence of int, optional
        Default (0,). Seed k sets ``al.seed`` (initial draw, data split of
        uci-mfeat, training) and the selection seeds.
    only : sequence of (str, int), optional
        Run just these (strategy, seed) trajectories, e.g. ``[("bmmal", 1)]``:
        one trajectory per job under a cluster scheduler. Replaces
        ``strategies`` and ``seeds``.
    jobs : int
        Worker processes (:mod:`mmal.loop.jobs`): round 0 of each seed, then
        each trajectory, runs in a process of its own, ``jobs`` at a time. 1
        runs everything in this process, round-major. The results are the same.
    device : {"auto", "cpu", "cuda"}
    mc_dropout : int
        MC-dropout samples stored in every cache (for bald and the like).
    params : dict, optional
        Strategy name -> keyword parameters for :func:`mmal.select.select`.
    callback : callable, optional
        Receives an :class:`Event` for every step (progress display, tests);
        with ``jobs`` > 1 it is called in this process, as the workers report.
    tensorboard : bool
        Write each trajectory's test metrics per round to
        ``runs/tensorboard/<strategy>-seed<k>/`` (:mod:`mmal.loop.tensorboard`),
        and log every training this run does to its round's ``tensorboard/``
        folder; False: trainings log as ``train.tensorboard`` says.

    Returns
    -------
    RunResult

    Raises
    ------
    ConfigError
        Unknown strategy, bad numbers.
    WorkspaceError
        ``runs/`` was started with other budgets or another config.
    """
    start = time.perf_counter()
    workspace = Path(workspace)
    find_workspace(workspace)  # a clear error when this is not a workspace
    pairs = _trajectories(strategies, seeds, only)
    strategies = list(dict.fromkeys(s for s, _ in pairs))
    seeds = list(dict.fromkeys(k for _, k in pairs))
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs must be an integer >= 1, got {jobs!r}")
    base = load_workspace_config(workspace)
    budget, initial_budget = _budgets(workspace, base, budget, initial_budget)
    _check_request(strategies, seeds, rounds, budget, initial_budget, mc_dropout)
    chosen = [get_strategy(name) for name in strategies]  # SelectionError naming unknown ones
    layout = RunLayout(workspace)
    _check_feasible(workspace, base, chosen, rounds, budget, initial_budget, mc_dropout)
    if tensorboard:
        require_tensorboard()  # the fix, before anything trains
    with hold(layout.lock, "mmal run"):  # the plan is read, merged and written as one step
        plan = check_plan(layout, budget, initial_budget, mc_dropout)
        for seed in seeds:
            check_seed_config(layout, base, seed, budget, initial_budget)
        write_plan(layout, plan, strategies, seeds, rounds, budget, initial_budget, mc_dropout)
    emit = callback or (lambda event: None)
    request = Request(workspace, rounds, budget, initial_budget, device, mc_dropout,
                      params or {}, tensorboard)
    if jobs == 1:
        completed, failures = _run_here(request, base, pairs, emit)
    else:
        completed, failures = _run_in_processes(request, pairs, jobs, emit)
    write_status(layout, pairs, completed, [dataclasses.asdict(f) for f in failures], rounds)
    return RunResult(layout, completed, failures, time.perf_counter() - start)


@dataclass(frozen=True)
class Request:
    """What every trajectory of one ``mmal run`` shares (picklable, for worker processes)."""

    workspace: Path
    rounds: int
    budget: int
    initial_budget: int
    device: str
    mc_dropout: int
    params: dict[str, dict[str, Any]]
    tensorboard: bool

    def steps(self, emit: Callable[[Event], None]) -> _Steps:
        return _Steps(RunLayout(self.workspace), self.device, self.mc_dropout, self.budget,
                      self.params, emit, self.tensorboard)


def _run_here(request: Request, base, pairs: list[tuple[str, int]],
              emit: Callable[[Event], None]) -> tuple[list[tuple[str, int]], list[Failure]]:
    """Every trajectory in this process, round-major; (completed pairs, failures)."""
    steps = request.steps(emit)
    failures: list[Failure] = []
    live: dict[tuple[str, int], bool] = {}
    for seed in dict.fromkeys(k for _, k in pairs):
        failure = _round0(steps, request, base, seed)
        if failure is not None:
            failures.append(failure)
            continue
        live.update({(s, k): True for s, k in pairs if k == seed})
    for r in range(request.rounds + 1):
        for name, seed in pairs:
            if not live.get((name, seed)):
                continue
            failure = _advance(steps, request, name, seed, r)
            if failure is not None:
                live[(name, seed)] = False
                failures.append(failure)
    return sorted(k for k, ok in live.items() if ok), failures


def _run_in_processes(request: Request, pairs: list[tuple[str, int]], jobs: int,
                      emit: Callable[[Event], None]
                      ) -> tuple[list[tuple[str, int]], list[Failure]]:
    """Round 0 of each seed, then each trajectory, in ``jobs`` worker processes."""
    seeds = list(dict.fromkeys(k for _, k in pairs))
    tasks = [Task(("round0", k), None) for k in seeds] + [
        Task((s, k), ("round0", k)) for s, k in pairs]
    last: dict[tuple, Event] = {}

    def relay(key: tuple, event: Event) -> None:
        last[key] = event
        emit(event)

    outcome = run_tasks(tasks, jobs, run_task, (request,), relay)
    failures: list[Failure] = []
    for task in tasks:
        result = outcome.get(task.key)
        if isinstance(result, str):  # the worker died or raised: blame its last step
            seen = last.get(task.key)
            strategy = None if task.key[0] == "round0" else task.key[0]
            failure = Failure(strategy, task.key[1], seen.round if seen else 0,
                              seen.step if seen else "start", result)
            result = [_failed(emit, failure)]
        failures += result or []
    completed = sorted(p for p in pairs if outcome.get(p) == [])
    return completed, failures


def run_task(key: tuple, request: Request, emit: Callable[[Event], None]) -> list[Failure]:
    """One worker's task: ``("round0", k)`` or a whole ``(strategy, k)`` trajectory."""
    steps = request.steps(emit)
    name, seed = key
    if name == "round0":
        failure = _round0(steps, request, load_workspace_config(request.workspace), seed)
        return [failure] if failure else []
    for r in range(request.rounds + 1):
        failure = _advance(steps, request, name, seed, r)
        if failure is not None:
            return [failure]
    return []


def _round0(steps: _Steps, request: Request, base, seed: int) -> Failure | None:
    """Make (or find) round 0 of ``seed``; its Failure, reported, or None."""
    try:
        steps.shared_round0(base, seed, request.budget, request.initial_budget)
    except Exception as exc:  # noqa: BLE001 - one seed's failure must not stop the others
        log.debug("round 0 of seed %d failed", seed, exc_info=True)
        return _failed(steps.emit, Failure(None, seed, 0, steps.current, _one_line(exc)))
    return None


def _advance(steps: _Steps, request: Request, name: str, seed: int, r: int) -> Failure | None:
    """Round ``r`` of one trajectory under its lock; its Failure, reported, or None."""
    layout = steps.layout
    try:
        steps.current = "lock"
        with hold(folder_lock(layout.trajectory(name, seed)), "mmal run"):
            steps.advance(name, seed, r, request.rounds)
            if request.tensorboard:
                steps.current = "tensorboard"
                write_trajectory_events(layout, name, seed)
    except Exception as exc:  # noqa: BLE001 - isolate trajectories
        log.debug("trajectory %s seed %d failed", name, seed, exc_info=True)
        return _failed(steps.emit, Failure(name, seed, r, steps.current, _one_line(exc)))
    return None


def _failed(emit: Callable[[Event], None], failure: Failure) -> Failure:
    """Report ``failure`` as a "failed" event; return it."""
    emit(Event("failed", failure.strategy, failure.seed, failure.round, failure.step,
               message=failure.message))
    return failure


def _trajectories(strategies, seeds, only) -> list[tuple[str, int]]:
    """The (strategy, seed) pairs asked for, seed-major, each once."""
    if only is None:
        strategies = list(dict.fromkeys(strategies or ()))
        seeds = list(dict.fromkeys(int(s) for s in ((0,) if seeds is None else seeds)))
        if not strategies:
            raise ConfigError("--strategies is empty; name at least one (see `mmal strategies`)")
        if not seeds:
            raise ConfigError("--seeds is empty; pass e.g. --seeds 0,1,2")
        return [(s, k) for k in seeds for s in strategies]
    if strategies is not None or seeds is not None:
        raise ConfigError("--only names the trajectories itself; leave out --strategies and "
                          "--seeds")
    pairs = list(dict.fromkeys((str(s), int(k)) for s, k in only))
    if not pairs:
        raise ConfigError("--only is empty; name a trajectory, e.g. --only bmmal:seed=0")
    return pairs


def _budgets(workspace: Path, base, budget: int | None,
             initial_budget: int | None) -> tuple[int, int]:
    """The run's budgets: the flags where given, else ``[al]`` of mmal.toml; a difference is said."""
    chosen = []
    for flag, key, value in (("--budget", "budget", budget),
                             ("--initial-budget", "initial_budget", initial_budget)):
        configured = getattr(base.al, key)
        if value is None:
            value = configured
        elif value != configured:
            log.warning("%s %s differs from [al] %s = %s in %s; this run uses %s", flag, value,
                        key, configured, workspace / CONFIG_NAME, value)
        chosen.append(value)
    return chosen[0], chosen[1]


class _Steps:
    """The steps of the shared round 0 and of one trajectory round, each skipped when done."""

    def __init__(self, layout: RunLayout, device: str, mc_dropout: int, budget: int,
                 params: dict[str, dict[str, Any]], emit: Callable[[Event], None],
                 tensorboard: bool = False):
        self.layout, self.device, self.mc_dropout = layout, device, mc_dropout
        self.budget, self.params, self.emit = budget, params, emit
        self.tensorboard = True if tensorboard else None  # None: as the config says
        self.current = ""

    # -- shared round 0 -----------------------------------------------------------
    def shared_round0(self, base, seed: int, budget: int, initial_budget: int) -> None:
        folder = self.layout.shared(seed)
        config_file = self.layout.config(seed)
        self.current = "lock"
        # one process computes round 0 of a seed; the others wait, then find it done
        with hold(folder_lock(folder), "mmal run"):
            self._step(None, seed, 0, "init", (folder / CONFIG_NAME).is_file(), lambda: (
                write_seed_config(base, config_file, seed, budget, initial_budget),
                init_workspace(folder, config_file,
                               force=round_paths(folder, 0).labeled.exists())))
            self._train_extract(None, folder, seed, 0, extract=True)

    # -- one trajectory, one round ------------------------------------------------
    def advance(self, name: str, seed: int, r: int, rounds: int) -> None:
        folder = self.layout.trajectory(name, seed)
        if r == 0:
            self._link_round0(name, seed, folder)
        else:
            self._train_extract(name, folder, seed, r, extract=r < rounds)
        select_s = None
        if r < rounds:
            select_s = self._select(name, folder, seed, r)
            paths = round_paths(folder, r + 1)
            self._step(name, seed, r, "next", paths.labeled.exists(),
                       lambda: self._next(folder, r, name))
        self.emit(Event("round", name, seed, r, info={**_round_info(folder, r),
                                                       "select_s": select_s}))

    def _link_round0(self, name: str, seed: int, folder: Path) -> None:
        shared = self.layout.shared(seed)
        self.current = "init"
        todo = [(shared / CONFIG_NAME, folder / CONFIG_NAME)] + [
            (getattr(round_paths(shared, 0), f), getattr(round_paths(folder, 0), f))
            for f in SHARED_FILES]
        missing = [(s, t) for s, t in todo if not t.exists()]
        self.emit(Event("start", name, seed, 0, "init"))
        how = {link_or_copy(s, t) for s, t in missing}
        self.emit(Event("done", name, seed, 0, "init",
                        info={"skipped": not missing, "shared": sorted(how)}))

    def _train_extract(self, name: str | None, folder: Path, seed: int, r: int, *,
                       extract: bool) -> None:
        # deferred: training and extraction load torch, and `mmal report` imports this package
        # (mmal.loop.layout) without running anything
        from mmal.extract import extract_round
        from mmal.train import train_round

        paths = round_paths(folder, r)
        self._step(name, seed, r, "train", paths.model.exists(), lambda: train_round(
            folder, r, device=self.device, resume=True, progress=False,
            tensorboard=self.tensorboard))
        if extract:
            self._step(name, seed, r, "extract", paths.cache.exists(), lambda: extract_round(
                folder, r, device=self.device, mc_dropout=self.mc_dropout, progress=False))

    def _select(self, name: str, folder: Path, seed: int, r: int) -> float:
        out = selection_path(folder, r, name, self.budget)
        self._step(name, seed, r, "select", out.exists(), lambda: select(
            round_paths_cache(folder, r), name, self.budget, seed=selection_seed(seed, r),
            device=self.device, out=out, params=self.params.get(name)))
        return float(read_index(out).provenance.get("wall_time_s", float("nan")))

    def _next(self, folder: Path, r: int, name: str) -> None:
        next_round(folder, selection_path(folder, r, name, self.budget))

    def _step(self, name, seed, r, step, done: bool, work: Callable[[], Any]) -> None:
        self.current = step
        self.emit(Event("start", name, seed, r, step))
        began = time.perf_counter()
        if not done:
            work()
        self.emit(Event("done", name, seed, r, step,
                        info={"skipped": done, "wall_s": time.perf_counter() - began}))


def selection_path(folder: Path, r: int, strategy: str, budget: int) -> Path:
    """The selection file a trajectory writes in round ``r``."""
    return round_paths(folder, r).selections / f"{strategy}-b{budget}.json"


def round_paths_cache(folder: Path, r: int) -> Path:
    return round_paths(folder, r).cache


def _round_info(folder: Path, r: int) -> dict[str, Any]:
    metrics = read_metrics(round_paths(folder, r).metrics)
    return {"top1": metrics["test"]["top1"], "num_labeled": metrics["num_labeled"]}


def _check_request(strategies, seeds, rounds, budget, initial_budget, mc_dropout) -> None:
    if set(RESERVED) & set(strategies):
        raise ConfigError(f"--strategies: {', '.join(RESERVED)} are reserved folder names "
                          "of runs/; name the strategies otherwise")
    if any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds must be >= 0, got {seeds}")
    for name, value, low in (("--rounds", rounds, 1), ("--budget", budget, 1),
                             ("--initial-budget", initial_budget, 2),
                             ("--mc-dropout", mc_dropout, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_feasible(workspace: Path, base, strategies, rounds: int, budget: int,
                    initial_budget: int, mc_dropout: int) -> None:
    """ConfigError, before any training, for a request that must fail at some later round."""
    needing = [s.name for s in strategies if s.needs_mc_dropout]
    if needing and not mc_dropout:
        raise ConfigError(f"--strategies {','.join(needing)} need MC-dropout logits in every "
                          "cache; pass --mc-dropout T (e.g. 20)")
    if mc_dropout and base.model.dropout == 0:
        raise ConfigError(f"{workspace}/mmal.toml: key 'model.dropout' is 0, so --mc-dropout "
                          f"{mc_dropout} would repeat one logit; set model.dropout (e.g. 0.2)")
    needed = initial_budget + rounds * budget
    pool = len(load_pool(base, "train"))
    if needed > pool:
        raise ConfigError(f"--initial-budget {initial_budget} + --rounds {rounds} x --budget "
                          f"{budget} = {needed} labels, but the train pool has {pool} samples; "
                          "lower --initial-budget, --rounds or --budget")


def _one_line(exc: BaseException) -> str:
    text = one_line(exc)
    return text if isinstance(exc, Exception) and type(exc).__module__.startswith("mmal") \
        else f"{type(exc).__name__}: {text}"
