"""mmal.train.ddp: micro-batches partition the single-process batches; dropout and loss match."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mmal.models.model import Output
from mmal.train.ddp import GlobalBatchDropout, micro_batches, sample_losses
from mmal.train.loop import multimodal_loss


@pytest.mark.parametrize("n,batch,world", [(41, 16, 2), (40, 16, 3), (5, 4, 4), (17, 16, 2)])
def test_micro_batches_partition_every_global_batch(n, batch, world):
    order = np.random.default_rng(n).permutation(n).tolist()
    drop_last = n % batch == 1
    plans = [micro_batches(order, batch, drop_last, r, world) for r in range(world)]
    steps = {len(p) for p in plans}
    assert len(steps) == 1  # every rank takes part in every step
    full = [order[s:s + batch] for s in range(0, n, batch)]
    if drop_last:
        full = full[:-1]
    assert steps == {len(full)}
    for step, want in enumerate(full):
        parts = [p[step] for p in plans]
        real = [i for mb in parts for i, w in zip(mb.indices, mb.weights, strict=True) if w]
        assert real == want  # rank order = single-process order
        assert {mb.global_size for mb in parts} == {len(want)}
        for mb in parts:
            if any(mb.weights):
                assert mb.indices == want[mb.lo:mb.hi]
            else:  # padding: one zero-weight sample
                assert len(mb.indices) == 1 and len(want) < world


def test_rank_losses_scaled_by_world_over_batch_average_to_the_batch_loss():
    torch.manual_seed(0)
    b, k, world = 9, 4, 2
    out = Output(features={}, logits_mm=torch.randn(b, k),
                 logits_uni={"a": torch.randn(b, k), "v": torch.randn(b, k)})
    labels = torch.randint(0, k, (b,))
    full = multimodal_loss(out, labels, ["a", "v"])
    per = sample_losses(out, labels, ["a", "v"])
    torch.testing.assert_close(per.mean(), full)
    parts = [per[r * b // world:(r + 1) * b // world].sum() * world / b for r in range(world)]
    torch.testing.assert_close(torch.stack(parts).mean(), full)
    multi = (torch.rand(b, k) > 0.5).to(torch.int8)
    torch.testing.assert_close(sample_losses(out, multi, ["a"]).mean(),
                               multimodal_loss(out, multi, ["a"]))


@pytest.mark.parametrize("p", [0.0, 0.25])
def test_global_batch_dropout_rows_equal_single_process_dropout(p):
    x = torch.randn(10, 7)
    torch.manual_seed(5)
    want = F.dropout(x, p, training=True)
    drop = GlobalBatchDropout(p)
    for lo, hi in [(0, 10), (0, 4), (4, 10)]:
        drop.rows = (10, lo, hi)
        torch.manual_seed(5)
        torch.testing.assert_close(drop(x[lo:hi]), want[lo:hi], rtol=0, atol=0)
    drop.eval()
    assert drop(x) is x
