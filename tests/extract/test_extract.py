"""``extract_round`` on the built-in UCI data: cache contents, consistency, resume, bad input."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mmal.cache import open_cache, partial_path
from mmal.cache.consistency import coalition_error
from mmal.cli import cli
from mmal.errors import CacheError, ConfigError, WorkspaceError
from mmal.extract import extract_round
from mmal.fingerprint import check_model_fingerprint, file_fingerprint
from mmal.train import train_round
from mmal.workspace import load_workspace_config, read_labeled, round_paths
from tests.models.tiny import make_workspace

torch.set_num_threads(1)
UCI = {"train": {"epochs": 1, "batch_size": 16}, "al": {"initial_budget": 30},
       "model": {"dropout": 0.25}}


def _trained(tmp_path, **model):
    ws = make_workspace(tmp_path, "uci", overrides={**UCI, "model": {**UCI["model"], **model}})
    train_round(ws, 0, device="cpu", progress=False)
    return ws


@pytest.fixture(scope="module")
def uci_ws(tmp_path_factory):
    return _trained(tmp_path_factory.mktemp("uci"))


def _fields(path):
    with h5py.File(path, "r") as f:
        out = {}
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
        return out, dict(f.attrs)


@pytest.mark.parametrize("fusion,dtype", [("concat", "float32"), ("sum", "float32"),
                                          ("feature-sum", "float32"), ("concat", "float16"),
                                          ("feature-sum", "float16")])
def test_cache_is_consistent_and_tied_to_model_and_pool(tmp_path, fusion, dtype):
    ws = _trained(tmp_path, fusion=fusion)
    path = extract_round(ws, 0, device="cpu", dtype=dtype, batch_size=64, mc_dropout=3,
                         progress=False)
    cache = open_cache(path)
    assert coalition_error(cache) < 1e-4
    meta = cache.meta
    assert meta.fusion == fusion and meta.feature_dtype == dtype and meta.mc_samples == 3
    assert meta.model_fingerprint == file_fingerprint(round_paths(ws, 0).model)
    check_model_fingerprint(path, meta.model_fingerprint, round_paths(ws, 0).model)
    from mmal.data import load_pool
    from mmal.workspace import load_workspace_config

    pool = load_pool(load_workspace_config(ws), "train")
    assert meta.pool_fingerprint == pool.fingerprint()
    np.testing.assert_array_equal(cache.ids, pool.ids)
    labeled = read_labeled(ws, 0)
    np.testing.assert_array_equal(cache.labeled, np.isin(pool.ids, labeled))
    np.testing.assert_array_equal(cache.labels[cache.labeled], pool.labels[cache.labeled])
    assert np.all(cache.labels[~cache.labeled] == -1)
    mc = cache.mc_logits(np.arange(5))
    assert mc.shape == (5, 3, 10) and not np.allclose(mc[:, 0], mc[:, 1])


def test_features_and_logits_equal_the_trained_models_forward(uci_ws):
    path = extract_round(uci_ws, 0, device="cpu", batch_size=50, progress=False, force=True)
    cache = open_cache(path)
    from mmal.data import load_pool
    from mmal.models import model_from_checkpoint
    from mmal.models.checkpoint import load_checkpoint
    from mmal.workspace import load_workspace_config

    config = load_workspace_config(uci_ws)
    model = model_from_checkpoint(load_checkpoint(round_paths(uci_ws, 0).model), config).eval()
    pool = load_pool(config, "train")
    rows = np.arange(0, len(pool), 97)
    with torch.no_grad():
        out = model({m: torch.from_numpy(pool.records[m][rows]) for m in ("fac", "fou")})
    np.testing.assert_allclose(cache.features("fac", rows), out.features["fac"].numpy(), atol=1e-5)
    np.testing.assert_allclose(cache.logits("mm", rows), out.logits_mm.numpy(), atol=1e-5)
    np.testing.assert_allclose(cache.logits("fou", rows), out.logits_uni["fou"].numpy(), atol=1e-5)
    weight, bias = cache.head()
    np.testing.assert_array_equal(weight, model.effective_head()[0].detach().numpy())
    np.testing.assert_array_equal(bias, model.effective_head()[1].detach().numpy())


KILL = textwrap.dedent("""
    import os, signal, sys
    import torch
    import mmal.cache.writer as writer
    torch.set_num_threads(1)
    calls, stop = [0], int(sys.argv[2])
    real = writer.CacheWriter.append
    def dying(self, batch):
        calls[0] += 1
        if calls[0] == stop:
            os.kill(os.getpid(), signal.SIGKILL)
        real(self, batch)
    writer.CacheWriter.append = dying
    from mmal.extract import extract_round
    extract_round(sys.argv[1], 0, device="cpu", batch_size=128, mc_dropout=2,
                  num_workers=int(sys.argv[3]), progress=False)
