"""The ``hf`` dataset kind: Hugging Face datasets read offline into pools, decoded like files."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from mmal.config import config_from_dict
from mmal.data import MultimodalDataset, load_pool
from mmal.data import hf as hf_kind
from mmal.data.loaders import load_audio, load_image
from mmal.errors import ConfigError, DataError
from tests.fixtures_data import CLASSES, MODALITY_TABLES, SAMPLE_RATE, VECTOR_DIM
from tests.fixtures_hf import hf_split, wav_bytes, write_hf_dataset

datasets = pytest.importorskip("datasets")

torch.set_num_threads(1)

pytestmark = pytest.mark.usefixtures("offline_hf")


def _config(dataset: dict, modalities=("image", "audio", "text", "vector"), **columns):
    """A config of kind hf over ``dataset`` keys; ``columns`` sets a modality's column option."""
    tables = {m: {**MODALITY_TABLES[m], **({"column": columns[m]} if m in columns else {})}
              for m in modalities}
    return config_from_dict({"dataset": {"kind": "hf", **dataset}, "modalities": tables})


@pytest.fixture
def saved(tmp_path):
    """A DatasetDict saved with save_to_disk: 30 train and 10 test rows, every column kind."""
    return write_hf_dataset(tmp_path / "hfdata")


# ----------------------------------------------------------------------------- reading

def test_a_saved_dataset_dict_becomes_two_pools(saved):
    config = _config({"root": str(saved)})
    train, test = load_pool(config, "train"), load_pool(config, "test")
    assert len(train) == 30 and len(test) == 10
    assert train.ids.tolist() == list(range(30)) and train.names[:2] == ["0", "1"]
    assert train.class_names == list(CLASSES) and not train.multi_label
    assert train.labels.tolist() == [i % 3 for i in range(30)]
    assert test.labels.tolist() == [(30 + i) % 3 for i in range(10)]
    assert train.origin == f"{saved}/train"
    image = train.records["image"]
    assert len(image) == 30 and str(image[7]) == f"hf:{saved}#train/7/image"
    assert str(test.records["audio"][2]) == f"hf:{saved}#test/2/audio"
    assert train.records["text"][0].split()[0] in "whiskers purr milk the a".split()
    vectors = train.records["vector"]
    assert vectors.dtype == np.float32 and vectors.shape == (30, VECTOR_DIM)
    assert vectors[2].mean() > vectors[0].mean() + 2  # the class signal survived


def test_images_and_audio_decode_exactly_like_files(saved, tmp_path):
    """A cell's bytes go through the same transforms and spectrogram as the same file on disk."""
    config = _config({"root": str(saved)})
    pool = load_pool(config, "train")
    cells = datasets.load_from_disk(str(saved / "train")).cast_column(
        "image", datasets.Image(decode=False)).cast_column("audio", datasets.Audio(decode=False))
    png, wav = tmp_path / "3.png", tmp_path / "3.wav"
    png.write_bytes(cells[3]["image"]["bytes"])
    wav.write_bytes(cells[3]["audio"]["bytes"])
    def same(load, file, cell, seed):  # both sources with the same random stream (or none)
        def rng():
            return None if seed is None else np.random.default_rng(seed)
        return torch.equal(load(file, rng()), load(cell, rng()))

    image, audio = pool.records["image"][3], pool.records["audio"][3]
    for seed in (None, 5):
        assert same(lambda x, g: load_image(x, 32, g, sample="3"), png, image, seed)
        assert same(lambda x, g: load_audio(x, SAMPLE_RATE, 0.3, g, sample="3"), wav, audio, seed)
    sample = MultimodalDataset(pool, config.modalities, training=True)[3]
    shapes = {k: tuple(v.shape) if hasattr(v, "shape") else v for k, v in sample["inputs"].items()}
    assert shapes["image"] == (3, 32, 32) and shapes["audio"][:2] == (1, 257)
    assert shapes["vector"] == (VECTOR_DIM,) and isinstance(shapes["text"], str)


