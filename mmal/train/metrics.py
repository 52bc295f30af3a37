"""Test-split metrics of a trained model: top-1, mAP (multi-label) and Shapley contributions.

All functions take NumPy arrays gathered over the test split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmal.shapley import coalition_values, contributions, shapley_values


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy; multi-label: share of samples whose top class is one of their labels.

    logits (n, K); labels (n,) int or (n, K) multi-hot.
    """
    pred = logits.argmax(axis=1)
    if labels.ndim == 2:
        return float(np.mean(labels[np.arange(len(pred)), pred] > 0))
    return float(np.mean(pred == labels))


def mean_average_precision(logits: np.ndarray, labels: np.ndarray) -> float:
    """Macro mean over classes (with at least one positive) of average precision.

    AP of class k = mean over its positives of the precision at that positive's
    rank when samples are sorted by descending logit. NaN if no class has a positive.
    """
    aps = []
    for k in range(labels.shape[1]):
        positive = labels[:, k] > 0
        if not positive.any():
            continue
        order = np.argsort(-logits[:, k], kind="stable")
        hits = positive[order]
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        aps.append(float(precision[hits].mean()))
    return float(np.mean(aps)) if aps else float("nan")


def true_class_shapley(coalitions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shapley values of each modality at the true class, and their shares Φ.

    Parameters
    ----------
    coalitions : (n, 2^M, K) coalition logits.
    labels : (n,) int, or (n, K) multi-hot (every (sample, positive class)
        pair counts once; sigmoid values).

    Returns
    -------
    phi : (n', M) float64 Shapley values of the true-class probability.
    share : (n', M) float64 contributions Φ_m = |φ_m| / Σ_j |φ_j|.
    n' = n (single-label) or the number of positive pairs (multi-label).
    """
    if labels.ndim == 2:
        rows, classes = np.nonzero(labels > 0)
        values = coalition_values(coalitions[rows], classes, multi_label=True)
    else:
        values = coalition_values(coalitions, labels)
    phi = shapley_values(values)
    return phi, contributions(phi)


def summarize(logits_mm: np.ndarray, logits_uni: dict[str, np.ndarray],
                 coalitions: np.ndarray, labels: np.ndarray,
                 modalities: Sequence[str]) -> dict:
    """The ``test`` block of metrics.json (see :func:`mmal.train.train_round`)."""
    multi = labels.ndim == 2
    out: dict = {"samples": int(len(labels)),
                 "top1": {"mm": top1(logits_mm, labels),
                          **{m: top1(logits_uni[m], labels) for m in modalities}}}
    if multi:
        out["map"] = {"mm": mean_average_precision(logits_mm, labels),
                      **{m: mean_average_precision(logits_uni[m], labels) for m in modalities}}
    phi, share = true_class_shapley(coalitions, labels)
    out["shapley_true_class"] = {
        "phi_mean": {m: float(phi[:, i].mean()) for i, m in enumerate(modalities)},
        "contribution_mean": {m: float(share[:, i].mean()) for i, m in enumerate(modalities)},
    }
    return out
