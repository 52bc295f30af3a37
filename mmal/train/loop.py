"""``train_round``: fit a round's model from scratch on its labeled set, then test it.

Reads top to bottom: settings, data, model and optimizer, resume, epochs,
test and write; epochs and test go to TensorBoard when asked
(:mod:`mmal.train.tensorboard`). Loss is the paper's Eq. 1: the mean of the fused head's and every
unimodal head's cross-entropy (binary cross-entropy for multi-label).

Determinism and resuming: the model's initial weights, each epoch's sample
order and dropout, and augmentation each draw from their own stream of
``al.seed`` (the table in :mod:`mmal.seeds`).
The learning rates follow :mod:`mmal.train.schedule` (warm-up, milestones), a
function of (epoch, step), so a resumed run needs no scheduler state.
After every epoch the model, optimizer and loss history go to
``model.pt.partial``; a rerun with the same config and labeled set continues
after the last finished epoch and ends with the same weights as an
uninterrupted run (bit for bit on the CPU).

Under torchrun the same loop and the same epoch function run data-parallel
(:mod:`mmal.train.ddp`): ``train.batch_size`` is the global batch, split across
the ranks so each step applies the single-process step's gradient; rank 0
writes the checkpoints and the test metrics, computed once over the whole test
split. In one process the micro-batch plan is the plain batches and each loss
is weighted by exactly 1, so nothing in the single-process arithmetic depends
on the data-parallel support.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from mmal.atomic import write_json_atomic
from mmal.data.probe import size_warnings
from mmal.distributed import setup
from mmal.encoded import StoredDataset, collate, load_or_encode, weights_digest
from mmal.errors import DataError, TrainingError, WorkspaceError
from mmal.fingerprint import file_fingerprint
from mmal.models import build_model, input_dims
from mmal.models.checkpoint import (
    ARCH_SECTIONS,
    check_fusion_meaning,
    checkpoint_header,
    is_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from mmal.models.kinds import encoder_lr
from mmal.models.runtime import inputs_to
from mmal.progress import progress_bar
from mmal.seeds import derive_seed, rng
from mmal.stamp import METRICS, stamped
from mmal.train import ddp
from mmal.train.metrics import summarize
from mmal.train.schedule import epoch_scales, set_lr
from mmal.train.tensorboard import TrainLog
from mmal.workspace import Round, list_rounds, open_round, round_paths

log = logging.getLogger(__name__)


def train_round(workspace: str | os.PathLike | Round, round: int | None = None, *,
                device: str = "auto", resume: bool = True, force: bool = False,
                progress: bool = True, distributed: bool | None = None,
                tensorboard: bool | None = None, store: bool = True) -> dict[str, Any]:
    """Train round ``round``'s model and write ``model.pt`` and ``metrics.json``.

    Parameters
    ----------
    workspace : path-like or Round
        Workspace folder (holds ``mmal.toml`` and ``rounds/``), or a round
        opened with :func:`mmal.workspace.open_round` (then ``round`` is ignored).
    round : int, optional
        Default: the newest round with a labeled set.
    device : {"auto", "cpu", "cuda"}
    resume : bool
        Continue an interrupted run from ``model.pt.partial`` when it matches.
    force : bool
        Replace an existing ``model.pt``.
    progress : bool
        Show a tqdm bar per epoch (rank 0 only under torchrun).
    distributed : bool, optional
        None: DistributedDataParallel exactly when launched by torchrun; False:
        one process regardless.
    tensorboard : bool, optional
        Write TensorBoard event files to ``rounds/RRR/tensorboard/``
        (:mod:`mmal.train.tensorboard`); None: as ``train.tensorboard`` says.
        Every training removes the round's old event files; the weights are the
        same bit for bit either way.
    store : bool
        Read frozen encoders' outputs from the workspace's encoder-output store
        (computed on first use, :mod:`mmal.encoded`) instead of running them on
        decoded media every epoch. False: run them as the other encoders
        (in evaluation mode all the same).

    Returns
    -------
    dict
        The metrics written to ``metrics.json``: ``round``, ``num_labeled``,
        ``epochs``, ``train_loss`` (mean per epoch), ``test`` with ``top1``
        (``mm`` and per modality; multi-label: share whose top class is a true
        label), ``map`` (multi-label only) and ``shapley_true_class``
        (``phi_mean`` and ``contribution_mean`` Φ per modality), and
        ``model_fingerprint``; distributed runs add ``world_size``. Every rank
        returns rank 0's metrics.

    Examples
    --------
    >>> metrics = train_round("uci-run", 0, device="cpu")  # doctest: +SKIP
    >>> metrics["test"]["top1"]["mm"]  # doctest: +SKIP
    """
    rnd = open_round(workspace, round)
    with rnd.locked("mmal train"):  # another train or extract of this round waits
        return _train(rnd, device=device, resume=resume, force=force, progress=progress,
                      distributed=distributed, tensorboard=tensorboard, store=store)


def _train(rnd: Round, *, device: str, resume: bool, force: bool, progress: bool,
           distributed: bool | None, tensorboard: bool | None, store: bool) -> dict[str, Any]:
    """:func:`train_round`'s work, under the round's lock."""
    # -- settings ---------------------------------------------------------------
    round, paths = rnd.number, rnd.paths
    partial = paths.model.with_name(paths.model.name + ".partial")
    rnd.claim(paths.model, force, f"retrain round {round:03d}", what="an mmal model checkpoint",
              is_kind=is_checkpoint)
    config = rnd.config
    _check_earlier_models(rnd, config)
    tc, seed = config.train, config.al.seed
    env = setup(device, distributed=distributed)
    dev = env.device
    progress = progress and env.is_main
    # -- data -------------------------------------------------------------------
    pool, test_pool = rnd.pool("train"), rnd.pool("test")
    labeled, rows = rnd.labeled, rnd.labeled_rows  # DataError naming labeled.json
    _check_test_widths(config, pool, test_pool)
    for line in size_warnings(config, pool) if env.is_main else ():
        log.warning("%s: %s", config.path, line)
    # the dataset's labels, overlaid with those people imported (`mmal label`)
    known = dataclasses.replace(pool, labels=rnd.labels())
    # A partial checkpoint resumes only for the same config, samples, inputs and labels.
    # Logging keys stay out of the run key and model.pt: switching TensorBoard on or off
    # neither restarts an interrupted run nor changes a byte of the checkpoint.
    pool_fp = pool.fingerprint()  # hashes every sample's source: once, not once per epoch
    run_key = _run_key(config.to_dict(logging=False), labeled, round, pool_fp,
                       known.labels[rows])
    n = len(labeled)
    if n < 2:  # batch norm cannot normalise a single sample's 1x1 feature maps
        raise TrainingError(f"{paths.labeled}: round {round:03d} has {n} labeled sample; "
                            "training needs at least 2 (raise al.initial_budget)")
    # A last batch of one sample breaks batch norm in training mode; drop it.
    drop_last = n % tc.batch_size == 1

    # -- model, optimizer, resume ------------------------------------------------
    torch.manual_seed(derive_seed(seed, round, 0))
    model = build_model(config, pool).to(dev)
    frozen = _frozen_weights(model)
    # Frozen encoders' outputs over both splits, from the workspace's store (computed on
    # first use, once per workspace); those modalities are then never decoded here.
    stored = (load_or_encode(model, config, [pool, test_pool], rnd.encoded, dev,
                             batch_size=tc.batch_size, num_workers=tc.num_workers,
                             progress=progress, env=env, digests=frozen[2])
              if store else {"train": {}, "test": {}})
    train_set = StoredDataset(known, config.modalities, stored["train"], training=True,
                              seed=derive_seed(seed, round),
                              augment=config.augmentations()).subset(labeled)
    test_set = StoredDataset(test_pool, config.modalities, stored["test"], training=False)
    rates = {m.name: encoder_lr(m, tc.lr, tc.encoder_lr) for m in config.modalities}
    groups = model.param_groups(lr=tc.lr, encoder_lr=rates, weight_decay=tc.weight_decay)
    base_lrs = [g["lr"] for g in groups]  # the schedule scales these (a resumed opt holds scaled)
    opt = _optimizer(tc.optimizer, groups, tc.betas)
    arch = {s: config.to_dict(logging=False)[s] for s in ARCH_SECTIONS}
    start, losses, head_history = (_resume(partial, run_key, arch, model, opt, env, frozen)
                                   if resume
                                   else (0, [], []))
    # wrapped after resuming: DistributedDataParallel starts from rank 0's weights
    net = ddp.wrap(model, env) if env.enabled else model

    # -- epochs, logged to TensorBoard when asked (a resumed run replays its epochs) --
    board = TrainLog(paths.tensorboard, ["mm", *model.modalities], main=env.is_main,
                     on=tc.tensorboard if tensorboard is None else tensorboard)
    with board:
        # a resumed run logs its finished epochs again, each with the rates it ended with
        steps = len(ddp.micro_batches(list(range(n)), tc.batch_size, drop_last, 0, 1))
        board.replay(losses, head_history, opt, [
            [lr * _scales(tc, e, steps)[-1] for lr in base_lrs] for e in range(start)])
        for epoch in range(start, tc.epochs):
            torch.manual_seed(derive_seed(seed, round, epoch + 1))
            order = rng(seed, round, epoch).permutation(n).tolist()
            train_set.set_epoch(epoch)
            desc = f"round {round:03d} epoch {epoch + 1}/{tc.epochs}"
            plan = ddp.micro_batches(order, tc.batch_size, drop_last, env.rank, env.world_size)
            loss, heads = _epoch(net, model, train_set, plan, opt, env,
                                 lrs=(base_lrs, _scales(tc, epoch, len(plan))),
                                 num_workers=tc.num_workers, desc=desc, progress=progress)
            losses.append(loss)
            head_history.append(heads)
            log.info("round %03d epoch %d/%d: loss %.4f", round, epoch + 1, tc.epochs, loss)
            if env.is_main:
                # Frozen encoders' weights stay out of the partial checkpoint (a resume builds
                # them again, checked by their digest): it is written every epoch.
                save_checkpoint(partial, {**_payload(model, config, pool, pool_fp, round,
                                                     epoch + 1, len(labeled), leave_out=frozen[0]),
                                          "frozen_weights": frozen[1],
                                          "optimizer": opt.state_dict(), "losses": losses,
                                          "head_losses": head_history, "run_key": run_key})
            board.epoch(epoch + 1, loss, heads, opt)

        # -- test and write: rank 0 alone; every rank returns its metrics -----------
        metrics = None
        if env.is_main:
            metrics = _test_and_write(model, config, pool, pool_fp, test_set, paths, partial, round,
                                      losses, len(labeled), dev, progress,
                                      world_size=env.world_size if env.enabled else None)
            board.test(metrics["test"], tc.epochs)
    return env.broadcast(metrics)


def _test_and_write(model, config, pool, pool_fp: str, test_set, paths, partial: Path, round: int,
                    losses: list[float], num_labeled: int, dev: torch.device,
                    progress: bool, world_size: int | None = None) -> dict[str, Any]:
    """Test ``model``; write ``metrics.json`` then ``model.pt``; drop the partial checkpoint."""
    tc = config.train
    # -- test -------------------------------------------------------------------
    test = evaluate(model, test_set, dev, batch_size=tc.batch_size, num_workers=tc.num_workers,
                    progress=progress)

    # -- write: metrics, then model.pt, whose presence marks the round as trained --
    metrics = {"round": round, "num_labeled": int(num_labeled), "epochs": tc.epochs,
               "device": dev.type, "train_loss": losses, "test": test}

    def write_metrics(staged: Path) -> None:  # model.pt complete, not yet under its name
        metrics["model_fingerprint"] = file_fingerprint(staged)
        if world_size is not None:
            metrics["world_size"] = int(world_size)
        write_json_atomic(paths.metrics, stamped(METRICS, metrics), allow_nan=True)

    save_checkpoint(paths.model, _payload(model, config, pool, pool_fp, round, tc.epochs,
                                          num_labeled),
                    before_publish=write_metrics)
    partial.unlink(missing_ok=True)
    return metrics


def _epoch(net, model, train_set, plan: list[ddp.MicroBatch], opt, env, *,
           lrs: tuple[list[float], list[float]], num_workers: int, desc: str,
           progress: bool) -> tuple[float, list[float]]:
    """One epoch of steps over ``plan``; the mean per-sample loss and per-head losses (all ranks).

    ``lrs`` = (base rate per optimizer group, schedule factor per step of ``plan``).

    The per-head list follows :func:`head_losses` (fused head, then each
    modality's); the mean over it is the loss up to float rounding.

    ``net`` runs the forward pass: ``model`` itself in one process, its
    DistributedDataParallel wrapper under torchrun.
    """

    dev = env.device
    loader = torch.utils.data.DataLoader(
        train_set, batch_sampler=[mb.indices for mb in plan], collate_fn=collate,
        num_workers=num_workers, pin_memory=dev.type == "cuda")
    net.train()
    total, count = 0.0, 0
    heads = [0.0] * (1 + len(model.modalities))
    bad: TrainingError | None = None  # under DDP, raised once every rank has seen the epoch out
    # tqdm.auto opens an extra loader iterator, and each iterator draws a seed from the global
    # RNG, which the dropout masks come from next: keep wrapping the loader the same way.
    bar = progress_bar(loader, enabled=progress, desc=desc, leave=False)
    base_lrs, scales = lrs
    for mb, batch, scale in zip(plan, bar, scales, strict=True):
        if isinstance(model.dropout, ddp.GlobalBatchDropout):  # this rank's rows of the mask
            model.dropout.rows = (mb.global_size, mb.lo, mb.hi)
        terms = head_losses(net(inputs_to(batch["inputs"], dev), inputs_to(batch["encoded"], dev)),
                            batch["label"].to(dev), model.modalities)
        mean = terms.mean()  # multimodal_loss, with the per-head terms kept for the log
        opt.zero_grad(set_to_none=True)
        (mean * mb.weight).backward()  # weight 1.0 in one process: the same gradient bit for bit
        set_lr(opt, base_lrs, scale)  # factor 1 without warm-up or milestones: the base rates
        opt.step()
        value = float(mean.detach())
        if not math.isfinite(value) and bad is None:
            b = len(batch["id"])
            ids = ", ".join(str(int(i)) for i in batch["id"][:8])
            bad = TrainingError(f"{desc}: the training loss is {value} on the batch of sample ids "
                                f"{ids}{' ...' if b > 8 else ''}; check those samples' inputs for "
                                "NaN or Inf, or lower train.lr")
            if not env.enabled:
                raise bad
        total, count = total + value * mb.samples, count + mb.samples
        heads = [h + v * mb.samples for h, v in zip(heads, terms.detach().tolist(), strict=True)]
        bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
    # A rank that stopped alone would leave the others waiting in a collective: every rank
    # runs the epoch's steps, then all learn here whether any saw a non-finite loss.
    total, count, failed = env.all_reduce_sum([total, count, float(bad is not None)])
    if failed:
        raise bad or TrainingError(f"{desc}: the training loss is not finite on another rank "
                                   "(its message names the samples); check the inputs for NaN or "
                                   "Inf, or lower train.lr")
    heads = env.all_reduce_sum(heads)  # a collective of its own: the total's sums stay as they were
    return total / max(count, 1), [h / max(count, 1) for h in heads]


def multimodal_loss(out, labels: torch.Tensor, modalities: list[str]) -> torch.Tensor:
    """Eq. 1 averaged over the batch: the mean of the fused and every unimodal head's mean
    cross-entropy (binary cross-entropy, averaged over classes too, for (B, K) labels).

    The one training loss for every world size. Per sample it is the mean over
    heads of that sample's (B)CE, so ``B * loss`` is the sum of per-sample
    losses that a data-parallel rank weights by ``W / b``
    (:attr:`mmal.train.ddp.MicroBatch.weight`). The batch mean is taken inside
    the loss functions, not as a mean of per-sample values: that rounds like the
    single-process loop always has (a per-sample form changes multi-label
    gradients in the last bit).
    """
    return head_losses(out, labels, modalities).mean()


def head_losses(out, labels: torch.Tensor, modalities: list[str]) -> torch.Tensor:
    """(1 + M,) batch-mean losses of the fused head, then of each modality's head, in order.

    Their ``.mean()`` is :func:`multimodal_loss`, bit for bit: the training loop
    takes the mean itself and logs the detached terms.
    """
    if labels.ndim == 2:
        lossf = F.binary_cross_entropy_with_logits
        labels = labels.to(out.logits_mm.dtype)  # BCE targets in the logits' dtype
    else:
        lossf = F.cross_entropy
    terms = [lossf(out.logits_mm, labels)] + [lossf(out.logits_uni[m], labels) for m in modalities]
    return torch.stack(terms)


@torch.no_grad()
def evaluate(model, dataset, device: torch.device, *, batch_size: int = 64, num_workers: int = 0,
             progress: bool = False) -> dict[str, Any]:
    """Test-split metrics (see :func:`mmal.train.metrics.summarize`) of ``model`` on ``dataset``."""

    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate,
                                         num_workers=num_workers)
    mm, uni, coal, labels = [], {m: [] for m in model.modalities}, [], []
    for batch in progress_bar(loader, enabled=progress, desc="test", leave=False):
        out = model(inputs_to(batch["inputs"], device), inputs_to(batch.get("encoded", {}), device))
        mm.append(out.logits_mm.float().cpu().numpy())
        for m in model.modalities:
            uni[m].append(out.logits_uni[m].float().cpu().numpy())
        coal.append(model.coalition_logits(out.encoded).float().cpu().numpy())
        labels.append(batch["label"].numpy())
    y = np.concatenate(labels)
    y = y.astype(np.int8) if y.ndim == 2 else y.astype(np.int64)
    return summarize(np.concatenate(mm), {m: np.concatenate(v) for m, v in uni.items()},
                     np.concatenate(coal), y, model.modalities)


def _payload(model, config, pool, pool_fp: str, round: int, epoch: int, num_labeled: int,
             leave_out: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A checkpoint's contents; ``pool_fp`` is ``pool.fingerprint()``, computed once per run."""
    return {**checkpoint_header(), "config": config.to_dict(logging=False),
            "num_classes": pool.num_classes, "class_names": list(pool.class_names),
            "multi_label": bool(pool.multi_label), "input_dims": input_dims(config, pool),
            "round": int(round), "epoch": int(epoch), "num_labeled": int(num_labeled),
            "pool_fingerprint": pool_fp,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()
                           if k not in leave_out}}