def test_audio_is_resampled_to_the_modality_rate(saved):
    config = _config({"root": str(saved)}, modalities=("audio",))
    cell = load_pool(config, "train").records["audio"][0]
    from mmal.data.loaders import read_wav

    assert read_wav(cell, SAMPLE_RATE, sample="0").shape == (SAMPLE_RATE // 2,)
    assert read_wav(cell, 2 * SAMPLE_RATE, sample="0").shape == (SAMPLE_RATE,)


def test_the_pool_pickles_small_and_reopens_the_split_lazily(saved):
    config = _config({"root": str(saved)})
    pool = load_pool(config, "train")
    blob = pickle.dumps(pool)
    assert len(blob) < 20_000  # sources, not decoded images or audio
    hf_kind._open.cache_clear()  # as in a fresh worker process
    again = pickle.loads(blob)
    assert hf_kind._open.cache_info().currsize == 0
    assert again.records["image"][4].read_bytes() == pool.records["image"][4].read_bytes()
    assert again.fingerprint() == pool.fingerprint()


def test_dataloader_workers_see_the_same_samples(saved):
    config = _config({"root": str(saved)}, modalities=("image", "audio"))
    data = MultimodalDataset(load_pool(config, "train"), config.modalities, training=False)
    from mmal.data import collate

    loader = torch.utils.data.DataLoader(data, batch_size=10, num_workers=2, collate_fn=collate)
    batches = list(loader)
    for name in ("image", "audio"):
        assert torch.equal(torch.cat([b["inputs"][name] for b in batches]),
                           torch.stack([data[i]["inputs"][name] for i in range(30)]))


def test_the_pool_fingerprint_follows_the_dataset(tmp_path):
    folder = write_hf_dataset(tmp_path / "a", columns=("image",))
    config = _config({"root": str(folder)}, modalities=("image",))
    before = load_pool(config, "train").fingerprint()
    hf_kind._open.cache_clear()
    assert load_pool(config, "train").fingerprint() == before
    import shutil

    shutil.rmtree(folder)
    write_hf_dataset(folder, columns=("image",), seed=7)  # other pixels, same shape
    hf_kind._open.cache_clear()
    assert load_pool(config, "train").fingerprint() != before


# ----------------------------------------------------------------------------- ids and labels

def test_ids_from_an_integer_id_column(tmp_path):
    keys = [100 + 3 * i for i in range(30)]
    folder = write_hf_dataset(tmp_path / "d", columns=("vector",), n_test=4,
                              extra={"key": keys})
    pool = load_pool(_config({"root": str(folder), "id_column": "key"}, ("vector",)), "train")
    assert pool.ids.tolist() == keys and pool.names[1] == "103"


def test_string_ids_are_row_numbers_and_renames_are_caught(tmp_path):
    folder = write_hf_dataset(tmp_path / "d", columns=("vector",), n_train=6, n_test=2,
                              extra={"key": [f"clip{i}" for i in range(6)]})
    config = _config({"root": str(folder), "id_column": "key"}, ("vector",))
    pool = load_pool(config, "train")
    assert pool.ids.tolist() == list(range(6)) and pool.names[:2] == ["clip0", "clip1"]
    recorded = pool.names_fingerprint([2, 3])
    pool.check_names(np.array([2, 3]), recorded, "labeled.json")
    renamed = tmp_path / "e"
    datasets.DatasetDict(
        train=hf_split(6, columns=("vector",), extra={"key": [f"clip{i}" for i in (0, 1, 3, 2, 4, 5)]}),
        test=hf_split(2, columns=("vector",), offset=6, extra={"key": ["t0", "t1"]}),
    ).save_to_disk(str(renamed))
    moved = load_pool(_config({"root": str(renamed), "id_column": "key"}, ("vector",)), "train")
    with pytest.raises(DataError, match=r"no longer name the same samples .*rows were inserted"):
        moved.check_names(np.array([2, 3]), recorded, "labeled.json")


def test_a_duplicate_id_names_both_rows(tmp_path):
    folder = write_hf_dataset(tmp_path / "d", columns=("vector",), n_train=4, n_test=2,
                              extra={"key": ["a", "b", "a", "c"]})
    with pytest.raises(DataError) as info:
        load_pool(_config({"root": str(folder), "id_column": "key"}, ("vector",)), "train")
    assert str(info.value) == (f"{folder}/train: sample id 'a' occurs more than once (row 0 of "
                               f"{folder}/train and row 2 of {folder}/train); ids must be unique")


def test_string_labels_derive_the_sorted_class_list_from_both_splits(tmp_path):
    folder = write_hf_dataset(tmp_path / "d", columns=("text",), labels="string", n_train=6,
                              n_test=3)
    config = _config({"root": str(folder)}, ("text",))
    pool = load_pool(config, "train")
    assert pool.class_names == sorted(CLASSES) and pool.labels.tolist() == [0, 1, 2] * 2
    given = _config({"root": str(folder), "classes": ["owl", "dog", "cat"]}, ("text",))
    assert load_pool(given, "test").labels.tolist() == [2, 1, 0]
    with pytest.raises(DataError, match=r"^sample 1: label 'dog' is not in the class list "
                                        r"dataset.classes of the config \(row 1 of .*/train\)"):
        load_pool(_config({"root": str(folder), "classes": ["cat", "owl"]}, ("text",)), "train")


def test_unknown_labels_are_allowed_in_train_only(tmp_path):
    folder = tmp_path / "d"
    train = datasets.Dataset.from_dict(
        {"vector": [[1.0], [2.0], [3.0], [4.0]], "label": [0, -1, 2, 0]},
        features=datasets.Features({"vector": datasets.List(datasets.Value("float32"), length=1),
                                    "label": datasets.ClassLabel(names=list(CLASSES))}))
    datasets.DatasetDict(train=train, test=train).save_to_disk(str(folder))
    config = _config({"root": str(folder)}, ("vector",))
    assert load_pool(config, "train").labels.tolist() == [0, -1, 2, 0]
    with pytest.raises(DataError) as info:
        load_pool(config, "test")
    assert str(info.value) == (f"sample 1: has no label (row 1 of {folder}/test); the test "
                               "split needs every label")


def test_a_sequence_of_class_labels_is_multi_label(tmp_path):
    folder = write_hf_dataset(tmp_path / "d", columns=("vector",), labels="multi", n_train=4,
                              n_test=2)
    pool = load_pool(_config({"root": str(folder), "multi_label": True}, ("vector",)), "train")
    assert pool.multi_label and pool.labels.dtype == np.int8
    assert pool.labels.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 1, 0]]
    with pytest.raises(DataError) as info:
        load_pool(_config({"root": str(folder)}, ("vector",)), "train")
    assert str(info.value) == (f"{folder}/train: column 'label' holds lists of labels "
                               "(multi-label); set dataset.multi_label = true")


