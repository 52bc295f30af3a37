"""mmal run --jobs N and --only: trajectories in parallel give the results of one process.

Worker processes are real (``python -m mmal.loop.worker``), so these tests
spawn Python processes that import torch: a few seconds each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmal.cache.index import read_index
from mmal.cli import cli
from mmal.errors import ConfigError, SelectionError
from mmal.lock import folder_lock, hold, holder
from mmal.loop import RunLayout, run_comparison
from mmal.report import collect
from mmal.workspace import init_workspace, round_paths
from tests.fixtures_data import make_tiny_dataset
from tests.lock_holder import ROOT

TINY = {"train": {"epochs": 1, "batch_size": 16}, "al": {"initial_budget": 20, "budget": 10}}
RUN = {"budget": 10, "initial_budget": 20, "device": "cpu"}


def _config(tmp_path):
    return make_tiny_dataset(tmp_path / "src", "uci", overrides=TINY)


def _results(ws, pairs, rounds):
    """Every test result, labeled count and selection of the trajectories, by file."""
    layout = RunLayout(ws)
    out = {}
    for name, seed in pairs:
        folder = layout.trajectory(name, seed)
        for r in range(rounds + 1):
            metrics = json.loads(round_paths(folder, r).metrics.read_text())
            out[(name, seed, r)] = (metrics["test"], metrics["num_labeled"])
            if r < rounds:
                out[(name, seed, r, "selection")] = read_index(
                    round_paths(folder, r).selections / f"{name}-b10.json").ids.tolist()
    return out


@pytest.mark.slow
def test_jobs_2_gives_the_results_of_jobs_1(tmp_path):
    config = _config(tmp_path)
    pairs = [(s, k) for k in (0, 1) for s in ("random", "bmmal")]
    runs, events = {}, []
    for jobs in (1, 2):
        ws = init_workspace(tmp_path / f"jobs{jobs}", config)
        result = run_comparison(ws, ["random", "bmmal"], seeds=[0, 1], rounds=1, jobs=jobs,
                                callback=events.append if jobs == 2 else None, **RUN)
        assert result.failures == [] and result.completed == sorted(pairs)
        runs[jobs] = _results(ws, pairs, 1)
    assert runs[2] == runs[1]  # test metrics and selected ids, exactly
    # the workers' progress reached this process: one line per (trajectory, round), and
    # each seed's round 0 made once, before its trajectories used it
    rounds = [(e.strategy, e.seed, e.round) for e in events if e.kind == "round"]
    assert sorted(rounds) == sorted((s, k, r) for s, k in pairs for r in (0, 1))
    trained0 = [e.seed for e in events if (e.kind, e.step, e.round) == ("done", "train", 0)
                and e.strategy is None and not e.info["skipped"]]
    assert sorted(trained0) == [0, 1]
    status = RunLayout(tmp_path / "jobs2").read_status()
    assert status["failures"] == [] and len(status["completed"]) == 4


@pytest.mark.slow
def test_a_failing_and_a_killed_worker_stop_only_their_trajectories(tmp_path):
    ws = init_workspace(tmp_path / "ws", _config(tmp_path))
    layout = RunLayout(ws)
    # random's round-0 selection is a damaged file: its select step fails in its worker
    planted = round_paths(layout.trajectory("random", 0), 0).selections / "random-b10.json"
    planted.parent.mkdir(parents=True)
    planted.write_text("{not json")
    killed = []

    def kill_badge_mid_training(event):
        if (event.kind, event.strategy, event.round, event.step) == ("start", "badge", 1,
                                                                       "train"):
            for _ in range(100):  # the worker holds its trajectory's lock while it trains
                found = holder(folder_lock(layout.trajectory("badge", 0)))
                if found:
                    os.kill(found["pid"], signal.SIGKILL)
                    killed.append(found["pid"])
                    return
                time.sleep(0.05)

    result = run_comparison(ws, ["random", "bmmal", "badge"], seeds=[0], rounds=1, jobs=2,
                            callback=kill_badge_mid_training, **RUN)
    assert killed
    assert result.completed == [("bmmal", 0)]
    failures = {(f.strategy, f.seed, f.round, f.step): f.message for f in result.failures}
    assert failures.keys() == {("random", 0, 0, "select"), ("badge", 0, 1, "train")}
    assert str(planted) in failures[("random", 0, 0, "select")]
    assert failures[("badge", 0, 1, "train")] == (
        "its worker process was killed by SIGKILL; rerun to resume it")
    status = layout.read_status()
    assert {(f["strategy"], f["step"]) for f in status["failures"]} == {
        ("random", "select"), ("badge", "train")}

    # A later run of one trajectory replaces its own entry in status.json and keeps the others'.
    again = run_comparison(ws, only=[("badge", 0)], rounds=1, **RUN)
    assert again.failures == [] and again.completed == [("badge", 0)]
    status = layout.read_status()
    assert [(f["strategy"], f["step"]) for f in status["failures"]] == [("random", "select")]
    assert status["completed"] == [{"strategy": "badge", "seed": 0},
                                   {"strategy": "bmmal", "seed": 0}]


#: `mmal run` with every training recorded in $TRAINED; waits for $PEERS processes to be
#: ready before it starts, so that they start together.
COUNTING = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import mmal.train
    from mmal.cli import main

    real = mmal.train.train_round

    def counted(folder, r, **kwargs):
        with open(os.environ["TRAINED"], "a") as log:
            log.write(f"{folder} {r}\\n")
        return real(folder, r, **kwargs)

    mmal.train.train_round = counted
    ready = Path(os.environ["TRAINED"] + f".ready{os.getpid()}")
    ready.touch()
    while len(list(ready.parent.glob(ready.name.split(".ready")[0] + ".ready*"))) < int(
            os.environ["PEERS"]):
        time.sleep(0.01)
    sys.argv = ["mmal", *sys.argv[1:]]
    main()
""")