def _frozen_weights(model) -> tuple[frozenset[str], str, dict[str, str]]:
    """State-dict keys of the frozen encoders, one digest of their weights, and each one's.

    Each encoder's :func:`~mmal.encoded.weights_digest` is computed once here and
    handed to the encoder-output store too (it reads every weight).
    """
    keys = frozenset(f"encoders.{m}.{k}" for m in model.frozen
                     for k in model.encoders[m].state_dict())
    each = {m: weights_digest(model.encoders[m]) for m in model.frozen}
    return keys, "|".join(each[m] for m in model.frozen), each


def _scales(tc, epoch: int, steps: int) -> list[float]:
    """The learning-rate factor of every step of ``epoch`` under ``tc``'s schedule."""
    return epoch_scales(epoch, steps, warmup_epochs=tc.warmup_epochs, milestones=tc.milestones)


def _optimizer(name: str, groups: list[dict], betas: tuple[float, float]
               ) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(groups, betas=betas)
    if name == "adam":
        return torch.optim.Adam(groups, betas=betas)
    return torch.optim.SGD(groups, momentum=0.9)


def _resume(partial: Path, run_key: str, arch: dict[str, Any], model, opt, env,
            frozen: tuple[frozenset[str], str, dict[str, str]] = (frozenset(), "", {})
            ) -> tuple[int, list[float], list[list[float]]]:
    """Load ``partial`` into ``model`` and ``opt`` when it is this run's.

    ``arch`` holds the config's sections that decide the architecture
    (:data:`~mmal.models.checkpoint.ARCH_SECTIONS`, as ``Config.to_dict`` gives them).
    A partial without the frozen encoders' weights (``frozen``: their keys and
    digest, :func:`_frozen_weights`) resumes only when the freshly built
    encoders have the weights it was trained with.

    Returns (epochs done, loss per epoch, per-head losses per epoch); a partial
    written before per-head losses were kept has None for each of its epochs.

    Every rank must resume after the same epoch (the partial sits on shared storage).
    """
    start, losses, heads = 0, [], []
    if partial.exists():
        ckpt = _try_load(partial)
        # comparing the architecture too refuses a partial of an old "sum" (the feature sum,
        # read as "feature-sum"): its run key was made from the same text as today's "sum"
        if ckpt is not None and ckpt.get("run_key") == run_key and all(
                ckpt["config"].get(s) == arch[s] for s in ARCH_SECTIONS) and \
                ckpt.get("frozen_weights", frozen[1]) == frozen[1]:
            state = ckpt["state_dict"]
            if "frozen_weights" in ckpt:  # the frozen encoders are already the built ones
                state = {**{k: v for k, v in model.state_dict().items() if k in frozen[0]},
                         **state}
            model.load_state_dict(state)
            opt.load_state_dict(ckpt["optimizer"])
            start, losses = int(ckpt["epoch"]), list(ckpt["losses"])
            heads = list(ckpt.get("head_losses", [None] * start))
            log.warning("resuming %s after epoch %d; pass --no-resume to train from scratch",
                        partial, start)
        else:
            log.warning("%s belongs to another config, labeled set, frozen encoder weights or "
                        "labels; training from scratch", partial)
    starts = env.all_gather(start)
    if len(set(starts)) > 1:
        raise WorkspaceError(f"{partial}: ranks resumed after different epochs {starts}; the "
                             "workspace must be on storage every node shares")
    return start, losses, heads


