"""Two mmal processes on one workspace: the second waits for the first's lock, or fails cleanly.

Real processes: the lock is ``flock``, which only another open file (another
process, or another thread) contends for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmal.cache import open_cache
from mmal.cache.index import read_index
from mmal.cache.synthetic import make_synthetic_cache
from mmal.cli import cli
from mmal.errors import IndexFileError
from mmal.lock import TIMEOUT_ENV, output_lock
from mmal.loop import RunLayout, run_comparison
from mmal.select.api import _publish, diagnostics_path, select
from mmal.select.diagnostics import summarize_diagnostics
from mmal.workspace import init_workspace, round_paths
from tests.fixtures_data import make_tiny_dataset
from tests.lock_holder import ROOT, Holder
from tests.loop.test_run import _flat
from tests.models.tiny import make_workspace

UCI = {"train": {"epochs": 1, "batch_size": 16}, "al": {"initial_budget": 20}}


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def _mmal(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mmal", *args], env=_env(**env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_line(stream, needle: str, limit_s: float = 60) -> str:
    """The first line of ``stream`` holding ``needle`` (the lines before it are dropped)."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        line = stream.readline()
        if needle in line:
            return line
        if not line:
            break
    raise AssertionError(f"no line with {needle!r}")


@pytest.fixture
def uci_ws(tmp_path):
    return make_workspace(tmp_path, "uci", overrides=UCI)


def test_train_waits_for_the_rounds_lock_names_its_holder_then_trains(uci_ws):
    paths = round_paths(uci_ws, 0)
    other = Holder(paths.lock, "mmal train")
    proc = _mmal("train", "--workspace", str(uci_ws), "--device", "cpu", "-q",
                 **{TIMEOUT_ENV: "120"})
    try:
        line = _wait_for_line(proc.stderr, "waiting for")
    finally:
        time.sleep(0.5)
        trained_meanwhile = paths.model.exists()
        other.release()
    out, err = proc.communicate(timeout=120)
    assert f"waiting for {paths.lock} held by pid {other.pid} (mmal train) since " in line
    assert f"(up to 120 s, {TIMEOUT_ENV})" in line
    assert not trained_meanwhile
    assert proc.returncode == 0, err
    assert paths.model.is_file() and f"wrote {paths.model}" in out


def test_train_gives_up_after_the_timeout_with_one_line(uci_ws, monkeypatch):
    lock = round_paths(uci_ws, 0).lock
    monkeypatch.setenv(TIMEOUT_ENV, "0.3")
    other = Holder(lock, "mmal extract")
    try:
        result = CliRunner().invoke(cli, ["train", "--workspace", str(uci_ws), "--device",
                                          "cpu", "-q"])
    finally:
        other.release()
    assert result.exit_code == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and error[0].startswith(
        f"Error: {lock}: held by pid {other.pid} (mmal extract) since ")
    assert error[0].endswith(f"gave up after 0.3 s ({TIMEOUT_ENV}); wait for it to finish, or "
                             f"set {TIMEOUT_ENV}=SECONDS to wait longer")
    assert not round_paths(uci_ws, 0).model.exists()


@pytest.mark.parametrize("argv", [
    ["extract"], ["select", "-s", "random", "-b", "5"], ["next", "--selection", "{sel}"],
    ["label", "--round", "1", "{sheet}"], ["export", "{sel}", "--out", "{out}"],
    ["init", "{ws}", "--config", "{ws}/mmal.toml", "--force"],
], ids=lambda argv: argv[0])
def test_every_writing_command_waits_for_the_lock_of_what_it_writes(uci_ws, monkeypatch, argv):
    runner = CliRunner()
    common = ["--workspace", str(uci_ws)]
    if argv[0] != "init":  # which refuses a trained round 0 (under the lock too)
        assert runner.invoke(cli, ["train", *common, "--device", "cpu", "-q"]).exit_code == 0
    if argv[0] in ("select", "next", "label", "export"):
        assert runner.invoke(cli, ["extract", *common, "--device", "cpu", "-q"]).exit_code == 0
        done = runner.invoke(cli, ["select", *common, "-s", "random", "-b", "3", "--out",
                                   str(uci_ws / "picked.json")])
        assert done.exit_code == 0, done.output
    sel, out, sheet = uci_ws / "picked.json", uci_ws / "to-label.csv", uci_ws / "sheet.csv"
    if argv[0] == "label":
        assert runner.invoke(cli, ["next", *common, "--selection", str(sel)]).exit_code == 0
        sheet.write_text("id,label\n")
    locks = {"extract": round_paths(uci_ws, 0).lock, "select": round_paths(uci_ws, 0).lock,
             "next": round_paths(uci_ws, 1).lock, "label": round_paths(uci_ws, 1).lock,
             "export": output_lock(out), "init": round_paths(uci_ws, 0).lock}
    args = [a.format(sel=sel, out=out, sheet=sheet, ws=uci_ws) for a in argv]
    if argv[0] not in ("init", "export"):
        args += common
    monkeypatch.setenv(TIMEOUT_ENV, "0.2")
    other = Holder(locks[argv[0]], "mmal test")  # exclusive: even select's shared lock waits
    try:
        result = runner.invoke(cli, args)
    finally:
        other.release()
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"Error: {locks[argv[0]]}: held by pid {other.pid} "
                                    "(mmal test) since "), result.stderr


def test_selects_of_one_round_share_its_lock(uci_ws):
    runner = CliRunner()
    common = ["--workspace", str(uci_ws)]
    for step in ("train", "extract"):
        assert runner.invoke(cli, [step, *common, "--device", "cpu", "-q"]).exit_code == 0
    other = Holder(round_paths(uci_ws, 0).lock, "mmal select", shared=True)
    try:
        result = runner.invoke(cli, ["select", *common, "-s", "random", "-b", "4"],
                               env={TIMEOUT_ENV: "0"})
    finally:
        other.release()
    assert result.exit_code == 0, result.output


