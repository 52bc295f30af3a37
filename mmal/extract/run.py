"""``extract_round``: run a round's model over the whole pool and write its feature cache.

Loading runs in DataLoader worker processes, the model on the GPU when there
is one, and writing in a background thread fed through a bounded queue, so
HDF5 writes overlap the next batches' compute. The cache is written with
:class:`mmal.cache.CacheWriter` into ``cache.h5.partial``; an interrupted run
leaves the rows already flushed there and a rerun continues after them. Batches
are aligned to the same row boundaries on a rerun (the batch size is part of
the cache's provenance), so the resumed cache equals an uninterrupted run's.

Features are stored in ``dtype``; every logit in the cache is computed from the
features *as stored* (rounded to float16 when asked), so coalition logits equal
``head/weight @ h_S + head/bias`` of the stored features.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mmal.errors import ConfigError, WorkspaceError
from mmal.models.runtime import derive_seed, inputs_to, resolve_device

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16")


def extract_round(workspace: str | os.PathLike, round: int | None = None, *, device: str = "auto",
                  mc_dropout: int = 0, dtype: str = "float32", batch_size: int = 256,
                  num_workers: int | None = None, force: bool = False, resume: bool = True,
                  progress: bool = True, queue_size: int = 4):
    """Write ``rounds/RRR/cache.h5`` from ``rounds/RRR/model.pt`` over the whole train pool.

    Parameters
    ----------
    workspace : path-like
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
        Continue a compatible ``cache.h5.partial``.
    queue_size : int
        Computed batches that may wait for the writer thread.

    Returns
    -------
    pathlib.Path of the cache.

    Examples
    --------
    >>> extract_round("uci-run", 0, device="cpu", mc_dropout=10)  # doctest: +SKIP
    """
    from mmal.cache import CacheMeta, CacheWriter
    from mmal.data import MultimodalDataset, collate, load_pool
    from mmal.fingerprint import file_fingerprint
    from mmal.models import model_from_checkpoint
    from mmal.models.checkpoint import check_same_architecture, load_checkpoint
    from mmal.models.encoders import describe
    from mmal.workspace import latest_round, load_workspace_config, read_labeled, round_paths

    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if batch_size < 1 or mc_dropout < 0 or (num_workers is not None and num_workers < 0):
        raise ConfigError("--batch-size must be >= 1, --mc-dropout and --num-workers >= 0")
    if round is None:
        round = latest_round(workspace, having="model.pt")
    paths = round_paths(workspace, round)
    if paths.cache.exists() and not force:
        raise WorkspaceError(f"{paths.cache}: already exists; pass --force to extract round "
                             f"{round:03d} again")
    config = load_workspace_config(workspace)
    if mc_dropout and config.model.dropout == 0:
        raise ConfigError(f"{workspace}/mmal.toml: key 'model.dropout' is 0, so --mc-dropout "
                          f"{mc_dropout} would repeat one logit; set model.dropout (e.g. 0.2) "
                          "and retrain, or drop --mc-dropout")
    ckpt = load_checkpoint(paths.model)
    check_same_architecture(ckpt, config, paths.model)
    dev = resolve_device(device)
    model = model_from_checkpoint(ckpt, config).to(dev).eval()

    pool = load_pool(config, "train")
    if pool.fingerprint() != ckpt["pool_fingerprint"]:
        log.warning("the train pool changed since %s was trained", paths.model)
    labeled_rows = pool.rows(read_labeled(workspace, round))
    labels = np.full(pool.labels.shape, -1, dtype=np.int8 if pool.multi_label else np.int64)
    labels[labeled_rows] = pool.labels[labeled_rows]
    is_labeled = np.zeros(len(pool), dtype=bool)
    is_labeled[labeled_rows] = True

    meta = CacheMeta(
        modalities=tuple(model.modalities), feature_dims=tuple(model.feature_dims),
        fusion=model.fusion, num_classes=model.num_classes, multi_label=pool.multi_label,
        round=round, model_fingerprint=file_fingerprint(paths.model),
        pool_fingerprint=pool.fingerprint(), feature_dtype=dtype, mc_samples=mc_dropout,
        extra={"encoders": {m.name: describe(m) for m in config.modalities},
               "class_names": list(pool.class_names),
               "extract": {"batch_size": batch_size, "device": dev.type,
                           "mc_dropout_rate": config.model.dropout}},
    )
    writer = CacheWriter(paths.cache, meta, len(pool), overwrite=force, resume=resume)
    try:
        start = writer.rows_written
        dataset = MultimodalDataset(pool, config.modalities, training=False,
                                    rows=range(start, len(pool)))
        workers = config.train.num_workers if num_workers is None else num_workers
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, collate_fn=collate, num_workers=workers,
            pin_memory=dev.type == "cuda", persistent_workers=False)
        with _BackgroundWriter(writer, queue_size) as background, torch.inference_mode():
            bar = tqdm(loader, desc=f"extract round {round:03d}", total=len(loader),
                       disable=not progress)
            for batch in bar:
                rows = batch["index"].numpy()
                fields = batch_fields(model, inputs_to(batch["inputs"], dev), dtype=dtype,
                                      mc_samples=mc_dropout,
                                      mc_seed=derive_seed(config.al.seed, round, int(rows[0])))
                fields.update(ids=pool.ids[rows], labeled=is_labeled[rows], labels=labels[rows])
                background.put(fields)
        writer.write_head(model.head.weight.detach().cpu().numpy(),
                          model.head.bias.detach().cpu().numpy())
        return writer.finalize()
    except BaseException:
        writer.close()
        raise


def batch_fields(model, inputs: Mapping[str, Any], *, dtype: str = "float32",
                 mc_samples: int = 0, mc_seed: int = 0) -> dict[str, np.ndarray]:
    """One batch's cache fields (features, logits, coalitions, MC logits) as NumPy arrays.

    Features are rounded to ``dtype`` first and every logit is computed from
    the rounded features, so the cache is self-consistent.
    """
    stored = getattr(torch, dtype)
    feats = {m: z.to(stored).float() for m, z in model.encode(inputs).items()}
    out = {f"features/{m}": z.to(stored) for m, z in feats.items()}
    out["logits/mm"] = model.fused_logits_from_features(feats)
    out.update({f"logits/{m}": v for m, v in model.unimodal_logits(feats).items()})
    out["coalitions"] = model.coalition_logits(feats)
    if mc_samples:
        device = next(iter(feats.values())).device
        gen = torch.Generator(device=device).manual_seed(mc_seed)
        out["mc_logits"] = model.mc_dropout_logits(feats, mc_samples, gen)
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
