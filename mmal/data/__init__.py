"""Datasets: pools of samples (ids, labels, sources) and the torch Dataset over them.

``load_pool(config, split)`` reads a split without decoding anything;
``MultimodalDataset`` decodes samples into tensors; ``collate`` batches them.
Importing this package does not import torch; :mod:`mmal.data.dataset` does.
"""

from mmal.data.pool import Pool, load_pool, vector_dim

__all__ = ["Pool", "load_pool", "vector_dim", "MultimodalDataset", "collate"]


def __getattr__(name: str):
    # Keep torch out of `import mmal.data` (workspace commands only need pools).
    if name in ("MultimodalDataset", "collate"):
        from mmal.data import dataset

        return getattr(dataset, name)
    raise AttributeError(name)
