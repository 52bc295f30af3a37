"""How the per-modality embedding blocks relate to the multimodal head's input ``h``.

The cache stores, per modality, the block ``z_m`` BMMAL weights. For the
*linear* fusions the head input of any coalition (modalities outside it
zeroed) is a pure function of the stored blocks:

* ``concat``: ``h = z_1 ⊕ … ⊕ z_M`` into one fused head;
* ``sum`` (the paper's summation): fused logits are the mean of the unimodal
  heads' logits, ``(1/M) Σ_m (W_m z_m + b_m)``, which is the effective head
  ``[W_1, …, W_M] / M`` (stored as ``head/weight``) over the same
  concatenation, so ``h`` is the concatenation here too;
* ``feature-sum``: ``h = Σ_m z_m`` (projected features) into one shared head.

``nl-gate`` (a non-local gate between the modalities' feature maps) is not
linear: its head input is stored in the cache (``Cache.head_input``) and
:func:`head_input` refuses it. Works on NumPy and CuPy arrays alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Fusions whose head input (of any coalition) follows from the stored blocks.
LINEAR_FUSIONS = ("concat", "sum", "feature-sum")
#: Every fusion a cache may declare.
FUSIONS = (*LINEAR_FUSIONS, "nl-gate")
#: Linear fusions whose head input concatenates the blocks (the rest add them).
CONCATENATING_FUSIONS = ("concat", "sum")


def stores_head_input(fusion: str) -> bool:
    """True when a cache of ``fusion`` stores its head input (not a function of the blocks)."""
    return fusion not in LINEAR_FUSIONS


def head_input(
    features: Sequence[Any],
    fusion: str,
    *,
    weights: Sequence[Any] | None = None,
    present: Sequence[bool] | None = None,
    xp: Any = None,
) -> Any:
    """Fuse per-modality blocks into the head input of a linear fusion.

    Parameters
    ----------
    features : sequence of arrays, each (N, D_m)
        Modality blocks in the cache's modality order.
    fusion : {"concat", "sum", "feature-sum"}
        ``concat`` and ``sum`` give (N, sum D_m), the concatenation;
        ``feature-sum`` gives (N, D), the elementwise sum, and needs equal D_m.
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

    Raises
    ------
    ValueError
        For ``nl-gate`` (read its head input from the cache) or an unknown fusion.
    """
    if fusion not in LINEAR_FUSIONS:
        hint = ("; its head input is no function of the blocks, read it from the cache "
                "(Cache.head_input)" if fusion in FUSIONS else f"; expected one of {FUSIONS}")
        raise ValueError(f"fusion {fusion!r} has no head input computed from features{hint}")
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
    if fusion in CONCATENATING_FUSIONS:
        return xp.concatenate(parts, axis=1)
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def coalition_present(mask: int, num_modalities: int) -> list[bool]:
    """Membership list of coalition ``mask`` (bit m set = modality m present)."""
    return [bool(mask >> m & 1) for m in range(num_modalities)]


def _array_module(array: Any) -> Any:
    module = type(array).__module__.split(".")[0]
    if module == "cupy":
        import cupy  # deferred: CuPy is optional, and only a CuPy array gets here

        return cupy
    return np
