"""Image and audio encoders from local transformers model folders: pooling, inputs, errors.

Every model is a tiny random one written on the fly (tests.models.tiny.tiny_hf);
nothing downloads.
"""

from __future__ import annotations

import json

import pytest
import torch

from mmal.config import config_from_dict
from mmal.data.loaders import IMAGENET_MEAN, IMAGENET_STD
from mmal.errors import ConfigError
from mmal.models.encoders import build_encoder
from mmal.models.kinds import ENCODER_KINDS, starts_pretrained
from tests.fixtures_data import SAMPLE_RATE
from tests.models.tiny import TINY_HF, make_workspace, tiny_hf

KIND = {"vit": "image", "clip-vision": "image", "ast": "audio", "wav2vec2": "audio"}


def _modality(tmp_path, encoder, folder, **options):
    """The one modality of a manifest config whose ``encoder`` loads from ``folder``."""
    kind = {**KIND, "bert": "text"}[encoder]
    defaults = {"image": {"image_size": 32}, "text": {},
                "audio": {"sample_rate": SAMPLE_RATE, "clip_seconds": 0.5}}[kind]
    table = {"kind": kind, "encoder": encoder, "pretrained": str(folder), **defaults, **options}
    config = config_from_dict({"dataset": {"kind": "manifest", "root": str(tmp_path),
                                           "classes": ["x", "y"]}, "modalities": {"m": table}})
    return config.modalities[0]


def _input(encoder, batch=3):
    g = torch.Generator().manual_seed(0)
    if KIND[encoder] == "image":  # ImageNet-normalized images, as the image pipeline gives
        raw = torch.rand(batch, 3, 32, 32, generator=g)
        mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return raw, (raw - mean) / std
    wave = 0.3 * torch.randn(batch, 1, SAMPLE_RATE // 2, generator=g)
    return wave, wave


def _reference(encoder, folder, raw):
    """The documented features, computed with transformers directly."""
    from transformers import (
        ASTFeatureExtractor,
        ASTModel,
        CLIPVisionModel,
        ViTModel,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2Model,
    )

    if encoder == "vit":  # CLS token of the last hidden state; ViT's processor: mean = std = 0.5
        return ViTModel.from_pretrained(folder, add_pooling_layer=False).eval()(
            pixel_values=(raw - 0.5) / 0.5).last_hidden_state[:, 0]
    if encoder == "clip-vision":  # pooled output; CLIP's own image statistics
        mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
        std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
        return CLIPVisionModel.from_pretrained(folder).eval()(
            pixel_values=(raw - mean) / std).pooler_output
    waves = [w.numpy() for w in raw[:, 0]]
    if encoder == "ast":  # pooled output over the folder's fbank features
        fe = ASTFeatureExtractor.from_pretrained(folder)
        feats = fe(waves, sampling_rate=SAMPLE_RATE, return_tensors="pt")["input_values"]
        return ASTModel.from_pretrained(folder).eval()(input_values=feats).pooler_output
    fe = Wav2Vec2FeatureExtractor.from_pretrained(folder)  # mean over time frames
    feats = fe(waves, sampling_rate=SAMPLE_RATE, return_tensors="pt")["input_values"]
    return Wav2Vec2Model.from_pretrained(folder).eval()(input_values=feats).last_hidden_state.mean(1)


@pytest.mark.parametrize("encoder", list(KIND))
def test_features_are_the_documented_pooling_of_the_folders_model(tmp_path, encoder):
    folder = tiny_hf(tmp_path / encoder, encoder)
    modality = _modality(tmp_path, encoder, folder)
    enc = build_encoder(modality).eval()
    raw, given = _input(encoder)
    with torch.no_grad():
        z = enc(given)
        want = _reference(encoder, folder, raw)
    assert enc.out_dim == TINY_HF["hidden_size"] and z.shape == (3, enc.out_dim)
    torch.testing.assert_close(z, want, atol=1e-4, rtol=1e-4)
    assert starts_pretrained(modality)
    assert ENCODER_KINDS[encoder].waveform == (KIND[encoder] == "audio")


@pytest.mark.parametrize("encoder", list(KIND))
def test_a_folder_without_weights_gives_the_architecture_with_random_weights(tmp_path, encoder):
    full = tiny_hf(tmp_path / "full", encoder)
    bare = tiny_hf(tmp_path / "bare", encoder, weights=False)
    assert not (bare / "model.safetensors").exists()
    modality = _modality(tmp_path, encoder, bare)
    torch.manual_seed(1)
    enc = build_encoder(modality)
    loaded = build_encoder(_modality(tmp_path, encoder, full))
    assert enc.out_dim == loaded.out_dim
    assert not all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(),
                                                     loaded.state_dict().values(), strict=True))
    assert not starts_pretrained(modality)


