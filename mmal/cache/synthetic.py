"""Synthetic feature caches for tests, benchmarks and the first demo.

The generated cache is internally consistent, as a real extraction would
write it: every logit is computed from the stored (dtype-rounded) values, so
:func:`mmal.cache.consistency.coalition_error` finds no disagreement.

* ``concat``: one random linear head over the concatenated features;
* ``sum`` (the paper's summation): one random linear head per modality, the
  unimodal logits are those heads' outputs and the fused logits their mean,
  stored as the effective head ``[W_1, ..., W_M] / M`` with the mean bias;
* ``feature-sum``: one random head shared by the summed features;
* ``nl-gate``: a random nonlinear gate stands for the network after the
  modalities meet: the latent of coalition ``S`` is
  ``tanh(Σ_{m ∈ S} x_m A_m + c)`` for per-modality inputs ``x_m``, each block
  ``z_m`` is the latent of ``{m}`` alone, ``head_input`` the latent of all
  modalities, and every coalition's logits are a random linear head applied to
  its latent (so the empty coalition is the same row for every sample).

Samples are drawn around per-class centers in every modality. Modality ``m``
is weakened by ``dominance ** -m`` (its head block for concat and sum, its
features for feature-sum and nl-gate) so modality 0 dominates most samples
when ``dominance > 1``; a per-sample log-normal scale on each modality lets
some samples be dominated by a weaker modality, as in real data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmal.cache.fusion import CONCATENATING_FUSIONS, coalition_present, head_input
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
        ``D_m`` per modality; all equal for ``feature-sum`` and ``nl-gate``.
    modalities : sequence of str, optional
        Names; default ``m0, m1, ...``.
    fusion : {"concat", "sum", "feature-sum", "nl-gate"}
        See the module docstring.
    dominance : float >= 1
        Ratio of head strength between consecutive modalities (1 = balanced).
    labeled_fraction : float in [0, 1)
        Share of samples marked labeled (at least one sample stays unlabeled).
    mc_samples : int
        ``T`` MC-dropout passes (dropout 0.2 on the head input); 0 for none.
    seed : int
        Everything is a deterministic function of the arguments and the seed.
    batch_rows : int
        Rows generated and written per batch. Only one batch is ever in
        memory (with the (N,) ids, labeled mask and classes), so a float16
        cache larger than memory is written in one pass. The batches draw in
        turn from one stream, so the content depends on ``batch_rows`` too;
        ``mmal synth`` always uses the default, so a seed names one cache
        (the stream is the one caches of earlier versions were drawn from).
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
        mc_samples=mc_samples, fused_dim=dims[0] if fusion == "nl-gate" else 0,
        extra={"generator": "mmal.cache.synthetic", "dominance": dominance, "seed": seed},
    )
    rng = np.random.default_rng(seed)
    k, n = num_classes, num_samples
    centers = [rng.normal(size=(k, d)).astype(np.float32) for d in dims]
    model = _random_model(rng, meta, [dominance ** -m for m in range(len(dims))])
    ids = np.sort(rng.choice(max(10 * n, 100), size=n, replace=False)).astype(np.int64)
    labeled = np.zeros(n, dtype=bool)
    labeled[rng.choice(n, size=min(int(labeled_fraction * n), n - 1), replace=False)] = True
    truth = rng.integers(0, k, size=n)

    with CacheWriter(path, meta, n, overwrite=overwrite, resume=False) as writer:
        for start in range(0, n, batch_rows):
            rows = slice(start, min(start + batch_rows, n))
            writer.append(_batch(rng, meta, centers, model, ids[rows], labeled[rows],
                                 truth[rows]))
        writer.write_head(model.weight, model.bias)
    return Path(path)


@dataclass(frozen=True)
class _Model:
    """The random model behind a synthetic cache (see the module docstring)."""

    weight: np.ndarray  # (K, D_fused) head/weight
    bias: np.ndarray  # (K,) head/bias
    uni_heads: list[tuple[np.ndarray, np.ndarray]]  # per modality (K, D_m), (K,)
    feature_scale: list[float]  # per modality, applied to the inputs
    gate: list[np.ndarray] | None = None  # nl-gate: A_m (D, D) per modality
    gate_bias: np.ndarray | None = None  # nl-gate: c (D,)


def _random_model(rng: np.random.Generator, meta: CacheMeta, strength: list[float]) -> _Model:
    # concat and feature-sum draw in the order they did before schema 2: same seed, same cache
    k, dims, f32 = meta.num_classes, meta.feature_dims, np.float32
    if meta.fusion in CONCATENATING_FUSIONS:
        # each modality's block of the head is scaled: its logit contribution shrinks
        blocks = [rng.normal(size=(k, d)).astype(f32) * (s / np.sqrt(d))
                  for d, s in zip(dims, strength, strict=True)]
        weight = np.concatenate(blocks, axis=1)
        feature_scale = [1.0] * len(dims)
    else:
        # one head is shared by every modality, so the inputs themselves are scaled
        weight = rng.normal(size=(k, dims[0])).astype(f32) / np.sqrt(dims[0])
        feature_scale = strength
    bias = (0.1 * rng.normal(size=k)).astype(f32)
    heads = [(rng.normal(size=(k, d)).astype(f32) / np.sqrt(d),
              (0.1 * rng.normal(size=k)).astype(f32)) for d in dims]
    if meta.fusion == "sum":  # the unimodal heads are the blocks; fused logits are their mean
        heads = [(w, c) for w, (_, c) in zip(blocks, heads, strict=True)]
        weight = weight / f32(len(dims))
        bias = np.mean([c for _, c in heads], axis=0).astype(f32)
    if meta.fusion != "nl-gate":
        return _Model(weight, bias, heads, feature_scale)
    d = meta.fused_dim
    gate = [rng.normal(size=(d, d)).astype(f32) / np.sqrt(2 * d) for _ in dims]
    return _Model(weight, bias, heads, feature_scale, gate,
                  (0.5 * rng.normal(size=d)).astype(f32))


def _batch(rng, meta, centers, model, ids, labeled, truth) -> dict:
    b, k = len(ids), meta.num_classes
    scales = rng.lognormal(mean=0.0, sigma=0.5, size=(b, meta.num_modalities)).astype(np.float32)
    inputs = []
    for m, center in enumerate(centers):
        x = center[truth] + rng.normal(size=(b, center.shape[1])).astype(np.float32)
        inputs.append(x * (scales[:, m:m + 1] * model.feature_scale[m]))

    def stored(a):  # the values a reader gets back, from which every logit is computed
        return a.astype(meta.feature_dtype).astype(np.float32)

    def head(h):
        return h @ model.weight.T + model.bias

    batch = {"ids": ids, "labeled": labeled}
    masks = range(meta.num_coalitions)
    if meta.stores_head_input:
        latents = [stored(_gate(model, inputs, coalition_present(s, meta.num_modalities)))
                   for s in masks]
        feats = [latents[1 << m] for m in range(meta.num_modalities)]
        h = batch["head_input"] = latents[-1]
    else:
        latents = None
        feats = [stored(x) for x in inputs]
        h = head_input(feats, meta.fusion)
    batch["logits/mm"] = head(h)
    batch["coalitions"] = np.stack([
        head(latents[s] if latents is not None else
             head_input(feats, meta.fusion, present=coalition_present(s, meta.num_modalities)))
        for s in masks], axis=1)
    for name, z in zip(meta.modalities, feats, strict=True):
        batch[f"features/{name}"] = z
    for name, z, (w, c) in zip(meta.modalities, feats, model.uni_heads, strict=True):
        batch[f"logits/{name}"] = z @ w.T + c
    if meta.mc_samples:
        keep = rng.random(size=(b, meta.mc_samples, h.shape[1])) >= 0.2
        batch["mc_logits"] = (np.einsum("btd,kd->btk", h[:, None, :] * keep / 0.8, model.weight)
                              + model.bias)
    if meta.multi_label:
        labels = (rng.random(size=(b, k)) < 1.5 / k).astype(np.int8)
        labels[np.arange(b), truth] = 1
        labels[~labeled] = -1
    else:
        labels = np.where(labeled, truth, -1).astype(np.int64)
    batch["labels"] = labels
    return batch


def _gate(model: _Model, inputs: list[np.ndarray], present: list[bool]) -> np.ndarray:
    """(b, D) latent of the coalition ``present``: ``tanh(Σ_{m present} x_m A_m + c)``."""
    pre = np.broadcast_to(model.gate_bias, (len(inputs[0]), len(model.gate_bias))).copy()
    for x, a, here in zip(inputs, model.gate, present, strict=True):
        if here:
            pre += x @ a
    return np.tanh(pre)