def test_a_list_of_strings_is_multi_label_too(tmp_path):
    folder = tmp_path / "d"
    split = datasets.Dataset.from_dict({"vector": [[1.0], [2.0], [3.0]],
                                        "tags": [["owl"], ["cat", "dog"], []]})
    datasets.DatasetDict(train=split, test=split.select([0, 1])).save_to_disk(str(folder))
    config = _config({"root": str(folder), "multi_label": True, "label_column": "tags"},
                     ("vector",))
    pool = load_pool(config, "train")
    assert pool.class_names == ["cat", "dog", "owl"]
    assert pool.labels.tolist() == [[0, 0, 1], [1, 1, 0], [-1, -1, -1]]


def test_classlabel_names_must_agree_between_splits(tmp_path):
    folder = tmp_path / "d"
    test = hf_split(2, columns=("vector",)).cast_column(
        "label", datasets.ClassLabel(names=["cat", "dog", "emu"]))
    datasets.DatasetDict(train=hf_split(3, columns=("vector",)), test=test).save_to_disk(
        str(folder))
    with pytest.raises(DataError, match=r"ClassLabel names of column 'label' differ from those"):
        load_pool(_config({"root": str(folder)}, ("vector",)), "train")


# ----------------------------------------------------------------------------- columns

@pytest.mark.parametrize("keys,columns,message", [
    ({}, {"image": "picture"}, "has no column 'picture'; its columns are image, audio, text, "
     "vector, label; set modalities.image.column"),
    ({"label_column": "y"}, {}, "has no column 'y'; its columns are image, audio, text, vector, "
     "label; set dataset.label_column"),
    ({"id_column": "key"}, {}, "has no column 'key'; its columns are image, audio, text, "
     "vector, label; set dataset.id_column"),
    ({}, {"text": "image"}, "column 'image' holds Image(mode=None, decode=True); a text modality "
     "reads a string column (set modalities.text.column)"),
    ({}, {"vector": "text"}, "column 'text' holds Value('string'); a vector modality reads a "
     "fixed-length sequence of numbers (set modalities.vector.column)"),
    ({"label_column": "vector"}, {}, "column 'vector' holds List(Value('float32'), length=6), "
     "not class labels; use a ClassLabel or string column (e.g. cast it with "
     "ClassLabel(names=[...]))"),
])
def test_a_bad_column_is_one_line_naming_it(saved, keys, columns, message):
    with pytest.raises(DataError) as info:
        load_pool(_config({"root": str(saved), **keys}, **columns), "train")
    assert str(info.value) == f"{saved}/train: {message}"
    assert "\n" not in str(info.value)