@pytest.mark.parametrize("encoder,table,message", [
    ("vit", {"pretrained": ""}, "key 'modalities.m.pretrained' is ''; the vit encoder reads its "
     "architecture from a local model folder"),
    ("ast", {}, "key 'modalities.m.pretrained' is ''; the ast encoder reads its "
     "architecture from a local model folder"),  # unset: the same line
])
def test_these_encoders_need_a_model_folder(tmp_path, encoder, table, message):
    table = {"kind": KIND[encoder], "encoder": encoder, **table}
    with pytest.raises(ConfigError) as info:
        config_from_dict({"dataset": {"kind": "manifest", "root": str(tmp_path),
                                      "classes": ["x", "y"]}, "modalities": {"m": table}})
    assert str(info.value) == (f"<config>: {message}: point it at a folder holding "
                               "config.json (and weights to start from them)")


@pytest.mark.parametrize("encoder,option,value,message", [
    ("vit", "image_size", 64, "key 'modalities.m.image_size' is 64; the model in {folder} takes "
     "32-pixel images: set it to 32"),
    ("clip-vision", "image_size", 48, "key 'modalities.m.image_size' is 48; the model in {folder} "
     "takes 32-pixel images: set it to 32"),
    ("wav2vec2", "sample_rate", 16000, "key 'modalities.m.sample_rate' is 16000; the model in "
     "{folder} takes audio at 8000 Hz: set it to 8000"),
    ("ast", "sample_rate", 22050, "key 'modalities.m.sample_rate' is 22050; the model in {folder} "
     "takes audio at 8000 Hz: set it to 8000"),
])
def test_an_input_the_model_does_not_take_is_one_line_naming_the_key(tmp_path, encoder, option,
                                                                     value, message):
    folder = tiny_hf(tmp_path / encoder, encoder)
    with pytest.raises(ConfigError) as info:
        build_encoder(_modality(tmp_path, encoder, folder, **{option: value}))
    assert str(info.value) == message.format(folder=folder)


def test_a_damaged_folder_is_one_line_naming_the_key(tmp_path):
    folder = tiny_hf(tmp_path / "vit", "vit")
    (folder / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^key 'modalities.m.pretrained' is '.*vit': cannot "):
        build_encoder(_modality(tmp_path, "vit", folder))


def test_image_statistics_come_from_the_folders_preprocessor_config(tmp_path):
    folder = tiny_hf(tmp_path / "vit", "vit")
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.1, 0.2, 0.3], "image_std": [0.9, 0.8, 0.7]}), encoding="utf-8")
    enc = build_encoder(_modality(tmp_path, "vit", folder)).eval()
    raw, given = _input("vit")
    mean = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.9, 0.8, 0.7]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(enc(given), enc.model(pixel_values=(raw - mean) / std)
                                   .last_hidden_state[:, 0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("image,audio", [("vit", "ast"), ("clip-vision", "wav2vec2")])
def test_a_workspace_trains_and_extracts_with_them(tmp_path, image, audio):
    from mmal.cache import open_cache
    from mmal.extract import extract_round
    from mmal.train import train_round

    overrides = {"modalities.image": {"encoder": image, "image_size": 32,
                                      "pretrained": str(tiny_hf(tmp_path / image, image))},
                 "modalities.audio": {"encoder": audio, "freeze": True,
                                      "pretrained": str(tiny_hf(tmp_path / audio, audio))},
                 "train": {"epochs": 1}}
    ws = make_workspace(tmp_path, "manifest", modalities=("image", "audio"), overrides=overrides)
    metrics = train_round(ws, 0, device="cpu", progress=False)
    assert set(metrics["test"]["top1"]) == {"mm", "image", "audio"}
    extract_round(ws, 0, device="cpu", progress=False)
    with open_cache(ws / "rounds" / "000" / "cache.h5") as cache:
        assert [cache.features(m).shape[1] for m in ("image", "audio")] == [16, 16]


def test_a_whole_clip_or_a_vit_classifier_folder_gives_its_vision_tower(tmp_path):
    """The folders people have: a CLIP model (text + vision), a ViT fine-tuned to classify."""
    from transformers import CLIPConfig, CLIPModel, ViTConfig, ViTForImageClassification

    vision = {"image_size": 32, "patch_size": 8, **TINY_HF}
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config={**TINY_HF, "vocab_size": 50},
                                vision_config=vision, projection_dim=8)).eval()
    clip.save_pretrained(tmp_path / "clip")
    vit = ViTForImageClassification(ViTConfig(**vision, num_labels=3)).eval()
    vit.save_pretrained(tmp_path / "vit")
    _, given = _input("vit")
    for encoder, tower in (("clip-vision", lambda x: clip.vision_model(pixel_values=x).pooler_output),
                           ("vit", lambda x: vit.vit(pixel_values=x).last_hidden_state[:, 0])):
        enc = build_encoder(_modality(tmp_path, encoder, tmp_path / encoder.split("-")[0])).eval()
        with torch.no_grad():
            torch.testing.assert_close(enc(given), tower(given * enc.scale + enc.shift))


