"""A saved Hugging Face dataset through the whole CLI: init, train, extract, select, next, export."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mmal.cache import open_cache
from mmal.cache.consistency import coalition_error
from mmal.cli import cli
from mmal.workspace import read_labeled, round_paths
from tests.fixtures_data import MODALITY_TABLES, write_toml
from tests.fixtures_hf import write_hf_dataset
from tests.models.tiny import tiny_bert

datasets = pytest.importorskip("datasets")

torch.set_num_threads(1)

pytestmark = pytest.mark.usefixtures("offline_hf")


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_image_audio_and_text_columns_run_a_whole_round(tmp_path):
    folder = write_hf_dataset(tmp_path / "pets", n_train=30, n_test=10,
                              columns=("image", "audio", "text"))
    config = write_toml(tmp_path / "mmal.toml", {
        "dataset": {"kind": "hf", "root": str(folder)},
        "modalities.image": MODALITY_TABLES["image"],
        "modalities.sound": {**MODALITY_TABLES["audio"], "column": "audio"},
        "modalities.text": {**MODALITY_TABLES["text"], "pretrained": str(tiny_bert(tmp_path / "bert"))},
        "model": {"fusion": "concat"},
        "train": {"epochs": 1, "batch_size": 8, "num_workers": 0},
        "al": {"initial_budget": 10, "budget": 5, "seed": 0},
    })
    ws = tmp_path / "ws"
    _run("init", str(ws), "--config", str(config))
    _run("train", "--workspace", str(ws), "--device", "cpu", "--quiet")
    _run("extract", "--workspace", str(ws), "--device", "cpu", "--batch-size", "8", "--quiet")
    cache = open_cache(round_paths(ws, 0).cache)
    assert cache.num_samples == 30 and cache.num_labeled == 10
    assert list(cache.meta.modalities) == ["image", "sound", "text"]
    assert coalition_error(cache) < 1e-4
    out = _run("select", "-s", "bmmal", "-b", "5", "--workspace", str(ws), "--device", "cpu")
    selection = out.split("-> ")[1].splitlines()[0].strip()
    _run("next", "--selection", selection, "--workspace", str(ws))
    labeled = read_labeled(ws, 1)
    assert len(labeled) == 15 and set(read_labeled(ws, 0)) < set(labeled)
    _run("export", selection, "--workspace", str(ws))
    with open(selection.replace(".json", ".csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    picked = sorted(int(r["id"]) for r in rows)
    assert picked == sorted(np.setdiff1d(labeled, read_labeled(ws, 0)).tolist())
    assert rows[0]["image"] == f"hf:{folder}#train/{rows[0]['id']}/image"
    assert rows[0]["sound"] == f"hf:{folder}#train/{rows[0]['id']}/audio"
    assert rows[0]["text"] and not rows[0]["text"].startswith("hf:")
