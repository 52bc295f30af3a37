"""``model_from_checkpoint`` rebuilds the trained model exactly, without reading pretrained files."""

from __future__ import annotations

import pytest
import torch

from mmal.config import config_from_dict
from mmal.models import MultimodalModel, model_from_checkpoint
from tests.models.tiny import nl_gate_config, nl_gate_model, tiny_bert

torch.set_num_threads(1)


def _config(tmp_path, *, text: bool, fusion: str, pretrained_image: str = ""):
    modalities = {"img": {"kind": "image", "encoder": "resnet18", "pretrained": pretrained_image,
                          "freeze": True},
                  "vec": {"kind": "vector", "encoder": "mlp", "dim": 8}}
    if text:
        modalities["txt"] = {"kind": "text", "encoder": "bert",
                             "pretrained": str(tiny_bert(tmp_path / "bert"))}
    return config_from_dict({"dataset": {"kind": "manifest", "root": str(tmp_path),
                                         "classes": ["x", "y", "z"]},
                             "modalities": modalities,
                             "model": {"fusion": fusion, "dropout": 0.1}})


def _checkpoint(model: MultimodalModel) -> dict:
    # What training stores (a copy, so the rebuilt model cannot share the trained one's tensors).
    return {"num_classes": model.num_classes, "input_dims": {"vec": 5},
            "state_dict": {k: v.clone() for k, v in model.state_dict().items()}}


@pytest.mark.parametrize("text,fusion", [(False, "concat"), (False, "sum"), (False, "feature-sum"),
                                         (True, "concat")])
def test_rebuilt_model_equals_the_trained_one(tmp_path, text, fusion):
    config = _config(tmp_path, text=text, fusion=fusion)
    torch.manual_seed(0)
    trained = MultimodalModel(config, 3, {"vec": 5})
    with torch.no_grad():  # move BatchNorm statistics off their defaults
        for buf in trained.buffers():
            if buf.is_floating_point():
                buf.add_(torch.rand_like(buf))
    rebuilt = model_from_checkpoint(_checkpoint(trained), config)

    for (name, a), (_, b) in zip(trained.named_parameters(), rebuilt.named_parameters(),
                                 strict=True):
        assert a.requires_grad == b.requires_grad, name  # frozen image encoder stays frozen
        assert b.device.type == "cpu" and torch.equal(a, b), name
    for (name, a), (_, b) in zip(trained.named_buffers(), rebuilt.named_buffers(), strict=True):
        assert b.device.type == "cpu" and torch.equal(a, b), name
    inputs = {"img": torch.randn(2, 3, 32, 32), "vec": torch.randn(2, 5)}
    if text:
        inputs["txt"] = ["bark bone", "night hoot"]
    with torch.no_grad():
        want, got = trained.eval()(inputs), rebuilt.eval()(inputs)
    torch.testing.assert_close(got.logits_mm, want.logits_mm, rtol=0, atol=0)


def test_rebuild_does_not_need_the_pretrained_weights_file(tmp_path):
    import torchvision

    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    config = _config(tmp_path, text=False, fusion="concat", pretrained_image=str(path))
    trained = MultimodalModel(config, 3, {"vec": 5})
    ckpt = _checkpoint(trained)
    path.unlink()  # the user moved the ImageNet weights after training
    rebuilt = model_from_checkpoint(ckpt, config)
    assert torch.equal(rebuilt.encoders["img"].conv1.weight, trained.encoders["img"].conv1.weight)


def test_text_model_with_local_weights_is_not_randomly_initialised_on_rebuild(tmp_path,
                                                                              monkeypatch):
    import transformers

    config = _config(tmp_path, text=True, fusion="concat")
    folder = config.modalities[2].pretrained
    transformers.AutoModel.from_config(transformers.AutoConfig.from_pretrained(folder)
                                       ).save_pretrained(folder)  # the folder now has weights
    trained = MultimodalModel(config, 3, {"vec": 5})

    def no_random_init(*args, **kwargs):
        raise AssertionError("random initialisation of a model whose weights are on disk")

    monkeypatch.setattr(transformers.AutoModel, "from_config", no_random_init)
    rebuilt = model_from_checkpoint(_checkpoint(trained), config)
    for (name, a), (_, b) in zip(trained.state_dict().items(), rebuilt.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


def test_rebuilt_nl_gate_model_equals_the_trained_one():
    trained, inputs = nl_gate_model(freeze=True)
    ckpt = {"num_classes": 3, "input_dims": {},
            "state_dict": {k: v.clone() for k, v in trained.state_dict().items()}}
    rebuilt = model_from_checkpoint(ckpt, nl_gate_config(freeze=True))
    assert rebuilt.fusion == "nl-gate"
    for (name, a), (_, b) in zip(trained.named_parameters(), rebuilt.named_parameters(),
                                 strict=True):
        assert a.requires_grad == b.requires_grad and torch.equal(a, b), name
    with torch.no_grad():
        want, got = trained(inputs), rebuilt.eval()(inputs)
    torch.testing.assert_close(got.logits_mm, want.logits_mm, rtol=0, atol=0)