def test_vector_rows_must_share_one_length_and_be_finite(tmp_path):
    folder = tmp_path / "d"
    ragged = datasets.Dataset.from_dict({"vec": [[1.0, 2.0], [3.0], [4.0, 5.0]],
                                         "label": ["cat", "dog", "cat"]})
    datasets.DatasetDict(train=ragged, test=ragged).save_to_disk(str(folder))
    config = _config({"root": str(folder)}, ("vector",), vector="vec")
    with pytest.raises(DataError) as info:
        load_pool(config, "train")
    assert str(info.value) == (f"{folder}/train: row 1: column 'vec' has 1 numbers, but row 0 "
                               "has 2; a vector modality needs the same length in every row")
    nan = datasets.Dataset.from_dict({"vec": [[1.0, 2.0], [3.0, float("nan")]],
                                      "label": ["cat", "dog"]})
    datasets.DatasetDict(train=nan, test=nan).save_to_disk(str(tmp_path / "n"))
    hf_kind._open.cache_clear()
    with pytest.raises(DataError, match=r"/n/train: row 1: column 'vec' holds NaN, Inf"):
        load_pool(_config({"root": str(tmp_path / "n")}, ("vector",), vector="vec"), "train")
    ints = datasets.Dataset.from_dict({"vec": [[1, 2], [3, 4]], "label": ["cat", "dog"]})
    datasets.DatasetDict(train=ints, test=ints).save_to_disk(str(tmp_path / "i"))
    pool = load_pool(_config({"root": str(tmp_path / "i")}, ("vector",), vector="vec"), "train")
    assert pool.records["vector"].tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_audio_that_is_not_wav_is_named(tmp_path):
    folder = tmp_path / "d"
    split = datasets.Dataset.from_dict(
        {"audio": [{"bytes": b"fLaC" + bytes(40), "path": None}], "label": ["cat"]}).cast_column(
        "audio", datasets.Audio())
    datasets.DatasetDict(train=split, test=split).save_to_disk(str(folder))
    cell = load_pool(_config({"root": str(folder)}, ("audio",)), "train").records["audio"][0]
    with pytest.raises(DataError) as info:
        load_audio(cell, SAMPLE_RATE, 0.5, None, sample="0")
    assert str(info.value) == (f"sample 0: hf:{folder}#train/0/audio is FLAC audio; mmal "
                               "decodes WAV (PCM or float) only, so convert the audio to WAV")


