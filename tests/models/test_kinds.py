"""The table of encoder kinds: config, build_encoder and docs/config.md read the same rows."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mmal.config import MODALITY_KINDS, ModalityConfig
from mmal.errors import ConfigError
from mmal.models import encoders
from mmal.models.kinds import (
    ENCODER_KINDS,
    MODEL,
    PRETRAINED_LR_FACTOR,
    STATE_DICT,
    UNUSED,
    encoder_lr,
    encoder_names,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_row_names_a_modality_kind_a_builder_and_a_pretrained_meaning():
    for name, kind in ENCODER_KINDS.items():
        assert kind.name == name and kind.modality in MODALITY_KINDS
        assert callable(encoders._BUILDERS[kind.builder]), kind.builder
        assert kind.pretrained in (STATE_DICT, MODEL, UNUSED)
    assert all(encoder_names(m) for m in MODALITY_KINDS), "a modality kind has no encoder"


def test_config_md_lists_exactly_the_encoders_of_each_modality_kind():
    row = next(line for line in (DOCS / "config.md").read_text().splitlines()
               if line.startswith("| `encoder` |"))
    listed = {}
    for part in re.sub(r"\([^)]*\)", "", row.split("|")[3]).split(";"):
        modality, names = part.split(":", 1)
        listed[modality.strip()] = tuple(re.findall(r"`([^`]+)`", names))
    assert listed == {m: encoder_names(m) for m in MODALITY_KINDS}


def test_an_unknown_encoder_names_every_registered_one():
    modality = ModalityConfig(name="img", kind="image", encoder="resnet7")
    with pytest.raises(ConfigError) as info:
        encoders.build_encoder(modality)
    assert str(info.value) == ("key 'modalities.img.encoder' is 'resnet7'; choose one of "
                               + ", ".join(ENCODER_KINDS))


def test_config_reads_the_encoder_table_without_importing_torch():
    code = ("import sys, mmal.config, mmal.models.kinds, mmal.data; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _modality(encoder, pretrained=""):
    kind = next(k.modality for k in ENCODER_KINDS.values() if k.name == encoder)
    return ModalityConfig(name="m", kind=kind, encoder=encoder, pretrained=pretrained)


def test_encoder_lr_default_is_lr_from_scratch_and_a_tenth_of_it_when_pretrained(tmp_path):
    """The default was 1e-4 for every encoder, which starved encoders trained from scratch."""
    weights = tmp_path / "r18.pth"
    weights.write_bytes(b"x")
    bare = tmp_path / "bare"  # config.json only: the architecture, random weights
    bare.mkdir()
    (bare / "config.json").write_text("{}")
    full = tmp_path / "full"
    full.mkdir()
    (full / "config.json").write_text("{}")
    (full / "model.safetensors").write_bytes(b"x")
    cases = [(_modality("mlp"), 1.0), (_modality("resnet18"), 1.0),
             (_modality("resnet18", str(weights)), PRETRAINED_LR_FACTOR),
             (_modality("bert"), 1.0), (_modality("vit", str(bare)), 1.0),
             (_modality("vit", str(full)), PRETRAINED_LR_FACTOR),
             (_modality("bert", "some/cached-model"), PRETRAINED_LR_FACTOR)]
    for modality, factor in cases:
        assert encoder_lr(modality, 2e-3, None) == pytest.approx(2e-3 * factor), modality
        assert encoder_lr(modality, 2e-3, 5e-5) == 5e-5  # set: it holds for every encoder
        own = dataclasses.replace(modality, lr=3e-6)  # modalities.<name>.lr: this encoder's own
        assert encoder_lr(own, 2e-3, None) == encoder_lr(own, 2e-3, 5e-5) == 3e-6
