"""The learning-rate schedule: linear warm-up per step, then step decay at epoch milestones.

The paper's training (``train.warmup_epochs``, ``train.milestones``): during the
first ``warmup_epochs`` epochs every group's rate rises linearly per step,
``(t + 1) / W`` of its base rate at global step ``t`` of ``W = warmup_epochs x
steps per epoch``; after it, the base rate times ``0.1`` per milestone reached
(a milestone ``m`` applies from epoch ``m``, counted from 0, on). Without either
key the factor is 1: the base rates throughout.

A pure function of (epoch, step): a resumed run sets the same rates as an
uninterrupted one without storing a scheduler's state.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Factor applied to the learning rates at each milestone (the paper's MultiStepLR gamma).
DECAY = 0.1


def lr_scale(epoch: int, step: int, steps_per_epoch: int, *, warmup_epochs: int = 0,
             milestones: Sequence[int] = ()) -> float:
    """Factor on every group's base learning rate at ``step`` of ``epoch`` (both 0-based).

    Examples
    --------
    >>> lr_scale(0, 0, 10, warmup_epochs=2)  # step 1 of 20 warm-up steps
    0.05
    >>> lr_scale(5, 3, 10, warmup_epochs=2, milestones=[4, 6])
    0.1
    """
    warm = warmup_epochs * steps_per_epoch
    t = epoch * steps_per_epoch + step
    if t < warm:
        return (t + 1) / warm
    return DECAY ** sum(1 for m in milestones if m <= epoch)


def epoch_scales(epoch: int, steps_per_epoch: int, *, warmup_epochs: int = 0,
                 milestones: Sequence[int] = ()) -> list[float]:
    """:func:`lr_scale` of every step of ``epoch`` (0-based), in step order."""
    return [lr_scale(epoch, i, steps_per_epoch, warmup_epochs=warmup_epochs,
                     milestones=milestones) for i in range(steps_per_epoch)]


def set_lr(opt, base_lrs: Sequence[float], scale: float) -> None:
    """Set each of ``opt``'s parameter groups to its base rate times ``scale`` (group order)."""
    for group, base in zip(opt.param_groups, base_lrs, strict=True):
        group["lr"] = base * scale