def test_a_cell_naming_a_missing_file_is_caught_when_the_pool_loads(tmp_path):
    (tmp_path / "ok.wav").write_bytes(wav_bytes(0, np.random.default_rng(0)))
    split = datasets.Dataset.from_dict(
        {"audio": [{"bytes": None, "path": str(tmp_path / "ok.wav")},
                   {"bytes": None, "path": str(tmp_path / "gone.wav")}],
         "label": ["cat", "dog"]}).cast_column("audio", datasets.Audio())
    files = tmp_path / "files"
    files.mkdir()
    # Written with pyarrow: datasets' own writers would embed the files (and fail on the gone one).
    pq.write_table(split.with_format("arrow")[:], str(files / "train.parquet"))
    config = _config({"root": str(files), "train": "train.parquet", "test": ""}, ("audio",))
    with pytest.raises(DataError) as info:
        load_pool(config, "train")
    assert str(info.value).endswith(f"row 1: column 'audio' names the file {tmp_path}/gone.wav, "
                                    "which does not exist; fix the path or drop the row")


# ----------------------------------------------------------------------------- other sources

def test_parquet_files_read_like_the_saved_folder(saved, tmp_path):
    files = tmp_path / "pq"
    files.mkdir()
    for split in ("train", "test"):
        datasets.load_from_disk(str(saved / split)).to_parquet(str(files / f"{split}-0.parquet"))
    config = _config({"root": str(files), "train": "train-*.parquet", "test": "test-0.parquet"})
    pool, ref = load_pool(config, "train"), load_pool(_config({"root": str(saved)}), "train")
    assert pool.origin == f"{files}/train-*.parquet"
    assert pool.labels.tolist() == ref.labels.tolist() and pool.class_names == ref.class_names
    assert pool.records["text"] == ref.records["text"]
    assert np.array_equal(pool.records["vector"], ref.records["vector"])
    assert pool.records["image"][5].read_bytes() == ref.records["image"][5].read_bytes()
    assert str(pool.records["audio"][5]) == f"hf:{files}#train-*.parquet/5/audio"
    assert len(load_pool(config, "test")) == 10


def test_arrow_files_are_read_in_place(saved):
    config = _config({"root": str(saved), "train": "train/data-*.arrow",
                      "test": "test/data-00000-of-00001.arrow"}, ("image", "text"))
    pool = load_pool(config, "train")
    assert len(pool) == 30 and pool.labels.tolist() == [i % 3 for i in range(30)]
    assert pool.records["image"][0].read_bytes()[:4] == b"\x89PNG"


def test_a_dataset_in_the_local_cache_is_read_by_name(saved, tmp_path):
    # Fill the cache the way a first load_dataset with network would: from data files once.
    repo = tmp_path / "tinybirds" / "data"
    repo.mkdir(parents=True)
    for split in ("train", "test"):
        datasets.load_from_disk(str(saved / split)).to_parquet(str(repo / f"{split}-0.parquet"))
    datasets.load_dataset(str(repo.parent), split="train")
    import shutil

    shutil.rmtree(repo.parent)  # only the cache holds it now
    config = _config({"hf_name": "tinybirds"}, ("image", "vector"))
    pool = load_pool(config, "train")
    assert len(pool) == 30 and pool.class_names == list(CLASSES)
    assert pool.origin == "Hugging Face dataset 'tinybirds', split 'train'"
    assert str(pool.records["image"][2]) == "hf:tinybirds#train/2/image"
    assert pool.records["image"][2].read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(DataError) as info:
        load_pool(_config({"hf_name": "someone/absent"}, ("vector",)), "train")
    assert str(info.value).startswith("Hugging Face dataset 'someone/absent', split 'train': is "
                                      "not in the local Hugging Face datasets cache (")
    assert str(info.value).endswith(") and mmal never downloads; load it once where the Hub is "
                                    "reachable, or save it with save_to_disk and set dataset.root")


