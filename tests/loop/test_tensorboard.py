"""mmal run --tensorboard: one TensorBoard run per trajectory, equal to its rounds' metrics."""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner

from mmal.cli import cli
from mmal.errors import ConfigError, WorkspaceError
from mmal.loop import RunLayout, run_comparison
from mmal.workspace import CONFIG_NAME, round_paths
from tests.loop.test_run import RUN, _workspace
from tests.tb_events import event_files, read_scalars

STRATEGIES = ("bmmal", "random")


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    ws = _workspace(tmp_path_factory.mktemp("tb"))
    result = CliRunner().invoke(cli, ["run", "--workspace", str(ws), "--strategies",
                                      ",".join(STRATEGIES), "--rounds", "1", "--budget", "10",
                                      "--initial-budget", "20", "--seeds", "0", "--device", "cpu",
                                      "-q", "--tensorboard"])
    assert result.exit_code == 0, result.output
    return ws


def _metrics(folder, r):
    return json.loads(round_paths(folder, r).metrics.read_text())


def _check_runs_equal_metrics(layout):
    for name in STRATEGIES:
        run = layout.tensorboard(name, 0)
        assert run == layout.root / "tensorboard" / f"{name}-seed0"
        assert len(event_files(run)) == 1
        scalars = read_scalars(run)
        rounds = [_metrics(layout.trajectory(name, 0), r) for r in (0, 1)]
        steps = [m["num_labeled"] for m in rounds]
        assert steps == [20, 30]
        heads = rounds[0]["test"]["top1"]
        modalities = rounds[0]["test"]["shapley_true_class"]["contribution_mean"]
        assert set(scalars) == ({f"test/top1/{h}" for h in heads}
                                | {f"test/contribution/{m}" for m in modalities})
        for head in heads:
            assert scalars[f"test/top1/{head}"] == [
                (s, pytest.approx(m["test"]["top1"][head], rel=1e-6))
                for s, m in zip(steps, rounds, strict=True)]
        for m in modalities:
            assert scalars[f"test/contribution/{m}"] == [
                (s, pytest.approx(x["test"]["shapley_true_class"]["contribution_mean"][m],
                                  rel=1e-6)) for s, x in zip(steps, rounds, strict=True)]


def test_one_tensorboard_run_per_trajectory_with_each_rounds_metrics(logged_run):
    layout = RunLayout(logged_run)
    _check_runs_equal_metrics(layout)
    assert layout.trajectories() == [("bmmal", 0), ("random", 0)]  # not a strategy folder
    # every training the run did logged its epochs too
    assert event_files(round_paths(layout.shared(0), 0).tensorboard)
    for name in STRATEGIES:
        assert event_files(round_paths(layout.trajectory(name, 0), 1).tensorboard)


def test_a_rerun_rewrites_the_runs_and_logging_keeps_the_run_comparable(logged_run):
    layout = RunLayout(logged_run)
    before = {name: event_files(layout.tensorboard(name, 0)) for name in STRATEGIES}
    # a seed config written before train.tensorboard existed, and logging switched on in
    # mmal.toml, are no change of config: the run resumes
    seed_config, toml = layout.config(0), logged_run / CONFIG_NAME
    assert "tensorboard = false" in seed_config.read_text() and "epochs = 2" in toml.read_text()
    seed_config.write_text(seed_config.read_text().replace("tensorboard = false\n", ""))
    toml.write_text(toml.read_text().replace("tensorboard = false", "tensorboard = true"))
    result = run_comparison(logged_run, list(STRATEGIES), rounds=1, seeds=[0], tensorboard=True,
                            **RUN)
    assert result.failures == []
    for name in STRATEGIES:
        assert event_files(layout.tensorboard(name, 0)) != before[name]  # replaced, not added to
    _check_runs_equal_metrics(layout)
    # a change that does change results is still refused
    toml.write_text(toml.read_text().replace("epochs = 2", "epochs = 3"))
    with pytest.raises(WorkspaceError, match="differs from what .* gives now"):
        run_comparison(logged_run, list(STRATEGIES), rounds=1, seeds=[0], **RUN)


def test_missing_tensorboard_stops_the_run_before_it_starts(tmp_path, monkeypatch):
    ws = _workspace(tmp_path)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match=r"pip install 'mmal\[tensorboard\]'"):
        run_comparison(ws, ["random"], rounds=1, seeds=[0], tensorboard=True, **RUN)
    assert not RunLayout(ws).root.exists()