def _try_load(path: Path) -> dict[str, Any] | None:
    try:
        return load_checkpoint(path)
    except WorkspaceError as exc:
        log.warning("%s; training from scratch", exc)
        return None


def _check_earlier_models(rnd: Round, config) -> None:
    """WorkspaceError when mmal.toml says fusion "sum" but an earlier round trained the feature sum.

    Such a workspace was made before "sum" became the paper's summation: its
    rounds would silently change model from here on.
    """
    if config.model.fusion != "sum":
        return
    for r in list_rounds(rnd.workspace):
        path = round_paths(rnd.workspace, r).model
        if r < rnd.number and path.is_file():
            check_fusion_meaning(load_checkpoint(path, mmap=True), config, path)


def _check_test_widths(config, pool, test_pool) -> None:
    """DataError, before training, when the test split's vectors differ in width from the train's."""
    if not len(test_pool):
        return
    train, test = input_dims(config, pool), input_dims(config, test_pool)
    for name, width in train.items():
        if test[name] != width:
            raise DataError(f"{test_pool.origin}: modality {name!r} has vectors of {test[name]} "
                            f"values, but the train split's have {width} (the model's input); "
                            "save both splits' vectors with the same width")


def _run_key(config: dict, labeled: np.ndarray, round: int, pool_fingerprint: str,
             labels: np.ndarray) -> str:
    text = json.dumps([config, [int(i) for i in labeled], int(round), pool_fingerprint],
                      sort_keys=True)
    digest = hashlib.sha256(text.encode())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()