def test_one_saved_dataset_holds_out_a_stratified_test_split(tmp_path):
    folder = tmp_path / "one"
    hf_split(30, columns=("vector",)).save_to_disk(str(folder))
    config = _config({"root": str(folder), "train": ".", "test": "", "test_fraction": 0.2},
                     ("vector",))
    train, test = load_pool(config, "train"), load_pool(config, "test")
    assert len(train) == 24 and len(test) == 6
    assert not set(train.ids.tolist()) & set(test.ids.tolist())
    assert sorted(train.ids.tolist() + test.ids.tolist()) == list(range(30))
    assert np.bincount(test.labels, minlength=3).tolist() == [2, 2, 2]
    assert test.records["vector"].shape == (6, VECTOR_DIM)
    assert load_pool(config, "test").ids.tolist() == test.ids.tolist()  # seed al.seed: repeatable
    with pytest.raises(DataError) as info:
        load_pool(_config({"root": str(folder)}, ("vector",)), "train")
    assert str(info.value) == (f"{folder}/train: dataset.train = 'train' is neither a folder "
                               "written by save_to_disk nor .parquet/.arrow files; "
                               f"{folder} holds one Dataset: set dataset.train = \".\" and "
                               "dataset.test = \"\" to hold out dataset.test_fraction of it")


def test_a_missing_split_lists_the_splits_there(saved):
    with pytest.raises(DataError) as info:
        load_pool(_config({"root": str(saved), "test": "validation"}), "test")
    assert str(info.value) == (f"{saved}/validation: dataset.test = 'validation' is neither a "
                               "folder written by save_to_disk nor .parquet/.arrow files; "
                               f"{saved} holds the splits test, train")


# ----------------------------------------------------------------------------- config and imports

@pytest.mark.parametrize("dataset,message", [
    ({}, "key 'dataset.hf_name' is ''; set dataset.root to the folder holding the data "
     "(save_to_disk output, Parquet or Arrow files) or dataset.hf_name to a dataset in the "
     "local Hugging Face cache"),
    ({"root": ".", "hf_name": "x"}, "key 'dataset.hf_name' is 'x'; set either dataset.root "
     "(data on disk) or dataset.hf_name (a dataset in the Hugging Face cache), not both"),
    ({"root": ".", "hf_config": "c"}, "key 'dataset.hf_config' is 'c'; applies only with "
     "dataset.hf_name"),
    ({"root": ".", "id_column": "label"}, "key 'dataset.id_column' is 'label'; is also "
     "dataset.label_column; ids and labels need their own columns"),
    ({"root": ".", "label_column": ""}, "key 'dataset.label_column' is ''; name the column "
     "holding the labels"),
])
def test_config_checks_where_the_data_comes_from(dataset, message):
    with pytest.raises(ConfigError) as info:
        _config(dataset, ("vector",))
    assert str(info.value) == f"<config>: {message}"


def test_video_is_not_a_modality_of_hf_datasets():
    with pytest.raises(ConfigError, match="is not available in a hf dataset; choose one of "
                                          "image, audio, text, vector"):
        _config({"hf_name": "x"}, ("video",))


def test_without_the_datasets_package_the_error_says_what_to_install(saved, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets raises ImportError
    with pytest.raises(DataError) as info:
        load_pool(_config({"root": str(saved)}, ("vector",)), "train")
    assert str(info.value) == ("`dataset.kind = \"hf\"` needs the datasets package: "
                               "pip install 'mmal[hf]'")
