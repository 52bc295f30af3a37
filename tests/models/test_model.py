"""The multimodal model: coalition logits are W h_S + b, the linear fusions, MC dropout, freezing, encoders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmal.cache.fusion import coalition_present, head_input
from mmal.config import config_from_dict
from mmal.errors import ConfigError
from mmal.models import MultimodalModel
from mmal.models.encoders import build_encoder
from tests.models.tiny import tiny_bert

torch.set_num_threads(1)


def _config(mods: dict, fusion="concat", fused_dim=0, dropout=0.0):
    tables = {name: {"kind": "vector", "encoder": "mlp", **t} for name, t in mods.items()}
    return config_from_dict({"dataset": {"kind": "uci-mfeat", "views": ["fac", "fou", "kar"][:len(mods)]},
                             "modalities": tables,
                             "model": {"fusion": fusion, "fused_dim": fused_dim, "dropout": dropout}})


def _vector_model(dims=(8, 5, 3), fusion="concat", fused_dim=0, dropout=0.0, seed=0):
    names = ["a", "b", "c"][:len(dims)]
    torch.manual_seed(seed)
    config = _config({n: {"dim": d} for n, d in zip(names, dims, strict=True)}, fusion, fused_dim,
                     dropout)
    model = MultimodalModel(config, num_classes=4, input_dims={n: 6 for n in names}).eval()
    inputs = {n: torch.randn(7, 6) for n in names}
    return model, inputs


@pytest.mark.parametrize("fusion,dims,fused_dim", [
    ("concat", (8, 5, 3), 0), ("sum", (8, 5, 3), 0), ("sum", (6, 6), 0),
    ("feature-sum", (8, 5, 3), 0), ("feature-sum", (6, 6), 0), ("feature-sum", (4, 9), 12),
    ("concat", (7,), 0)])
def test_coalition_logits_equal_the_effective_head_of_zeroed_blocks(fusion, dims, fused_dim):
    model, inputs = _vector_model(dims, fusion, fused_dim)
    with torch.no_grad():
        encoded = model.encode(inputs)
        coal = model.coalition_logits(encoded).numpy().astype(np.float64)
        blocks = model.blocks(encoded)
        w, b = (p.numpy().astype(np.float64) for p in model.effective_head())
    z = [blocks[m].numpy().astype(np.float64) for m in model.modalities]
    assert coal.shape == (7, 2 ** len(dims), 4) and w.shape == (4, model.fused_dim)
    assert all(f.shape[1] == d for f, d in zip(z, model.feature_dims, strict=True))
    for mask in range(2 ** len(dims)):
        h = head_input(z, fusion, present=coalition_present(mask, len(dims)), xp=np)
        np.testing.assert_allclose(coal[:, mask], h @ w.T + b, atol=1e-5)
    np.testing.assert_allclose(coal[:, 0], np.broadcast_to(b, (7, 4)), atol=1e-6)


@pytest.mark.parametrize("dims", [(8, 5, 3), (6, 6)])
def test_sum_is_the_mean_of_the_unimodal_heads_logits(dims):
    model, inputs = _vector_model(dims, "sum", dropout=0.3)
    with torch.no_grad():
        out = model(inputs)
    uni = torch.stack([out.logits_uni[m] for m in model.modalities])
    torch.testing.assert_close(out.logits_mm, uni.mean(0))
    # no fused head of its own: the unimodal heads are all there is
    assert model.head is None and not any(k.startswith("head.") for k in model.state_dict())
    assert model.feature_dims == list(dims) and model.fused_dim == sum(dims)
    w, b = model.effective_head()
    torch.testing.assert_close(w[:, :dims[0]], model.heads["a"].weight / len(dims))
    torch.testing.assert_close(b, torch.stack([model.heads[m].bias for m in "abc"[:len(dims)]])
                               .mean(0))


def test_sum_gradients_reach_the_unimodal_heads_through_the_fused_term():
    model, inputs = _vector_model((8, 5), "sum")
    model.train()
    model(inputs).logits_mm.sum().backward()
    assert all(model.heads[m].weight.grad.abs().sum() > 0 for m in ("a", "b"))


def test_feature_sum_projects_only_when_widths_differ():
    model, _ = _vector_model((4, 9), "feature-sum")
    assert model.feature_dims == [9, 9] and model.fused_dim == 9
    assert isinstance(model.project["b"], torch.nn.Identity)
    assert isinstance(model.project["a"], torch.nn.Linear)
    model, _ = _vector_model((4, 9), "feature-sum", fused_dim=5)
    assert model.feature_dims == [5, 5]
    model, _ = _vector_model((4, 9), "concat")
    assert model.feature_dims == [4, 9] and model.fused_dim == 13
    model, _ = _vector_model((4, 9), "sum", fused_dim=5)  # only feature-sum reads fused_dim
    assert model.feature_dims == [4, 9] and model.fused_dim == 13
    assert all(isinstance(p, torch.nn.Identity) for p in model.project.values())


@pytest.mark.parametrize("fusion", ["concat", "sum", "feature-sum"])
def test_forward_in_eval_equals_full_coalition(fusion):
    model, inputs = _vector_model(fusion=fusion, dropout=0.5)
    with torch.no_grad():
        out = model(inputs)
        full = model.coalition_logits(out.encoded)[:, -1]
    torch.testing.assert_close(out.logits_mm, full)
    assert set(out.logits_uni) == {"a", "b", "c"}


@pytest.mark.parametrize("fusion", ["concat", "sum", "feature-sum"])
def test_mc_dropout_is_seeded_and_averages_to_the_eval_logits(fusion):
    model, inputs = _vector_model(fusion=fusion, dropout=0.3)
    with torch.no_grad():
        h = model.head_input(model.encode(inputs))
        draw = [model.mc_dropout_logits(h, 4000, torch.Generator().manual_seed(s))
                for s in (1, 1, 2)]
        eval_logits = model.fused_logits(h)
    assert draw[0].shape == (7, 4000, 4)
    torch.testing.assert_close(draw[0], draw[1])
    assert not torch.equal(draw[0], draw[2])
    assert draw[0].std(dim=1).min() > 0
    # Inverted dropout keeps the expectation of the (linear) head's output.
    spread = draw[0].std(dim=1).max() / np.sqrt(4000)
    assert (draw[0].mean(dim=1) - eval_logits).abs().max() < 6 * spread


def test_frozen_encoder_gets_no_gradient_and_no_batchnorm_update():
    config = config_from_dict({
        "dataset": {"kind": "manifest", "root": ".", "classes": ["x", "y"]},
        "modalities": {"img": {"kind": "image", "encoder": "resnet18", "freeze": True},
                       "vec": {"kind": "vector", "encoder": "mlp", "dim": 4}}})
    torch.manual_seed(0)
    model = MultimodalModel(config, 2, {"vec": 3})
    groups = model.param_groups(lr=1e-2, encoder_lr=1e-3, weight_decay=0.0)
    trainable = {id(p) for g in groups for p in g["params"]}
    assert not any(id(p) in trainable for p in model.encoders["img"].parameters())
    assert any(id(p) in trainable for p in model.encoders["vec"].parameters())
    before = {k: v.clone() for k, v in model.encoders["img"].state_dict().items()}
    opt = torch.optim.AdamW(groups)
    model.train()
    out = model({"img": torch.randn(4, 3, 32, 32), "vec": torch.randn(4, 3)})
    out.logits_mm.sum().backward()
    opt.step()
    after = model.encoders["img"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.encoders["img"].training


@pytest.mark.parametrize("encoder,shape,dim", [
    ("resnet18", (2, 3, 32, 32), 512), ("resnet50", (2, 3, 32, 32), 2048),
    ("resnet101", (2, 3, 32, 32), 2048),
    ("audio-resnet18", (2, 1, 257, 20), 512), ("r2plus1d_18", (2, 3, 2, 32, 32), 512)])
def test_visual_and_audio_encoders_give_their_width(encoder, shape, dim):
    kind = {"audio-resnet18": "audio", "r2plus1d_18": "video"}.get(encoder, "image")
    config = config_from_dict({"dataset": {"kind": "manifest", "root": ".", "classes": ["x", "y"]},
                               "modalities": {"m": {"kind": kind, "encoder": encoder}}})
    enc = build_encoder(config.modalities[0]).eval()
    with torch.no_grad():
        z = enc(torch.randn(*shape))
    assert enc.out_dim == dim and z.shape == (2, dim) and torch.isfinite(z).all()


def test_pretrained_state_dict_is_loaded_and_bad_weights_are_named(tmp_path):
    import torchvision

    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    config = config_from_dict({"dataset": {"kind": "manifest", "root": str(tmp_path),
                                           "classes": ["x", "y"]},
                               "modalities": {"img": {"kind": "image", "encoder": "resnet18",
                                                      "pretrained": str(path)}}})
    enc = build_encoder(config.modalities[0])
    assert torch.equal(enc.conv1.weight, reference.conv1.weight)

    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(ConfigError, match="modalities.img.pretrained.*do not fit"):
        build_encoder(config.modalities[0])
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="modalities.img.pretrained.*cannot read"):
        build_encoder(config.modalities[0])


def test_text_encoder_pools_real_tokens_only(tmp_path):
    bert = tiny_bert(tmp_path / "bert")
    config = config_from_dict({"dataset": {"kind": "manifest", "root": str(tmp_path),
                                           "classes": ["x", "y"]},
                               "modalities": {"t": {"kind": "text", "encoder": "bert",
                                                    "pretrained": str(bert)}}})
    torch.manual_seed(0)
    enc = build_encoder(config.modalities[0]).eval()
    with torch.no_grad():
        alone = enc(["bark bone"])
        padded = enc(["bark bone", "night hoot feather whiskers purr milk the a"])
    assert enc.out_dim == 16 and padded.shape == (2, 16)
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(padded[0], padded[1])


def test_text_encoder_without_a_model_folder_is_a_config_error(tmp_path):
    config = config_from_dict({"dataset": {"kind": "manifest", "root": str(tmp_path),
                                           "classes": ["x", "y"]},
                               "modalities": {"t": {"kind": "text", "encoder": "bert",
                                                    "pretrained": "no-such-model/anywhere"}}})
    with pytest.raises(ConfigError, match="modalities.t.pretrained"):
        build_encoder(config.modalities[0])


def test_bundled_minilm_architecture_is_used_when_pretrained_is_empty(tmp_path):
    config = config_from_dict({"dataset": {"kind": "manifest", "root": str(tmp_path),
                                           "classes": ["x", "y"]},
                               "modalities": {"t": {"kind": "text", "encoder": "bert"}}})
    enc = build_encoder(config.modalities[0])
    assert enc.out_dim == 384
    with torch.no_grad():
        assert enc(["a short recipe"]).shape == (1, 384)


@pytest.mark.parametrize("fusion", ["concat", "sum", "feature-sum"])
def test_xavier_head_init_is_the_papers_and_the_default_stays_pytorchs(fusion):
    from mmal.models.model import XAVIER_HEAD_BIAS

    def heads(head_init):
        torch.manual_seed(0)
        tables = {n: {"kind": "vector", "encoder": "mlp", "dim": d} for n, d in (("a", 8), ("b", 5))}
        config = config_from_dict({"dataset": {"kind": "uci-mfeat", "views": ["fac", "fou"]},
                                   "modalities": tables,
                                   "model": {"fusion": fusion, "head_init": head_init}})
        model = MultimodalModel(config, 5, {"a": 6, "b": 4})
        return [model.heads["a"], model.heads["b"], *([model.head] if model.head else [])]

    for linear in heads("xavier"):
        fan_out, fan_in = linear.weight.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert torch.all(linear.bias == XAVIER_HEAD_BIAS)
        assert float(linear.weight.detach().abs().max()) <= bound
        assert float(linear.weight.detach().abs().max()) > 0.5 * bound  # uniform over the whole range
    for linear in heads("torch"):  # nn.Linear's own: bias uniform in ±1/sqrt(fan_in)
        assert not torch.all(linear.bias == XAVIER_HEAD_BIAS)
