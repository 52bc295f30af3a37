"""Human- and machine-readable summaries of caches and index files (``mmal inspect``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from mmal import shapley
from mmal.cache.index import IndexFile
from mmal.cache.reader import Cache


def summarize_cache(cache: Cache, block_rows: int = 65536) -> dict[str, Any]:
    """Counts, shapes, modality dominance shares and a finite-value check.

    ``head_input`` says whether the head input is the stored field of that
    name (``nl-gate``) or computed from the blocks (the linear fusions).
    ``dominance`` maps each modality to the share of samples whose largest
    Shapley contribution (at the multimodal pseudo-label) is that modality's.
    """
    meta = cache.meta
    dominant_counts = np.zeros(meta.num_modalities, dtype=np.int64)
    cache.validate(block_rows)  # raises CacheError naming the ids with NaN/Inf
    for rows in cache.row_blocks(block_rows):
        target = shapley.pseudo_labels(cache.logits("mm", rows))
        values = shapley.coalition_values(cache.coalitions(rows), target,
                                          multi_label=meta.multi_label)
        share = shapley.contributions(shapley.shapley_values(values))
        dominant_counts += np.bincount(share.argmax(axis=1), minlength=meta.num_modalities)
    return {
        "file": str(cache.path),
        "type": "feature-cache",
        "schema_version": cache.schema_version,
        "num_samples": cache.num_samples,
        "num_labeled": cache.num_labeled,
        "num_unlabeled": cache.num_unlabeled,
        "num_classes": meta.num_classes,
        "multi_label": meta.multi_label,
        "modalities": dict(zip(meta.modalities, meta.feature_dims, strict=True)),
        "fusion": meta.fusion,
        "fused_dim": meta.fused_dim,
        "head_input": "stored" if meta.stores_head_input else "computed from the features",
        "feature_dtype": meta.feature_dtype,
        "mc_samples": meta.mc_samples,
        "round": meta.round,
        "dominance": {m: float(c) / cache.num_samples
                      for m, c in zip(meta.modalities, dominant_counts, strict=True)},
        "finite_check": "ok",
        "model_fingerprint": meta.model_fingerprint,
        "pool_fingerprint": meta.pool_fingerprint,
        "content_fingerprint": cache.fingerprint,
        "mmal_version": cache.mmal_version,
        "created": cache.created,
    }


def summarize_index(index: IndexFile) -> dict[str, Any]:
    """Kind, count, a preview of the ids and the provenance of an index file."""
    return {
        "file": str(index.path),
        "type": "index-file",
        "kind": index.kind,
        "count": len(index),
        "first_ids": [int(i) for i in index.ids[:10]],
        "provenance": index.provenance,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Aligned ``key: value`` lines; nested mappings are indented."""
    lines = []
    for key, value in summary.items():
        if isinstance(value, dict):
            lines.append(f"{key}:")
            lines += [f"  {k}: {_fmt(v)}" for k, v in value.items()]
        else:
            lines.append(f"{key}: {_fmt(value)}")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
