"""``mmal extract`` and ``mmal train`` under torchrun: 2 CPU processes, Gloo, against one process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mmal.cache import partial_path
from mmal.extract import extract_round
from mmal.extract.shards import shard_dir, shard_path
from mmal.models import model_from_checkpoint
from mmal.models.checkpoint import load_checkpoint
from mmal.train import train_round
from mmal.workspace import load_workspace_config, round_paths
from tests.models.tiny import make_workspace
from tests.tb_events import event_files, read_scalars

pytestmark = pytest.mark.slow
torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
# 41 labeled samples in global batches of 16: the last batch (9) splits 4 + 5 over 2 ranks.
UCI = {"train": {"epochs": 2, "batch_size": 16}, "al": {"initial_budget": 41},
       "model": {"dropout": 0.2}}
EXTRACT = ["--batch-size", "128", "--mc-dropout", "2", "-q"]


def torchrun(*args: str, script: str | None = None) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 -m mmal ARGS`` (or a script), captured."""
    target = [script] if script else ["-m", "mmal"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MMAL_DIST_TIMEOUT_S": "120",
           "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", *target, *args],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def fields(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with h5py.File(path, "r") as f:
        out: dict[str, np.ndarray] = {}
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
        return out, dict(f.attrs)


def assert_same_cache(path: Path, reference: Path) -> None:
    got, got_attrs = fields(path)
    want, want_attrs = fields(reference)
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert got_attrs["content_fingerprint"] == want_attrs["content_fingerprint"]
    assert got_attrs["extra"] == want_attrs["extra"]  # no shard bookkeeping in the joined cache


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A trained UCI workspace and a single-process reference cache of round 0."""
    ws = make_workspace(tmp_path_factory.mktemp("uci"), "uci", overrides=UCI)
    train_round(ws, 0, device="cpu", progress=False)
    cache = round_paths(ws, 0).cache
    extract_round(ws, 0, device="cpu", batch_size=128, mc_dropout=2, progress=False)
    reference = cache.with_name("reference.h5")
    cache.rename(reference)
    return ws, reference


def test_two_rank_extract_equals_the_single_process_cache(trained):
    ws, reference = trained
    cache = round_paths(ws, 0).cache
    cache.unlink(missing_ok=True)
    proc = torchrun("extract", "--workspace", str(ws), "--round", "0", *EXTRACT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(f"wrote {cache}") == 1  # rank 0 alone reports
    assert_same_cache(cache, reference)
    assert not shard_dir(cache).exists()  # joined, then removed


def test_killed_rank_fails_the_job_and_the_rerun_recomputes_only_its_shard(trained):
    ws, reference = trained
    cache = round_paths(ws, 0).cache
    cache.unlink(missing_ok=True)
    # 1600 rows in batches of 128: rank 0 takes 6 batches (768 rows), rank 1 seven.
    proc = torchrun("3", "extract", "--workspace", str(ws), "--round", "0", *EXTRACT,
                    script=str(Path(__file__).with_name("die_during_extract.py")))
    assert proc.returncode != 0
    report = proc.stdout + proc.stderr
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)\s*\n\s*exitcode\s*:\s*-9", report), \
        report[-3000:]
    assert not cache.exists()
    finished, unfinished = shard_path(cache, 0, 2), shard_path(cache, 1, 2)
    assert finished.exists() and not unfinished.exists()
    with h5py.File(partial_path(unfinished), "r") as f:
        assert f.attrs["rows_written"] == 2 * 128
    before = finished.stat()

    rerun = torchrun("-v", "extract", "--workspace", str(ws), "--round", "0", *EXTRACT,
                     "--keep-shards")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"rank 0: {finished} is finished; reusing it" in rerun.stderr
    assert f"resuming {partial_path(unfinished)} after 256 rows" in rerun.stderr
    after = finished.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == \
        (before.st_ino, before.st_mtime_ns, before.st_size)
    assert unfinished.exists() and not partial_path(unfinished).exists()
    assert_same_cache(cache, reference)


def test_two_rank_training_matches_one_process_with_the_same_global_batch(tmp_path):
    ws = make_workspace(tmp_path, "uci", overrides=UCI)
    paths = round_paths(ws, 0)
    proc = torchrun("train", "--workspace", str(ws), "--round", "0", "-q", "--tensorboard")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("round 000: trained on 41 samples") == 1
    import json

    dist_metrics = json.loads(paths.metrics.read_text())
    assert len(event_files(paths.tensorboard)) == 1  # rank 0 alone writes events
    dist_events = read_scalars(paths.tensorboard)
    dist_model = paths.model.rename(paths.root / "ddp-model.pt")
    paths.metrics.unlink()
    single = train_round(ws, 0, device="cpu", progress=False, distributed=False,
                         tensorboard=True)
    one_events = read_scalars(paths.tensorboard)

    assert dist_metrics["world_size"] == 2 and "world_size" not in single
    assert dist_metrics["test"]["samples"] == single["test"]["samples"] == 400
    np.testing.assert_allclose(dist_metrics["train_loss"], single["train_loss"], rtol=1e-5)
    np.testing.assert_allclose([v for _, v in dist_events["loss/total"]],
                               dist_metrics["train_loss"], rtol=1e-6)
    for head in dist_metrics["test"]["top1"]:  # mm and each modality, averaged over the ranks
        np.testing.assert_allclose(dist_events[f"loss/head/{head}"], one_events[f"loss/head/{head}"],
                                   rtol=1e-5)
    assert dist_metrics["test"]["top1"] == single["test"]["top1"]
    for key in ("phi_mean", "contribution_mean"):
        got, want = (m["test"]["shapley_true_class"][key] for m in (dist_metrics, single))
        assert got.keys() == want.keys()
        np.testing.assert_allclose(list(got.values()), list(want.values()), rtol=1e-4,
                                   atol=1e-7)
    ddp_state = torch.load(dist_model, weights_only=True)["state_dict"]
    one_state = torch.load(paths.model, weights_only=True)["state_dict"]
    assert ddp_state.keys() == one_state.keys()
    assert not any(k.startswith("module.") for k in ddp_state)
    for k in one_state:
        torch.testing.assert_close(ddp_state[k], one_state[k], rtol=1e-5, atol=1e-6, msg=k)
    # The rank-0 checkpoint loads in a single process as a strict state dict.
    model_from_checkpoint(load_checkpoint(dist_model), load_workspace_config(ws))


def test_a_non_finite_loss_on_one_rank_stops_every_rank_with_the_training_error(tmp_path):
    ws = make_workspace(tmp_path, "uci", overrides=UCI)
    proc = torchrun(str(ws), script=str(ROOT / "tests" / "distributed" / "nan_on_one_rank.py"))
    assert proc.returncode != 0
    # both ranks end in mmal's error, none in a collective torn down under it
    assert "rank 1: TrainingError: round 000 epoch 1/2: the training loss is nan on the batch " \
           "of sample ids" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    # rank 0 reaches the same end: through the all-reduced NaN gradients, or the epoch's flag
    assert "rank 0: TrainingError: round 000 epoch 1/2: the training loss is " in proc.stdout, \
        proc.stdout + proc.stderr[-3000:]
    assert "Connection closed by peer" not in proc.stderr
    assert not round_paths(ws, 0).model.exists()
