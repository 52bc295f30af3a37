"""The table of dataset kinds: docs list it, config and load_pool read it, mmal.data has no cycle."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import mmal.data
from mmal.config import config_from_dict, dump_config
from mmal.data import Pool, load_pool
from mmal.data.kinds import DATASET_KINDS
from mmal.data.pool import DatasetKind
from mmal.errors import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _kinds_in_config_md() -> list[str]:
    text = (DOCS / "config.md").read_text()
    dataset_section = text.split("## `[dataset]`", 1)[1].split("\n## ", 1)[0]
    row = next(line for line in dataset_section.splitlines() if line.startswith("| `kind` |"))
    meaning = row.split("|")[3].split("(", 1)[0]
    return re.findall(r"`([^`]+)`", meaning)


def test_config_md_lists_exactly_the_registered_kinds_in_order():
    assert _kinds_in_config_md() == list(DATASET_KINDS)


def test_config_error_lists_the_registered_kinds():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"dataset": {"kind": "imagenet"}})
    assert str(info.value).endswith("choose one of " + ", ".join(DATASET_KINDS))


def test_every_kind_has_a_section_in_datasets_md():
    headings = [line for line in (DOCS / "datasets.md").read_text().splitlines()
                if line.startswith("## ")]
    for name in DATASET_KINDS:
        assert any(f"`{name}`" in h for h in headings), name


# ----------------------------------------------------------------------------- a throwaway kind

TOY_ROWS = 6


def _load_toy(config, split):
    """Vectors held in memory: TOY_ROWS rows of width dataset.options["width"] per modality."""
    width = config.dataset.options["width"]
    rows = np.arange(TOY_ROWS, dtype=np.int64) + (0 if split == "train" else TOY_ROWS)
    records = {m.name: np.full((TOY_ROWS, width), k, dtype=np.float32)
               for k, m in enumerate(config.modalities)}
    return Pool(ids=rows, labels=rows % 2, class_names=["even", "odd"], multi_label=False,
                records=records, names=[str(r) for r in rows], split=split, origin="toy")


def _check_width(values):
    if values["width"] < 1:
        return "dataset.width", values["width"], "must be >= 1"
    return None


def _check_two_modalities(dataset, modalities):
    if len(modalities) != 2:
        return "modalities", len(modalities), "a toy dataset has two modalities"
    return None


TOY = DatasetKind("toy", _load_toy, files=("a.bin", "b.bin", ""), needs_root=False,
                  modality_kinds=("vector",), options={"width": 3},
                  check_options=_check_width, check=_check_two_modalities)


@pytest.fixture
def toy_kind(monkeypatch):
    monkeypatch.setitem(DATASET_KINDS, TOY.name, TOY)


def _toy_config(dataset=None, modalities=None):
    mods = {"a": {"kind": "vector", "encoder": "mlp"}, "b": {"kind": "vector", "encoder": "mlp"}}
    return config_from_dict({"dataset": {"kind": "toy", **(dataset or {})},
                             "modalities": mods if modalities is None else modalities})


def test_a_registered_kind_is_read_by_config_and_load_pool(toy_kind):
    config = _toy_config({"width": 4})
    ds = config.dataset
    assert (ds.kind, ds.root, ds.train, ds.test) == ("toy", None, "a.bin", "b.bin")
    assert ds.options == {"width": 4}  # its own keys only
    assert "width = 4" in dump_config(config)
    assert config_from_dict(config.to_dict()).to_dict() == config.to_dict()
    pool = load_pool(config, "test")
    assert pool.ids.tolist() == list(range(TOY_ROWS, 2 * TOY_ROWS))
    assert pool.records["b"].shape == (TOY_ROWS, 4) and mmal.data.vector_dim(pool, "a") == 4
    assert _toy_config().dataset.options["width"] == 3  # the kind's default


@pytest.mark.parametrize("dataset,modalities,message", [
    ({"width": 0}, None, "key 'dataset.width' is 0; must be >= 1"),
    ({"width": 2.5}, None, "key 'dataset.width' is 2.5 (float); expected an integer"),
    ({}, {"a": {"kind": "image", "encoder": "resnet18"}},
     "key 'modalities.a.kind' is 'image'; is not available in a toy dataset; choose one of vector"),
    ({}, {"a": {"kind": "vector", "encoder": "mlp"}},
     "key 'modalities' is 1; a toy dataset has two modalities"),
    ({"widht": 3}, None, "key 'dataset.widht' is unknown; known keys here: kind, root, train, "
     "test, classes, multi_label, views, test_fraction, standardize, hf_name, hf_config, "
     "label_column, id_column, width (see docs/config.md)"),
])
def test_a_registered_kind_checks_its_keys(toy_kind, dataset, modalities, message):
    with pytest.raises(ConfigError) as info:
        _toy_config(dataset, modalities)
    assert str(info.value) == f"<config>: {message}"


def test_kind_declarations_are_consistent():
    for name, kind in DATASET_KINDS.items():
        assert kind.name == name and callable(kind.load) and len(kind.files) == 3
    defaults: dict = {}
    for kind in DATASET_KINDS.values():
        for key, default in kind.options.items():
            assert defaults.setdefault(key, default) == default, f"{key}: two defaults"


