"""The multimodal classifier: one encoder per modality, a fusion, three kinds of linear head.

For modalities m = 1..M with features z_m (B, D_m), the fused head input is
``h = z_1 ⊕ ... ⊕ z_M`` (concat) or ``h = Σ_m z_m`` (sum; each z_m is first
projected by a linear layer to the common width when the encoders' widths
differ, and z_m then denotes the projected features). The model has one linear
head per modality (on z_m) and a fused head ``W h + b``. For a coalition S the
head input ``h_S`` zeroes every modality outside S, so coalition logits are
exactly ``W h_S + b`` — the relation the feature cache relies on.

Optional dropout acts on ``h`` before the fused head only (MC dropout samples
it at extraction time).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mmal.config import Config
from mmal.models.encoders import build_encoder


@dataclass
class Output:
    """What one forward pass returns.

    features : modality -> (B, D_m) the features entering the fusion.
    logits_mm : (B, K) fused head logits.
    logits_uni : modality -> (B, K) that modality's own head logits.
    """

    features: dict[str, torch.Tensor]
    logits_mm: torch.Tensor
    logits_uni: dict[str, torch.Tensor]


class MultimodalModel(nn.Module):
    """Encoders + fusion + heads.

    Parameters
    ----------
    config : Config
        Modalities (order = cache order), ``model.fusion``, ``model.fused_dim``,
        ``model.dropout``.
    num_classes : int
        K.
    input_dims : mapping, optional
        Input width of each vector (mlp) modality.
    load_weights : bool
        Read the encoders' local pretrained weights (see
        :func:`mmal.models.encoders.build_encoder`).
    """

    def __init__(self, config: Config, num_classes: int,
                 input_dims: Mapping[str, int] | None = None, *, load_weights: bool = True):
        super().__init__()
        input_dims = dict(input_dims or {})
        self.modalities = list(config.modality_names)
        self.fusion = config.model.fusion
        self.encoders = nn.ModuleDict({
            m.name: build_encoder(m, input_dim=input_dims.get(m.name), load_weights=load_weights)
            for m in config.modalities
        })
        self.frozen = [m.name for m in config.modalities if m.freeze]
        for name in self.frozen:
            self.encoders[name].requires_grad_(False)
        dims = [int(self.encoders[m].out_dim) for m in self.modalities]
        if self.fusion == "sum":
            width = config.model.fused_dim or max(dims)
            self.project = nn.ModuleDict({
                m: (nn.Identity() if d == width else nn.Linear(d, width))
                for m, d in zip(self.modalities, dims, strict=True)
            })
            self.feature_dims = [width] * len(dims)
            fused = width
        else:
            self.project = nn.ModuleDict({m: nn.Identity() for m in self.modalities})
            self.feature_dims = dims
            fused = sum(dims)
        self.fused_dim = fused
        self.num_classes = int(num_classes)
        self.heads = nn.ModuleDict({
            m: nn.Linear(d, num_classes) for m, d in zip(self.modalities, self.feature_dims,
                                                          strict=True)
        })
        self.head = nn.Linear(fused, num_classes)
        self.dropout_p = float(config.model.dropout)
        self.dropout = nn.Dropout(self.dropout_p)

    # -- pieces ------------------------------------------------------------------

    def encode(self, inputs: Mapping[str, Any],
               encoded: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """modality -> (B, D_m) features as they enter the fusion (projected for sum).

        ``encoded`` maps a modality to its encoder's output (B, D_m) computed
        beforehand (a frozen encoder's stored features, :mod:`mmal.encoded`);
        that encoder is then not run and ``inputs`` need not hold the modality.
        """
        encoded = encoded or {}
        return {m: self.project[m](encoded[m] if m in encoded else self.encoders[m](inputs[m]))
                for m in self.modalities}

    def fuse(self, features: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
             present: Sequence[bool] | None = None) -> torch.Tensor:
        """(B, D_fused) head input; modalities with ``present[m]`` False are zeroed."""
        parts = [features[m] for m in self.modalities] if isinstance(features, Mapping) \
            else list(features)
        if present is not None:
            parts = [z if keep else torch.zeros_like(z)
                     for z, keep in zip(parts, present, strict=True)]
        if self.fusion == "concat":
            return torch.cat(parts, dim=1)
        return torch.stack(parts).sum(0)

    def fused_logits_from_features(self, features: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
                                   present: Sequence[bool] | None = None) -> torch.Tensor:
        """(B, K) fused head logits of coalition ``present`` (no dropout): ``W h_S + b``."""
        return self.head(self.fuse(features, present))

    def coalition_logits(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, 2^M, K) logits of every coalition; bit m of the index = modality m present."""
        n = len(self.modalities)
        return torch.stack([
            self.fused_logits_from_features(features, [bool(mask >> m & 1) for m in range(n)])
            for mask in range(2 ** n)
        ], dim=1)

    def unimodal_logits(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """modality -> (B, K) logits of that modality's own head."""
        return {m: self.heads[m](features[m]) for m in self.modalities}

    def mc_dropout_logits(self, features: Mapping[str, torch.Tensor], samples: int,
                          generator: torch.Generator) -> torch.Tensor:
        """(B, T, K) fused logits under ``samples`` dropout masks drawn from ``generator``.

        Inverted dropout with the model's rate on ``h``; masks come from the
        given generator (not the global RNG) so extraction is reproducible per batch.
        """
        h = self.fuse(features)
        keep = 1.0 - self.dropout_p
        mask = torch.rand((samples, *h.shape), generator=generator, device=h.device) < keep
        dropped = h.unsqueeze(0) * mask.to(h.dtype) / keep
        return self.head(dropped).transpose(0, 1)

    # -- whole model -------------------------------------------------------------

    def forward(self, inputs: Mapping[str, Any],
                encoded: Mapping[str, torch.Tensor] | None = None) -> Output:
        features = self.encode(inputs, encoded)
        logits_mm = self.head(self.dropout(self.fuse(features)))
        return Output(features=features, logits_mm=logits_mm,
                      logits_uni=self.unimodal_logits(features))

    def train(self, mode: bool = True) -> MultimodalModel:
        # Frozen encoders stay in eval mode so their batch-norm statistics stay fixed too.
        super().train(mode)
        for name in self.frozen:
            self.encoders[name].eval()
        return self

    def param_groups(self, *, lr: float, encoder_lr: float, weight_decay: float) -> list[dict]:
        """Optimizer groups: trainable encoder weights at ``encoder_lr``, the rest at ``lr``."""
        enc = [p for p in self.encoders.parameters() if p.requires_grad]
        enc_ids = {id(p) for p in self.encoders.parameters()}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in enc_ids]
        groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay}]
        if enc:
            groups.append({"params": enc, "lr": encoder_lr, "weight_decay": weight_decay})
        return groups
