"""check_same_architecture: a checkpoint's recorded config against mmal.toml's now."""

from __future__ import annotations

import copy

import pytest

from mmal.config import config_from_dict
from mmal.errors import WorkspaceError
from mmal.models.checkpoint import check_same_architecture

UCI = {"dataset": {"kind": "uci-mfeat"},
       "modalities": {"fac": {"kind": "vector", "encoder": "mlp"},
                      "fou": {"kind": "vector", "encoder": "mlp"}}}


def test_a_checkpoint_recording_the_column_older_mmal_wrote_for_every_kind_still_fits():
    config = config_from_dict(UCI)
    old = copy.deepcopy(config.to_dict())
    for name, table in old["modalities"].items():
        table["column"] = name  # what mmal wrote before configs held only their kind's keys
    check_same_architecture({"config": old}, config, "model.pt")
    old["modalities"]["fou"]["dim"] = 7
    with pytest.raises(WorkspaceError, match=r"model.pt: was trained with a different "
                                             r"\[modalities\] section"):
        check_same_architecture({"config": old}, config, "model.pt")


def test_changing_a_modalitys_augmentation_after_training_keeps_the_checkpoint_usable():
    trained = config_from_dict(UCI)
    now = config_from_dict({**UCI, "modalities": {
        **UCI["modalities"], "fac": {**UCI["modalities"]["fac"], "augment": False}}})
    assert now.to_dict()["modalities"] != trained.to_dict()["modalities"]
    check_same_architecture({"config": trained.to_dict()}, now, "model.pt")  # extraction never augments


def test_a_checkpoint_from_before_head_init_fits_the_default_and_not_xavier():
    config = config_from_dict(UCI)
    old = copy.deepcopy(config.to_dict())
    del old["model"]["head_init"]  # checkpoints written before the key existed
    check_same_architecture({"config": old}, config, "model.pt")
    xavier = config_from_dict({**UCI, "model": {"head_init": "xavier"}})
    with pytest.raises(WorkspaceError, match=r"different \[model\] section"):
        check_same_architecture({"config": old}, xavier, "model.pt")
