"""Train round 0 of the workspace argv[1] under torchrun with a NaN loss on rank 1's first step."""

import os
import sys

import mmal.train.loop as loop
from mmal.errors import TrainingError
from mmal.train import train_round

real, steps = loop.head_losses, [0]


def nan_on_rank_one(out, labels, modalities):
    value = real(out, labels, modalities)
    steps[0] += 1
    return value * float("nan") if os.environ["RANK"] == "1" and steps[0] == 1 else value


loop.head_losses = nan_on_rank_one
try:
    train_round(sys.argv[1], 0, device="cpu", progress=False)
except TrainingError as exc:
    print(f"rank {os.environ['RANK']}: TrainingError: {exc}", flush=True)
    sys.exit(3)
