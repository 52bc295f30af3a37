"""The multimodal classifier: one encoder per modality, a fusion, a fused head and unimodal heads.

Every fusion gives a head input ``h`` (B, D_fused) and a linear fused head
``W h + b`` on it; each modality m also has its own linear head on its
features ``z_m`` (B, D_m). The fusions (``model.fusion``):

- ``concat``: ``h = z_1 ⊕ ... ⊕ z_M``, one fused head.
- ``sum`` (the BMMAL paper's summation): the fused logits are the mean of the
  unimodal heads' logits, ``(1/M) Σ_m (W_m z_m + b_m)``; there is no separate
  fused head. That is linear in ``h = z_1 ⊕ ... ⊕ z_M`` with the *effective*
  head ``W = [W_1, ..., W_M] / M``, ``b = mean_m b_m`` (:meth:`effective_head`).
- ``feature-sum`` (what mmal called ``sum`` before): ``h = Σ_m P_m z_m``, each
  z_m first projected by a linear layer P_m to the common width when the
  encoders' widths differ (z_m then denotes the projected features), into one
  fused head.
- ``nl-gate``: video + audio only (:mod:`mmal.models.nlgate`); ``h`` is the
  fused 512-d feature of the gate branch, read by one fused head; each unimodal
  head reads its own full encoder.

A coalition S zeroes every modality outside S: for the three linear fusions
``h_S`` is ``h`` of the zeroed features, so coalition logits are exactly
``W h_S + b``, the relation the feature cache relies on; for ``nl-gate`` the
absent modalities' layer-3 maps are zeroed before the gate.

Dropout (``model.dropout``) acts on ``h`` before the fused head, for every
fusion, and nowhere else; MC dropout samples it at extraction time. For
``sum`` that drops the features inside the fused term only (each unimodal
head's own logits see the features undropped); for ``nl-gate`` it drops the
fused 512-d feature.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mmal.config import Config
from mmal.models.encoders import build_encoder
from mmal.models.nlgate import FUSED_DIM, FusedBranch, from_layer3, to_layer3


@dataclass
class Encoded:
    """A batch through the encoders.

    features : modality -> (B, D_m) what that modality's own head reads (projected
        for feature-sum); for the linear fusions also what enters the fusion.
    maps : modality -> its layer-3 map (nl-gate only: video (B, 256, T, H, W),
        audio (B, 256, F, S)); None for the other fusions.
    """

    features: dict[str, torch.Tensor]
    maps: dict[str, torch.Tensor] | None = None


@dataclass
class Output:
    """What one forward pass returns.

    encoded : the batch through the encoders (:class:`Encoded`).
    logits_mm : (B, K) fused head logits.
    logits_uni : modality -> (B, K) that modality's own head logits.
    """

    encoded: Encoded
    logits_mm: torch.Tensor
    logits_uni: dict[str, torch.Tensor]

    @property
    def features(self) -> dict[str, torch.Tensor]:
        """modality -> (B, D_m): ``encoded.features``."""
        return self.encoded.features


#: The bias every head starts from under ``model.head_init = "xavier"`` (the paper's code).
XAVIER_HEAD_BIAS = 0.01


def xavier_head_(linear: nn.Linear) -> None:
    """The paper's head initialisation, in place: Xavier-uniform weights, every bias 0.01."""
    nn.init.xavier_uniform_(linear.weight)
    nn.init.constant_(linear.bias, XAVIER_HEAD_BIAS)


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

    Attributes
    ----------
    feature_dims : list of int
        D_m of each modality's embedding block (what the cache stores as
        ``features/<m>``): the features for concat and sum, the projected
        features for feature-sum, 512 for nl-gate.
    fused_dim : int
        D_fused, the width of ``h`` and of the effective head's columns.
    head_input_is_linear : bool
        Whether ``h`` of every coalition is a linear function of the blocks
        (False for nl-gate, whose cache stores ``h`` itself).
    """

    def __init__(self, config: Config, num_classes: int,
                 input_dims: Mapping[str, int] | None = None, *, load_weights: bool = True):
        super().__init__()
        input_dims = dict(input_dims or {})
        self.modalities = list(config.modality_names)
        self.fusion = config.model.fusion
        self.num_classes = int(num_classes)
        self.encoders = nn.ModuleDict({
            m.name: build_encoder(m, input_dim=input_dims.get(m.name), load_weights=load_weights)
            for m in config.modalities
        })
        self.frozen = [m.name for m in config.modalities if m.freeze]
        for name in self.frozen:
            self.encoders[name].requires_grad_(False)
        dims = [int(self.encoders[m].out_dim) for m in self.modalities]
        width = config.model.fused_dim or max(dims)
        self.project = nn.ModuleDict({
            m: (nn.Linear(d, width) if self.fusion == "feature-sum" and d != width
                else nn.Identity())
            for m, d in zip(self.modalities, dims, strict=True)
        })
        head_dims = [width] * len(dims) if self.fusion == "feature-sum" else dims
        self.heads = nn.ModuleDict({
            m: nn.Linear(d, num_classes) for m, d in zip(self.modalities, head_dims, strict=True)
        })
        self.head_input_is_linear = self.fusion != "nl-gate"
        if self.fusion == "nl-gate":
            self.video, self.audio = (self._modality_of_kind(config, k) for k in ("video", "audio"))
            self.fused_branch = FusedBranch()
            self.feature_dims = [FUSED_DIM] * len(dims)
            self.fused_dim = FUSED_DIM
        else:
            self.feature_dims = head_dims
            self.fused_dim = width if self.fusion == "feature-sum" else sum(dims)
        # sum has no fused head of its own: effective_head() builds it from the unimodal heads
        self.head = None if self.fusion == "sum" else nn.Linear(self.fused_dim, num_classes)
        if config.model.head_init == "xavier":
            for linear in [*self.heads.values(), *([self.head] if self.head is not None else [])]:
                xavier_head_(linear)
        self.dropout_p = float(config.model.dropout)
        self.dropout = nn.Dropout(self.dropout_p)

    @staticmethod
    def _modality_of_kind(config: Config, kind: str) -> str:
        # config validation guarantees exactly one modality of each kind for nl-gate
        return next(m.name for m in config.modalities if m.kind == kind)

    # -- pieces ------------------------------------------------------------------

    def encode(self, inputs: Mapping[str, Any],
               stored: Mapping[str, torch.Tensor] | None = None) -> Encoded:
        """The batch through the encoders (and feature-sum's projections); nl-gate keeps layer-3 maps.

        ``stored`` maps a modality to its encoder's output (B, D_m) computed
        beforehand (a frozen encoder's stored features, :mod:`mmal.encoded`);
        that encoder is then not run and ``inputs`` need not hold the modality.
        nl-gate needs the layer-3 maps, so it never takes stored outputs.
        """
        stored = stored or {}
        if self.fusion != "nl-gate":
            return Encoded({m: self.project[m](stored[m] if m in stored
                                               else self.encoders[m](inputs[m]))
                            for m in self.modalities})
        if stored:
            raise ValueError("nl-gate fuses layer-3 maps; it cannot run from stored encoder outputs")
        maps = {m: to_layer3(self.encoders[m], inputs[m]) for m in self.modalities}
        return Encoded({m: from_layer3(self.encoders[m], z) for m, z in maps.items()}, maps)

    def head_input(self, encoded: Encoded, present: Sequence[bool] | None = None) -> torch.Tensor:
        """(B, D_fused) head input ``h_S``; modalities with ``present[m]`` False are zeroed.

        concat and sum concatenate the features, feature-sum adds them, nl-gate
        runs the gate branch on the layer-3 maps (absent maps zeroed).
        """
        keep = [True] * len(self.modalities) if present is None else list(present)
        source = encoded.maps if self.fusion == "nl-gate" else encoded.features
        parts = [source[m] if k else torch.zeros_like(source[m])
                 for m, k in zip(self.modalities, keep, strict=True)]
        if self.fusion == "nl-gate":
            named = dict(zip(self.modalities, parts, strict=True))
            return self.fused_branch(named[self.video], named[self.audio])
        if self.fusion == "feature-sum":
            return torch.stack(parts).sum(0)
        return torch.cat(parts, dim=1)

    def blocks(self, encoded: Encoded) -> dict[str, torch.Tensor]:
        """modality -> (B, D_m) embedding block BMMAL weights (``features/<m>`` of the cache).

        The features entering the fusion for the linear fusions; for nl-gate
        ``z_m`` = the fused feature with only m present (``h_{m}``).
        """
        if self.head_input_is_linear:
            return dict(encoded.features)
        n = len(self.modalities)
        return {m: self.head_input(encoded, [j == i for j in range(n)])
                for i, m in enumerate(self.modalities)}

    def effective_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W (K, D_fused), b (K,)) with fused logits ``h @ W.T + b``: the head the cache stores.

        For sum ``W = [W_1, ..., W_M] / M`` and ``b = mean_m b_m`` of the
        unimodal heads; for the other fusions the fused head's own weights.
        """
        if self.head is not None:
            return self.head.weight, self.head.bias
        heads = [self.heads[m] for m in self.modalities]
        weight = torch.cat([h.weight for h in heads], dim=1) / len(heads)
        return weight, torch.stack([h.bias for h in heads]).mean(0)

    def fused_logits(self, h: torch.Tensor) -> torch.Tensor:
        """(..., K) fused logits of head input(s) ``h`` (..., D_fused), no dropout."""
        return F.linear(h, *self.effective_head())

    def coalition_inputs(self, encoded: Encoded) -> list[torch.Tensor]:
        """2^M head inputs ``h_S`` (B, D_fused), one per coalition; bit m of S = modality m present."""
        n = len(self.modalities)
        return [self.head_input(encoded, [bool(mask >> m & 1) for m in range(n)])
                for mask in range(2 ** n)]

    def coalition_logits(self, encoded: Encoded) -> torch.Tensor:
        """(B, 2^M, K) logits of every coalition; bit m of the index = modality m present."""
        return torch.stack([self.fused_logits(h) for h in self.coalition_inputs(encoded)], dim=1)

    def unimodal_logits(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """modality -> (B, K) logits of that modality's own head on ``features[m]`` (B, D_m)."""
        return {m: self.heads[m](features[m]) for m in self.modalities}

    def mc_dropout_logits(self, h: torch.Tensor, samples: int,
                          generator: torch.Generator) -> torch.Tensor:
        """(B, T, K) fused logits of head input ``h`` (B, D_fused) under ``samples`` dropout masks.

        Inverted dropout with the model's rate on ``h``; masks come from the
        given generator (not the global RNG) so extraction is reproducible per batch.
        """
        keep = 1.0 - self.dropout_p
        mask = torch.rand((samples, *h.shape), generator=generator, device=h.device) < keep
        dropped = h.unsqueeze(0) * mask.to(h.dtype) / keep
        return self.fused_logits(dropped).transpose(0, 1)

    # -- whole model -------------------------------------------------------------

    def forward(self, inputs: Mapping[str, Any],
                stored: Mapping[str, torch.Tensor] | None = None) -> Output:
        encoded = self.encode(inputs, stored)
        logits_mm = self.fused_logits(self.dropout(self.head_input(encoded)))
        return Output(encoded=encoded, logits_mm=logits_mm,
                      logits_uni=self.unimodal_logits(encoded.features))

    def train(self, mode: bool = True) -> MultimodalModel:
        # Frozen encoders stay in eval mode so their batch-norm statistics stay fixed too.
        super().train(mode)
        for name in self.frozen:
            self.encoders[name].eval()
        return self

    def param_groups(self, *, lr: float, encoder_lr: float | Mapping[str, float],
                     weight_decay: float) -> list[dict]:
        """Optimizer groups: the fusion and heads at ``lr``, trainable encoder weights at theirs.

        ``encoder_lr`` is one rate for every encoder, or modality -> rate
        (:func:`mmal.models.kinds.encoder_lr`); encoders of equal rate share a
        group, in modality order. "The fusion and heads" include feature-sum's
        projections and nl-gate's fused branch (gate and its layer 4), which
        train even when the encoders are frozen.
        """
        rates = encoder_lr if isinstance(encoder_lr, Mapping) else dict.fromkeys(
            self.modalities, encoder_lr)
        enc_ids = {id(p) for p in self.encoders.parameters()}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in enc_ids]
        groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay}]
        by_rate: dict[float, list] = {}
        for m in self.modalities:
            trainable = [p for p in self.encoders[m].parameters() if p.requires_grad]
            if trainable:
                by_rate.setdefault(float(rates[m]), []).extend(trainable)
        groups += [{"params": params, "lr": rate, "weight_decay": weight_decay}
                   for rate, params in by_rate.items()]
        return groups
