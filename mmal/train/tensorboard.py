"""TensorBoard event files of a round's training (``[train] tensorboard``, ``mmal train --tensorboard``).

Scalars written to ``rounds/RRR/tensorboard/`` (``docs/training.md`` lists them):

- every epoch, at step = epoch (1..E): ``loss/total`` (Eq. 1, metrics.json's
  ``train_loss``), ``loss/head/<head>`` for ``mm`` and each modality, and
  ``lr/heads`` (fusion and heads) and ``lr/encoders`` (when an encoder trains);
- after the test, at step = E: :func:`metric_scalars`.

Logging reads what training computes anyway and draws no random number, so
the weights are the same bit for bit with it on or off. Only rank 0 writes.
``torch.utils.tensorboard`` is imported only when logging is on.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mmal.errors import ConfigError

#: Tag of each optimizer group's learning rate, in the order of
#: :meth:`mmal.models.model.MultimodalModel.param_groups` (fusion and heads, then encoders).
LR_TAGS = ("lr/heads", "lr/encoders")


def writer_class() -> type:
    """torch's ``SummaryWriter``; ConfigError naming the fix when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("TensorBoard logging needs the tensorboard package, which is not "
                          "installed; pip install 'mmal[tensorboard]' (or leave "
                          "train.tensorboard false and --tensorboard off)") from None
    return SummaryWriter


def fresh_writer(folder: Path):
    """A ``SummaryWriter`` on ``folder``, emptied first: one run's events, never two."""
    cls = writer_class()
    shutil.rmtree(folder, ignore_errors=True)
    return cls(log_dir=str(folder))


def metric_scalars(test: dict[str, Any]) -> dict[str, float]:
    """Tag -> value of a ``metrics.json`` ``test`` section.

    ``test/top1/<head>`` (``mm`` and each modality), ``test/map/<head>``
    (multi-label only) and ``test/contribution/<modality>``, the mean Shapley
    contribution Φ at the true class (``shapley_true_class.contribution_mean``).
    """
    out = {f"test/top1/{head}": v for head, v in test["top1"].items()}
    out.update({f"test/map/{head}": v for head, v in test.get("map", {}).items()})
    contribution = test["shapley_true_class"]["contribution_mean"]
    out.update({f"test/contribution/{m}": v for m, v in contribution.items()})
    return out


class TrainLog:
    """Rank 0's TensorBoard log of one training of a round; does nothing when off.

    Opening it removes the round's old events on rank 0 whether logging is on
    or not: they describe a model this training replaces. Use as a context
    manager so the file is closed however training ends.
    """

    def __init__(self, folder: Path, heads: list[str], *, on: bool, main: bool):
        self.heads = heads
        self.writer = None
        if on:
            writer_class()  # every rank fails alike when the package is missing
        if main:
            shutil.rmtree(folder, ignore_errors=True)
            if on:
                self.writer = writer_class()(log_dir=str(folder))

    def __enter__(self) -> TrainLog:
        return self

    def __exit__(self, *exc) -> None:
        if self.writer is not None:
            self.writer.close()

    def epoch(self, epoch: int, loss: float, heads: list[float] | None, opt,
              lrs: list[float] | None = None) -> None:
        """Epoch ``epoch``'s (1-based) total and per-head losses, and the learning rates.

        ``heads`` follows :func:`mmal.train.loop.head_losses`; None (an epoch
        resumed from a partial checkpoint that predates them) logs the total only.
        ``lrs``: the rate of each of ``opt``'s groups to log (default: their rates now).
        """
        if self.writer is None:
            return
        scalars = {"loss/total": loss}
        if heads is not None:
            scalars.update({f"loss/head/{h}": v for h, v in zip(self.heads, heads, strict=True)})
        rates = lrs if lrs is not None else [g["lr"] for g in opt.param_groups]
        scalars.update(dict(zip(LR_TAGS, rates, strict=False)))
        self._write(scalars, epoch)

    def replay(self, losses: list[float], head_history: list[list[float] | None], opt,
               lrs: list[list[float]]) -> None:
        """Epochs 1..len(losses) again, after resuming; ``lrs[e]``: the rates epoch e+1 ended with
        (under a schedule they change from epoch to epoch)."""
        for epoch, (loss, heads, rates) in enumerate(zip(losses, head_history, lrs, strict=True),
                                                     1):
            self.epoch(epoch, loss, heads, opt, rates)

    def test(self, test: dict[str, Any], step: int) -> None:
        """The test metrics (:func:`metric_scalars`) at ``step``, the last epoch."""
        if self.writer is not None:
            self._write(metric_scalars(test), step)

    def _write(self, scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # visible in a running TensorBoard after every epoch