def test_a_dead_holder_does_not_block_train(uci_ws):
    other = Holder(round_paths(uci_ws, 0).lock, "mmal train")
    other.kill()
    result = CliRunner().invoke(cli, ["train", "--workspace", str(uci_ws), "--device", "cpu",
                                      "-q"], env={TIMEOUT_ENV: "0"})
    assert result.exit_code == 0, result.output


def test_lock_files_are_not_results(uci_ws):
    """A round folder holding only a lock file is no started round, for init --force."""
    lock = round_paths(uci_ws, 3).lock
    Holder(lock).release()
    result = CliRunner().invoke(cli, ["init", str(uci_ws), "--config", str(uci_ws / "mmal.toml"),
                                      "--force"])
    assert result.exit_code == 0, result.output
    assert Path(lock).is_file()


@pytest.mark.parametrize("start", ["together", "at-once"])
def test_two_selects_with_one_out_publish_one_whole_pair(tmp_path, start):
    """One wins, the other says "already exists"; the index names diagnostics that exist."""
    cache, out = tmp_path / "pool.h5", tmp_path / "same.json"
    make_synthetic_cache(cache, num_samples=400, feature_dims=(8, 6), seed=1)
    strategies = ("entropy", "bmmal")
    # "together": both finish selecting while another process holds the pair's lock, so both
    # reach the publishing step before either publishes (the race of issue 15, item 5)
    other = Holder(output_lock(out), "mmal test") if start == "together" else None
    procs = [_mmal("select", "-s", name, "-b", "20", "--cache", str(cache), "--out", str(out))
             for name in strategies]
    if other is not None:
        try:
            for proc in procs:
                _wait_for_line(proc.stderr, "waiting for")
        finally:
            other.release()
    outputs = [proc.communicate(timeout=120) for proc in procs]
    done = [(proc.returncode, *output) for proc, output in zip(procs, outputs, strict=True)]
    codes = sorted(code for code, _, _ in done)
    assert codes == [0, 1], done
    winner = strategies[[code for code, _, _ in done].index(0)]
    loser_err = next(err for code, _, err in done if code == 1)
    assert f"Error: {out}: already exists; pass --force to replace it" in loser_err
    assert "Traceback" not in loser_err

    index = read_index(out)
    diagnostics = diagnostics_path(out)
    assert index.provenance["strategy"] == winner
    assert index.provenance["diagnostics"] == diagnostics.name and diagnostics.is_file()
    assert summarize_diagnostics(diagnostics)["strategy"] == winner
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([cache.name, out.name, diagnostics.name, output_lock(out).name])


def test_a_select_that_loses_leaves_the_winners_pair_alone(tmp_path):
    """The loser checks under the pair's lock, before writing: nothing of the winner's goes."""
    cache, out = tmp_path / "pool.h5", tmp_path / "same.json"
    make_synthetic_cache(cache, num_samples=200, feature_dims=(8, 6), seed=1)
    first = select(cache, "entropy", 10, out=out)
    before = {p: p.read_bytes() for p in (out, diagnostics_path(out))}
    with pytest.raises(IndexFileError, match="already exists"):
        _publish(out, first.ids, {}, None, None, "bmmal", overwrite=False)
    assert {p: p.read_bytes() for p in before} == before


def _run_results(ws: Path, strategies: list[str], rounds: int) -> dict:
    """Test metrics per trajectory round and the ids each selection picked; every cache opened."""
    layout = RunLayout(ws)
    out = {}
    for name in strategies:
        folder = layout.trajectory(name, 0)
        for r in range(rounds + 1):
            paths = round_paths(folder, r)
            metrics = json.loads(paths.metrics.read_text())
            out[(name, r)] = (metrics["test"], metrics["num_labeled"])
            if r < rounds:
                with open_cache(paths.cache) as cache:  # nothing half-written under its name
                    assert cache.num_samples == len(cache.ids)
                out[(name, r, "selection")] = read_index(
                    paths.selections / f"{name}-b10.json").ids.tolist()
    assert layout.read_status()["failures"] == []
    return out


@pytest.mark.slow
def test_two_concurrent_runs_on_one_workspace_equal_one_run(tmp_path):
    """Issue 15, item 1: two `mmal run` at once left a corrupt cache.h5 in the shared round 0."""
    strategies, rounds = ["random", "bmmal"], 2
    config = make_tiny_dataset(tmp_path / "src", "uci", overrides={
        "train": {"epochs": 1, "batch_size": 16}, "al": {"initial_budget": 20, "budget": 10}})
    ws = init_workspace(tmp_path / "both", config)
    args = ["run", "--workspace", str(ws), "--strategies", ",".join(strategies), "--rounds",
            str(rounds), "--budget", "10", "--initial-budget", "20", "--device", "cpu"]
    procs = [_mmal(*args) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert f"finished {len(strategies)} of {len(strategies)} trajectories" in out
        assert "Traceback" not in err

    reference = init_workspace(tmp_path / "one", config)
    run_comparison(reference, strategies, rounds=rounds, budget=10, initial_budget=20,
                   device="cpu")
    got = _flat(_run_results(ws, strategies, rounds))
    want = _flat(_run_results(reference, strategies, rounds))
    assert got.keys() == want.keys()
    for key, value in want.items():  # ids and counts exact; float sums may differ in the last bits
        assert got[key] == (pytest.approx(value, rel=1e-7, abs=1e-12)
                            if isinstance(value, float) else value), key
