"""UPMC Food-101 layout: train.json/test.json with id, img_path, text_tokens, label."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmal.config import load_config
from mmal.data import MultimodalDataset, load_pool
from mmal.errors import DataError
from tests.fixtures_data import CLASSES, make_tiny_dataset


def _entries(config, split="train"):
    path = config.dataset.root / f"{split}.json"
    return path, json.loads(path.read_text())


def test_pool_image_paths_and_joined_text(tmp_path):
    config = load_config(make_tiny_dataset(tmp_path, "food101"))
    pool = load_pool(config, "train")
    assert len(pool) == 9 and pool.ids.tolist() == list(range(9))  # string ids -> row numbers
    assert pool.names[0] == "cat_train_0"
    assert pool.class_names == sorted(CLASSES)  # no class list: sorted labels of both splits
    assert [pool.class_names[k] for k in pool.labels[:3]] == list(CLASSES)
    assert pool.records["image"][0] == config.dataset.root / "images/train/cat/cat_train_0.jpg"
    assert pool.records["text"][0] == "whiskers purr milk recipe bake"
    sample = MultimodalDataset(pool, config.modalities, training=False)[0]
    assert sample["inputs"]["text"] == "whiskers purr milk recipe bake"
    assert tuple(sample["inputs"]["image"].shape) == (3, 32, 32)


def test_integer_labels_index_the_class_list(tmp_path):
    config = load_config(make_tiny_dataset(tmp_path, "food101"))
    (config.dataset.root / "classes.txt").write_text("owl\ncat\ndog\n")
    path, entries = _entries(config)
    for e in entries:
        e["label"] = ["owl", "cat", "dog"].index(e["label"])
    path.write_text(json.dumps(entries))
    pool = load_pool(config, "train")
    assert pool.class_names == ["owl", "cat", "dog"]
    assert pool.labels[:3].tolist() == [1, 2, 0]


def test_json_lines_and_string_tokens(tmp_path):
    config = load_config(make_tiny_dataset(tmp_path, "food101"))
    path, entries = _entries(config)
    entries[0]["text_tokens"] = "a  single string"
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    assert load_pool(config, "train").records["text"][0] == "a  single string"


@pytest.mark.parametrize("edit,message", [
    (lambda e: e[2].update(img_path="images/none.jpg"),
     "sample owl_train_2: image file {root}/images/none.jpg does not exist (img_path in "
     "train.json); fix the path or remove the sample"),
    (lambda e: e[1].update(label="zebra"),
     "sample dog_train_1: label 'zebra' is not in the class list {root}/classes.txt "
     "(train.json entry 1); fix the label or add the class"),
    (lambda e: e[3].pop("text_tokens"),
     "{root}/train.json: entry 3 lacks text_tokens; each entry needs id, img_path, "
     "text_tokens, label"),
])
def test_bad_food101_gives_one_line(tmp_path, edit, message):
    config = load_config(make_tiny_dataset(tmp_path, "food101"))
    root = config.dataset.root
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    path, entries = _entries(config)
    edit(entries)
    path.write_text(json.dumps(entries))
    with pytest.raises(DataError) as info:
        load_pool(config, "train")
    assert str(info.value) == message.format(root=root)


def test_unreadable_image_names_sample_and_file(tmp_path):
    config = load_config(make_tiny_dataset(tmp_path, "food101"))
    pool = load_pool(config, "train")
    pool.records["image"][4].write_bytes(b"not an image")
    dataset = MultimodalDataset(pool, config.modalities, training=True)
    with pytest.raises(DataError) as info:
        dataset[4]
    assert str(info.value) == (f"sample dog_train_4: cannot read image {pool.records['image'][4]} "
                               "(not a known image format); replace it with a readable image")
    assert np.isfinite(dataset[3]["inputs"]["image"].numpy()).all()
