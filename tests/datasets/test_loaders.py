"""Per-modality loaders: known answers, deterministic augmentation, bad files, collate."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch
from PIL import Image

from mmal import seeds
from mmal.config import load_config
from mmal.data import MultimodalDataset, collate, load_pool
from mmal.data import loaders as L
from mmal.errors import DataError
from tests.fixtures_data import make_tiny_dataset, write_wav


def test_solid_image_normalizes_to_known_values(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (50, 40), (255, 128, 0)).save(path)
    x = L.load_image(path, 24, None, sample="s")
    expected = [(c / 255 - m) / s for c, m, s in zip((255, 128, 0), L.IMAGENET_MEAN, L.IMAGENET_STD,
                                                     strict=True)]
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32
    assert torch.allclose(x.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-5)


def test_grayscale_image_becomes_rgb(tmp_path):
    path = tmp_path / "g.jpg"
    Image.new("L", (30, 30), 90).save(path)
    assert L.load_image(path, 16, np.random.default_rng(0), sample="s").shape == (3, 16, 16)


@pytest.mark.parametrize("seed", range(20))
def test_crop_params_stay_inside_the_image(seed):
    rng = np.random.default_rng(seed)
    width, height = int(rng.integers(5, 300)), int(rng.integers(5, 300))
    top, left, h, w, flip = L.crop_params(width, height, rng)
    assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h > 0 and w > 0
    assert isinstance(flip, bool)


def test_flip_is_a_mirror(tmp_path):
    path = tmp_path / "ramp.png"
    ramp = np.tile(np.arange(32, dtype=np.uint8)[None, :, None] * 8, (32, 1, 3))
    Image.fromarray(ramp).save(path)
    img = L.read_image(path, sample="s")
    plain = L.image_tensor(img, 32, (0, 0, 32, 32, False))
    flipped = L.image_tensor(img, 32, (0, 0, 32, 32, True))
    assert torch.allclose(flipped, plain.flip(-1))


@pytest.mark.parametrize("width", [1, 2, 4])
def test_wav_reads_back_what_was_written(tmp_path, width):
    path = write_wav(tmp_path / "a.wav", 1, np.random.default_rng(0), seconds=0.1, rate=8000,
                     channels=2, width=width)
    signal = L.read_wav(path, 8000, sample="s")
    t = np.arange(800) / 8000
    clean = 0.5 * np.sin(2 * np.pi * 550 * t)
    assert signal.shape == (800,) and signal.dtype == np.float32
    assert np.abs(signal - clean).max() < 0.25  # noise 0.05 sd plus quantization
    assert np.corrcoef(signal, clean)[0, 1] > 0.95


def test_wav_resamples_to_the_configured_rate(tmp_path):
    path = write_wav(tmp_path / "a.wav", 0, np.random.default_rng(0), seconds=0.5, rate=8000)
    assert L.read_wav(path, 16000, sample="s").shape == (8000,)
    assert L.read_wav(path, 4000, sample="s").shape == (2000,)


def test_crop_audio_random_centred_and_padded():
    signal = np.arange(10, dtype=np.float32)
    assert L.crop_audio(signal, 4, None).tolist() == [3, 4, 5, 6]
    padded = L.crop_audio(signal, 14, None)
    assert padded.tolist() == [0, 0] + list(range(10)) + [0, 0]
    starts = {L.crop_audio(signal, 4, np.random.default_rng(s))[0] for s in range(50)}
    assert starts == set(range(7))


def test_spectrogram_matches_a_direct_dft():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=2000).astype(np.float32)
    spec = L.spectrogram(signal)
    frames = 1 + 2000 // 159
    assert spec.shape == (1, 257, frames)
    padded = np.pad(signal.astype(np.float64), 256, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512)
    for t in (0, 5, frames - 1):
        segment = padded[t * 159:t * 159 + 512] * window
        expected = np.log(np.abs(np.fft.rfft(segment)) + 1e-7)
        assert np.allclose(spec[0, :, t].numpy(), expected, atol=1e-3)


def test_frame_indices():
    assert L.frame_indices(10, 5, None).tolist() == [0, 2, 4, 7, 9]
    assert L.frame_indices(10, 1, None).tolist() == [0]
    drawn = L.frame_indices(10, 5, np.random.default_rng(0))
    assert len(set(drawn.tolist())) == 5 and drawn.tolist() == sorted(drawn.tolist())
    assert len(L.frame_indices(3, 5, np.random.default_rng(0))) == 5  # repeats when too few


@pytest.mark.parametrize("content,reader,message", [
    (b"\xff\xfe\x00bad", lambda p: L.load_text(p, sample="7"),
     "sample 7: cannot read text {p} ('utf-8' codec can't decode byte 0xff in position 0: "
     "invalid start byte); save it as UTF-8"),
    (b"plain text", lambda p: L.load_vector(p, sample="7"),
     "sample 7: cannot read vector {p} (not a .npy file); save it with numpy.save"),
    (b"\x93NUMPY\x01\x00garbage", lambda p: L.load_vector(p, sample="7"),
     "sample 7: cannot read vector {p} (EOF: reading array header, expected 24935 bytes got 5); "
     "save it with numpy.save"),
    (b"", lambda p: L.load_image(p, 16, None, sample="7"),
     "sample 7: cannot read image {p} (not a known image format); replace it with a readable image"),
    (b"RIFF\x00\x00\x00\x00WAVEjunk", lambda p: L.read_wav(p, 8000, sample="7"),
     "sample 7: cannot read wav {p} (not a WAVE file); mmal reads PCM wav "
     "files"),
])
def test_unreadable_files_name_sample_and_file(tmp_path, content, reader, message):
    path = tmp_path / "bad.bin"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        reader(path)
    assert str(info.value) == message.format(p=path)


def test_missing_file_at_load_time(tmp_path):
    with pytest.raises(DataError) as info:
        L.load_image(tmp_path / "gone.jpg", 16, None, sample="3")
    assert str(info.value) == f"sample 3: image file {tmp_path / 'gone.jpg'} does not exist"


def test_empty_wav(tmp_path):
    path = tmp_path / "e.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
    with pytest.raises(DataError, match=r"^sample 1: wav .* holds no audio frames$"):
        L.read_wav(path, 8000, sample="1")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    config = load_config(make_tiny_dataset(tmp_path_factory.mktemp("m"), "manifest"))
    return config, load_pool(config, "train")


def test_every_modality_has_the_contract_shape(manifest):
    config, pool = manifest
    batch = collate([MultimodalDataset(pool, config.modalities, training=True)[i] for i in (0, 1, 2)])
    assert batch["id"].tolist() == [0, 1, 2] and batch["index"].tolist() == [0, 1, 2]
    assert batch["label"].dtype == torch.int64 and batch["label"].tolist() == [0, 1, 2]
    x = batch["inputs"]
    assert isinstance(x["text"], list) and all(isinstance(t, str) and t for t in x["text"])
    assert tuple(x["image"].shape) == (3, 3, 32, 32)
    assert tuple(x["audio"].shape) == (3, 1, 257, 26)
    assert tuple(x["video"].shape) == (3, 3, 2, 32, 32)
    assert tuple(x["vector"].shape) == (3, 6)
    assert all(v.dtype == torch.float32 for k, v in x.items() if k != "text")


def test_augmentation_depends_on_seed_epoch_and_pool_row_only(manifest):
    config, pool = manifest
    full = MultimodalDataset(pool, config.modalities, training=True, seed=5)
    part = full.subset([7, 2])
    assert part.ids.tolist() == [7, 2] and part[0]["index"] == 7
    for name in ("image", "audio", "video"):
        assert torch.equal(part[0]["inputs"][name], full[7]["inputs"][name])
    other_seed = MultimodalDataset(pool, config.modalities, training=True, seed=6)
    assert not torch.equal(other_seed[7]["inputs"]["image"], full[7]["inputs"]["image"])
    full.set_epoch(2)
    assert not torch.equal(part[0]["inputs"]["image"], full[7]["inputs"]["image"])


def test_dataloader_workers_see_the_same_samples(manifest):
    config, pool = manifest
    dataset = MultimodalDataset(pool, config.modalities[:1], training=True, seed=1)
    dataset.set_epoch(3)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=collate, num_workers=2)
    direct = torch.stack([dataset[i]["inputs"]["image"] for i in range(len(dataset))])
    assert torch.equal(torch.cat([b["inputs"]["image"] for b in loader]), direct)


def test_multi_label_sample_is_float_multi_hot(tmp_path):
    config = load_config(make_tiny_dataset(tmp_path, "manifest", multi_label=True,
                                           modalities=["vector"]))
    sample = MultimodalDataset(load_pool(config, "train"), config.modalities, training=False)[1]
    assert sample["label"].dtype == torch.float32 and sample["label"].tolist() == [0, 1, 1]


def test_unknown_modality_is_refused(manifest):
    config, pool = manifest
    other = load_config(make_tiny_dataset(pool.root.parent.parent / "u", "uci"))
    with pytest.raises(DataError, match=r"the train split has no modality 'fac'; it has image"):
        MultimodalDataset(pool, other.modalities, training=False)


def _extensible_wav_24bit(path, signal, rate):
    """A stereo 24-bit PCM wav with the WAVE_FORMAT_EXTENSIBLE header (what ffmpeg writes)."""
    import struct

    frames = np.round(np.clip(signal, -1, 1 - 2**-23) * 2**23).astype(np.int32)
    stereo = np.repeat(frames, 2)
    data = b"".join(int(v).to_bytes(3, "little", signed=True) for v in stereo)
    pcm_guid = bytes.fromhex("0100000000001000800000aa00389b71")
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 2, rate, rate * 6, 6, 24, 22, 24, 0x3) + pcm_guid
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + \
        struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_extensible_24_bit_and_float_wavs_read_like_plain_pcm(tmp_path):
    from scipy.io import wavfile

    t = np.arange(800) / 8000
    clean = (0.5 * np.sin(2 * np.pi * 550 * t)).astype(np.float32)
    ext = L.read_wav(_extensible_wav_24bit(tmp_path / "ext.wav", clean, 8000), 8000, sample="s")
    assert ext.shape == (800,) and ext.dtype == np.float32
    np.testing.assert_allclose(ext, clean, atol=2**-22)
    wavfile.write(tmp_path / "float.wav", 8000, np.stack([clean, clean], axis=1))
    np.testing.assert_allclose(L.read_wav(tmp_path / "float.wav", 16000, sample="s")[::2], clean,
                               atol=1e-6)


def test_decompression_bomb_is_a_data_error_naming_the_sample(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    path = tmp_path / "big.png"
    PILImage.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)  # 4,096 px > 2 x 100: a "bomb"
    with pytest.raises(DataError, match=r"^sample 5: image .*big.png is too large to decode "
                                        r"safely \(.*\); downscale it$"):
        L.read_image(path, sample="5")


# ----------------------------------------------------------------------------- augmentation choice

def _ramp_image(tmp_path):
    """An image whose mirror differs from it everywhere but the middle column."""
    path = tmp_path / "ramp.png"
    ramp = np.tile(np.arange(48, dtype=np.uint8)[None, :, None] * 5, (40, 1, 3))
    Image.fromarray(ramp).save(path)
    return path


def test_image_augmentations_are_the_chosen_ones_from_the_same_stream(tmp_path):
    """Without flip an image is never mirrored; the crop is the one drawn with flip on."""
    path = _ramp_image(tmp_path)
    evaluation = L.load_image(path, 16, None, sample="s")
    flipped = 0
    for seed in range(12):
        def draw(augment, seed=seed):
            return L.load_image(path, 16, np.random.default_rng(seed), sample="s", augment=augment)
        both, crop = draw(("crop", "flip")), draw(("crop",))
        assert torch.equal(both, crop) or torch.equal(both, crop.flip(-1))
        flipped += not torch.equal(both, crop)
        flip = draw(("flip",))
        assert torch.equal(flip, evaluation) or torch.equal(flip, evaluation.flip(-1))
        assert torch.equal(draw(()), evaluation)
    assert 0 < flipped < 12


def test_clip_and_audio_augmentations_are_the_chosen_ones(tmp_path):
    from tests.fixtures_data import write_frames

    folder = write_frames(tmp_path / "clip", 1, np.random.default_rng(0), count=6)
    evaluation = L.load_clip(folder, 3, 16, None, sample="s")
    for seed in range(6):
        rng = np.random.default_rng(seed)
        assert torch.equal(L.load_clip(folder, 3, 16, rng, sample="s", augment=()), evaluation)
        flip = L.load_clip(folder, 3, 16, np.random.default_rng(seed), sample="s",
                           augment=("flip",))
        assert torch.equal(flip, evaluation) or torch.equal(flip, evaluation.flip(-1))
    wav = write_wav(tmp_path / "a.wav", 0, np.random.default_rng(0), seconds=0.8, rate=8000)
    centred = L.load_waveform(wav, 8000, 0.25, None, sample="s")
    assert centred.shape == (1, 2000)
    assert all(torch.equal(L.load_waveform(wav, 8000, 0.25, np.random.default_rng(s), sample="s",
                                           augment=()), centred) for s in range(5))
    assert not all(torch.equal(L.load_waveform(wav, 8000, 0.25, np.random.default_rng(s),
                                               sample="s"), centred) for s in range(5))


def test_the_dataset_applies_each_modalitys_augmentations(manifest):
    config, pool = manifest
    dataset = MultimodalDataset(pool, config.modalities, training=True, seed=3,
                                augment={"image": ("crop",), "audio": ()})
    assert dataset.subset([1]).augment == dataset.augment
    assert dataset.augment["image"] == ("crop",) and dataset.augment["audio"] == ()
    assert dataset.augment["video"] == ("frames", "crop", "flip")  # unnamed: its kind's all
    evaluation = MultimodalDataset(pool, config.modalities, training=False)
    assert torch.equal(dataset[4]["inputs"]["audio"], evaluation[4]["inputs"]["audio"])
    image = pool.records["image"][4]
    want = L.load_image(image, 32, seeds.rng(3, 0, 4), sample="x", augment=("crop",))
    assert torch.equal(dataset[4]["inputs"]["image"], want)
