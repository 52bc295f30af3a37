"""The dataset kinds: one table, and :func:`load_pool`, which reads a split through it.

``[dataset] kind`` names a row of :data:`DATASET_KINDS`. The config reader
takes each kind's file defaults, allowed modality kinds, extra keys and checks
from it, and ``docs/config.md`` lists the same kinds. Adding a kind is one
module declaring a :class:`~mmal.data.pool.DatasetKind` and one entry here
(``docs/datasets.md``, "Adding a dataset kind").

Nothing here imports torch: :mod:`mmal.config` imports this table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmal.data import avclips, food101, hf, manifest, uci
from mmal.data.pool import SPLITS, DatasetKind, Pool
from mmal.errors import DataError

if TYPE_CHECKING:
    from mmal.config import Config

DATASET_KINDS: dict[str, DatasetKind] = {kind.name: kind for kind in (
    manifest.KIND,
    food101.KIND,
    avclips.KINETICS_SOUND,
    avclips.VGGSOUND,
    uci.KIND,
    hf.KIND,
)}


def load_pool(config: Config, split: str) -> Pool:
    """Load split ``"train"`` (the active-learning pool) or ``"test"`` of ``config``'s dataset.

    Every file a sample names is checked to exist; labels are checked against
    the class list.

    Raises
    ------
    DataError
        Naming the file, line or sample that is bad.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    kind = DATASET_KINDS.get(config.dataset.kind)
    if kind is None:  # config validation makes this unreachable
        raise DataError(f"unknown dataset kind {config.dataset.kind!r}")
    return kind.load(config, split)
