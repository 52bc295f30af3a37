"""Multimodal classifiers: per-modality encoders, fusion, and linear heads.

``build_model(config, pool)`` makes a randomly initialised (or locally
pretrained) :class:`MultimodalModel`; ``model_from_checkpoint`` rebuilds a
trained one from ``model.pt``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmal.data import vector_dim
from mmal.models.kinds import ENCODER_KINDS, MODEL

if TYPE_CHECKING:
    from mmal.config import Config
    from mmal.data.pool import Pool
    from mmal.models.model import MultimodalModel

__all__ = ["Encoded", "MultimodalModel", "Output", "build_model", "input_dims",
           "model_from_checkpoint"]


def __getattr__(name: str):
    # Keep torch out of `import mmal.models.kinds`: mmal.config reads that table.
    if name in ("Encoded", "MultimodalModel", "Output"):
        from mmal.models import model

        return getattr(model, name)
    raise AttributeError(name)


def input_dims(config: Config, pool: Pool) -> dict[str, int]:
    """Input width of every vector modality of ``pool``."""
    return {m.name: vector_dim(pool, m.name) for m in config.modalities if m.kind == "vector"}


def build_model(config: Config, pool: Pool) -> MultimodalModel:
    """A fresh model for ``config`` sized to ``pool`` (K classes, vector widths)."""
    from mmal.models.model import MultimodalModel  # deferred: torch, see __getattr__

    return MultimodalModel(config, pool.num_classes, input_dims(config, pool))


def model_from_checkpoint(ckpt: dict[str, Any], config: Config) -> MultimodalModel:
    """The trained model stored in ``ckpt`` (a dict from ``load_checkpoint``), on the CPU.

    Every weight comes from the checkpoint, so image, audio and video encoders
    are built without reading pretrained files and, where the state dict covers
    every tensor, on the meta device (no random initialisation: that costs about
    as much as a forward pass over a few hundred samples for a ResNet-101) with
    the checkpoint's tensors assigned in place. Models with a transformers
    encoder (text, ``vit``, ``ast``, ...) are built normally: transformers
    refuses to load weights under the meta device, and its models hold
    non-persistent buffers a state dict does not carry.
    """
    import torch  # deferred like MultimodalModel: see __getattr__

    from mmal.models.model import MultimodalModel

    args = (config, int(ckpt["num_classes"]), ckpt["input_dims"])
    if not any(ENCODER_KINDS[m.encoder].pretrained == MODEL for m in config.modalities):
        with torch.device("meta"):
            model = MultimodalModel(*args, load_weights=False)
        if _state_covers_everything(model):
            model.load_state_dict(ckpt["state_dict"], assign=True)
            return model
    model = MultimodalModel(*args, load_weights=False)
    model.load_state_dict(ckpt["state_dict"])
    return model


def _state_covers_everything(model: Any) -> bool:
    """Whether ``model.state_dict()`` holds every parameter and buffer (none non-persistent)."""
    keys = set(model.state_dict(keep_vars=True))
    return all(name in keys for name, _ in model.named_parameters()) and \
        all(name in keys for name, _ in model.named_buffers())
