"""Data-parallel training under torchrun, arranged to follow the single-process run step by step.

With ``W`` ranks and the configured (global) batch size ``B``, step ``s`` of an
epoch takes the same global batch a single process takes, ``order[s*B:(s+1)*B]``
(``b`` samples, ``b < B`` for the last one), and splits it into ``W``
contiguous micro-batches of ``floor`` / ``ceil`` of ``b / W`` samples. Rank
``r`` minimises ``W / b * sum of its per-sample losses``; DistributedDataParallel
averages gradients over the ranks, so every rank applies the gradient of the
global batch's mean loss — the single-process gradient, up to float rounding.
A rank left without samples (``b < W``) runs its share on one padding sample
of weight 0, so every rank still joins the step's all-reduce.

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

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from mmal.models.runtime import inputs_to


@dataclass(frozen=True)
class MicroBatch:
    """One rank's part of one global batch.

    indices : dataset positions this rank loads.
    weights : 1.0 per real sample, 0.0 for the padding sample.
    global_size : ``b``, samples in the global batch.
    lo, hi : rows of the global batch this rank's samples stand for (dropout mask rows).
    """

    indices: list[int]
    weights: list[float]
    global_size: int
    lo: int
    hi: int


def micro_batches(order: list[int], batch_size: int, drop_last: bool, rank: int,
                  world_size: int) -> list[MicroBatch]:
    """Rank ``rank``'s micro-batch of every global batch of ``order``, in step order.

    Examples
    --------
    >>> [m.indices for m in micro_batches([4, 2, 0, 1, 3], 4, False, 1, 2)]
    [[0, 1], [3]]
    >>> micro_batches([4, 2, 0, 1, 3], 4, False, 0, 2)[1].weights  # padding
    [0.0]
    """
    out = []
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        if drop_last and len(chunk) < batch_size:
            break
        b = len(chunk)
        lo, hi = rank * b // world_size, (rank + 1) * b // world_size
        if hi > lo:
            out.append(MicroBatch(chunk[lo:hi], [1.0] * (hi - lo), b, lo, hi))
        else:
            out.append(MicroBatch(chunk[:1], [0.0], b, 0, 1))
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


def prepare(model, env) -> None:
    """Make ``model`` (a MultimodalModel, in place) ready for data-parallel training."""
    model.dropout = GlobalBatchDropout(model.dropout_p)
    if env.device.type == "cuda" and env.world_size > 1:
        nn.SyncBatchNorm.convert_sync_batchnorm(model)


def wrap(model, env) -> nn.parallel.DistributedDataParallel:
    """``model`` inside DistributedDataParallel on this rank's device."""
    ids = [env.device.index] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def sample_losses(out, labels: torch.Tensor, modalities: list[str]) -> torch.Tensor:
    """(B,) per-sample Eq. 1 loss: mean over the fused and unimodal heads' (B)CE.

    Its batch mean equals :func:`mmal.train.loop.multimodal_loss`.
    """
    if labels.ndim == 2:
        labels = labels.float()

        def lossf(logits, y):
            return F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(1)
    else:
        def lossf(logits, y):
            return F.cross_entropy(logits, y, reduction="none")
    terms = [lossf(out.logits_mm, labels)] + [lossf(out.logits_uni[m], labels) for m in modalities]
    return torch.stack(terms).mean(0)


def run_epoch(net, model, dataset, order: list[int], opt, env, *, batch_size: int,
              drop_last: bool, num_workers: int, desc: str, progress: bool) -> float:
    """One data-parallel epoch over ``order``; returns the mean per-sample loss over all ranks."""
    from mmal.data import collate

    plan = micro_batches(order, batch_size, drop_last, env.rank, env.world_size)
    dev = env.device
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=[m.indices for m in plan], collate_fn=collate,
        num_workers=num_workers, pin_memory=dev.type == "cuda")
    net.train()
    total, count = 0.0, 0.0
    # Wrapped like the single-process loop: tqdm.auto opens an extra loader iterator, and
    # each iterator draws a seed from the global RNG, which the dropout masks come from next.
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False)
    for mb, batch in zip(plan, bar, strict=True):
        model.dropout.rows = (mb.global_size, mb.lo, mb.hi)
        weights = torch.tensor(mb.weights, device=dev)
        per = sample_losses(net(inputs_to(batch["inputs"], dev)), batch["label"].to(dev),
                            model.modalities)
        loss = (per * weights).sum() * (env.world_size / mb.global_size)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float((per.detach() * weights).sum())
        count += float(np.sum(mb.weights))
    total, count = env.all_reduce_sum([total, count])
    return total / max(count, 1.0)
