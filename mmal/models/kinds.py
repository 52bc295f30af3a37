"""The encoder kinds: one table, read by the config reader and :func:`~mmal.models.encoders.build_encoder`.

``modalities.<name>.encoder`` names a row of :data:`ENCODER_KINDS`. The config
reader takes the encoders a modality kind may use (and the "choose one of"
lists of its errors) from it; ``build_encoder`` calls the row's builder.

Nothing here imports torch, so :mod:`mmal.config` can read the table; the
builders live in :mod:`mmal.models.encoders` and rows name them.
"""

from __future__ import annotations

from dataclasses import dataclass

# What `modalities.<name>.pretrained` names (EncoderKind.pretrained):
STATE_DICT = "state_dict"  # a local state dict file, loaded into the built encoder
MODEL = "model"  # a local model folder, or a model name in the local Hugging Face cache
UNUSED = "unused"  # nothing: it is ignored, the encoder starts from random weights


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
    """

    name: str
    modality: str
    builder: str
    pretrained: str


ENCODER_KINDS: dict[str, EncoderKind] = {kind.name: kind for kind in (
    EncoderKind("resnet18", "image", "build_resnet", STATE_DICT),
    EncoderKind("resnet50", "image", "build_resnet", STATE_DICT),
    EncoderKind("resnet101", "image", "build_resnet", STATE_DICT),
    EncoderKind("audio-resnet18", "audio", "build_audio_resnet", STATE_DICT),
    EncoderKind("r2plus1d_18", "video", "build_r2plus1d", STATE_DICT),
    EncoderKind("bert", "text", "build_text", MODEL),
    EncoderKind("mlp", "vector", "build_mlp", UNUSED),
)}


#: The one encoder pair ``fusion = "nl-gate"`` fuses (the BMMAL paper's video + audio model):
#: modality kind -> encoder. Both are cut after layer 3 (:mod:`mmal.models.nlgate`).
NL_GATE_ENCODERS = {"video": "r2plus1d_18", "audio": "audio-resnet18"}


def encoder_names(modality_kind: str) -> tuple[str, ...]:
    """Names of the encoders of ``modality_kind``, in table order."""
    return tuple(k.name for k in ENCODER_KINDS.values() if k.modality == modality_kind)
