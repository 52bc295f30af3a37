"""Tiny offline models and workspaces for the model, train and extract tests.

``tiny_bert(folder)`` writes a BERT config (random weights, 1 layer, width 16)
and a small word-piece vocabulary with its tokenizer files, so the text
encoder loads without any download. ``make_workspace`` writes a tiny dataset
in a real layout (``tests.fixtures_data``), points text modalities at the tiny
BERT, and creates the workspace.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.fixtures_data import WORDS, make_tiny_dataset

if TYPE_CHECKING:
    import torch

    from mmal.config import Config
    from mmal.models import MultimodalModel

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
EXTRA_WORDS = ["the", "a", "some", "recipe", "bake"]


def tiny_bert(folder: Path) -> Path:
    """Write a random-weight tiny BERT (config + tokenizer, no weights) into ``folder``."""
    from transformers import BertConfig, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({w for text in WORDS.values() for w in text.split()} | set(EXTRA_WORDS))
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL + words) + "\n", encoding="utf-8")
    BertTokenizer(str(vocab)).save_pretrained(folder)
    BertConfig(vocab_size=len(SPECIAL) + len(words), hidden_size=16, num_hidden_layers=1,
               num_attention_heads=2, intermediate_size=32, max_position_embeddings=64
               ).save_pretrained(folder)
    return folder


#: Sizes of the tiny transformers models below: width 16, one layer, two heads.
TINY_HF = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
           "intermediate_size": 32}


def tiny_hf(folder: Path, encoder: str, *, image_size: int = 32, sample_rate: int = 8000,
            weights: bool = True) -> Path:
    """Write a random-weight tiny model for ``encoder`` (vit, clip-vision, ast, wav2vec2).

    ``weights=False`` writes the configs only (config.json and, for audio,
    preprocessor_config.json): a folder that gives the architecture alone.
    """
    import torch
    from transformers import (
        ASTConfig,
        ASTFeatureExtractor,
        ASTModel,
        CLIPVisionConfig,
        CLIPVisionModel,
        ViTConfig,
        ViTModel,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
    )

    torch.manual_seed(sum(map(ord, encoder)))
    vision = {"image_size": image_size, "patch_size": 8, **TINY_HF}
    if encoder == "vit":
        model = ViTModel(ViTConfig(**vision), add_pooling_layer=False)
    elif encoder == "clip-vision":
        model = CLIPVisionModel(CLIPVisionConfig(**vision, projection_dim=8))
    elif encoder == "ast":
        model = ASTModel(ASTConfig(**TINY_HF, num_mel_bins=16, max_length=48, frequency_stride=10,
                                   time_stride=10))
        ASTFeatureExtractor(num_mel_bins=16, max_length=48,
                            sampling_rate=sample_rate).save_pretrained(folder)
    elif encoder == "wav2vec2":
        model = Wav2Vec2Model(Wav2Vec2Config(**TINY_HF, conv_dim=(8, 8), conv_stride=(5, 4),
                                             conv_kernel=(10, 4), num_conv_pos_embeddings=8,
                                             num_conv_pos_embedding_groups=2))
        Wav2Vec2FeatureExtractor(sampling_rate=sample_rate).save_pretrained(folder)
    else:
        raise ValueError(encoder)
    if weights:
        model.save_pretrained(folder)
    else:
        model.config.save_pretrained(folder)
    return folder


def make_workspace(tmp_path: Path, layout: str, *, overrides: Mapping[str, Mapping[str, Any]]
                   | None = None, **kwargs: Any) -> Path:
    """A workspace ``tmp_path/ws`` over a tiny ``layout`` dataset; returns its path.

    Text modalities use :func:`tiny_bert`; ``overrides`` and ``kwargs`` go to
    ``make_tiny_dataset`` (e.g. ``{"model": {"fusion": "sum"}}``).
    """
    from mmal.workspace import init_workspace

    bert = tiny_bert(tmp_path / "tiny-bert")
    tables = {"train": {"epochs": 2, "batch_size": 4, "num_workers": 0}}
    if layout == "food101" or (layout == "manifest" and "text" in
                               (kwargs.get("modalities") or ("text",))):
        tables["modalities.text"] = {"pretrained": str(bert)}
    for key, extra in (overrides or {}).items():
        tables[key] = {**tables.get(key, {}), **extra}
    config = make_tiny_dataset(tmp_path, layout, overrides=tables, **kwargs)
    return init_workspace(tmp_path / "ws", config)


#: One epoch on 20 labeled UCI samples: a round in about a second.
TINY_UCI = {"train": {"epochs": 1, "batch_size": 16}, "al": {"initial_budget": 20}}


def selected_workspace(tmp_path: Path) -> tuple[Path, Path]:
    """(workspace, selection): a tiny UCI workspace whose round 0 is trained, extracted and
    has one selection of 5 random ids."""
    from mmal.extract import extract_round
    from mmal.select import select
    from mmal.train import train_round
    from mmal.workspace import open_round

    ws = make_workspace(tmp_path, "uci", overrides=TINY_UCI)
    r0 = open_round(ws, 0)
    train_round(r0, progress=False, device="cpu")
    extract_round(r0, progress=False, device="cpu")
    return ws, select(r0.paths.cache, "random", 5, seed=0).path


def nl_gate_config(*, freeze: bool = False, dropout: float = 0.0, video_first: bool = True
                   ) -> Config:
    """A video + audio config for fusion nl-gate (tiny inputs: 4 frames of 16x16)."""
    from mmal.config import config_from_dict

    video = {"kind": "video", "encoder": "r2plus1d_18", "frames": 4, "image_size": 16,
             "freeze": freeze}
    audio = {"kind": "audio", "encoder": "audio-resnet18", "freeze": freeze}
    mods = {"clip": video, "sound": audio} if video_first else {"sound": audio, "clip": video}
    return config_from_dict({"dataset": {"kind": "manifest", "root": ".", "classes": ["x", "y", "z"]},
                             "modalities": mods,
                             "model": {"fusion": "nl-gate", "dropout": dropout}})


def nl_gate_model(seed: int = 0, **kwargs) -> tuple[MultimodalModel, dict[str, torch.Tensor]]:
    """A random nl-gate model in eval mode and a batch of 3: video (3, 3, 4, 16, 16), audio (3, 1, 32, 24)."""
    import torch

    from mmal.models import MultimodalModel

    torch.manual_seed(seed)
    model = MultimodalModel(nl_gate_config(**kwargs), 3)
    inputs = {"clip": torch.randn(3, 3, 4, 16, 16), "sound": torch.randn(3, 1, 32, 24)}
    with torch.no_grad():  # batch-norm statistics of this data, so eval mode is no identity
        for _ in range(3):
            model.train()(inputs)
    return model.eval(), inputs
