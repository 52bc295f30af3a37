"""Generic manifest pools (CSV and JSON Lines): ids, labels, sources, fingerprints, bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from mmal.config import load_config
from mmal.data import load_pool
from mmal.errors import DataError
from tests.fixtures_data import CLASSES, make_tiny_dataset


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_pool_reads_every_modality(tmp_path, fmt):
    config = load_config(make_tiny_dataset(tmp_path, "manifest", manifest_format=fmt))
    train, test = load_pool(config, "train"), load_pool(config, "test")
    assert train.ids.tolist() == list(range(9)) and test.ids.tolist() == [9, 10, 11]
    assert train.labels.dtype == np.int64 and train.labels.tolist() == [0, 1, 2] * 3
    assert train.class_names == list(CLASSES) and not train.multi_label
    root = config.dataset.root
    assert set(train.records) == {"image", "text", "audio", "video", "vector"}
    assert train.records["image"][1] == root / "files" / "1.png"
    assert train.records["video"][0] == root / "files" / "clip0"
    assert train.rows([4, 0]).tolist() == [4, 0]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_multi_label(tmp_path, fmt):
    config = load_config(make_tiny_dataset(tmp_path, "manifest", manifest_format=fmt,
                                           multi_label=True, modalities=["vector"]))
    pool = load_pool(config, "train")
    assert pool.multi_label and pool.labels.dtype == np.int8 and pool.labels.shape == (9, 3)
    assert pool.labels[0].tolist() == [1, 0, 0]  # "cat"
    assert pool.labels[1].tolist() == [0, 1, 1]  # "dog|owl" or ["dog", "owl"]


def test_json_list_label_in_csv(tmp_path):
    config = load_config(make_tiny_dataset(tmp_path, "manifest", multi_label=True,
                                           modalities=["vector"]))
    path = config.dataset.root / "train.csv"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace(",cat,", ',"[""owl"", ""cat""]",')
    path.write_text("\n".join(lines) + "\n")
    assert load_pool(config, "train").labels[0].tolist() == [1, 0, 1]


def test_string_ids_become_row_numbers(tmp_path):
    config = load_config(make_tiny_dataset(tmp_path, "manifest", modalities=["vector"]))
    path = config.dataset.root / "train.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0]] + [f"s{line}" for line in lines[1:]]) + "\n")
    pool = load_pool(config, "train")
    assert pool.ids.tolist() == list(range(9)) and pool.names[2] == "s2"


def test_fingerprint_tracks_content_not_location(tmp_path):
    config = load_config(make_tiny_dataset(tmp_path / "a", "manifest", modalities=["vector"]))
    first = load_pool(config, "train").fingerprint()
    assert load_pool(config, "train").fingerprint() == first
    assert load_pool(config, "test").fingerprint() != first
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    moved = load_config(tmp_path / "b" / "manifest.toml")
    assert load_pool(moved, "train").fingerprint() == first
    path = moved.dataset.root / "train.csv"
    path.write_text(path.read_text().replace("\n0,cat,", "\n0,dog,"))
    assert load_pool(moved, "train").fingerprint() != first


@pytest.mark.parametrize("value,root,key", [
    ("/d/files/1.png", "/d", "file:files/1.png"),
    ("/d/files/1.png", "/d/", "file:files/1.png"),
    ("/dx/1.png", "/d", "file:/dx/1.png"),  # a sibling folder sharing the prefix is not inside
    ("/x.png", "/", "file:x.png"),
    ("data/1.wav", "data", "file:1.wav"),
    ("/e/1.npy", None, "file:/e/1.npy"),
])
def test_source_keys_are_paths_relative_to_the_dataset_root(value, root, key):
    from pathlib import Path

    from mmal.data.pool import _source_key

    prefix = None if root is None else Path(root).as_posix().rstrip("/") + "/"
    assert _source_key(Path(value), prefix) == key
    if root is not None and Path(value).is_relative_to(root):  # pathlib agrees
        assert key == "file:" + Path(value).relative_to(root).as_posix()
    assert _source_key("a recipe", prefix) == "text:a recipe"


def _edit_line(path, number, old, new):
    lines = path.read_text().splitlines()
    assert old in lines[number], lines[number]
    lines[number] = lines[number].replace(old, new)
    path.write_text("\n".join(lines) + "\n")


BAD = [
    # (line to edit in train.csv, old, new, expected message with {root} for the data folder)
    (3, "files/2.npy", "files/gone.npy",
     "sample 2: vector file {root}/files/gone.npy does not exist (column 'vector' of train.csv); "
     "fix the path or remove the sample"),
    (4, ",cat,", ",zebra,",
     "sample 3: label 'zebra' is not in the class list {root}/classes.txt (train.csv line 5); "
     "fix the label or add the class"),
    (4, ",cat,", ",cat|dog,",
     "sample 3: label 'cat|dog' names 2 classes (train.csv line 5); set dataset.multi_label = "
     "true for multi-label data"),
    (2, "1,dog,", "0,dog,",
     "{root}/train.csv: sample id '0' occurs more than once (train.csv line 2 and train.csv "
     "line 3); ids must be unique"),
    (2, "1,dog,", "00,dog,",
     "{root}/train.csv: sample ids '0' and '00' are the same integer 0; ids must be unique, "
     "write each once"),
    (2, "1,dog,", ",dog,",
     "{root}/train.csv: line 3: field 'id' is empty; fill it in or remove the row"),
    (2, ",files/1.npy", ",",
     "{root}/train.csv: line 3: sample 1: field 'vector' is empty; fill it in or remove the row"),
    (0, "vector", "vec",
     "{root}/train.csv: the header (line 1) has no field 'vector' (names are case-sensitive); "
     "it needs id, label (may be left out or empty here) and 'vector'"),
    (1, "files/0.npy", "files/0.npy,extra", "{root}/train.csv: line 2 has more fields than the header"),
]


@pytest.mark.parametrize("line,old,new,message", BAD, ids=[b[3][:30] for b in BAD])
def test_bad_manifest_gives_one_line(tmp_path, line, old, new, message):
    config = load_config(make_tiny_dataset(tmp_path, "manifest", modalities=["vector"]))
    root = config.dataset.root
    _edit_line(root / "train.csv", line, old, new)
    with pytest.raises(DataError) as info:
        load_pool(config, "train")
    assert str(info.value) == message.format(root=root)


def test_missing_frame_folder_and_manifest_and_class_list(tmp_path):
    config = load_config(make_tiny_dataset(tmp_path, "manifest", modalities=["video"]))
    root = config.dataset.root
    shutil.rmtree(root / "files" / "clip4")
    with pytest.raises(DataError) as info:
        load_pool(config, "train")
    assert str(info.value) == (f"sample 4: video frame folder {root}/files/clip4 does not exist "
                               "(column 'video' of train.csv); fix the path or remove the sample")
    (root / "test.csv").unlink()
    with pytest.raises(DataError, match=r"test.csv: no such manifest file; check dataset.root"):
        load_pool(config, "test")
    (root / "classes.txt").write_text("cat\ndog\ncat\n")
    with pytest.raises(DataError, match=r"classes.txt: class 'cat' is listed twice"):
        load_pool(config, "train")


def test_bad_jsonl_line(tmp_path):
    config = load_config(make_tiny_dataset(tmp_path, "manifest", manifest_format="jsonl",
                                           modalities=["vector"]))
    path = config.dataset.root / "train.jsonl"
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(DataError) as info:
        load_pool(config, "train")
    assert str(info.value).startswith(f"{path}: line 10 is not valid JSON (")


def test_classes_inline_in_config(tmp_path):
    path = make_tiny_dataset(tmp_path, "manifest", modalities=["vector"],
                             overrides={"dataset": {"classes": ["owl", "dog", "cat"]}})
    pool = load_pool(load_config(path), "train")
    assert pool.class_names == ["owl", "dog", "cat"] and pool.labels[:3].tolist() == [2, 1, 0]


def test_manifest_and_class_list_saved_with_a_byte_order_mark_load(tmp_path):
    config = load_config(make_tiny_dataset(tmp_path, "manifest", modalities=["vector"]))
    root = config.dataset.root
    plain = load_pool(config, "train")
    for name in ("train.csv", "classes.txt"):  # what Excel and Notepad write
        (root / name).write_bytes(b"\xef\xbb\xbf" + (root / name).read_bytes())
    bom = load_pool(config, "train")
    assert bom.ids.tolist() == plain.ids.tolist() and bom.class_names == plain.class_names
    assert bom.fingerprint() == plain.fingerprint()


def test_a_train_split_without_a_label_column_is_an_unlabeled_pool(tmp_path):
    config = load_config(make_tiny_dataset(tmp_path, "manifest", modalities=["vector"]))
    root = config.dataset.root
    for split in ("train", "test"):
        lines = (root / f"{split}.csv").read_text().splitlines()
        header = lines[0].split(",")
        at = header.index("label")
        (root / f"{split}.csv").write_text("\n".join(
            ",".join(c for k, c in enumerate(line.split(",")) if k != at) for line in lines) + "\n")
    pool = load_pool(config, "train")
    assert (pool.labels == -1).all() and len(pool) == 9
    with pytest.raises(DataError) as info:  # the test split must say what each sample is
        load_pool(config, "test")
    assert str(info.value) == (f"{root}/test.csv: the header (line 1) has no field 'label' (names "
                               "are case-sensitive); it needs id, label and 'vector'")
