"""Training a round's multimodal model: :func:`train_round` (``mmal train``)."""

from mmal.train.loop import evaluate, multimodal_loss, train_round

__all__ = ["evaluate", "multimodal_loss", "train_round"]
