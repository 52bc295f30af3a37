"""The learning-rate schedule: against torch's MultiStepLR with the paper's per-step warm-up,
its config keys, and the rates a real training applies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmal.config import dump_config, load_config
from mmal.errors import ConfigError
from mmal.train import loop, train_round
from mmal.train.schedule import DECAY, lr_scale
from tests.fixtures_data import make_tiny_dataset
from tests.models.tiny import make_workspace

torch.set_num_threads(1)


def _reference_rates(epochs, steps, warmup_epochs, milestones, base=(1e-3, 1e-4)):
    """Rates per step as the paper's code sets them: a torch MultiStepLR(gamma=0.1) stepped per
    epoch, and during warm-up each group's rate overwritten with (t + 1) / W of its initial."""
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in base]
    opt = torch.optim.Adam([{"params": [p], "lr": lr} for p, lr in zip(params, base, strict=True)])
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=DECAY)
    warm, rates, t = warmup_epochs * steps, [], 0
    for _ in range(epochs):
        for _ in range(steps):
            if t < warm:
                for group, lr in zip(opt.param_groups, base, strict=True):
                    group["lr"] = (t + 1) / warm * lr
            rates.append([g["lr"] for g in opt.param_groups])
            opt.step()
            t += 1
        sched.step()
    return rates


@pytest.mark.parametrize("epochs, steps, warmup, milestones", [
    (45, 3, 10, (20, 30, 40)),   # KineticsSound / VGGSound
    (15, 4, 0, (10,)),           # Food-101
    (6, 5, 2, (2, 4)),           # a milestone right at the end of the warm-up
    (4, 2, 0, ()),               # no schedule: the base rates
])
def test_scale_matches_the_papers_schedule(epochs, steps, warmup, milestones):
    base = (1e-3, 1e-4)
    expected = _reference_rates(epochs, steps, warmup, milestones, base)
    got = [[lr * lr_scale(e, i, steps, warmup_epochs=warmup, milestones=milestones)
            for lr in base] for e in range(epochs) for i in range(steps)]
    assert np.allclose(got, expected, rtol=1e-12, atol=0)


def test_scale_known_values():
    assert lr_scale(0, 0, 10, warmup_epochs=2) == 1 / 20
    assert lr_scale(1, 9, 10, warmup_epochs=2) == 1.0  # last warm-up step: the full rate
    assert lr_scale(3, 0, 10, warmup_epochs=2, milestones=[3, 5]) == pytest.approx(0.1)
    assert lr_scale(5, 0, 10, warmup_epochs=2, milestones=[3, 5]) == pytest.approx(0.01)
    assert lr_scale(7, 4, 10) == 1.0


@pytest.mark.parametrize("train, message", [
    ("warmup_epochs = -1", "key 'train.warmup_epochs' is -1; must be >= 0"),
    ("milestones = [3, 2]", "key 'train.milestones' is [3, 2]; must be strictly increasing"),
    ("milestones = [1.5]", "key 'train.milestones' is [1.5]; must be a list of integers"),
    ("milestones = 5", "key 'train.milestones' is 5 (integer); expected a list"),
    ("warmup_epochs = 4\nmilestones = [2, 6]", "key 'train.milestones' is [2, 6]; must be >= 1 "
     "and >= train.warmup_epochs (4): a milestone decays the rate after the warm-up"),
    ("milestones = [0]", "key 'train.milestones' is [0]; must be >= 1"),
    ("betas = [0.9]", "key 'train.betas' is [0.9]; must be two numbers in [0, 1)"),
    ("betas = [0.9, 1.0]", "key 'train.betas' is [0.9, 1.0]; must be two numbers in [0, 1)"),
    ('optimizer = "sgd"\nbetas = [0.95, 0.999]', "key 'train.betas' is [0.95, 0.999]; applies "
     "to adam and adamw, not sgd; remove it or change train.optimizer"),
])
def test_bad_schedule_keys_are_one_line(tmp_path, train, message):
    path = make_tiny_dataset(tmp_path, "uci")
    path.write_text(path.read_text().replace("[train]\n", f"[train]\n{train}\n"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {message}")


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_betas_reach_the_optimizer_and_a_written_config_reloads(tmp_path, optimizer):
    extra = "" if optimizer == "sgd" else "betas = [0.95, 0.999]\n"
    path = make_tiny_dataset(tmp_path, "uci")
    path.write_text(path.read_text().replace("[train]\n",
                                             f'[train]\noptimizer = "{optimizer}"\n{extra}'))
    config = load_config(path)
    again = tmp_path / "again.toml"
    again.write_text(dump_config(config))  # what init writes: betas with every optimizer
    assert load_config(again).train == config.train
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.1}]
    opt = loop._optimizer(config.train.optimizer, groups, config.train.betas)
    expected = None if optimizer == "sgd" else (0.95, 0.999)
    assert opt.param_groups[0].get("betas") == expected


def test_training_applies_the_schedule_at_every_step(tmp_path, monkeypatch):
    # 40 labeled samples in batches of 16: 3 steps per epoch; warm-up 1 epoch, decay at epoch 2.
    ws = make_workspace(tmp_path, "uci", overrides={
        "train": {"epochs": 3, "batch_size": 16, "warmup_epochs": 1, "milestones": [2],
                  "lr": 0.01, "encoder_lr": 0.002}, "al": {"initial_budget": 40}})
    seen, real = [], loop._optimizer

    def recording(*args):
        opt = real(*args)
        step = opt.step

        def step_and_record(*args, **kwargs):
            seen.append([g["lr"] for g in opt.param_groups])
            return step(*args, **kwargs)

        opt.step = step_and_record
        return opt

    monkeypatch.setattr(loop, "_optimizer", recording)
    train_round(ws, 0, device="cpu", progress=False)
    scales = [1 / 3, 2 / 3, 1, 1, 1, 1, 0.1, 0.1, 0.1]
    assert np.allclose(seen, [[0.01 * s, 0.002 * s] for s in scales], rtol=1e-12, atol=0)
