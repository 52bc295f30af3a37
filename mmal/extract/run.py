"""``extract_round``: run a round's model over the whole pool and write its feature cache.

Loading runs in DataLoader worker processes, the model on the GPU when there
is one, and writing in a background thread fed through a bounded queue, so
HDF5 writes overlap the next batches' compute. The cache is written with
:class:`mmal.cache.CacheWriter` into ``cache.h5.partial``; an interrupted run
leaves the rows already flushed there and a rerun continues after them. Batches
are aligned to the same row boundaries on a rerun (the batch size is part of
the cache's provenance), so the resumed cache equals an uninterrupted run's.

Under torchrun each rank extracts a contiguous, batch-aligned share of the
pool into its own shard and rank 0 joins the shards into the same cache a
single process writes (:mod:`mmal.extract.shards`).

Features are stored in ``dtype``; every fused logit in the cache is computed
from what is stored (rounded to float16 when asked), so coalition logits equal
``head/weight @ h_S + head/bias`` of the stored blocks for the linear fusions,
and the fused logits equal the head applied to the stored ``head_input`` for
nl-gate (whose coalition head inputs are rounded the same way). ``head/weight``
and ``head/bias`` are :meth:`MultimodalModel.effective_head` (for ``sum`` built
from the unimodal heads).
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import shutil
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mmal.extract.shards as shards
from mmal.cache import CacheMeta, CacheWriter
from mmal.cache.writer import is_cache_file
from mmal.config import Config
from mmal.data import Pool
from mmal.distributed import setup
from mmal.encoded import StoredDataset, collate, load_or_encode
from mmal.errors import ConfigError
from mmal.fingerprint import file_fingerprint
from mmal.models import Encoded, MultimodalModel, model_from_checkpoint
from mmal.models.checkpoint import check_fits_pool, check_same_architecture, load_checkpoint
from mmal.models.encoders import describe
from mmal.models.runtime import inputs_to
from mmal.progress import progress_bar
from mmal.seeds import derive_seed
from mmal.workspace import Round, RoundPaths, open_round

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16")


def extract_round(workspace: str | os.PathLike | Round, round: int | None = None, *,
                  device: str = "auto",
                  mc_dropout: int = 0, dtype: str = "float32", batch_size: int = 256,
                  num_workers: int | None = None, force: bool = False, resume: bool = True,
                  progress: bool = True, queue_size: int = 4, distributed: bool | None = None,
                  keep_shards: bool = False, store: bool = True):
    """Write ``rounds/RRR/cache.h5`` from ``rounds/RRR/model.pt`` over the whole train pool.

    Parameters
    ----------
    workspace : path-like or Round
        Workspace folder, or a round opened with :func:`mmal.workspace.open_round`
        (then ``round`` is ignored).
    round : int, optional
        Default: the newest round with a ``model.pt``.
    device : {"auto", "cpu", "cuda"}
    mc_dropout : int
        ``T`` MC-dropout samples of the fused logits per sample (0 = none);
        needs ``model.dropout > 0``.
    dtype : {"float32", "float16"}
        Storage dtype of the features.
    batch_size : int
    num_workers : int, optional
        DataLoader worker processes (default: ``train.num_workers``).
    force : bool
        Replace an existing ``cache.h5``.
    resume : bool
        Continue a compatible ``cache.h5.partial`` (distributed: also keep
        finished shards and resume unfinished ones).
    queue_size : int
        Computed batches that may wait for the writer thread.
    distributed : bool, optional
        None: split the pool across ranks exactly when launched by torchrun
        (see :mod:`mmal.extract.shards`); False: one process regardless.
    keep_shards : bool
        Distributed only: leave ``cache.shards/`` in place after the join.
    store : bool
        Read frozen encoders' outputs from the workspace's encoder-output store
        (:mod:`mmal.encoded`; computed on first use) instead of decoding their
        media and running them; False: run every encoder.

    Returns
    -------
    pathlib.Path of the cache (on every rank, once rank 0 has joined the shards).

    Examples
    --------
    >>> extract_round("uci-run", 0, device="cpu", mc_dropout=10)  # doctest: +SKIP
    """

    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if batch_size < 1 or mc_dropout < 0 or (num_workers is not None and num_workers < 0):
        raise ConfigError("--batch-size must be >= 1, --mc-dropout and --num-workers >= 0")
    env = setup(device, distributed=distributed)
    rnd = open_round(workspace, round, having="model.pt")
    with rnd.locked("mmal extract"):  # one writer of cache.h5.partial: a second one waits
        job = _prepare(rnd, env.device, dtype=dtype, mc_dropout=mc_dropout,
                       batch_size=batch_size, force=force)
        workers = job.config.train.num_workers if num_workers is None else num_workers
        if store:  # frozen encoders' outputs: the cache is the fusion and heads over them
            job.stored = load_or_encode(job.model, job.config, [job.pool], rnd.encoded,
                                        env.device, batch_size=batch_size, num_workers=workers,
                                        progress=progress, env=env)["train"]
        run = dict(batch_size=batch_size, num_workers=workers, queue_size=queue_size)
        if not env.enabled:
            writer = CacheWriter(job.paths.cache, job.meta, len(job.pool), overwrite=force,
                                 resume=resume)
            return _fill(writer, job, range(len(job.pool)), progress=progress, **run)
        return _extract_sharded(job, env, force=force, resume=resume, keep_shards=keep_shards,
                                progress=progress and env.is_main, **run)


@dataclass
class _Job:
    """What every rank of one extraction shares: inputs, model, and the cache's metadata."""

    paths: RoundPaths
    config: Config
    model: MultimodalModel
    pool: Pool
    meta: CacheMeta
    labels: np.ndarray
    is_labeled: np.ndarray
    device: torch.device
    stored: dict[str, np.ndarray] = field(default_factory=dict)


