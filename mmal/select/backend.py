"""Array-module choice for selection: NumPy on the CPU, CuPy on a GPU.

The module is picked once at the entry point and passed down as ``xp``; all
strategy code is written against the shared NumPy/CuPy API.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmal.errors import SelectionError


def cuda_available() -> bool:
    """True when CuPy is importable and sees at least one GPU."""
    try:
        import cupy  # deferred: CuPy is optional and starts the CUDA runtime

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def array_module(device: str = "auto") -> Any:
    """``numpy`` for ``cpu``; ``cupy`` for ``cuda``; ``auto`` takes CuPy when a GPU is present."""
    if device == "cpu":
        return np
    if device == "cuda":
        if not cuda_available():
            raise SelectionError(
                "--device cuda needs CuPy and a visible GPU; install mmal[gpu] or use --device cpu"
            )
        import cupy  # deferred: see cuda_available

        return cupy
    if device == "auto":
        return array_module("cuda") if cuda_available() else np
    raise SelectionError(f"unknown device {device!r}; use auto, cpu or cuda")


def backend_name(xp: Any) -> str:
    """``"numpy"`` or ``"cupy"``."""
    return xp.__name__.split(".")[0]


def asnumpy(array: Any) -> np.ndarray:
    """Copy a CuPy array to the host; NumPy arrays pass through."""
    if hasattr(array, "get") and not isinstance(array, np.ndarray):
        return array.get()
    return np.asarray(array)
