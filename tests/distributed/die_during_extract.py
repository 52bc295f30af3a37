"""Test helper, run under torchrun: ``mmal extract`` whose rank 1 SIGKILLs itself mid-shard.

Usage: ``torchrun --nproc-per-node 2 die_during_extract.py STOP extract --workspace WS ...``.
Rank 1 dies on its STOP-th cache append (so STOP-1 batches are on disk), but
only once rank 0's shard is finished, so a rerun can show that finished shards
are kept. Every other rank runs the real command unchanged.
"""

import os
import signal
import sys
import time

import torch

import mmal.cache.writer as writer
from mmal.cli import main
from mmal.extract.shards import shard_path
from mmal.workspace import round_paths

torch.set_num_threads(1)
STOP = int(sys.argv.pop(1))
WORKSPACE = sys.argv[sys.argv.index("--workspace") + 1]
RANK, WORLD = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
rank0_shard = shard_path(round_paths(WORKSPACE, 0).cache, 0, WORLD)
calls = [0]
real_append = writer.CacheWriter.append


def dying_append(self, batch):
    calls[0] += 1
    if RANK == 1 and calls[0] == STOP:
        deadline = time.monotonic() + 120
        while not rank0_shard.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)
    real_append(self, batch)


writer.CacheWriter.append = dying_append
main()