def _prepare(rnd: Round, dev: torch.device, *, dtype: str, mc_dropout: int,
             batch_size: int, force: bool) -> _Job:
    rnd.claim(rnd.paths.cache, force, f"extract round {rnd.number:03d} again",
              what="an mmal feature cache", is_kind=is_cache_file)
    paths = rnd.paths
    config = rnd.config
    if mc_dropout and config.model.dropout == 0:
        raise ConfigError(f"{rnd.workspace}/mmal.toml: key 'model.dropout' is 0, so --mc-dropout "
                          f"{mc_dropout} would repeat one logit; set model.dropout (e.g. 0.2) "
                          "and retrain, or drop --mc-dropout")
    with ThreadPoolExecutor(1, thread_name_prefix="mmal-fingerprint") as hasher:
        # hashlib releases the GIL: hashing model.pt overlaps loading it and the pool.
        model_fingerprint = hasher.submit(file_fingerprint, paths.model)
        ckpt = load_checkpoint(paths.model)
        check_same_architecture(ckpt, config, paths.model)
        model = model_from_checkpoint(ckpt, config).to(dev).eval()
        pool = rnd.pool("train")
        check_fits_pool(ckpt, config, pool, paths.model)
        pool_fingerprint = pool.fingerprint()
    rows = rnd.labeled_rows  # DataError naming labeled.json
    known = rnd.labels()  # dataset's + people's labels
    if pool_fingerprint != ckpt["pool_fingerprint"]:
        log.warning("the train pool changed since %s was trained (samples, files or labels); "
                    "extracting with that model anyway — retrain with `mmal train --force` if "
                    "the inputs changed", paths.model)
    labels = np.full(pool.labels.shape, -1, dtype=np.int8 if pool.multi_label else np.int64)
    labels[rows] = known[rows]
    is_labeled = np.zeros(len(pool), dtype=bool)
    is_labeled[rows] = True

    meta = CacheMeta(
        modalities=tuple(model.modalities), feature_dims=tuple(model.feature_dims),
        fusion=model.fusion, fused_dim=model.fused_dim, num_classes=model.num_classes,
        multi_label=pool.multi_label,
        round=rnd.number, model_fingerprint=model_fingerprint.result(),
        pool_fingerprint=pool_fingerprint, feature_dtype=dtype, mc_samples=mc_dropout,
        extra={"encoders": {m.name: describe(m) for m in config.modalities},
               # lets a selection's ids be checked against the data later (row-numbered ids)
               "names_fingerprint": pool.names_fingerprint(pool.ids),
               "class_names": list(pool.class_names),
               "extract": {"batch_size": batch_size, "device": dev.type,
                           "mc_dropout_rate": config.model.dropout,
                           # a partial cache resumes only with the same labels (CacheWriter
                           # compares the metadata), not with rows written before a relabel
                           "labels_sha256": _labels_digest(labels, is_labeled)}},
    )
    return _Job(paths, config, model, pool, meta, labels, is_labeled, dev)


def _labels_digest(labels: np.ndarray, is_labeled: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(is_labeled, dtype=bool).tobytes())
    return digest.hexdigest()


def _fill(writer, job: _Job, rows: range, *, batch_size: int, num_workers: int,
          queue_size: int, progress: bool):
    """Write pool ``rows`` (after those already flushed) and the head; finalize ``writer``."""
    dev, model, pool = job.device, job.model, job.pool
    try:
        start = rows.start + writer.rows_written
        dataset = StoredDataset(pool, job.config.modalities, job.stored, training=False,
                                rows=range(start, rows.stop))
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, collate_fn=collate, num_workers=num_workers,
            pin_memory=dev.type == "cuda", persistent_workers=False)
        with _BackgroundWriter(writer, queue_size) as background, torch.inference_mode():
            bar = progress_bar(loader, enabled=progress, total=len(loader),
                               desc=f"extract round {job.meta.round:03d}")
            for batch in bar:
                index = batch["index"].numpy()
                fields = batch_fields(model, inputs_to(batch["inputs"], dev),
                                      stored=inputs_to(batch["encoded"], dev),
                                      dtype=job.meta.feature_dtype,
                                      mc_samples=job.meta.mc_samples,
                                      mc_seed=derive_seed(job.config.al.seed, job.meta.round,
                                                          int(index[0])))
                fields.update(ids=pool.ids[index], labeled=job.is_labeled[index],
                              labels=job.labels[index])
                background.put(fields)
        writer.write_head(*(p.detach().cpu().numpy() for p in model.effective_head()))
        return writer.finalize()
    except BaseException:
        writer.close()
        raise


