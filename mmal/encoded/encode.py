"""Frozen encoders' outputs, computed once per workspace and read by every round.

:func:`load_or_encode` is the front door that training and extraction call:
for each stored modality (:func:`stored_modalities`) it returns the encoder's
output over every row of a split, read from the workspace's store when its
fingerprint (:func:`store_key`) matches, else computed and written there. The
encoder runs in evaluation mode on the deterministic evaluation view of the
data (no augmentation), which is what a frozen encoder would see at test time.

Two processes that start together compute a store once: the second waits on
the store's lock (:func:`mmal.lock.hold`) and then reads the first one's file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmal.config import Config, ModalityConfig
from mmal.data import MultimodalDataset, Pool, collate
from mmal.encoded.store import read_store, write_store
from mmal.lock import hold, output_lock
from mmal.models.checkpoint import TRAINING_ONLY_MODALITY_KEYS
from mmal.models.runtime import inputs_to
from mmal.progress import progress_bar
from mmal.stamp import ENCODED, FILE_KINDS

log = logging.getLogger(__name__)

#: The fusion whose encoders are cut after layer 3 and fused inside: its encoder output
#: (a layer-3 map) is not what a store of pooled features holds, so it always runs the encoders.
UNSTORED_FUSIONS = ("nl-gate",)


def stored_modalities(config: Config) -> list[str]:
    """Names of the modalities whose encoder outputs come from the store, in model order.

    Every frozen modality (``modalities.<m>.freeze = true``), unless the
    fusion is one that needs the encoders' inner maps (``nl-gate``).
    """
    if config.model.fusion in UNSTORED_FUSIONS:
        return []
    return [m.name for m in config.modalities if m.freeze]


def load_or_encode(model: torch.nn.Module, config: Config, pools: Sequence[Pool],
                   path_of: Callable[[str, str], Path], device: torch.device, *,
                   batch_size: int = 64, num_workers: int = 0, progress: bool = False,
                   env: Any = None, digests: Mapping[str, str] | None = None
                   ) -> dict[str, dict[str, np.ndarray]]:
    """split -> modality -> (N, D_m) float32 outputs of ``model``'s frozen encoders over a pool.

    Parameters
    ----------
    model : MultimodalModel
        Its ``encoders[m]`` (already on ``device``) compute a missing or stale store.
    config : Config
    pools : sequence of Pool
        The splits to encode (train pool, test split); row ``i`` of every
        array is that pool's row ``i``.
    path_of : callable
        ``path_of(split, modality)`` -> the store's path (:meth:`mmal.workspace.Round.encoded`).
    device : torch.device
    batch_size, num_workers : int
        Of the DataLoader that decodes the split when a store is computed.
    progress : bool
        A tqdm bar while computing.
    env : mmal.distributed.Dist, optional
        Under torchrun: rank 0 reads or computes the stores while the other
        ranks wait at a barrier, then they read them.
    digests : mapping, optional
        modality -> :func:`weights_digest` of its encoder, when the caller has
        it already (training keys its resume on it); the others are computed.

    Returns
    -------
    dict
        ``out[pool.split][m]`` for every pool and every :func:`stored_modalities`
        name; the inner dicts are empty when none.

    Examples
    --------
    >>> stored = load_or_encode(model, rnd.config, [rnd.pool("train")], rnd.encoded,
    ...                         torch.device("cpu"))  # doctest: +SKIP
    >>> stored["train"]["image"].shape  # doctest: +SKIP
    (1000, 512)
    """
    names = stored_modalities(config)
    out: dict[str, dict[str, np.ndarray]] = {pool.split: {} for pool in pools}
    if not names:
        return out
    distributed = env is not None and env.enabled
    if distributed and not env.is_main:
        env.barrier()  # rank 0 computes first
    by_name = {m.name: m for m in config.modalities}
    for name in names:
        weights = (digests[name] if digests is not None and name in digests
                   else weights_digest(model.encoders[name]))  # once for every split
        for pool in pools:
            out[pool.split][name] = _load_or_encode_one(
                model.encoders[name], by_name[name], pool, path_of(pool.split, name), device,
                store_key(weights, by_name[name], pool), batch_size=batch_size,
                num_workers=num_workers, progress=progress)
    if distributed and env.is_main:
        env.barrier()
    return out


def store_key(weights: str, modality: ModalityConfig, pool: Pool) -> str:
    """sha256 (hex) of what a store's features depend on.

    The encoder's weights (``weights``: :func:`weights_digest`, every tensor
    of its state dict, bit for bit), the
    modality's config (kind, encoder, options such as ``image_size``,
    ``sample_rate``, ``clip_seconds``), the split's ids and the modality's
    sources with each file's size and modification time
    (:meth:`mmal.data.Pool.sources_fingerprint`), and the store's schema
    version. A change in any of them makes a new key, so the store is computed again.
    Keys that only change how training runs (``freeze``, ``augment``, ``lr``) do not.
    """
    ignored = {"freeze", *TRAINING_ONLY_MODALITY_KEYS}
    spec = {k: v for k, v in dataclasses.asdict(modality).items() if k not in ignored}
    h = hashlib.sha256(json.dumps([FILE_KINDS[ENCODED].version, spec], sort_keys=True,
                                  default=str).encode())
    h.update(weights.encode())
    h.update(pool.sources_fingerprint(modality.name, stat=True).encode())
    return h.hexdigest()


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 (hex) of what ``module`` computes with besides its code.

    Its state dict (names, dtypes, shapes and bytes, in order), its buffers
    kept out of the state dict (a transformers image encoder's renormalization
    from ``preprocessor_config.json``), and the ``preprocessing()`` text of
    each submodule that has one (an audio model's feature extractor, a text
    model's tokenizer): files of a model folder that change the features
    without changing a weight. State-dict keys under the module's
    ``unread_state`` prefixes (weights its features never read, such as
    BERT's pooler) are left out.
    """
    h = hashlib.sha256()
    unread = tuple(getattr(module, "unread_state", ()))
    state = {k: v for k, v in module.state_dict().items() if not k.startswith(unread)}
    extra = {f"buffer:{k}": v for k, v in module.named_buffers()
             if k not in state and not k.startswith(unread)}
    for name, tensor in {**state, **extra}.items():
        t = tensor.detach().cpu().contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    for name, sub in module.named_modules():
        if callable(getattr(sub, "preprocessing", None)):
            h.update(json.dumps([name, sub.preprocessing()]).encode())
    return h.hexdigest()


