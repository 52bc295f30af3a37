"""Synthetic feature caches for tests, benchmarks and the first demo.

The generated cache is internally consistent: every logit is computed from the
stored (dtype-rounded) features with a random linear head, so coalition logits
can be recomputed from ``head/*`` and ``features/*`` exactly as a real
extraction would produce them.

Samples are drawn around per-class centers in every modality. Modality ``m``'s
head block (concat fusion) or its features (sum fusion, where the head is
shared) are scaled by ``dominance ** -m`` so modality 0 dominates most
samples when ``dominance > 1``; a per-sample log-normal scale on each modality
lets some samples be dominated by a weaker modality, as in real data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmal.cache.fusion import coalition_present, head_input
from mmal.cache.schema import CacheMeta
from mmal.cache.writer import CacheWriter
from mmal.errors import CacheError


def make_synthetic_cache(
    path: str | os.PathLike,
    *,
    num_samples: int = 1000,
    num_classes: int = 10,
    feature_dims: Sequence[int] = (64, 32),
    modalities: Sequence[str] | None = None,
    fusion: str = "concat",
    dominance: float = 3.0,
    labeled_fraction: float = 0.1,
    multi_label: bool = False,
    mc_samples: int = 0,
    feature_dtype: str = "float32",
    round: int = 0,
    seed: int = 0,
    overwrite: bool = False,
    batch_rows: int = 4096,
) -> Path:
    """Write a consistent synthetic cache to ``path`` and return the path.

    Parameters
    ----------
    num_samples, num_classes : int
        ``N`` and ``K``.
    feature_dims : sequence of int
        ``D_m`` per modality; all equal for ``fusion="sum"``.
    modalities : sequence of str, optional
        Names; default ``m0, m1, ...``.
    dominance : float >= 1
        Ratio of head strength between consecutive modalities (1 = balanced).
    labeled_fraction : float in [0, 1)
        Share of samples marked labeled (at least one sample stays unlabeled).
    mc_samples : int
        ``T`` MC-dropout passes (dropout 0.2 on the head input); 0 for none.
    seed : int
        Everything is a deterministic function of the arguments and the seed.
    """
    dims = tuple(int(d) for d in feature_dims)
    names = tuple(modalities) if modalities is not None else tuple(f"m{i}" for i in range(len(dims)))
    if dominance < 1:
        raise CacheError(f"dominance must be >= 1 (1 = balanced), got {dominance}")
    if not 0 <= labeled_fraction < 1:
        raise CacheError(f"labeled_fraction must be in [0, 1), got {labeled_fraction}")
    meta = CacheMeta(
        modalities=names, feature_dims=dims, fusion=fusion, num_classes=num_classes,
        multi_label=multi_label, round=round, model_fingerprint=f"synthetic-seed{seed}",
        pool_fingerprint=f"synthetic-n{num_samples}-seed{seed}", feature_dtype=feature_dtype,
        mc_samples=mc_samples,
        extra={"generator": "mmal.cache.synthetic", "dominance": dominance, "seed": seed},
    )
    rng = np.random.default_rng(seed)
    k, n = num_classes, num_samples
    centers = [rng.normal(size=(k, d)).astype(np.float32) for d in dims]
    strength = [dominance ** -m for m in range(len(dims))]
    if fusion == "concat":
        # each modality's block of the head is scaled: its logit contribution shrinks
        blocks = [rng.normal(size=(k, d)).astype(np.float32) * (s / np.sqrt(d))
                  for d, s in zip(dims, strength, strict=True)]
        weight = np.concatenate(blocks, axis=1)
        feature_scale = [1.0] * len(dims)
    else:
        # one head is shared by every modality, so the features themselves are scaled
        weight = rng.normal(size=(k, dims[0])).astype(np.float32) / np.sqrt(dims[0])
        feature_scale = strength
    bias = (0.1 * rng.normal(size=k)).astype(np.float32)
    uni_heads = [(rng.normal(size=(k, d)).astype(np.float32) / np.sqrt(d),
                  (0.1 * rng.normal(size=k)).astype(np.float32)) for d in dims]

    ids = np.sort(rng.choice(max(10 * n, 100), size=n, replace=False)).astype(np.int64)
    labeled = np.zeros(n, dtype=bool)
    labeled[rng.choice(n, size=min(int(labeled_fraction * n), n - 1), replace=False)] = True
    truth = rng.integers(0, k, size=n)

    with CacheWriter(path, meta, n, overwrite=overwrite, resume=False) as writer:
        for start in range(0, n, batch_rows):
            rows = slice(start, min(start + batch_rows, n))
            writer.append(_batch(rng, meta, centers, feature_scale, weight, bias, uni_heads,
                                 ids[rows], labeled[rows], truth[rows]))
        writer.write_head(weight, bias)
    return Path(path)


def _batch(rng, meta, centers, feature_scale, weight, bias, uni_heads, ids, labeled, truth) -> dict:
    b, k = len(ids), meta.num_classes
    scales = rng.lognormal(mean=0.0, sigma=0.5, size=(b, meta.num_modalities)).astype(np.float32)
    feats = []
    for m, center in enumerate(centers):
        z = center[truth] + rng.normal(size=(b, center.shape[1])).astype(np.float32)
        z = z * (scales[:, m:m + 1] * feature_scale[m])
        z = z.astype(meta.feature_dtype).astype(np.float32)
        feats.append(z)

    def head(h):
        return h @ weight.T + bias

    batch = {
        "ids": ids,
        "labeled": labeled,
        "logits/mm": head(head_input(feats, meta.fusion)),
        "coalitions": np.stack([
            head(head_input(feats, meta.fusion,
                            present=coalition_present(mask, meta.num_modalities)))
            for mask in range(meta.num_coalitions)], axis=1),
    }
    for name, z in zip(meta.modalities, feats, strict=True):
        batch[f"features/{name}"] = z
    for name, z, (w, c) in zip(meta.modalities, feats, uni_heads, strict=True):
        batch[f"logits/{name}"] = z @ w.T + c
    if meta.mc_samples:
        h = head_input(feats, meta.fusion)
        keep = rng.random(size=(b, meta.mc_samples, h.shape[1])) >= 0.2
        batch["mc_logits"] = np.einsum("btd,kd->btk", h[:, None, :] * keep / 0.8, weight) + bias
    if meta.multi_label:
        labels = (rng.random(size=(b, k)) < 1.5 / k).astype(np.int8)
        labels[np.arange(b), truth] = 1
        labels[~labeled] = -1
    else:
        labels = np.where(labeled, truth, -1).astype(np.int64)
    batch["labels"] = labels
    return batch
