"""Datasets: pools of samples (ids, labels, sources) and the torch Dataset over them.

``load_pool(config, split)`` reads a split without decoding anything;
``MultimodalDataset`` decodes samples into tensors; ``collate`` batches them.
Importing this package does not import torch; :mod:`mmal.data.dataset` does.

Modules, lowest first: ``parsing`` (helpers shared by the adapters), ``pool``
(:class:`Pool`, :class:`DatasetKind`), one adapter per layout (``manifest``,
``food101``, ``avclips``, ``uci``, ``hf``), ``kinds`` (the table of kinds and
:func:`load_pool`), ``probe`` (image sizes and clip durations from a few files'
headers); ``loaders`` and ``dataset`` (torch) sit beside them.
"""

from mmal.data.kinds import load_pool
from mmal.data.pool import Pool, vector_dim

__all__ = ["Pool", "load_pool", "vector_dim", "MultimodalDataset", "collate"]


def __getattr__(name: str):
    # Keep torch out of `import mmal.data` (workspace commands only need pools).
    if name in ("MultimodalDataset", "collate"):
        from mmal.data import dataset

        return getattr(dataset, name)
    raise AttributeError(name)
