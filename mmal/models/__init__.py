"""Multimodal classifiers: per-modality encoders, fusion, and linear heads.

``build_model(config, pool)`` makes a randomly initialised (or locally
pretrained) :class:`MultimodalModel`; ``model_from_checkpoint`` rebuilds a
trained one from ``model.pt``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmal.models.model import MultimodalModel, Output

if TYPE_CHECKING:
    from mmal.config import Config
    from mmal.data.pool import Pool

__all__ = ["MultimodalModel", "Output", "build_model", "input_dims", "model_from_checkpoint"]


def input_dims(config: Config, pool: Pool) -> dict[str, int]:
    """Input width of every vector modality of ``pool``."""
    from mmal.data import vector_dim

    return {m.name: vector_dim(pool, m.name) for m in config.modalities if m.kind == "vector"}


def build_model(config: Config, pool: Pool) -> MultimodalModel:
    """A fresh model for ``config`` sized to ``pool`` (K classes, vector widths)."""
    return MultimodalModel(config, pool.num_classes, input_dims(config, pool))


def model_from_checkpoint(ckpt: dict[str, Any], config: Config) -> MultimodalModel:
    """The trained model stored in ``ckpt`` (a dict from ``load_checkpoint``)."""
    model = MultimodalModel(config, int(ckpt["num_classes"]), ckpt["input_dims"])
    model.load_state_dict(ckpt["state_dict"])
    return model