@pytest.fixture(scope="module")
def separate_jobs(tmp_path_factory):
    """Two `mmal run --only` processes, as two cluster jobs, started together on one workspace."""
    tmp = tmp_path_factory.mktemp("only")
    ws = init_workspace(tmp / "ws", _config(tmp))
    trained = tmp / "trained.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRAINED": str(trained), "PEERS": "2"}
    procs = [subprocess.Popen(
        [sys.executable, "-c", COUNTING, "run", "--workspace", str(ws), "--rounds", "1", "-q",
         "--device", "cpu", "--only", only], env=env, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE) for only in ("random:seed=0", "bmmal:seed=0")]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "finished 1 of 1 trajectories" in out
    return ws, trained.read_text().splitlines()


@pytest.mark.slow
def test_round0_is_trained_once_when_jobs_start_together(separate_jobs):
    ws, trained = separate_jobs
    layout = RunLayout(ws)
    assert sorted(trained) == sorted([f"{layout.shared(0)} 0",
                                      f"{layout.trajectory('random', 0)} 1",
                                      f"{layout.trajectory('bmmal', 0)} 1"])
    shared = round_paths(layout.shared(0), 0)
    for name in ("random", "bmmal"):
        mine = round_paths(layout.trajectory(name, 0), 0)
        assert os.path.samefile(mine.model, shared.model)
        assert os.path.samefile(mine.cache, shared.cache)


@pytest.mark.slow
def test_report_merges_trajectories_run_as_separate_jobs(separate_jobs):
    ws, _ = separate_jobs
    data = collect(ws)
    assert set(data.strategies) == {"random", "bmmal"} and data.seeds == [0]
    assert sorted((rec.strategy, rec.round) for rec in data.records) == [
        ("bmmal", 0), ("bmmal", 1), ("random", 0), ("random", 1)]
    assert data.missing_metrics == {} and data.missing_selections == {}
    assert data.warnings() == []
    assert sorted((c["strategy"], c["seed"]) for c in data.status["completed"]) == [
        ("bmmal", 0), ("random", 0)]
    res = CliRunner().invoke(cli, ["report", "--workspace", str(ws)])
    assert res.exit_code == 0, res.output
    assert "warning" not in res.output