def _extract_sharded(job: _Job, env, *, force: bool, resume: bool, keep_shards: bool,
                     **run) -> Path:
    """Every rank fills its shard; all wait for all shards; rank 0 joins; all return the cache."""
    cache, n = job.paths.cache, len(job.pool)
    rows = shards.plan(n, env.world_size, run["batch_size"])
    expected = [(r, shards.shard_path(cache, r, env.world_size),
                 shards.shard_meta(job.meta, r, env.world_size, rows[r]), len(rows[r]))
                for r in range(env.world_size) if len(rows[r])]
    mine = [e for e in expected if e[0] == env.rank]
    if not mine:
        log.info("rank %d: no rows to extract (%d batches for %d ranks)", env.rank,
                 -(-n // run["batch_size"]), env.world_size)
    for _, path, meta, count in mine:
        if resume and shards.shard_ready(path, meta, count):
            log.info("rank %d: %s is finished; reusing it", env.rank, path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        # A finished shard of other settings is replaced (overwrite) when this one finalizes.
        writer = CacheWriter(path, meta, count, overwrite=True, resume=resume)
        _fill(writer, job, rows[env.rank], **run)
        log.info("rank %d: wrote %s (rows %d..%d)", env.rank, path, rows[env.rank].start,
                 rows[env.rank].stop)
    shards.wait_for_shards(expected)
    # Every rank has seen every shard finished before rank 0 joins and removes them.
    env.barrier()
    if env.is_main:
        shards.join_shards(cache, job.meta, [(p, rows[r]) for r, p, _, _ in expected], n,
                           overwrite=force, resume=resume)
        if not keep_shards:
            shutil.rmtree(shards.shard_dir(cache), ignore_errors=True)
    env.barrier()
    return cache


def batch_fields(model, inputs: Mapping[str, Any], *, dtype: str = "float32",
                 mc_samples: int = 0, mc_seed: int = 0,
                 stored: Mapping[str, torch.Tensor] | None = None) -> dict[str, np.ndarray]:
    """One batch's cache fields as NumPy arrays, B rows each.

    ``features/<m>`` (B, D_m) the embedding blocks (:meth:`MultimodalModel.blocks`)
    in ``dtype``; ``head_input`` (B, D_fused) in ``dtype``, only when the head
    input is no linear function of the blocks (nl-gate); ``logits/mm``,
    ``logits/<m>`` (B, K), ``coalitions`` (B, 2^M, K) and, with ``mc_samples``
    T, ``mc_logits`` (B, T, K), all float32.

    The stored values are rounded to ``dtype`` first and every fused logit is
    computed from the rounded values, so the cache is self-consistent: for the
    linear fusions from the rounded blocks; for nl-gate each coalition's head
    input is rounded (the single-modality ones are the blocks, the full one is
    ``head_input``). Unimodal logits come from each modality's own features.
    ``stored``: stored encoder outputs of frozen modalities (see
    :meth:`MultimodalModel.encode`).
    """
    storage = getattr(torch, dtype)

    def rounded(x: torch.Tensor) -> torch.Tensor:
        return x.to(storage).float()

    encoded = model.encode(inputs, stored)
    out: dict[str, torch.Tensor] = {}
    if model.head_input_is_linear:
        encoded = Encoded({m: rounded(z) for m, z in encoded.features.items()})
        inputs_s = model.coalition_inputs(encoded)
        blocks = model.blocks(encoded)
    else:
        inputs_s = [rounded(h) for h in model.coalition_inputs(encoded)]
        blocks = {m: inputs_s[1 << i] for i, m in enumerate(model.modalities)}
        out["head_input"] = inputs_s[-1].to(storage)
    out.update({f"features/{m}": z.to(storage) for m, z in blocks.items()})
    out["logits/mm"] = model.fused_logits(inputs_s[-1])
    out.update({f"logits/{m}": v for m, v in model.unimodal_logits(encoded.features).items()})
    out["coalitions"] = torch.stack([model.fused_logits(h) for h in inputs_s], dim=1)
    if mc_samples:
        gen = torch.Generator(device=inputs_s[-1].device).manual_seed(mc_seed)
        out["mc_logits"] = model.mc_dropout_logits(inputs_s[-1], mc_samples, gen)
    return {k: v.cpu().numpy() for k, v in out.items()}


class _BackgroundWriter:
    """Append batches to a CacheWriter from a thread; ``put`` blocks when ``size`` batches wait."""

    def __init__(self, writer, size: int):
        self.writer = writer
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="mmal-cache-writer", daemon=True)

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.writer.append(item)
                except BaseException as exc:  # handed to the main thread in put/__exit__
                    self.error = exc

    def put(self, item: dict[str, np.ndarray]) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __enter__(self) -> _BackgroundWriter:
        self.thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Always drain and join, so the file is never touched by two threads.
        self.queue.put(None)
        self.thread.join()
        if exc_type is None and self.error is not None:
            raise self.error
