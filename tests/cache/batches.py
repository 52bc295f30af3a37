"""Deterministic batches covering every cache field, for writer tests."""

from __future__ import annotations

import numpy as np

from mmal.cache.schema import CacheMeta, field_specs


def random_batches(meta: CacheMeta, num_samples: int, batch_rows: int, seed: int = 0):
    """Deterministic batches (a function of the batch number) covering every field."""
    for b, start in enumerate(range(0, num_samples, batch_rows)):
        rng = np.random.default_rng([seed, b])
        rows = min(batch_rows, num_samples - start)
        batch = {}
        for spec in field_specs(meta):
            shape = (rows, *spec.row_shape)
            if spec.path == "ids":
                batch[spec.path] = np.arange(start, start + rows, dtype=np.int64) * 3 + 1
            elif spec.path == "labeled":
                batch[spec.path] = np.arange(start, start + rows) % 4 == 0
            elif spec.path == "labels":
                labeled = batch["labeled"]
                if meta.multi_label:
                    labels = rng.integers(0, 2, size=shape).astype(np.int8)
                    labels[~labeled] = -1
                else:
                    labels = np.where(labeled, rng.integers(0, meta.num_classes, size=rows), -1)
                batch[spec.path] = labels
            else:
                batch[spec.path] = rng.normal(size=shape).astype(spec.dtype)
        yield batch
