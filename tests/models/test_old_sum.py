"""A model.pt from before checkpoint version 2 with fusion "sum" means the feature sum.

Version 2 gave "sum" the paper's meaning (mean of the unimodal heads' logits);
an old "sum" checkpoint loads as "feature-sum", and a config that says "sum"
for it gets one line with the fix, in extract and in train (earlier rounds).
"""

from __future__ import annotations

import re

import pytest
import torch

from mmal.config import config_from_dict, dump_config
from mmal.errors import WorkspaceError
from mmal.models import MultimodalModel, model_from_checkpoint
from mmal.models.checkpoint import check_same_architecture, checkpoint_header, load_checkpoint
from mmal.stamp import MODEL, stamp

torch.set_num_threads(1)

FIX = re.escape('set fusion = "feature-sum" in [model] of ')


def _config(fusion: str):
    return config_from_dict({"dataset": {"kind": "uci-mfeat", "views": ["fac", "fou"]},
                             "modalities": {"a": {"kind": "vector", "encoder": "mlp", "dim": 4},
                                            "b": {"kind": "vector", "encoder": "mlp", "dim": 9}},
                             "model": {"fusion": fusion}})


def _old_sum_checkpoint(path, header: dict) -> MultimodalModel:
    """Write what mmal wrote before version 2 for a feature-sum model (config says "sum")."""
    torch.manual_seed(0)
    model = MultimodalModel(_config("feature-sum"), 3, {"a": 6, "b": 5}).eval()
    old_config = _config("feature-sum").to_dict(logging=False)
    old_config["model"]["fusion"] = "sum"
    torch.save({**header, "config": old_config, "num_classes": 3, "input_dims": {"a": 6, "b": 5},
                "state_dict": model.state_dict()}, path)
    return model


@pytest.mark.parametrize("header", [{"format": "mmal-model", "version": 1}, stamp(MODEL, 1)],
                         ids=["before-the-stamp", "stamped-v1"])
def test_an_old_sum_checkpoint_loads_as_the_feature_sum_it_was(tmp_path, header):
    trained = _old_sum_checkpoint(tmp_path / "model.pt", header)
    ckpt = load_checkpoint(tmp_path / "model.pt")
    assert ckpt["config"]["model"]["fusion"] == "feature-sum"
    config = config_from_dict(ckpt["config"])
    check_same_architecture(ckpt, config, tmp_path / "model.pt")  # the upgraded config fits
    rebuilt = model_from_checkpoint(ckpt, config).eval()
    x = {"a": torch.randn(2, 6), "b": torch.randn(2, 5)}
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x).logits_mm, trained(x).logits_mm, rtol=0, atol=0)


def test_a_config_saying_sum_for_an_old_sum_checkpoint_gets_the_fix(tmp_path):
    _old_sum_checkpoint(tmp_path / "model.pt", stamp(MODEL, 1))
    ckpt = load_checkpoint(tmp_path / "model.pt")
    with pytest.raises(WorkspaceError, match=f"^{tmp_path}/model.pt: was trained with the feature "
                                             f"sum .*; {FIX}mmal.toml .*retrain") as err:
        check_same_architecture(ckpt, _config("sum"), tmp_path / "model.pt")
    assert "\n" not in str(err.value)


def test_a_version_2_sum_checkpoint_keeps_its_meaning(tmp_path):
    torch.manual_seed(0)
    model = MultimodalModel(_config("sum"), 3, {"a": 6, "b": 5})
    torch.save({**checkpoint_header(), "config": _config("sum").to_dict(logging=False),
                "state_dict": model.state_dict()}, tmp_path / "model.pt")
    ckpt = load_checkpoint(tmp_path / "model.pt")
    assert ckpt["config"]["model"]["fusion"] == "sum"
    check_same_architecture(ckpt, _config("sum"), tmp_path / "model.pt")


def test_a_workspace_trained_with_the_old_sum_refuses_sum_in_extract_and_train(tmp_path):
    from mmal.extract import extract_round
    from mmal.select import select
    from mmal.train import train_round
    from mmal.workspace import next_round, open_round, round_paths
    from tests.models.tiny import TINY_UCI, make_workspace

    ws = make_workspace(tmp_path, "uci", overrides={**TINY_UCI, "model": {"fusion": "feature-sum"}})
    r0 = open_round(ws, 0)
    train_round(r0, progress=False, device="cpu")
    extract_round(r0, progress=False, device="cpu")
    next_round(ws, select(r0.paths.cache, "random", 5, seed=0).path)
    # What mmal wrote before version 2: the same model, its fusion called "sum" ...
    model_pt = round_paths(ws, 0).model
    ckpt = torch.load(model_pt, weights_only=True)
    ckpt.update(stamp(MODEL, 1), config={**ckpt["config"],
                                         "model": {**ckpt["config"]["model"], "fusion": "sum"}})
    torch.save(ckpt, model_pt)
    # ... in a workspace whose mmal.toml says "sum" too.
    toml = ws / "mmal.toml"
    toml.write_text(dump_config(_with_fusion(r0.config, "sum")))
    with pytest.raises(WorkspaceError, match=f"^{model_pt}: was trained with the feature sum .*"
                                             f"{FIX}{re.escape(str(toml))}"):
        extract_round(ws, 0, progress=False, device="cpu", force=True)
    with pytest.raises(WorkspaceError, match=f"^{model_pt}: was trained with the feature sum .*"
                                             f"{FIX}{re.escape(str(toml))}"):
        train_round(ws, 1, progress=False, device="cpu")
    assert not round_paths(ws, 1).model.exists()
    # The fix the message names works.
    toml.write_text(dump_config(_with_fusion(r0.config, "feature-sum")))
    train_round(ws, 1, progress=False, device="cpu")


def _with_fusion(config, fusion: str):
    data = config.to_dict()
    data["model"]["fusion"] = fusion
    return config_from_dict(data)


def test_a_partial_checkpoint_of_the_old_sum_is_not_resumed_into_the_new_sum(tmp_path):
    from mmal.distributed import setup
    from mmal.train.loop import _resume

    partial = tmp_path / "model.pt.partial"
    _old_sum_checkpoint(partial, stamp(MODEL, 1))
    ckpt = torch.load(partial, weights_only=True)
    ckpt.update(run_key="same text, other meaning", epoch=1, losses=[1.0], optimizer={})
    torch.save(ckpt, partial)
    config = _config("sum")
    model = MultimodalModel(config, 3, {"a": 6, "b": 5})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    arch = {s: config.to_dict(logging=False)[s] for s in ("modalities", "model")}
    start, losses, _ = _resume(partial, "same text, other meaning", arch, model, opt,
                               setup("cpu", distributed=False))
    assert (start, losses) == (0, [])
