"""Data-parallel training under torchrun: the micro-batch plan, global-batch dropout, the wrapper.

The epoch itself is :func:`mmal.train.loop._epoch`, the same for one process
and for ``W`` ranks. With the configured (global) batch size ``B``, step ``s``
of an epoch takes the same global batch a single process takes,
``order[s*B:(s+1)*B]`` (``b`` samples, ``b < B`` for the last one), and
:func:`micro_batches` splits it into ``W`` contiguous micro-batches of
``floor`` / ``ceil`` of ``b / W`` samples. Rank ``r`` minimises its
micro-batch's mean loss times ``W * b_r / b`` (``W / b`` times the sum of its
per-sample losses); DistributedDataParallel averages gradients over the ranks,
so every rank applies the gradient of the global batch's mean loss — the
single-process gradient, up to float rounding. With one process the plan is
the plain batches and the factor is exactly 1. A rank left without samples
(``b < W``) runs its share on one padding sample of weight 0, so every rank
still joins the step's all-reduce.

The fused head's dropout mask is drawn for the whole global batch from the
generator that every rank seeds identically per epoch, and each rank keeps its
rows: on the CPU the masks equal the single-process run's exactly (the mask is
drawn the way ``torch.nn.functional.dropout`` draws it; encoders with their own
dropout, such as BERT, draw per micro-batch instead). Batch norm: on GPUs the
encoders' BatchNorm layers become SyncBatchNorm, so statistics are those of the
global batch as in one process; on CPUs (Gloo) SyncBatchNorm is unavailable and
each rank normalises with its micro-batch's statistics (running statistics come
from rank 0, broadcast by DDP).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class MicroBatch:
    """One rank's part of one global batch.

    indices : dataset positions this rank loads.
    samples : how many of them count: ``len(indices)``, or 0 for the one padding sample.
    global_size : ``b``, samples in the global batch.
    lo, hi : rows of the global batch this rank's samples stand for (dropout mask rows).
    weight : factor on the micro-batch's mean loss, ``world_size * samples / global_size``
        (exactly 1.0 in one process, 0.0 for padding).
    """

    indices: list[int]
    samples: int
    global_size: int
    lo: int
    hi: int
    weight: float


def micro_batches(order: list[int], batch_size: int, drop_last: bool, rank: int,
                  world_size: int) -> list[MicroBatch]:
    """Rank ``rank``'s micro-batch of every global batch of ``order``, in step order.

    With ``world_size=1`` these are the plain batches of ``batch_size``.

    Examples
    --------
    >>> [m.indices for m in micro_batches([4, 2, 0, 1, 3], 4, False, 1, 2)]
    [[0, 1], [3]]
    >>> micro_batches([4, 2, 0, 1, 3], 4, False, 0, 2)[1].samples  # padding
    0
    >>> [m.weight for m in micro_batches([4, 2, 0, 1, 3], 4, False, 0, 1)]
    [1.0, 1.0]
    """
    out = []
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        if drop_last and len(chunk) < batch_size:
            break
        b = len(chunk)
        lo, hi = rank * b // world_size, (rank + 1) * b // world_size
        if hi > lo:
            out.append(MicroBatch(chunk[lo:hi], hi - lo, b, lo, hi, world_size * (hi - lo) / b))
        else:
            out.append(MicroBatch(chunk[:1], 0, b, 0, 1, 0.0))
    return out


class GlobalBatchDropout(nn.Module):
    """Dropout whose mask is drawn for the global batch; this rank keeps rows ``lo:hi``.

    Set ``rows = (global_size, lo, hi)`` before each training forward pass.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)
        self.rows: tuple[int, int, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.numel() == 0:
            return x
        b, lo, hi = self.rows if self.rows is not None else (len(x), 0, len(x))
        shape = (b, *x.shape[1:])
        if x.is_cuda:  # the fused CUDA kernel's mask, taken from a ones tensor of the global shape
            _, mask = torch.native_dropout(torch.ones(shape, dtype=x.dtype, device=x.device),
                                           self.p, True)
            return x * mask[lo:hi] / (1 - self.p)
        noise = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        return x * noise.div_(1 - self.p)[lo:hi]


def wrap(model, env) -> nn.parallel.DistributedDataParallel:
    """``model`` (a MultimodalModel, changed in place) inside DistributedDataParallel.

    The fused head's dropout becomes :class:`GlobalBatchDropout`; on GPUs with
    more than one rank, batch norm becomes SyncBatchNorm (same parameters and
    buffers, so an optimizer built before keeps working).
    """
    model.dropout = GlobalBatchDropout(model.dropout_p)
    if env.device.type == "cuda" and env.world_size > 1:
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [env.device.index] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
