"""A tiny image + audio workspace whose encoders are frozen and loaded from local weights.

Frozen encoders need fixed weights to be shared across rounds (a frozen random
encoder is drawn anew each round), so ``frozen_workspace`` saves one random
ResNet-18 state dict per modality to disk and points ``pretrained`` at it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tests.models.tiny import make_workspace

#: No augmentation, so stored and recomputed encoder inputs are the same view.
TRAIN = {"epochs": 2, "batch_size": 4, "augment": False, "num_workers": 0}


def save_weights(path: Path, kind: str, seed: int) -> Path:
    """A random state dict of the ``kind`` ("image" or "audio") ResNet-18 encoder, saved to ``path``."""
    from mmal.config import ModalityConfig
    from mmal.models.encoders import build_encoder

    encoder = {"image": "resnet18", "audio": "audio-resnet18"}[kind]
    torch.manual_seed(seed)
    net = build_encoder(ModalityConfig(kind, kind, encoder), load_weights=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def frozen_workspace(tmp_path: Path, *, frozen=("image", "audio"), n_train: int = 12,
                     n_test: int = 4, overrides: dict[str, dict[str, Any]] | None = None) -> Path:
    """Workspace ``tmp_path/ws``: image + audio, ``frozen`` modalities frozen with saved weights."""
    tables: dict[str, dict[str, Any]] = {"train": dict(TRAIN),
                                         "al": {"initial_budget": 6, "budget": 3}}
    for kind in ("image", "audio"):
        weights = save_weights(tmp_path / "weights" / f"{kind}.pt", kind,
                               seed=1 if kind == "image" else 2)
        tables[f"modalities.{kind}"] = ({"freeze": True, "pretrained": str(weights)}
                                        if kind in frozen else {})
    for key, extra in (overrides or {}).items():
        tables[key] = {**tables.get(key, {}), **extra}
    return make_workspace(tmp_path, "manifest", modalities=("image", "audio"), n_train=n_train,
                          n_test=n_test, overrides=tables)