def _run_then_interrupt(tmp_path, whom: str):
    ws = init_workspace(tmp_path / "ws", _config(tmp_path))
    layout = RunLayout(ws)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmal", "run", "--workspace", str(ws), "--strategies",
         "random,bmmal", "--rounds", "3", "--jobs", "2", "--device", "cpu"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True)
    locks = [folder_lock(layout.trajectory(s, 0)) for s in ("random", "bmmal")]
    workers = set()
    end = time.monotonic() + 300
    while len(workers) < 2 and time.monotonic() < end and proc.poll() is None:
        workers = {found["pid"] for found in map(holder, locks) if found}
        time.sleep(0.05)
    assert len(workers) == 2, proc.communicate()
    if whom == "terminal":  # Ctrl-C in a terminal reaches the whole foreground group
        os.killpg(proc.pid, signal.SIGINT)
    elif whom == "parent":
        os.kill(proc.pid, signal.SIGINT)
    else:
        os.kill(proc.pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err, workers, [folder_lock(layout.shared(0)), *locks]


def _gone(pid: int, limit_s: float) -> bool:
    """True once ``pid`` has exited (a zombie nobody reaps counts as gone)."""
    end = time.monotonic() + limit_s
    while True:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("whom", ["terminal", "parent", "killed"])
def test_ctrl_c_or_a_killed_command_stops_every_worker(tmp_path, whom):
    code, _, err, workers, locks = _run_then_interrupt(tmp_path, whom)
    if whom == "killed":  # no Ctrl-C to relay: each worker sees its parent gone
        assert code == -signal.SIGKILL
        assert all(_gone(pid, 120) for pid in workers)
    else:
        assert code == 1 and "Aborted!" in err
        assert "Traceback" not in err
        assert all(_gone(pid, 0) for pid in workers)  # gone with the command, not orphaned
    for lock in locks:  # and nothing stays locked
        with hold(lock, "test", timeout=0):
            pass


@pytest.mark.parametrize("args,error", [
    (["--only", "bmmal"], "Invalid value for '--only': 'bmmal' is not STRATEGY:seed=K; write "
                          "e.g. bmmal:seed=1"),
    (["--only", "bmmal:seed=x"], "Invalid value for '--only': 'bmmal:seed=x' is not "
                                 "STRATEGY:seed=K; write e.g. bmmal:seed=1"),
    (["--only", "bmmal:seed=1,"], "Invalid value for '--only': '' is not STRATEGY:seed=K; "
                                  "write e.g. bmmal:seed=1"),
    (["--only", "bmmal:seed=1", "--only", "random:seed=0,bmmal:seed=1"],
     "Invalid value for '--only': names bmmal:seed=1 more than once; list each trajectory "
     "once"),
    (["--only", "bmmal:seed=1", "--strategies", "random"],
     "--only names the trajectories itself; leave out --strategies and --seeds"),
    (["--only", "bmmal:seed=1", "--seeds", "0"],
     "--only names the trajectories itself; leave out --strategies and --seeds"),
    ([], "Missing option '--strategies' (or --only STRATEGY:seed=K)."),
    (["--strategies", "random", "--jobs", "0"],
     "Invalid value for '--jobs' / '-j': 0 is not in the range x>=1."),
])
def test_cli_refuses_a_bad_only_or_jobs_with_one_line(tmp_path, args, error):
    res = CliRunner().invoke(cli, ["run", "--workspace", str(tmp_path), "--rounds", "1", *args])
    assert res.exit_code == 2
    assert res.output.splitlines()[-1] == f"Error: {error}"
    assert not (tmp_path / "runs").exists()


def test_only_names_an_unknown_strategy_before_anything_runs(tmp_path):
    ws = init_workspace(tmp_path / "ws", _config(tmp_path))
    with pytest.raises(SelectionError, match="nosuch"):
        run_comparison(ws, only=[("nosuch", 0)], rounds=1, **RUN)
    with pytest.raises(ConfigError, match="--jobs must be an integer >= 1, got 0"):
        run_comparison(ws, ["random"], rounds=1, jobs=0, **RUN)
    assert not RunLayout(ws).root.exists()


def test_only_runs_just_that_trajectory_and_plans_it(tmp_path):
    ws = init_workspace(tmp_path / "ws", _config(tmp_path))
    res = CliRunner().invoke(cli, ["run", "--workspace", str(ws), "--rounds", "1", "--device",
                                   "cpu", "--only", "random:seed=1"])
    assert res.exit_code == 0, res.output
    assert "finished 1 of 1 trajectories" in res.output
    layout = RunLayout(ws)
    assert layout.trajectories() == [("random", 1)]
    assert not layout.shared(0).exists()  # seed 0's round 0 was not asked for
    plan = layout.read_plan()
    assert (plan["strategies"], plan["seeds"]) == (["random"], [1])


def test_tasks_run_in_workers_after_what_they_need(monkeypatch):
    """The scheduler alone: results, relayed events, a raising and a dying worker."""
    from mmal.loop.jobs import Task, run_tasks
    from tests.loop.jobs_targets import work

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # workers that never import torch
    tasks = [Task(("a",)), Task(("b",), after=("a",)), Task(("c",)), Task(("d",), after=("c",)),
             Task(("e",)), Task(("f",), after=("e",)), Task(("g",))]
    how = {"c": "die", "e": "fail", "g": "raise"}
    events = []
    results = run_tasks(tasks, 2, work, (how,), lambda key, event: events.append((key, event)))
    assert results == {
        ("a",): [], ("b",): [], ("e",): ["e failed"],
        ("c",): "its worker process exited with code 3; rerun to resume it",
        ("g",): "ValueError: g could not",
    }  # d and f never ran: what they needed failed
    for name in "abceg":  # each worker's events arrive, in the order it sent them
        assert [e for k, e in events if k == (name,)] == [f"{name} started", f"{name} halfway"]
    assert {k for k, _ in events} == {("a",), ("b",), ("c",), ("e",), ("g",)}
    # b started only after a had finished
    assert events.index((("b",), "b started")) > events.index((("a",), "a halfway"))


@pytest.mark.parametrize("policy", [None, "ACTIVE"])
def test_workers_train_with_this_process_torch_threads_and_wait_passively(monkeypatch, policy):
    import torch

    from mmal.loop.jobs import Task, run_tasks
    from tests.loop.jobs_targets import environment

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    if policy is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", policy)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # not torch's default on a machine with more than one core
    try:
        results = run_tasks([Task(("a",)), Task(("b",))], 2, environment, (), lambda *_: None)
    finally:
        torch.set_num_threads(before)
    assert results == {("a",): (policy or "PASSIVE", 1), ("b",): (policy or "PASSIVE", 1)}


def test_a_worker_whose_parent_is_killed_stops_within_seconds(tmp_path):
    """SIGKILL of the parent (a scheduler's hard limit, the OOM killer) runs no cleanup
    there; a worker in the middle of a long step must not go on alone for its duration."""
    script = textwrap.dedent("""
        import sys
        from mmal.loop.jobs import Task, run_tasks
        from tests.loop.jobs_targets import work
        run_tasks([Task(("nap",))], 1, work, ({"nap": "sleep"},),
                  lambda key, event: print(event, flush=True))
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT),
                                   "OMP_NUM_THREADS": "1"})
    try:
        line = ""
        while not line.startswith("pid "):
            line = parent.stdout.readline()
            assert line, "the parent ended before its worker started"
        worker = int(line.split()[1])
        parent.kill()
        parent.wait()
        assert _gone(worker, 15)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