""")


@pytest.mark.parametrize("kills,workers", [([4], 0), pytest.param([3, 2], 1, marks=pytest.mark.slow)])
def test_killed_extraction_resumes_to_the_uninterrupted_cache(uci_ws, request, kills, workers):
    paths = round_paths(uci_ws, 0)
    paths.cache.unlink(missing_ok=True)
    for stop in kills:
        proc = subprocess.run([sys.executable, "-c", KILL, str(uci_ws), str(stop), str(workers)],
                              capture_output=True, text=True, cwd=str(request.config.rootpath))
        assert proc.returncode == -9, proc.stderr
        assert not paths.cache.exists()
    with h5py.File(partial_path(paths.cache), "r") as f:
        assert f.attrs["rows_written"] == 128 * (sum(kills) - len(kills))
    resumed = extract_round(uci_ws, 0, device="cpu", batch_size=128, mc_dropout=2, progress=False)
    reference = resumed.with_name("reference.h5")
    ref_fields, ref_attrs = _reference(uci_ws, reference)
    fields, attrs = _fields(resumed)
    assert attrs["content_fingerprint"] == ref_attrs["content_fingerprint"]
    assert fields.keys() == ref_fields.keys()
    for name in fields:
        np.testing.assert_array_equal(fields[name], ref_fields[name], err_msg=name)


def _reference(ws, target):
    """An uninterrupted extraction of round 0, moved to ``target``."""
    cache = round_paths(ws, 0).cache
    moved = cache.with_name("resumed.h5")
    cache.rename(moved)
    extract_round(ws, 0, device="cpu", batch_size=128, mc_dropout=2, progress=False)
    cache.rename(target)
    moved.rename(cache)
    return _fields(target)


@contextlib.contextmanager
def _third_append_fails(monkeypatch):
    """The cache writer's third batch append raises OSError (as a full disk would)."""
    import mmal.cache.writer as writer

    real, calls = writer.CacheWriter.append, [0]

    def failing(self, batch):
        calls[0] += 1
        if calls[0] == 3:
            raise OSError("disk full (injected)")
        real(self, batch)

    monkeypatch.setattr(writer.CacheWriter, "append", failing)
    try:
        yield
    finally:
        monkeypatch.setattr(writer.CacheWriter, "append", real)


def test_injected_error_leaves_only_a_partial_and_rerun_completes(uci_ws, monkeypatch):
    paths = round_paths(uci_ws, 0)
    paths.cache.unlink(missing_ok=True)
    with _third_append_fails(monkeypatch), pytest.raises(OSError, match="injected"):
        extract_round(uci_ws, 0, device="cpu", batch_size=100, progress=False)
    assert not paths.cache.exists() and partial_path(paths.cache).exists()
    path = extract_round(uci_ws, 0, device="cpu", batch_size=100, progress=False)
    assert coalition_error(open_cache(path)) < 1e-4


def test_partial_written_before_a_relabel_is_not_resumed(tmp_path, monkeypatch):
    from mmal.annotation import import_labels
    from mmal.workspace import read_labeled

    ws = _trained(tmp_path / "ws")
    paths = round_paths(ws, 0)
    with _third_append_fails(monkeypatch), pytest.raises(OSError, match="injected"):
        extract_round(ws, 0, device="cpu", batch_size=100, progress=False)
    written = _fields(partial_path(paths.cache))[0]["ids"][:200]  # 2 batches flushed
    first = int(np.intersect1d(read_labeled(ws, 0), written)[0])
    (tmp_path / "fix.csv").write_text(f"id,label\n{first},9\n")
    import_labels(ws, 0, tmp_path / "fix.csv")
    resumed = _fields(extract_round(ws, 0, device="cpu", batch_size=100, progress=False))[0]
    fresh = _fields(extract_round(ws, 0, device="cpu", batch_size=100, progress=False,
                                  force=True, resume=False))[0]
    row = resumed["ids"].tolist().index(first)
    assert resumed["labels"][row] == 9
    assert all(np.array_equal(resumed[k], fresh[k]) for k in fresh)


