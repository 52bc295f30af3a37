"""A dataset that decodes only the modalities not in the store, and its collate function.

``StoredDataset(pool, modalities, stored, ...)[i]`` is
:class:`mmal.data.MultimodalDataset`'s sample with two changes: ``"inputs"``
holds only the modalities that are not stored, and ``"encoded"`` maps each
stored modality to its (D_m,) float32 encoder output for that pool row. With
no stored modality it is the plain dataset's sample plus an empty
``"encoded"``, so one code path serves every model.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mmal.config import ModalityConfig
from mmal.data import MultimodalDataset, Pool
from mmal.data import collate as collate_samples


class StoredDataset(torch.utils.data.Dataset):
    """Samples of ``pool``: decoded media for some modalities, stored encoder outputs for others.

    Parameters
    ----------
    pool : Pool
    modalities : sequence of ModalityConfig
        Every modality of the model, in model order.
    stored : mapping
        modality -> (N, D_m) float32 encoder outputs aligned with ``pool``'s
        rows (:func:`mmal.encoded.load_or_encode`); these are not decoded.
    training, seed, rows, augment
        As for :class:`mmal.data.MultimodalDataset` (augmentation applies to
        decoded modalities only).
    """

    def __init__(self, pool: Pool, modalities: Sequence[ModalityConfig],
                 stored: Mapping[str, np.ndarray], *, training: bool, seed: int = 0,
                 rows: Iterable[int] | None = None,
                 augment: Mapping[str, Collection[str]] | None = None,
                 base: MultimodalDataset | None = None):
        self.stored = dict(stored)
        self.base = base or MultimodalDataset(
            pool, [m for m in modalities if m.name not in self.stored], training=training,
            seed=seed, rows=rows, augment=augment)

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (decoded modalities)."""
        self.base.set_epoch(epoch)

    def subset(self, ids: Iterable[int]) -> StoredDataset:
        """The same dataset restricted to sample ``ids`` (in the given order)."""
        return StoredDataset(self.base.pool, (), self.stored, training=self.base.training,
                             base=self.base.subset(ids))

    @property
    def ids(self) -> np.ndarray:
        """(len,) int64 sample ids in dataset order."""
        return self.base.ids

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.base[i]
        row = sample["index"]
        sample["encoded"] = {m: torch.from_numpy(z[row]) for m, z in self.stored.items()}
        return sample


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """:func:`mmal.data.collate`, plus ``"encoded"``: modality -> (B, D_m) stacked outputs."""
    out = collate_samples(batch)
    out["encoded"] = {m: torch.stack([b["encoded"][m] for b in batch])
                      for m in batch[0].get("encoded", {})}
    return out
