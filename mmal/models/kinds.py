"""The encoder kinds: one table, read by the config reader and :func:`~mmal.models.encoders.build_encoder`.

``modalities.<name>.encoder`` names a row of :data:`ENCODER_KINDS`. The config
reader takes the encoders a modality kind may use (and the "choose one of"
lists of its errors) from it; ``build_encoder`` calls the row's builder.

Nothing here imports torch, so :mod:`mmal.config` can read the table; the
builders live in :mod:`mmal.models.encoders` and rows name them.
:func:`encoder_lr` gives an encoder's default learning rate from whether it
starts pretrained (:func:`starts_pretrained`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmal.config import ModalityConfig

# What `modalities.<name>.pretrained` names (EncoderKind.pretrained):
STATE_DICT = "state_dict"  # a local state dict file, loaded into the built encoder
MODEL = "model"  # a local model folder, or a model name in the local Hugging Face cache
UNUSED = "unused"  # nothing: it is ignored, the encoder starts from random weights

#: Files whose presence in a model folder means it holds weights (else: architecture only).
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                   "pytorch_model.bin.index.json")
#: The default ``train.encoder_lr`` of an encoder that starts from pretrained weights, as a
#: fraction of ``train.lr`` (an encoder trained from scratch learns at ``train.lr``).
PRETRAINED_LR_FACTOR = 0.1


@dataclass(frozen=True)
class EncoderKind:
    """One encoder, as ``modalities.<name>.encoder = <name>`` selects it.

    Attributes
    ----------
    name : str
        The value of ``modalities.<name>.encoder``.
    modality : str
        The modality kind it encodes (``image``, ``text``, ``audio``, ``video``, ``vector``).
    builder : str
        The function of :mod:`mmal.models.encoders` that builds it:
        ``builder(modality: ModalityConfig, input_dim: int | None) -> nn.Module``.
    pretrained : {STATE_DICT, MODEL, UNUSED}
        What ``pretrained`` names. A STATE_DICT is loaded by ``build_encoder``
        after the builder; a MODEL is read by the builder and may be a name
        rather than a path.
    needs_pretrained : bool
        ``pretrained`` may not be empty: the encoder's architecture comes from it.
    waveform : bool
        Audio: the encoder takes the raw waveform, (B, 1, n) float32 at
        ``sample_rate``, instead of the (B, 1, 257, T) spectrogram.
    """

    name: str
    modality: str
    builder: str
    pretrained: str
    needs_pretrained: bool = False
    waveform: bool = False


ENCODER_KINDS: dict[str, EncoderKind] = {kind.name: kind for kind in (
    EncoderKind("resnet18", "image", "build_resnet", STATE_DICT),
    EncoderKind("resnet50", "image", "build_resnet", STATE_DICT),
    EncoderKind("resnet101", "image", "build_resnet", STATE_DICT),
    EncoderKind("audio-resnet18", "audio", "build_audio_resnet", STATE_DICT),
    EncoderKind("r2plus1d_18", "video", "build_r2plus1d", STATE_DICT),
    EncoderKind("vit", "image", "build_hf_image", MODEL, needs_pretrained=True),
    EncoderKind("clip-vision", "image", "build_hf_image", MODEL, needs_pretrained=True),
    EncoderKind("ast", "audio", "build_hf_audio", MODEL, needs_pretrained=True, waveform=True),
    EncoderKind("wav2vec2", "audio", "build_hf_audio", MODEL, needs_pretrained=True,
                waveform=True),
    EncoderKind("bert", "text", "build_text", MODEL),
    EncoderKind("mlp", "vector", "build_mlp", UNUSED),
)}


#: The one encoder pair ``fusion = "nl-gate"`` fuses (the BMMAL paper's video + audio model):
#: modality kind -> encoder. Both are cut after layer 3 (:mod:`mmal.models.nlgate`).
NL_GATE_ENCODERS = {"video": "r2plus1d_18", "audio": "audio-resnet18"}


def encoder_names(modality_kind: str) -> tuple[str, ...]:
    """Names of the encoders of ``modality_kind``, in table order."""
    return tuple(k.name for k in ENCODER_KINDS.values() if k.modality == modality_kind)


def has_hf_weights(folder: str | Path) -> bool:
    """Whether ``folder`` is a model folder holding weights (not only ``config.json``)."""
    return Path(folder).is_dir() and any((Path(folder) / f).exists() for f in HF_WEIGHT_FILES)


def starts_pretrained(modality: ModalityConfig) -> bool:
    """Whether ``modality``'s encoder starts from pretrained weights rather than random ones.

    A state dict file, a model folder holding weights, or a model name (read
    from the local Hugging Face cache) does; ``""``, a folder with only
    ``config.json`` (architecture only) and encoders without weights do not.
    """
    kind = ENCODER_KINDS[modality.encoder]
    if not modality.pretrained or kind.pretrained == UNUSED:
        return False
    if kind.pretrained == STATE_DICT:
        return True
    return has_hf_weights(modality.pretrained) or not Path(modality.pretrained).is_dir()


def encoder_lr(modality: ModalityConfig, lr: float, encoder_lr: float | None) -> float:
    """Learning rate of ``modality``'s encoder.

    ``modalities.<name>.lr`` when set, else ``train.encoder_lr`` when set, else
    a default. The default is ``lr`` for an encoder trained from scratch (it has as much to
    learn as the heads) and ``PRETRAINED_LR_FACTOR * lr`` for one that starts
    from pretrained weights (fine-tuning gently keeps what it learned).
    """
    if modality.lr is not None:
        return modality.lr
    if encoder_lr is not None:
        return encoder_lr
    return lr * PRETRAINED_LR_FACTOR if starts_pretrained(modality) else lr
