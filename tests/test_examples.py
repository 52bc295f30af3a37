"""Every examples/*.toml inits a workspace and trains one batch, on tiny data of its layout.

Each example keeps what makes it that example (dataset kind, encoders, fusion,
optimizer, learning rates, schedule, weight decay, dropout); the test shrinks
only what sets the cost: the data (tiny generated data of the same layout,
tests/fixtures_data.py), input sizes, pretrained weights (a tiny random BERT,
random initialisation elsewhere), epochs, batch and budgets.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch

from mmal.config import load_config
from mmal.train import train_round
from mmal.workspace import init_workspace
from tests.fixtures_data import MODALITY_TABLES, make_tiny_dataset, write_toml
from tests.models.tiny import tiny_bert

torch.set_num_threads(1)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DOCS = Path(__file__).resolve().parent.parent / "docs"
#: Dataset kind -> the tiny layout of tests/fixtures_data.py.
LAYOUTS = {"food101": "food101", "kinetics-sound": "kinetics-sound", "vggsound": "vggsound",
           "uci-mfeat": "uci"}
#: The size keys of each modality kind, as the tiny data has them.
SIZES = {kind: {k: v for k, v in table.items() if k not in ("kind", "encoder", "dim")}
         for kind, table in MODALITY_TABLES.items()}


def _examples() -> list[Path]:
    return sorted(EXAMPLES.glob("*.toml"))


def _tiny_config(example: Path, tmp_path: Path) -> Path:
    """``example`` with its data, sizes, weights and costs made tiny; the path of the copy."""
    raw = tomllib.loads(example.read_text(encoding="utf-8"))
    kind = raw["dataset"]["kind"]
    tiny = tomllib.loads(make_tiny_dataset(tmp_path, LAYOUTS[kind], n_train=9, n_test=3)
                         .read_text(encoding="utf-8"))
    tables = {"dataset": {**raw["dataset"], **tiny["dataset"]}}
    for name, table in raw["modalities"].items():
        table = {**table, **SIZES[table["kind"]]}  # the example's encoder, the tiny data's sizes
        if table["kind"] == "text":
            table["pretrained"] = str(tiny_bert(tmp_path / "tiny-bert"))
        elif "pretrained" in table:
            table["pretrained"] = ""
        tables[f"modalities.{name}"] = table
    tables["model"] = raw.get("model", {})
    # one batch: every labeled sample in one step of one epoch
    tables["train"] = {**raw.get("train", {}), "epochs": 1, "batch_size": 4, "num_workers": 0}
    tables["al"] = {**raw.get("al", {}), "initial_budget": 4, "budget": 2}
    return write_toml(tmp_path / example.name, tables)


@pytest.mark.parametrize("example", _examples(), ids=lambda p: p.stem)
def test_example_inits_and_trains_one_batch(example, tmp_path):
    config = _tiny_config(example, tmp_path)
    ws = init_workspace(tmp_path / "ws", config)
    metrics = train_round(ws, 0, device="cpu", progress=False)
    assert metrics["num_labeled"] == 4 and len(metrics["train_loss"]) == 1
    assert set(metrics["test"]["top1"]) == {"mm", *load_config(config).modality_names}


def test_every_example_has_a_tiny_layout():
    """A new example of another dataset kind needs a tiny layout here, or it goes untested."""
    kinds = {p.name: tomllib.loads(p.read_text(encoding="utf-8"))["dataset"]["kind"]
             for p in _examples()}
    assert len(kinds) >= 7 and not {n: k for n, k in kinds.items() if k not in LAYOUTS}


def test_every_example_is_listed_in_the_reproduction_page():
    page = (DOCS / "reproducing.md").read_text(encoding="utf-8")
    missing = [p.name for p in _examples() if f"examples/{p.name}" not in page]
    assert not missing, f"docs/reproducing.md does not list {missing}"
