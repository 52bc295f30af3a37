"""TensorBoard logging of ``mmal train``: the scalars read back, and weights unchanged by it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mmal.cli import cli
from mmal.train import train_round
from mmal.workspace import load_workspace_config, round_paths
from tests.models.tiny import make_workspace
from tests.tb_events import event_files, read_scalars
from tests.train.test_train import KILL

torch.set_num_threads(1)
# lr and encoder_lr differ, so each lr tag shows it belongs to its optimizer group
UCI = {"train": {"epochs": 3, "batch_size": 16, "lr": 0.002, "encoder_lr": 0.0005},
       "al": {"initial_budget": 40}, "model": {"dropout": 0.2}}


@pytest.fixture
def uci_ws(tmp_path):
    return make_workspace(tmp_path, "uci", overrides=UCI)


def _state(path):
    return torch.load(path, weights_only=True)["state_dict"]


def _values(scalars, tag):
    return [v for _, v in scalars[tag]]


def test_logging_is_off_by_default_and_writes_no_folder(uci_ws):
    assert load_workspace_config(uci_ws).train.tensorboard is False
    train_round(uci_ws, 0, device="cpu", progress=False)
    assert not round_paths(uci_ws, 0).tensorboard.exists()


def test_train_logs_every_epoch_and_the_test_metrics(uci_ws):
    metrics = train_round(uci_ws, 0, device="cpu", progress=False, tensorboard=True)
    folder = round_paths(uci_ws, 0).tensorboard
    assert len(event_files(folder)) == 1
    scalars = read_scalars(folder)
    epochs = [1, 2, 3]
    heads = ("mm", "fac", "fou")
    test = metrics["test"]
    assert set(scalars) == ({"loss/total", "lr/heads", "lr/encoders"}
                            | {f"loss/head/{h}" for h in heads}
                            | {f"test/top1/{h}" for h in heads}
                            | {f"test/contribution/{m}" for m in heads[1:]})
    for tag in ("loss/total", "lr/heads", "lr/encoders", *(f"loss/head/{h}" for h in heads)):
        assert [step for step, _ in scalars[tag]] == epochs, tag
    np.testing.assert_allclose(_values(scalars, "loss/total"), metrics["train_loss"], rtol=1e-6)
    # Eq. 1 is the mean over heads, per batch and so per epoch (up to rounding)
    per_head = np.array([_values(scalars, f"loss/head/{h}") for h in heads])
    np.testing.assert_allclose(per_head.mean(axis=0), metrics["train_loss"], rtol=1e-5)
    assert not np.allclose(per_head[1], per_head[2])  # the two views' heads do differ
    np.testing.assert_allclose(_values(scalars, "lr/heads"), [0.002] * 3, rtol=1e-6)
    np.testing.assert_allclose(_values(scalars, "lr/encoders"), [0.0005] * 3, rtol=1e-6)
    for head, value in test["top1"].items():
        assert scalars[f"test/top1/{head}"] == [(3, pytest.approx(value, rel=1e-6))]
    for m, value in test["shapley_true_class"]["contribution_mean"].items():
        assert scalars[f"test/contribution/{m}"] == [(3, pytest.approx(value, rel=1e-6))]


def test_logging_changes_no_weight_and_force_replaces_the_events(uci_ws):
    paths = round_paths(uci_ws, 0)
    quiet = train_round(uci_ws, 0, device="cpu", progress=False)
    off = _state(paths.model)
    result = CliRunner().invoke(cli, ["train", "--workspace", str(uci_ws), "--round", "0",
                                      "--device", "cpu", "-q", "--tensorboard", "--force"])
    assert result.exit_code == 0, result.output
    assert f"wrote TensorBoard events to {paths.tensorboard}" in result.output
    on, logged = _state(paths.model), json.loads(paths.metrics.read_text())
    assert off.keys() == on.keys() and all(torch.equal(off[k], on[k]) for k in off)
    assert logged["train_loss"] == quiet["train_loss"] and logged["test"] == quiet["test"]
    assert logged["model_fingerprint"] == quiet["model_fingerprint"]  # model.pt byte for byte
    # a second logged training replaces the first one's events instead of adding to them
    first = event_files(paths.tensorboard)
    train_round(uci_ws, 0, device="cpu", progress=False, tensorboard=True, force=True)
    assert len(event_files(paths.tensorboard)) == 1 and event_files(paths.tensorboard) != first
    assert [s for s, _ in read_scalars(paths.tensorboard)["loss/total"]] == [1, 2, 3]
    # and one without logging removes them: they describe a model that is gone
    train_round(uci_ws, 0, device="cpu", progress=False, force=True)
    assert not paths.tensorboard.exists()


@pytest.mark.parametrize("kill_at, milestones, logged", [
    (5, [], [1]),
    # decay from epoch 2 (0-based 1) on; die in epoch 3: the replayed epoch 1 ran at full rate
    (8, [1], [1, 2]),
])
def test_a_resumed_training_logs_each_epoch_once(tmp_path, request, kill_at, milestones, logged):
    ws = make_workspace(tmp_path, "uci", overrides={**UCI, "train": {
        **UCI["train"], "tensorboard": True, "milestones": milestones}})
    paths = round_paths(ws, 0)
    # 40 samples in batches of 16: 3 steps per epoch; die at step kill_at
    proc = subprocess.run([sys.executable, "-c", KILL, str(ws), str(kill_at)],
                          capture_output=True, text=True, cwd=str(request.config.rootpath))
    assert proc.returncode == -9, proc.stderr
    assert [s for s, _ in read_scalars(paths.tensorboard)["loss/total"]] == logged
    metrics = train_round(ws, 0, device="cpu", progress=False)
    scalars = read_scalars(paths.tensorboard)
    assert len(event_files(paths.tensorboard)) == 1
    for tag in ("loss/total", "loss/head/fac", "lr/heads"):
        assert [s for s, _ in scalars[tag]] == [1, 2, 3], tag
    np.testing.assert_allclose(_values(scalars, "loss/total"), metrics["train_loss"], rtol=1e-6)
    decay = [0.1 ** sum(m <= e for m in milestones) for e in range(3)]
    np.testing.assert_allclose(_values(scalars, "lr/heads"), [0.002 * d for d in decay],
                               rtol=1e-6)


def test_multi_label_logs_map(tmp_path):
    ws = make_workspace(tmp_path, "manifest", modalities=("vector", "text"), multi_label=True,
                        n_train=12, n_test=6, overrides={"al": {"initial_budget": 8}})
    metrics = train_round(ws, 0, device="cpu", progress=False, tensorboard=True)
    scalars = read_scalars(round_paths(ws, 0).tensorboard)
    for head, value in metrics["test"]["map"].items():
        assert scalars[f"test/map/{head}"] == [(2, pytest.approx(value, rel=1e-6))]


def test_missing_tensorboard_is_one_line_naming_the_install(uci_ws, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    result = CliRunner().invoke(cli, ["train", "--workspace", str(uci_ws), "--device", "cpu",
                                      "-q", "--tensorboard"])
    assert result.exit_code == 1
    assert result.output == ("Error: TensorBoard logging needs the tensorboard package, which "
                             "is not installed; pip install 'mmal[tensorboard]' (or leave "
                             "train.tensorboard false and --tensorboard off)\n")
    assert not round_paths(uci_ws, 0).model.exists()
    # without logging nothing imports it
    train_round(uci_ws, 0, device="cpu", progress=False)
