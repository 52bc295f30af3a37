"""A model.pt written before the common stamp (``format``/``version`` keys) still loads and runs.

``tests/data/model-v1.pt`` was written by ``tests/data/make_frozen.py`` at commit
94f556b: round 0 of a UCI workspace (MLP encoders of width 16 for ``fac`` and
``fou``, one epoch). The logits below are what that commit's code computed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmal.config import config_from_dict
from mmal.errors import WorkspaceError
from mmal.models import model_from_checkpoint
from mmal.models.checkpoint import checkpoint_header, load_checkpoint

torch.set_num_threads(1)
FROZEN = Path(__file__).parent.parent / "data" / "model-v1.pt"
LOGITS = [0.12772990763187408, 0.014219149947166443, -0.035397518426179886, 0.09482482075691223,
          -0.10736103355884552, -0.1883857250213623, -0.05389169603586197, 0.006440747529268265,
          0.011584633961319923, -0.09237037599086761]


def test_checkpoint_from_before_the_stamp_loads_and_builds_the_same_model():
    ckpt = load_checkpoint(FROZEN)
    assert (ckpt["format"], ckpt["version"]) == ("mmal-model", 1) and "mmal_type" not in ckpt
    assert ckpt["num_classes"] == 10 and ckpt["input_dims"] == {"fac": 216, "fou": 76}
    model = model_from_checkpoint(ckpt, config_from_dict(ckpt["config"])).eval()
    x = {"fac": torch.linspace(-1, 1, 216)[None], "fou": torch.linspace(1, -1, 76)[None]}
    with torch.no_grad():
        got = model(x).logits_mm[0]
    torch.testing.assert_close(got, torch.tensor(LOGITS), rtol=1e-6, atol=1e-7)


def test_new_checkpoints_carry_the_common_stamp_in_plain_types(tmp_path):
    header = checkpoint_header()
    assert header["mmal_type"] == "mmal-model" and header["schema_version"] == 2
    assert all(type(v) in (str, int) for v in header.values())
    ckpt = torch.load(FROZEN, weights_only=True)
    del ckpt["format"], ckpt["version"]
    torch.save({**header, **ckpt}, tmp_path / "model.pt")
    assert load_checkpoint(tmp_path / "model.pt")["schema_version"] == 2


@pytest.mark.parametrize("change, message", [
    ({"version": 3}, r"schema version 3 is newer than this mmal \(.*\) reads \(up to 2\); "
                     "upgrade mmal$"),
    ({"format": "other"}, r"is not an mmal model checkpoint \(type 'other'\); retrain with "
                          r"`mmal train --force`$"),
])
def test_old_style_checkpoint_with_a_bad_format_or_version_is_refused(tmp_path, change, message):
    path = tmp_path / "model.pt"
    torch.save({**torch.load(FROZEN, weights_only=True), **change}, path)
    with pytest.raises(WorkspaceError, match=f"^{path}: {message}"):
        load_checkpoint(path)


def test_a_tensor_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(WorkspaceError, match=f"^{path}: is not an mmal model checkpoint; retrain"):
        load_checkpoint(path)
