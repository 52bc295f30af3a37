"""NL-gate: the gate against a brute-force loop, the cut encoders, the fused branch, freezing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmal.models.nlgate import NonLocalGate, from_layer3, to_layer3
from tests.models.tiny import nl_gate_model

torch.set_num_threads(1)


def _gate_by_loops(gate: NonLocalGate, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The gate one video position at a time, with the 1x1 convolutions as matrix products."""
    b, c, t, hh, ww = v.shape
    _, _, f, s = a.shape

    def conv(layer, x):  # a 1x1 convolution of the vector x (channels,)
        return layer.weight.reshape(layer.weight.shape[:2]) @ x + layer.bias

    out = v.clone()
    for n in range(b):
        av = {}
        for fi in range(f):
            for si in range(s):
                frame = v[n, :, si * t // s].mean(dim=(1, 2))
                av[fi, si] = torch.cat([a[n, :, fi, si], frame])
        for p in np.ndindex(t, hh, ww):
            query = conv(gate.theta, v[(n, slice(None), *p)])
            scores = torch.stack([query @ conv(gate.phi, x) for x in av.values()])
            weights = torch.softmax(scores, dim=0)
            mixed = sum(w * conv(gate.g, x) for w, x in zip(weights, av.values(), strict=True))
            out[(n, slice(None), *p)] += conv(gate.h, mixed)
    return out


def test_gate_equals_attention_over_audio_video_positions_by_loops():
    torch.manual_seed(1)
    gate = NonLocalGate(channels=4)
    v, a = torch.randn(2, 4, 2, 2, 3), torch.randn(2, 4, 2, 5)
    with torch.no_grad():
        torch.testing.assert_close(gate(v, a), _gate_by_loops(gate, v, a), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,shape", [("clip", (2, 3, 4, 16, 16)), ("sound", (2, 1, 32, 24))])
def test_encoders_cut_after_layer3_compose_to_the_whole_encoder(name, shape):
    model, _ = nl_gate_model()
    enc = model.encoders[name]
    x = torch.randn(*shape)
    with torch.no_grad():
        z = to_layer3(enc, x)
        assert z.shape[:2] == (2, 256) and (z > 0).float().mean() > 0.2  # a live map
        torch.testing.assert_close(from_layer3(enc, z), enc(x))


def test_forward_reads_the_fused_branch_and_each_full_encoder():
    model, inputs = nl_gate_model()
    branch = model.fused_branch
    with torch.no_grad():
        out = model(inputs)
        v, a = to_layer3(model.encoders["clip"], inputs["clip"]), \
            to_layer3(model.encoders["sound"], inputs["sound"])
        h = branch.fc(torch.flatten(branch.pool(branch.layer4(branch.gate(v, a))), 1))
        want_mm = h @ model.head.weight.T + model.head.bias
        want_uni = {m: model.heads[m](model.encoders[m](inputs[m])) for m in ("clip", "sound")}
    assert h.shape == (3, 512) and model.fused_dim == 512 and model.feature_dims == [512, 512]
    torch.testing.assert_close(out.logits_mm, want_mm)
    for m, logits in want_uni.items():
        torch.testing.assert_close(out.logits_uni[m], logits)


@pytest.mark.parametrize("video_first", [True, False])
def test_coalitions_zero_the_absent_layer3_maps(video_first):
    model, inputs = nl_gate_model(video_first=video_first)
    branch = model.fused_branch
    with torch.no_grad():
        encoded = model.encode(inputs)
        coal = model.coalition_logits(encoded)
        v, a = to_layer3(model.encoders["clip"], inputs["clip"]), \
            to_layer3(model.encoders["sound"], inputs["sound"])
        for mask in range(4):
            keep = dict(zip(model.modalities, (bool(mask & 1), bool(mask & 2)), strict=True))
            h = branch.fc(torch.flatten(branch.pool(branch.layer4(branch.gate(
                v * keep["clip"], a * keep["sound"]))), 1))
            torch.testing.assert_close(coal[:, mask], model.head(h))
    assert not torch.allclose(coal[:, 1], coal[:, 2])  # the two single-modality coalitions differ


def test_the_fused_branch_is_initialised_as_in_the_papers_code():
    model, _ = nl_gate_model()
    branch = model.fused_branch
    mine = dict(branch.layer4.named_parameters())
    video = dict(model.encoders["clip"].layer4.named_parameters())
    assert mine.keys() == video.keys()  # the same architecture, its own random weights
    assert not any(torch.equal(mine[k], video[k]) for k in video if k.endswith("0.weight"))
    assert branch.fc.weight.shape == (512, 512) and torch.count_nonzero(branch.fc.bias) == 0
    assert 0.005 < float(branch.fc.weight.detach().std()) < 0.015  # N(0, 0.01²)


def test_frozen_encoders_keep_still_while_the_gate_branch_and_heads_train():
    model, inputs = nl_gate_model(freeze=True)
    groups = model.param_groups(lr=1e-2, encoder_lr=1e-3, weight_decay=0.0)
    assert len(groups) == 1  # nothing of the encoders trains
    trainable = {id(p) for p in groups[0]["params"]}
    assert all(id(p) in trainable for p in model.fused_branch.parameters())
    assert not any(id(p) in trainable for p in model.encoders.parameters())
    before = {k: v.clone() for k, v in model.encoders.state_dict().items()}
    gate_before = model.fused_branch.gate.theta.weight.clone()
    opt = torch.optim.SGD(groups)
    model.train()
    out = model(inputs)
    (out.logits_mm.sum() + sum(v.sum() for v in out.logits_uni.values())).backward()
    opt.step()
    after = model.encoders.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(gate_before, model.fused_branch.gate.theta.weight)
    assert not any(model.encoders[m].training for m in ("clip", "sound"))
    assert model.fused_branch.training


def test_dropout_acts_on_the_fused_feature_only():
    model, inputs = nl_gate_model(dropout=0.5)
    with torch.no_grad():
        h = model.head_input(model.encode(inputs))
        draws = model.mc_dropout_logits(h, 3, torch.Generator().manual_seed(0))
        model.train()
        model.fused_branch.eval()
        for enc in model.encoders.values():
            enc.eval()
        out = model(inputs)  # only the dropout layer in training mode
        model.eval()
        clean = model(inputs)
    assert draws.shape == (3, 3, 3)
    assert not torch.allclose(out.logits_mm, clean.logits_mm)
    for m in model.modalities:
        torch.testing.assert_close(out.logits_uni[m], clean.logits_uni[m])