def test_existing_cache_needs_force_and_stale_model_is_refused(uci_ws):
    paths = round_paths(uci_ws, 0)
    if not paths.cache.exists():
        extract_round(uci_ws, 0, device="cpu", progress=False)
    with pytest.raises(WorkspaceError, match="cache.h5: already exists; pass --force"):
        extract_round(uci_ws, 0, device="cpu", progress=False)
    meta = open_cache(paths.cache).meta
    other = paths.root / "other.pt"
    other.write_bytes(paths.model.read_bytes() + b"retrained")
    with pytest.raises(CacheError, match=r"cache.h5 and .*other.pt disagree"):
        check_model_fingerprint(paths.cache, meta.model_fingerprint, other)


def test_bad_requests_are_named(uci_ws, tmp_path):
    with pytest.raises(ConfigError, match="--dtype"):
        extract_round(uci_ws, 0, dtype="int8", progress=False)
    ws = make_workspace(tmp_path, "uci", overrides=UCI)
    with pytest.raises(WorkspaceError, match="model.pt: no model checkpoint; run `mmal train`"):
        extract_round(ws, 0, device="cpu", progress=False)
    no_dropout = _trained(tmp_path / "nd", dropout=0.0)
    with pytest.raises(ConfigError, match="model.dropout"):
        extract_round(no_dropout, 0, device="cpu", mc_dropout=4, progress=False)
    toml = no_dropout / "mmal.toml"
    toml.write_text(toml.read_text().replace('fusion = "concat"', 'fusion = "sum"'))
    with pytest.raises(WorkspaceError, match=r"different \[model\] section"):
        extract_round(no_dropout, 0, device="cpu", progress=False)
    assert not round_paths(no_dropout, 0).cache.exists()
    assert not partial_path(round_paths(no_dropout, 0).cache).exists()


def test_cli_extract_one_line_errors_and_success(tmp_path):
    ws = make_workspace(tmp_path, "uci", overrides=UCI)
    runner = CliRunner()
    result = runner.invoke(cli, ["extract", "--workspace", str(ws), "-q"])
    assert result.exit_code == 1 and result.output.startswith("Error: ")
    assert result.output.count("\n") == 1 and "no round with model.pt" in result.output
    train_round(ws, 0, device="cpu", progress=False)
    result = runner.invoke(cli, ["extract", "--workspace", str(ws), "-q", "--device", "cpu",
                                 "--dtype", "float16", "--batch-size", "300"])
    assert result.exit_code == 0, result.output
    assert open_cache(round_paths(ws, 0).cache).meta.feature_dtype == "float16"


def test_model_trained_on_other_classes_or_inputs_is_refused(tmp_path):
    ws = make_workspace(tmp_path / "m", "manifest", modalities=("vector",), n_train=12, n_test=6,
                        overrides={"al": {"initial_budget": 6}, "train": {"epochs": 1}})
    train_round(ws, 0, device="cpu", progress=False)
    config = load_workspace_config(ws)
    classes = config.dataset.root / "classes.txt"
    names = classes.read_text().split()
    classes.write_text("\n".join(reversed(names)) + "\n")  # same classes, other logit order
    with pytest.raises(WorkspaceError) as info:
        extract_round(ws, 0, device="cpu", progress=False)
    assert str(info.value) == (f"{round_paths(ws, 0).model}: was trained with class list "
                               f"{names!r}, but the dataset now gives {names[::-1]!r}; restore "
                               "the data or retrain with `mmal train --force`")
    classes.write_text("\n".join(names) + "\n")
    for npy in (config.dataset.root / "files").glob("*.npy"):
        np.save(npy, np.concatenate([np.load(npy), [0.0]]).astype(np.float32))
    with pytest.raises(WorkspaceError, match="was trained with vector input widths"):
        extract_round(ws, 0, device="cpu", progress=False)
    assert not round_paths(ws, 0).cache.exists()
    assert not partial_path(round_paths(ws, 0).cache).exists()
