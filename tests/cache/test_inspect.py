"""`mmal inspect` on caches of each schema version and fusion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmal.cache.synthetic import make_synthetic_cache
from mmal.cli import cli

DATA = Path(__file__).parent.parent / "data"


def _summary(path):
    result = CliRunner().invoke(cli, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("fusion,dims,fused_dim,stored", [
    ("concat", (6, 4), 10, False), ("sum", (6, 4), 10, False), ("feature-sum", (5, 5), 5, False),
    ("nl-gate", (5, 5), 5, True),
])
def test_inspect_shows_version_fusion_width_and_head_input(tmp_path, fusion, dims, fused_dim,
                                                           stored):
    path = make_synthetic_cache(tmp_path / "c.h5", num_samples=40, num_classes=3,
                                feature_dims=dims, fusion=fusion, seed=0)
    summary = _summary(path)
    assert (summary["schema_version"], summary["fusion"], summary["fused_dim"]) == \
        (2, fusion, fused_dim)
    assert summary["head_input"] == ("stored" if stored else "computed from the features")
    text = CliRunner().invoke(cli, ["inspect", str(path)]).output
    assert f"fusion: {fusion}\nfused_dim: {fused_dim}\nhead_input: " in text


@pytest.mark.parametrize("name,fusion,fused_dim", [("cache-v1.h5", "concat", 7),
                                                   ("cache-v1-sum.h5", "feature-sum", 4)])
def test_inspect_of_a_schema_1_cache(name, fusion, fused_dim):
    summary = _summary(DATA / name)
    assert (summary["schema_version"], summary["fusion"], summary["fused_dim"],
            summary["head_input"]) == (1, fusion, fused_dim, "computed from the features")
