"""`mmal select` on a workspace round refuses a cache extracted from another checkpoint."""

from __future__ import annotations

import h5py
from click.testing import CliRunner

from mmal.cache.synthetic import make_synthetic_cache
from mmal.cli import cli
from mmal.fingerprint import file_fingerprint
from mmal.workspace import CONFIG_NAME, round_paths


def _workspace(tmp_path):
    (tmp_path / CONFIG_NAME).write_text("# placeholder\n")
    paths = round_paths(tmp_path, 0)
    paths.root.mkdir(parents=True)
    make_synthetic_cache(paths.cache, num_samples=80, seed=0)
    paths.model.write_bytes(b"checkpoint v1")
    return paths


def test_select_refuses_a_cache_from_another_model(tmp_path):
    paths = _workspace(tmp_path)
    result = CliRunner().invoke(cli, ["select", "-s", "random", "-b", "5",
                                      "--workspace", str(tmp_path)])
    assert result.exit_code == 1
    line = result.output.strip()
    assert line.startswith(f"Error: {paths.cache} and {paths.model} disagree")
    assert "rerun `mmal extract --force`" in line
    assert not paths.selections.exists()


def test_select_accepts_the_matching_model(tmp_path):
    paths = _workspace(tmp_path)
    with h5py.File(paths.cache, "r+") as f:
        f.attrs["model_fingerprint"] = file_fingerprint(paths.model)
    result = CliRunner().invoke(cli, ["select", "-s", "random", "-b", "5",
                                      "--workspace", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (paths.selections / "random-b5-s0.json").exists()
