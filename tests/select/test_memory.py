"""The memory budget of selection: parsing, the spill decision, and ids that do not depend on it."""

from __future__ import annotations

import logging
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from mmal.cache import open_cache
from mmal.cli import cli
from mmal.errors import SelectionError
from mmal.select import api
from mmal.select.api import select
from mmal.select.embedding import cache_embedding
from mmal.select.memory import (
    BLOCK_ALLOWANCE,
    MIN_BLOCK_ROWS,
    PER_ROW_BYTES,
    WorkingSet,
    available_memory,
    default_max_memory,
    parse_memory,
)
from mmal.select.strategies import bmmal

#: Far below any working set: forces r and u to spill.
TINY = "4K"


@pytest.mark.parametrize("text, expected", [
    ("4K", 4096), ("512M", 512 * 2**20), ("1.5G", 3 * 2**29), ("12gib", 12 * 2**30),
    ("2T", 2 * 2**40), ("1000", 1000), (" 64 kb ", 64 * 1024), (7, 7),
])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "G", "-1G", "12X", "1e9", "0", True])
def test_parse_memory_refuses(text):
    with pytest.raises(ValueError, match="memory size"):
        parse_memory(text)


def test_default_is_a_share_of_the_available_memory():
    available = available_memory()
    assert available is not None and available > 0  # Linux: /proc/meminfo
    assert 0 < default_max_memory() <= available


def _specs(n=100):
    """u: float32 in memory, float16 when spilled; r: float32 either way."""
    return {"u": ((n, 30), "float32", "float16"), "r": ((n, 10), "float32", "float32")}


def test_fits_in_memory_without_a_spill(tmp_path):
    with WorkingSet(10 * BLOCK_ALLOWANCE, tmp_path) as ws:
        u, r = ws.allocate(_specs(), rows=100)
    assert not isinstance(u, np.memmap) and not isinstance(r, np.memmap)
    assert (u.dtype, r.dtype, u.shape, r.shape) == (np.float32, np.float32, (100, 30), (100, 10))
    assert not ws.spilled and list(tmp_path.iterdir()) == []


def test_u_spills_first_then_r(tmp_path):
    r_bytes = 100 * 10 * 4
    only_u = BLOCK_ALLOWANCE + 100 * PER_ROW_BYTES + r_bytes  # room for r but not u as well
    with WorkingSet(only_u, tmp_path) as ws:
        u, r = ws.allocate(_specs(), rows=100)
        assert isinstance(u, np.memmap) and not isinstance(r, np.memmap)
        assert u.dtype == np.float16  # spilled in the narrower dtype
    with WorkingSet(only_u - 1, tmp_path) as ws:
        u, r = ws.allocate(_specs(), rows=100)
        assert isinstance(u, np.memmap) and isinstance(r, np.memmap)
        folder = next(tmp_path.iterdir())
        assert list(folder.iterdir()) == []  # unlinked once mapped: nothing can outlive the arrays
        u[:] = 1.5
        r[:] = 2.0
        assert float(u.sum(dtype=np.float64)) == 1.5 * 100 * 30
    assert not folder.exists()
    assert r.sum() == 2.0 * r_bytes / 4  # the arrays stay valid after the folder is gone


def test_nothing_spills_without_a_limit_or_on_another_array_module(tmp_path):
    class FakeXp:
        empty = staticmethod(np.empty)

    for limit, xp in ((None, np), (1, FakeXp)):
        with WorkingSet(limit, tmp_path) as ws:
            u, _ = ws.allocate(_specs(), rows=100, xp=xp)
        assert not isinstance(u, np.memmap)


def test_full_disk_is_one_error_naming_the_file(tmp_path, monkeypatch):
    def no_space(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.posix_fallocate", no_space)
    with WorkingSet(1, tmp_path) as ws, pytest.raises(SelectionError) as err:
        ws.allocate(_specs(), rows=100)
    assert "u.bin: cannot hold the 5.86 KiB of the spilled working set (No space left on " \
           "device); free disk space there, or raise --max-memory" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_block_rows_follow_the_budget():
    assert WorkingSet(None).block_rows(1000, 8192) == 8192
    assert WorkingSet(4 * 1000 * 100).block_rows(1000, 8192) == 100
    assert WorkingSet(4096).block_rows(1000, 8192) == MIN_BLOCK_ROWS


@pytest.mark.parametrize("strategy", ["bmmal", "badge"])
@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["concat2", "float16", "featuresum2"])
def test_spilling_picks_the_same_ids(cache_factory, tmp_path, caplog, strategy, precision, kind):
    path = cache_factory(kind, num_samples=600)
    kwargs = dict(seed=5, precision=precision)
    in_memory = select(path, strategy, 30, out=tmp_path / "a.json", **kwargs)
    with caplog.at_level(logging.INFO, logger="mmal.select.memory"):
        spilled = select(path, strategy, 30, out=tmp_path / "b.json", max_memory=TINY, **kwargs)
    np.testing.assert_array_equal(in_memory.ids, spilled.ids)
    lines = [r.getMessage() for r in caplog.records if "spilled" in r.getMessage()]
    assert len(lines) == 1 and " u (" in lines[0] and str(tmp_path) in lines[0]
    u_dtype = "float16" if kind == "float16" and precision == "float32" else precision
    assert f" as {u_dtype})" in lines[0]
    assert not list(tmp_path.glob("mmal-spill-*"))
    assert "memory" not in spilled.provenance["params"]


