"""Small helpers shared by training and extraction: device choice, moving batches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mmal.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ``"cuda"`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible to torch; use --device auto or cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"--device {name!r}: choose auto, cpu or cuda")
    return torch.device(name)


def inputs_to(inputs: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Move every tensor input to ``device`` (text stays a list of str)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in inputs.items()}
