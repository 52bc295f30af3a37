"""KineticsSound / VGGSound layout: <split>.csv, frames/<id>/*.jpg, audio/<id>.wav."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from mmal.config import load_config
from mmal.data import MultimodalDataset, collate, load_pool
from mmal.errors import DataError
from tests.fixtures_data import make_tiny_dataset


@pytest.mark.parametrize("layout", ["kinetics-sound", "vggsound"])
def test_pool_and_samples(tmp_path, layout):
    config = load_config(make_tiny_dataset(tmp_path, layout))
    pool = load_pool(config, "train")
    root = config.dataset.root
    assert pool.names[0] == "clip100" and pool.ids.tolist() == list(range(9))
    assert pool.records["video"][0] == root / "frames" / "clip100"
    assert pool.records["audio"][0] == root / "audio" / "clip100.wav"
    assert load_pool(config, "test").names == ["clip109", "clip110", "clip111"]
    for training in (True, False):
        batch = collate([MultimodalDataset(pool, config.modalities, training=training)[i]
                         for i in range(2)])
        assert tuple(batch["inputs"]["video"].shape) == (2, 3, 2, 32, 32)
        # 0.5 s at 8 kHz = 4000 samples; hop 159 with centring gives 1 + 4000 // 159 frames
        assert tuple(batch["inputs"]["audio"].shape) == (2, 1, 257, 1 + 4000 // 159)


def test_training_draws_differ_by_epoch_and_repeat_by_seed(tmp_path):
    config = load_config(make_tiny_dataset(tmp_path, "kinetics-sound"))
    pool = load_pool(config, "train")
    a = MultimodalDataset(pool, config.modalities, training=True, seed=3)
    b = MultimodalDataset(pool, config.modalities, training=True, seed=3)
    first = a[1]["inputs"]
    assert all(torch.equal(first[k], b[1]["inputs"][k]) for k in first)
    a.set_epoch(1)
    again = a[1]["inputs"]
    assert not torch.equal(first["audio"], again["audio"])
    assert not torch.equal(first["video"], again["video"])
    evaluation = MultimodalDataset(pool, config.modalities, training=False)
    e0, e1 = evaluation[1]["inputs"], evaluation[1]["inputs"]
    assert torch.equal(e0["video"], e1["video"]) and torch.equal(e0["audio"], e1["audio"])


def test_image_modality_reads_one_frame(tmp_path):
    config = load_config(make_tiny_dataset(tmp_path, "vggsound", visual="image"))
    pool = load_pool(config, "train")
    sample = MultimodalDataset(pool, config.modalities, training=True)[0]
    assert tuple(sample["inputs"]["image"].shape) == (3, 32, 32)


def test_missing_wav_and_frames_name_the_clip(tmp_path):
    config = load_config(make_tiny_dataset(tmp_path, "kinetics-sound"))
    root = config.dataset.root
    (root / "audio" / "clip103.wav").unlink()
    with pytest.raises(DataError) as info:
        load_pool(config, "train")
    assert str(info.value) == (f"sample clip103: audio file {root}/audio/clip103.wav does not "
                               "exist (kinetics-sound layout); fix the path or remove the sample")
    shutil.rmtree(root / "frames" / "clip110")
    with pytest.raises(DataError, match=r"^sample clip110: video frame folder .*clip110 does not"):
        load_pool(config, "test")


def test_unreadable_wav_and_empty_frame_folder(tmp_path):
    config = load_config(make_tiny_dataset(tmp_path, "kinetics-sound"))
    pool = load_pool(config, "train")
    dataset = MultimodalDataset(pool, config.modalities, training=False)
    wav = pool.records["audio"][2]
    wav.write_bytes(b"RIFF....garbage")
    with pytest.raises(DataError, match=rf"^sample clip102: cannot read wav {wav} \(.*\); mmal "
                                        "reads PCM wav files$"):
        dataset[2]
    for frame in pool.records["video"][5].iterdir():
        frame.unlink()
    with pytest.raises(DataError, match=r"^sample clip105: frame folder .* holds no .jpg or .png"):
        dataset[5]


def test_classes_derived_from_both_splits_without_class_list(tmp_path):
    config = load_config(make_tiny_dataset(tmp_path, "vggsound"))
    (config.dataset.root / "classes.txt").unlink()
    pool = load_pool(config, "train")
    assert pool.class_names == ["cat", "dog", "owl"]
    assert np.array_equal(pool.labels, np.arange(9) % 3)
