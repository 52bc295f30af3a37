"""NL-gate fusion (Wang, Tran & Feiszli, CVPR 2020), as the BMMAL paper runs it on video + audio.

The video R(2+1)D-18 and the audio ResNet-18 are cut after layer 3. A
non-local gate lets the audio-video maps attend over the video map,

    g(v, a) = v + h(softmax(θ(v) φ(av)ᵀ) g(av)),

with ``av`` the audio map concatenated with the video map pooled over space and
tiled over the audio map's positions; a layer 4 of the video architecture,
global pooling and a 512x512 linear layer then give the fused 512-d feature the
fused head reads. Each
unimodal head reads its own full encoder (layers 1-4 and pooling). A coalition
drops a modality by zeroing its layer-3 map, so coalition logits are not a
linear function of any stored feature.

Shapes (R(2+1)D-18 and ResNet-18 both give C = 256 channels after layer 3):
video map v (B, C, T, H, W), audio map a (B, C, F, S) with F the frequency and
S the time axis of the spectrogram ((B, 1, 257, T) input, :mod:`mmal.data.loaders`).

Where this differs from the paper's code (``model/avmodel_nl_gate.py`` of
MengShen0709/bmmal): the pooled video frames are aligned with the audio map's
*time* axis (each audio time step gets the video frame covering it; the paper's
audio maps are (time, frequency), mmal's spectrograms (frequency, time)). Audio
step s gets frame ``s * T // S`` here; the paper's code repeats each frame
``S // T`` times and the last one for the remainder, ``min(s // (S // T), T - 1)``
(and fails for S < T). The two agree when T divides S, as in the paper's
settings (5 frames of 112 px and 5 s of audio give T = 2, S = 32).

As in the paper's code, the fused layer 4 is a layer of its own with
torchvision's random initialisation (Kaiming, fan-out), and the linear layer
after the pooling starts from N(0, 0.01²) weights and zero bias.
"""

from __future__ import annotations

import torch
from torch import nn

#: Channels of the layer-3 maps of R(2+1)D-18 and ResNet-18.
LAYER3_CHANNELS = 256
#: Width of the fused feature (layer 4 of R(2+1)D-18, pooled).
FUSED_DIM = 512


class NonLocalGate(nn.Module):
    """``v + h(softmax(θ(v) φ(av)ᵀ) g(av))``: the video map attends over audio-video positions.

    θ, h are 1x1x1 convolutions on video positions; φ, g 1x1 convolutions on
    the audio-video map ``av`` (2C channels); the inner width is C/2.
    """

    def __init__(self, channels: int = LAYER3_CHANNELS):
        super().__init__()
        inner = channels // 2
        self.theta = nn.Conv3d(channels, inner, kernel_size=1)
        self.phi = nn.Conv2d(2 * channels, inner, kernel_size=1)
        self.g = nn.Conv2d(2 * channels, inner, kernel_size=1)
        self.h = nn.Conv3d(inner, channels, kernel_size=1)

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) gated video map from video ``v`` (B, C, T, H, W) and audio ``a`` (B, C, F, S)."""
        b, c, t, hh, ww = v.shape
        av = torch.cat([a, _tiled_video(v, a.shape[2], a.shape[3])], dim=1)  # (B, 2C, F, S)
        query = self.theta(v).flatten(2).transpose(1, 2)  # (B, THW, C/2)
        key = self.phi(av).flatten(2)  # (B, C/2, FS)
        attention = torch.softmax(torch.bmm(query, key), dim=-1)  # (B, THW, FS)
        value = self.g(av).flatten(2).transpose(1, 2)  # (B, FS, C/2)
        out = torch.bmm(attention, value).transpose(1, 2).reshape(b, c // 2, t, hh, ww)
        return v + self.h(out)


def _tiled_video(v: torch.Tensor, freqs: int, steps: int) -> torch.Tensor:
    """(B, C, F, S): the video map pooled over space, frame ``t * T // S`` at audio time step t."""
    frames = v.mean(dim=(3, 4))  # (B, C, T)
    index = torch.arange(steps, device=v.device) * v.shape[2] // steps
    return frames[:, :, index].unsqueeze(2).expand(-1, -1, freqs, -1)


class FusedBranch(nn.Module):
    """Gate, then a layer 4 of the video architecture and global pooling: (B, 512) fused feature."""

    def __init__(self):
        super().__init__()
        self.gate = NonLocalGate(LAYER3_CHANNELS)
        from torchvision.models.video import r2plus1d_18  # deferred: as in mmal.models.encoders

        # a fresh R(2+1)D-18 layer 4, initialised as torchvision initialises the whole network
        self.layer4 = r2plus1d_18(weights=None).layer4
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(FUSED_DIM, FUSED_DIM)
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layer4(self.gate(v, a))).flatten(1))


def to_layer3(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer-3 map of a torchvision R(2+1)D-18 (has ``stem``) or ResNet-18 for input ``x``."""
    if hasattr(net, "stem"):
        x = net.stem(x)
    else:
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer3(net.layer2(net.layer1(x)))


def from_layer3(net: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """(B, 512) the rest of ``net`` after layer 3: layer 4 and pooling (``net(x)`` in two halves)."""
    return torch.flatten(net.avgpool(net.layer4(z)), 1)
