"""size_warnings: image_size and clip_seconds against a few of the pool's files' headers."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from mmal.config import load_config
from mmal.data import load_pool, probe
from tests.datasets.test_loaders import _extensible_wav_24bit
from tests.fixtures_data import make_tiny_dataset, write_wav

# make_tiny_dataset's images are 40 x 30 pixels and its clips 0.8 s long.
SIDE, SECONDS = 40, 0.8


def _manifest(tmp_path, image_size=32, clip_seconds=0.5, n_train=9):
    config = load_config(make_tiny_dataset(
        tmp_path, "manifest", modalities=("image", "audio", "video"), n_train=n_train,
        overrides={"modalities.image": {"image_size": image_size},
                   "modalities.audio": {"clip_seconds": clip_seconds}}))
    return config, load_pool(config, "train")


@pytest.mark.parametrize("image_size,clip_seconds,keys", [
    (32, 0.5, []),
    (2 * SIDE, 1.5 * SECONDS, []),           # at the thresholds: still fine
    (224, 0.5, ["image.image_size"]),        # the defaults on 40-pixel images
    (64, 5.0, ["audio.clip_seconds"]),       # ... and on 0.8-second clips
    (224, 5.0, ["image.image_size", "audio.clip_seconds"]),
])
def test_warns_only_when_far_larger_than_the_files(tmp_path, image_size, clip_seconds, keys):
    config, pool = _manifest(tmp_path, image_size, clip_seconds)
    lines = probe.size_warnings(config, pool)
    assert [line.split("'")[1] for line in lines] == [f"modalities.{k}" for k in keys]


def test_the_line_names_the_key_and_the_measured_size(tmp_path):
    config, pool = _manifest(tmp_path, 224, 5.0)
    image, audio = probe.size_warnings(config, pool)
    assert image.startswith(f"key 'modalities.image.image_size' is 224, {224 / SIDE:.1f}x the "
                            f"median longer side ({SIDE} px) of 9 sampled images of the train "
                            "split: they are upsampled that much")
    assert audio.startswith(f"key 'modalities.audio.clip_seconds' is 5, {5 / SECONDS:.1f}x the "
                            f"median duration ({SECONDS:.2f} s) of 9 sampled clips of the train "
                            f"split: {1 - SECONDS / 5:.0%} of a median clip's window is zero "
                            "padding")


def test_video_frames_are_measured_too(tmp_path):
    config = load_config(make_tiny_dataset(tmp_path / "v", "manifest", modalities=("video",),
                                           overrides={"modalities.video": {"image_size": 128}}))
    (line,) = probe.size_warnings(config, load_pool(config, "train"))
    assert line.startswith("key 'modalities.video.image_size' is 128, 3.6x the median longer "
                           "side (36 px)")


def test_only_a_few_files_are_looked_at(tmp_path, monkeypatch):
    config, pool = _manifest(tmp_path, 224, 5.0, n_train=30)
    seen = []
    real = probe._longer_side
    monkeypatch.setattr(probe, "_longer_side", lambda s: seen.append(s) or real(s))
    assert probe.size_warnings(config, pool, samples=5)
    assert len(seen) == 10 and len(set(seen)) == 10  # 5 images and 5 clips of 30 each


def test_wav_durations_come_from_the_headers_of_every_wav_kind(tmp_path):
    from scipy.io import wavfile

    rng = np.random.default_rng(0)
    pcm = write_wav(tmp_path / "pcm.wav", 0, rng, seconds=0.75, rate=8000, channels=2, width=4)
    ext = _extensible_wav_24bit(tmp_path / "ext.wav", np.zeros(1200, np.float32), 8000)
    wavfile.write(tmp_path / "float.wav", 16000, np.zeros((4000, 2), np.float32))
    assert [probe._seconds(p) for p in (pcm, ext, tmp_path / "float.wav")] == [0.75, 0.15, 0.25]
    (tmp_path / "bad.wav").write_bytes(b"fLaC not a wav")
    assert probe._seconds(tmp_path / "bad.wav") is None
    assert probe._seconds(tmp_path / "gone.wav") is None


def test_init_and_train_warn_once_per_key(tmp_path, caplog):
    from mmal.train import train_round
    from mmal.workspace import init_workspace

    path = make_tiny_dataset(tmp_path, "manifest", modalities=("audio", "vector"),
                             overrides={"modalities.audio": {"clip_seconds": 5.0}})
    with caplog.at_level(logging.WARNING):
        ws = init_workspace(tmp_path / "ws", path)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "key 'modalities.audio.clip_seconds' is 5," in warned[0]
    assert warned[0].startswith(f"{path}: ")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        train_round(ws, 0, device="cpu", progress=False)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "key 'modalities.audio.clip_seconds' is 5," in warned[0]
