"""The torch Dataset over a :class:`~mmal.data.pool.Pool`, and its collate function.

``dataset[i]`` decodes row ``i``: ``{"id", "index", "label", "inputs"}`` with
one value per configured modality (see :class:`MultimodalDataset`). In
training mode every random choice (crops, flips, frames, audio window) comes
from a generator seeded by (seed, epoch, pool row), so a sample looks the same
in every run and worker layout, and differs between epochs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mmal import seeds
from mmal.config import AUGMENTATIONS, ModalityConfig
from mmal.data import loaders
from mmal.data.pool import Pool, vector_dim
from mmal.errors import DataError


class MultimodalDataset(torch.utils.data.Dataset):
    """Samples of ``pool`` decoded for ``modalities``.

    Parameters
    ----------
    pool : Pool
    modalities : sequence of ModalityConfig
        Which modalities to load, in model order; each name must be in ``pool.records``.
    training : bool
        Random augmentation (True) or the deterministic evaluation view (False).
    seed : int
        Base seed of the augmentation generator.
    rows : array-like of int, optional
        Pool rows to expose (default: all, in pool order); see :meth:`subset`.
    augment : mapping, optional
        Modality name -> the augmentations it gets when ``training`` (names of
        :data:`mmal.config.AUGMENTATIONS`, e.g. ``("crop",)`` for images that
        must not be flipped; ``()`` = its evaluation view); default: every
        augmentation of its kind. :meth:`mmal.config.Config.augmentations`
        gives the mapping a config asks for.

    ``dataset[i]`` returns a dict:

    - ``"id"``: int, the sample id; ``"index"``: int, its row in the pool;
    - ``"label"``: int64 scalar tensor, or (K,) float32 multi-hot;
    - ``"inputs"``: modality name -> value: image (3, H, W) float32 ImageNet-
      normalized; text str; audio (1, 257, T) float32 log-magnitude
      spectrogram, or (1, n) float32 waveform for encoders that take one
      (``ModalityConfig.waveform``); video (3, frames, H, W) float32; vector (D,) float32.

    Call :meth:`set_epoch` before each training epoch (before creating the
    DataLoader iterator, so worker processes see it).
    """

    def __init__(self, pool: Pool, modalities: Sequence[ModalityConfig], *, training: bool,
                 seed: int = 0, rows: Iterable[int] | None = None,
                 augment: Mapping[str, Collection[str]] | None = None):
        missing = [m.name for m in modalities if m.name not in pool.records]
        if missing:
            raise DataError(f"{pool.origin}: the {pool.split} split has no modality "
                            f"{missing[0]!r}; it has {', '.join(pool.records)}")
        self.pool = pool
        self.modalities = list(modalities)
        self.training = training
        self.augment = {m.name: tuple(AUGMENTATIONS[m.kind] if augment is None
                                      else augment.get(m.name, AUGMENTATIONS[m.kind]))
                        for m in self.modalities}
        self.seed = int(seed)
        self.epoch = 0
        self.rows = (np.arange(len(pool), dtype=np.int64) if rows is None
                     else np.asarray(list(rows), dtype=np.int64))
        # Every vector file must have the width of the split's first (what the model takes).
        self.vector_dims = {m.name: vector_dim(pool, m.name) for m in self.modalities
                            if m.kind == "vector" and len(pool)
                            and not isinstance(pool.records[m.name], np.ndarray)}

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch``."""
        self.epoch = int(epoch)

    def subset(self, ids: Iterable[int]) -> MultimodalDataset:
        """The same dataset restricted to sample ``ids`` (in the given order)."""
        out = MultimodalDataset(self.pool, self.modalities, training=self.training,
                                seed=self.seed, rows=self.pool.rows(ids), augment=self.augment)
        out.epoch = self.epoch
        return out

    @property
    def ids(self) -> np.ndarray:
        """(len,) int64 sample ids in dataset order."""
        return self.pool.ids[self.rows]

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = int(self.rows[i])
        rng = seeds.rng(self.seed, self.epoch, row) if self.training else None
        inputs = {m.name: self._load(m, row, rng) for m in self.modalities}
        label = self.pool.labels[row]
        label_t = (torch.as_tensor(label, dtype=torch.float32) if self.pool.multi_label
                   else torch.tensor(int(label), dtype=torch.int64))
        return {"id": int(self.pool.ids[row]), "index": row, "label": label_t, "inputs": inputs}

    def _load(self, m: ModalityConfig, row: int, rng: np.random.Generator | None) -> Any:
        source = self.pool.records[m.name]
        sample = self.pool.names[row]
        opt = m.options
        if isinstance(source, np.ndarray):
            return torch.from_numpy(np.array(source[row], dtype=np.float32))
        value = source[row]
        if m.kind == "text":
            return value if isinstance(value, str) else loaders.load_text(value, sample=sample)
        if m.kind == "vector":
            return torch.from_numpy(loaders.load_vector(value, sample=sample,
                                                        dim=self.vector_dims[m.name]))
        augment = self.augment[m.name]
        if m.kind == "image":
            return loaders.load_image(value, opt["image_size"], rng, sample=sample,
                                      augment=augment)
        if m.kind == "audio":
            load = loaders.load_waveform if m.waveform else loaders.load_audio
            return load(value, opt["sample_rate"], opt["clip_seconds"], rng, sample=sample,
                        augment=augment)
        if m.kind == "video":
            return loaders.load_clip(value, opt["frames"], opt["image_size"], rng, sample=sample,
                                     augment=augment)
        raise DataError(f"modality {m.name!r}: unknown kind {m.kind!r}")


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples: ids/index (B,) int64, labels stacked, inputs stacked (text: list of str)."""
    inputs: dict[str, Any] = {}
    for name, first in batch[0]["inputs"].items():
        values = [b["inputs"][name] for b in batch]
        inputs[name] = values if isinstance(first, str) else torch.stack(values)
    return {
        "id": torch.tensor([b["id"] for b in batch], dtype=torch.int64),
        "index": torch.tensor([b["index"] for b in batch], dtype=torch.int64),
        "label": torch.stack([b["label"] for b in batch]),
        "inputs": inputs,
    }