@torch.inference_mode()
def encode_split(encoder: torch.nn.Module, modality: ModalityConfig, pool: Pool,
                 device: torch.device, *, batch_size: int = 64, num_workers: int = 0,
                 progress: bool = False) -> np.ndarray:
    """(N, D) float32 output of ``encoder`` over every row of ``pool``, in evaluation mode.

    The samples are decoded as for testing (no augmentation). The encoder's
    train/eval mode is restored afterwards; the global torch RNG is not drawn
    from (the loader has a generator of its own), so training after this
    draws the same numbers as without it.
    """
    dataset = MultimodalDataset(pool, [modality], training=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate,
                                         num_workers=num_workers, generator=torch.Generator())
    was_training = encoder.training
    encoder.eval()
    parts = []
    try:
        for batch in progress_bar(loader, enabled=progress,
                                  desc=f"encode {modality.name} ({pool.split})", leave=False):
            z = encoder(inputs_to(batch["inputs"], device)[modality.name])
            parts.append(z.float().cpu().numpy())
    finally:
        encoder.train(was_training)
    if not parts:
        return np.zeros((0, int(encoder.out_dim)), dtype=np.float32)
    return np.concatenate(parts)


def _load_or_encode_one(encoder: torch.nn.Module, modality: ModalityConfig, pool: Pool,
                        path: Path, device: torch.device, key: str, **run: Any) -> np.ndarray:
    """The store at ``path`` when its fingerprint is ``key``, else computed and written (under its lock)."""
    with hold(output_lock(path), f"mmal encode {modality.name}"):
        found = read_store(path, key)
        if found is not None and np.array_equal(found[1], pool.ids):
            return found[0]
        log.info("encoding %s over the %s split (%d samples) into %s", modality.name,
                 pool.split, len(pool), path)
        features = encode_split(encoder, modality, pool, device, **run)
        write_store(path, features, pool.ids, modality=modality.name, split=pool.split,
                    fingerprint=key)
        return features
