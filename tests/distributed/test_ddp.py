"""mmal.train.ddp: micro-batches partition the single-process batches; dropout and loss match."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mmal.models.model import Encoded, Output
from mmal.train.ddp import GlobalBatchDropout, micro_batches
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
        real = [i for mb in parts if mb.samples for i in mb.indices]
        assert real == want  # rank order = single-process order
        assert {mb.global_size for mb in parts} == {len(want)}
        assert sum(mb.weight for mb in parts) == pytest.approx(world)  # DDP divides by world
        for mb in parts:
            if mb.samples:
                assert mb.indices == want[mb.lo:mb.hi] and mb.samples == len(mb.indices)
            else:  # padding: one zero-weight sample
                assert len(mb.indices) == 1 and len(want) < world and mb.weight == 0


@pytest.mark.parametrize("n,batch,drop_last", [(41, 16, False), (33, 16, True), (5, 8, False)])
def test_one_process_plan_is_the_plain_batches_with_weight_exactly_one(n, batch, drop_last):
    order = np.random.default_rng(n).permutation(n).tolist()
    plan = micro_batches(order, batch, drop_last, 0, 1)
    loader = torch.utils.data.DataLoader(range(n), batch_size=batch, sampler=order,
                                         drop_last=drop_last)
    assert [mb.indices for mb in plan] == [b.tolist() for b in loader]
    assert all(mb.weight == 1.0 and mb.samples == mb.global_size == len(mb.indices)
               for mb in plan)


@pytest.mark.parametrize("b,world", [(9, 2), (16, 3), (2, 3)])
@pytest.mark.parametrize("multi_label", [False, True])
def test_weighted_rank_losses_average_to_the_global_batch_loss(b, world, multi_label):
    torch.manual_seed(0)
    k = 4
    out = Output(encoded=Encoded({}), logits_mm=torch.randn(b, k),
                 logits_uni={"a": torch.randn(b, k), "v": torch.randn(b, k)})
    labels = (torch.rand(b, k) > 0.5).to(torch.int8) if multi_label else torch.randint(0, k, (b,))
    full = multimodal_loss(out, labels, ["a", "v"])
    parts = []
    for rank in range(world):
        mb = micro_batches(list(range(b)), b, False, rank, world)[0]
        rows = slice(mb.lo, mb.hi)
        part = Output(encoded=Encoded({}), logits_mm=out.logits_mm[rows],
                      logits_uni={m: v[rows] for m, v in out.logits_uni.items()})
        parts.append(multimodal_loss(part, labels[rows], ["a", "v"]) * mb.weight)
    # DistributedDataParallel averages the ranks' gradients, i.e. of the mean of these losses
    torch.testing.assert_close(torch.stack(parts).mean(), full)


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
