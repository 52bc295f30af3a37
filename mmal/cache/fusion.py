"""How modality features form the multimodal head's input ``h``.

The cache stores each modality's features ``z_m`` as they enter the fusion, so
the head input of any coalition (modalities outside it zeroed) is a pure
function of the stored features. Works on NumPy and CuPy arrays alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# SHIM for the fusion-model branch: the cache-v2 branch owns this module (SPEC-fusions.md);
# at merge take cache-v2's version of this file.
#: Fusions whose head input (of any coalition) follows from the stored blocks.
LINEAR_FUSIONS = ("concat", "sum", "feature-sum")
#: Every fusion a cache may declare.
FUSIONS = (*LINEAR_FUSIONS, "nl-gate")


def head_input(
    features: Sequence[Any],
    fusion: str,
    *,
    weights: Sequence[Any] | None = None,
    present: Sequence[bool] | None = None,
    xp: Any = None,
) -> Any:
    """Fuse per-modality features into the head input.

    Parameters
    ----------
    features : sequence of arrays, each (N, D_m)
        Modality features in the cache's modality order.
    fusion : {"concat", "sum"}
        ``concat`` gives (N, sum D_m); ``sum`` gives (N, D) and needs equal D_m.
    weights : sequence of scalars or (N,) arrays, optional
        Per-modality scale ``w_m`` applied to ``z_m`` before fusing (BMMAL's
        damping). A (N,) array scales each sample separately.
    present : sequence of bool, optional
        Coalition membership; absent modalities contribute zeros.
    xp : array module, optional
        ``numpy`` or ``cupy``; inferred from the first array when omitted.

    Returns
    -------
    h : array (N, D_fused), dtype of the inputs promoted with the weights.
    """
    if xp is None:
        xp = _array_module(features[0])
    parts = []
    for m, z in enumerate(features):
        part = z
        if weights is not None:
            w = weights[m]
            part = part * (w[:, None] if getattr(w, "ndim", 0) == 1 else w)
        if present is not None and not present[m]:
            part = xp.zeros_like(part)
        parts.append(part)
    if fusion in ("concat", "sum"):
        return xp.concatenate(parts, axis=1)
    if fusion == "feature-sum":
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total
    raise ValueError(f"unknown fusion {fusion!r}; expected 'concat' or 'sum'")


def coalition_present(mask: int, num_modalities: int) -> list[bool]:
    """Membership list of coalition ``mask`` (bit m set = modality m present)."""
    return [bool(mask >> m & 1) for m in range(num_modalities)]


def _array_module(array: Any) -> Any:
    module = type(array).__module__.split(".")[0]
    if module == "cupy":
        import cupy  # deferred: CuPy is optional, and only a CuPy array gets here

        return cupy
    return np