def test_spilled_working_set_is_read_in_blocks_within_the_budget(cache_factory, tmp_path,
                                                                 monkeypatch):
    path = cache_factory("concat2", num_samples=600)
    seen = []
    with open_cache(path) as cache:
        read = cache.read

        def recording(field, rows=None):
            seen.append((field, rows))
            return read(field, rows)

        monkeypatch.setattr(cache, "read", recording)
        select(cache, "bmmal", 10, out=tmp_path / "a.json", max_memory=TINY)
    big = [(f, rows) for f, rows in seen if f.startswith(("features/", "coalitions", "logits"))]
    assert {f for f, _ in big} >= {"features/m0", "features/m1", "coalitions", "logits/mm"}
    assert all(isinstance(rows, slice) and rows.stop - rows.start <= MIN_BLOCK_ROWS
               for _, rows in big)


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, RuntimeError])
def test_spill_folder_is_removed_after_an_error(cache_factory, tmp_path, monkeypatch, interrupt):
    path = cache_factory("concat2", num_samples=600)
    during = {}

    def failing_kmeans_pp(emb, budget, **kwargs):
        during["spilled"] = isinstance(emb.u, np.memmap) and isinstance(emb.r, np.memmap)
        during["folders"] = list(tmp_path.glob("mmal-spill-*"))
        raise interrupt("stop")

    monkeypatch.setattr(bmmal, "kmeans_pp", failing_kmeans_pp)
    with pytest.raises(interrupt):
        select(path, "bmmal", 10, out=tmp_path / "a.json", max_memory=TINY)
    assert during["spilled"] and len(during["folders"]) == 1
    assert not during["folders"][0].exists()
    assert not list(tmp_path.iterdir())


def test_spill_goes_to_tmpdir_when_the_output_folder_does_not_exist(cache_factory, tmp_path,
                                                                   monkeypatch, caplog):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    monkeypatch.setattr("tempfile.tempdir", None)  # read TMPDIR again
    with caplog.at_level(logging.INFO, logger="mmal.select.memory"):
        select(cache_factory("concat2"), "badge", 5, out=tmp_path / "new" / "a.json",
               max_memory=TINY)
    assert str(tmp_path / "scratch" / "mmal-spill-") in caplog.text
    assert list((tmp_path / "scratch").iterdir()) == []


def test_user_cannot_pass_the_working_set_as_a_parameter(cache_factory, tmp_path):
    with pytest.raises(SelectionError, match="has no parameter 'memory'"):
        select(cache_factory("concat2"), "bmmal", 5, out=tmp_path / "a.json",
               params={"memory": 1})


def test_cli_max_memory(cache_factory, tmp_path):
    cache = str(cache_factory("concat2"))
    ok = CliRunner().invoke(cli, ["select", "-s", "bmmal", "-b", "5", "--cache", cache,
                                  "--out", str(tmp_path / "a.json"), "--max-memory", TINY])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(cli, ["select", "-s", "bmmal", "-b", "5", "--cache", cache,
                                   "--out", str(tmp_path / "b.json"), "--max-memory", "lots"])
    assert bad.exit_code == 1
    assert bad.output == ("Error: max_memory: 'lots' is not a memory size; write e.g. 12G, "
                          "512M, 64K or bytes; fix --max-memory\n")
    assert not (tmp_path / "b.json").exists()


def test_limit_is_resolved_before_the_strategy_runs(monkeypatch):
    monkeypatch.setattr(api, "default_max_memory", lambda: 123)
    assert api._max_memory(None) == 123
    assert api._max_memory("1K") == 1024


@pytest.mark.parametrize("kind, value", [("concat2", 1e20), ("featuresum2", 3e38)])
def test_float64_rereading_spills_too_and_picks_the_same_ids(cache_factory, tmp_path, caplog,
                                                            kind, value):
    path = tmp_path / "planted.h5"
    shutil.copy(cache_factory(kind), path)
    with h5py.File(path, "r+") as f:  # one huge unlabeled row: float32 overflows
        row = int(np.flatnonzero(~f["labeled"][:])[3])
        for name in f["features"]:
            f[f"features/{name}"][row, 1] = value
    in_memory = select(path, "badge", 8, seed=2, out=tmp_path / "a.json")
    with caplog.at_level(logging.INFO, logger="mmal.select"):
        spilled = select(path, "badge", 8, seed=2, out=tmp_path / "b.json", max_memory=TINY)
    np.testing.assert_array_equal(in_memory.ids, spilled.ids)
    assert "computing it in float64" in caplog.text
    assert caplog.text.count("spilled to") == 2  # the float32 reading, then the float64 one
    assert not list(tmp_path.glob("mmal-spill-*"))


def test_float16_u_that_overflows_is_read_again_in_float64(cache_factory, tmp_path, caplog):
    # feature-sum's h = z_1 + z_2 of two large float16 values is past float16's 65504
    path = tmp_path / "planted.h5"
    shutil.copy(cache_factory("featuresum2", feature_dtype="float16"), path)
    with h5py.File(path, "r+") as f:
        row = int(np.flatnonzero(~f["labeled"][:])[3])
        for name in f["features"]:
            f[f"features/{name}"][row, 1] = 60000.0
    with open_cache(path) as cache, caplog.at_level(logging.WARNING, "mmal.select.embedding"):
        _, emb = cache_embedding(cache, dtype="float32", memory=WorkingSet(None))
    assert emb.u.dtype == emb.r.dtype == np.float64
    assert not emb.overflowing_rows().any()
    assert "overflows; computing it in float64" in caplog.text