def test_a_trained_wav2vec2s_spec_augment_masks_follow_torchs_seed_not_numpys(tmp_path):
    """transformers draws SpecAugment's masks from NumPy's global generator, which mmal never
    seeds: the same seed trained a different model each time."""
    import numpy as np

    folder = tiny_hf(tmp_path / "w2v", "wav2vec2")
    enc = build_encoder(_modality(tmp_path, "wav2vec2", folder)).train()
    assert enc.model.config.apply_spec_augment and enc.model.config.mask_time_prob > 0
    _, wave = _input("wav2vec2")
    outs = []
    for numpy_seed in (1, 2):  # whatever else moved NumPy's global state meanwhile
        np.random.seed(numpy_seed)
        torch.manual_seed(0)
        outs.append(enc(wave))
        after = np.random.get_state()[1].copy()
        np.random.seed(numpy_seed)
        assert np.array_equal(after, np.random.get_state()[1])  # left as it was
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    torch.manual_seed(1)
    assert not torch.equal(enc(wave), outs[0])  # masks (and dropout) still drawn per step


def _in_hf_cache(cache, name, folder):
    """Lay ``folder``'s files out as the Hugging Face cache holds a downloaded model ``name``."""
    repo = cache / ("models--" + name.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)


@pytest.mark.parametrize("encoder,preprocessor", [
    ("wav2vec2", {"do_normalize": False}),  # e.g. HuBERT's checkpoints do not normalize
    ("vit", {"image_mean": [0.1, 0.2, 0.3], "image_std": [0.9, 0.8, 0.7]}),
])
def test_a_model_name_in_the_hf_cache_reads_its_preprocessor_config_too(tmp_path, monkeypatch,
                                                                      encoder, preprocessor):
    """A cached name ignored its preprocessor_config.json: wrong statistics, or a wrong rate."""
    import huggingface_hub.constants

    folder = tiny_hf(tmp_path / "folder", encoder)
    path = folder / "preprocessor_config.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**stored, **preprocessor}), encoding="utf-8")
    _in_hf_cache(tmp_path / "hub", "org/tiny", folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    cached = build_encoder(_modality(tmp_path, encoder, "org/tiny")).eval()
    local = build_encoder(_modality(tmp_path, encoder, folder)).eval()
    _, given = _input(encoder)
    with torch.no_grad():
        torch.testing.assert_close(cached(given), local(given), rtol=0, atol=0)


def test_every_trainable_weight_of_a_trained_wav2vec2_gets_a_gradient_in_every_step(tmp_path):
    """DistributedDataParallel refuses a step in which a trainable weight got no gradient;
    wav2vec2's LayerDrop skipped whole layers at random (config.layerdrop, 0.1 by default)."""
    folder = tiny_hf(tmp_path / "w2v", "wav2vec2")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "layerdrop": 0.9}))
    enc = build_encoder(_modality(tmp_path, "wav2vec2", folder)).train()
    _, wave = _input("wav2vec2")
    for step in range(5):
        torch.manual_seed(step)
        enc.zero_grad(set_to_none=True)
        enc(wave).sum().backward()
        missing = [n for n, p in enc.named_parameters() if p.requires_grad and p.grad is None]
        assert missing == [], f"step {step}"


@pytest.mark.parametrize("encoder", ["vit", "clip-vision", "ast", "bert"])
def test_every_trainable_weight_of_the_other_transformers_encoders_gets_a_gradient(tmp_path,
                                                                                  encoder):
    """BERT-style text models carry a pooler that the mean over tokens never reads."""
    from tests.models.tiny import tiny_bert

    if encoder == "bert":
        modality = config_from_dict({
            "dataset": {"kind": "manifest", "root": str(tmp_path), "classes": ["x", "y"]},
            "modalities": {"m": {"kind": "text", "encoder": "bert",
                                 "pretrained": str(tiny_bert(tmp_path / "bert"))}}}).modalities[0]
        given = ["the recipe", "a bake"]
    else:
        modality = _modality(tmp_path, encoder, tiny_hf(tmp_path / encoder, encoder))
        given = _input(encoder)[1]
    enc = build_encoder(modality).train()
    enc(given).sum().backward()
    assert [n for n, p in enc.named_parameters() if p.requires_grad and p.grad is None] == []
