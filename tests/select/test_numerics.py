"""Numerics of selection: overflowing embeddings, non-finite caches, bounded loops.

A feature value of 1e20 squares to 1e40, beyond float32; the distance
expansion then gives NaN and k-means++ used to propose forever. Each case runs
``mmal select`` in a subprocess with a timeout, so a regression fails instead
of hanging the suite.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from mmal.cache import open_cache
from mmal.errors import SelectionError
from mmal.select import kmeanspp
from mmal.select.api import diagnostics_path, select
from mmal.select.embedding import FactorizedEmbedding, cache_embedding
from mmal.select.kmeanspp import kmeans_pp
from mmal.select.numerics import overflowing_factor_rows, sq_norm_limit
from tests.select.d2 import chi_square_of_pairs, pair_probabilities

#: Wall-clock seconds a select on the 160-sample test cache may take (it takes ~1 s).
WALL_LIMIT_S = 10


def _planted(cache_factory, tmp_path, kind, value, field="features", modalities=(0,)):
    """Copy of a test cache with ``value`` in one unlabeled row of the given modalities.

    Returns the path and the id of that row.
    """
    path = tmp_path / f"{kind}-{value:g}.h5"
    shutil.copy(cache_factory(kind), path)
    with h5py.File(path, "r+") as f:
        row = int(np.flatnonzero(~f["labeled"][:])[3])
        names = list(f[field])
        for m in modalities:
            f[f"{field}/{names[m]}"][row, 1] = value
        return path, int(f["ids"][row])


def _select_cli(cache, strategy, tmp_path, *extra):
    """``mmal select`` in a subprocess; (returncode, stdout + stderr, wall seconds)."""
    out = tmp_path / f"{strategy}.json"
    args = [sys.executable, "-m", "mmal", "select", "-s", strategy, "-b", "8", "--cache",
            str(cache), "--out", str(out), "--force", "--device", "cpu", *extra]
    start = time.perf_counter()
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=6 * WALL_LIMIT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"mmal select -s {strategy} ran for over {6 * WALL_LIMIT_S} s (a hang)")
    wall = time.perf_counter() - start
    return done.returncode, done.stdout + done.stderr, wall


def _error_lines(output):
    return [line for line in output.splitlines() if line.startswith("Error:")]


# -- overflowing features: select finishes or refuses, in bounded time -------------------------

@pytest.mark.parametrize(("strategy", "value"), [
    ("badge", 1e20), ("bmmal", 1e20), ("bmmal", 1e30), ("badge", 3e38),
])
def test_gradient_embedding_that_overflows_float32_is_computed_in_float64(
        cache_factory, tmp_path, strategy, value):
    cache, sample_id = _planted(cache_factory, tmp_path, "concat2", value)
    code, output, wall = _select_cli(cache, strategy, tmp_path)
    assert code == 0, output
    assert wall < WALL_LIMIT_S
    assert "overflows; computing it in float64" in output and f"ids {sample_id} " in output
    assert "RuntimeWarning" not in output
    ids = json.loads((tmp_path / f"{strategy}.json").read_text())["ids"]
    assert len(set(ids)) == 8
    with open_cache(cache) as c:
        assert not c.labeled[np.isin(c.ids, ids)].any()
    assert ids[0] == sample_id  # by far the largest gradient norm: the first center


@pytest.mark.parametrize("strategy", ["kmeans", "coreset"])
@pytest.mark.parametrize("value", [1e20, 1e30])
def test_faiss_strategies_refuse_features_too_large_for_float32(cache_factory, tmp_path,
                                                                strategy, value):
    cache, sample_id = _planted(cache_factory, tmp_path, "concat2", value)
    code, output, wall = _select_cli(cache, strategy, tmp_path)
    assert wall < WALL_LIMIT_S
    assert code == 1, output
    assert output.strip().splitlines() == [
        f"Error: {cache}: the fused features of sample ids {sample_id} are too large for float32 "
        f"distances (squared norm above {sq_norm_limit(np.float32):.1e}); re-extract the cache "
        "or drop those samples (badge and bmmal compute such samples in float64)"]


def test_sum_fusion_that_overflows_float32_in_the_sum_is_read_again_in_float64(
        cache_factory, tmp_path, caplog):
    # Two finite float32 values whose sum is Inf: only a float64 rereading recovers it.
    cache, sample_id = _planted(cache_factory, tmp_path, "featuresum2", 3e38, modalities=(0, 1))
    with open_cache(cache) as c, caplog.at_level(logging.WARNING, "mmal.select.embedding"):
        positions, emb = cache_embedding(c, dtype="float32")
        assert emb.r.dtype == emb.u.dtype == np.float64
        assert not emb.overflowing_rows().any()
        row = int(np.flatnonzero(c.ids[positions] == sample_id)[0])
        assert emb.u[row, 1] == pytest.approx(6e38, rel=1e-6)
    assert f"sample ids {sample_id} overflows; computing it in float64" in caplog.text


def test_bmmal_diagnostics_are_not_doubled_by_the_float64_rereading(cache_factory, tmp_path):
    cache, _ = _planted(cache_factory, tmp_path, "concat3", 1e20)
    index = select(cache, "bmmal", 5, device="cpu", out=tmp_path / "sel.json")
    with open_cache(cache) as c, np.load(diagnostics_path(index.path)) as diag:
        assert diag["weights"].shape == (c.num_unlabeled, 3)
        assert np.array_equal(diag["ids"], c.ids[~c.labeled])


def test_float32_embedding_of_a_normal_cache_is_not_promoted(cache_factory):
    with open_cache(cache_factory("concat2")) as c:
        _, emb = cache_embedding(c, dtype="float32")
    assert emb.r.dtype == emb.u.dtype == np.float32


def test_embedding_that_overflows_even_float64_names_the_ids(cache_factory, monkeypatch):
    # A valid cache cannot get there (its values are finite float32); force it.
    monkeypatch.setattr(FactorizedEmbedding, "overflowing_rows",
                        lambda self: np.arange(len(self)) == 2)
    with open_cache(cache_factory("concat2")) as c:
        sample_id = int(c.ids[~c.labeled][2])
        with pytest.raises(SelectionError) as err:
            cache_embedding(c, dtype="float64")
    assert str(err.value) == (
        f"{c.path}: the gradient embedding of sample ids {sample_id} is not finite in float64 "
        "(feature values too large); re-extract the cache or drop those samples")


@pytest.mark.parametrize(("r_sq", "u_sq", "dtype", "bad"), [
    ([1.0, 2.0, 0.5], [1.0, 1e30, 4.0], np.float32, [False, False, False]),
    ([1.0, 2.0, 0.5], [1.0, np.inf, 4.0], np.float32, [False, True, False]),
    ([1.0, np.nan, 0.5], [1.0, 1.0, 4.0], np.float32, [False, True, False]),
    # ‖u‖² alone fits, times the largest ‖r‖² it does not: u is blamed
    ([2.0, 2.0, 0.5], [1.0, 3e37, 4.0], np.float32, [False, True, False]),
    ([2.0, 2.0, 0.5], [1.0, 3e37, 4.0], np.float64, [False, False, False]),
])
def test_overflowing_factor_rows(r_sq, u_sq, dtype, bad):
    assert overflowing_factor_rows(np.array(r_sq), np.array(u_sq), dtype).tolist() == bad


def test_kmeans_pp_refuses_an_embedding_that_overflows():
    u = np.ones((5, 3), dtype=np.float32)
    u[4, 0] = 1e20
    emb = FactorizedEmbedding(np.ones((5, 2), dtype=np.float32), u)
    with pytest.raises(SelectionError, match=r"embedding of rows 4 is too large for float32"):
        kmeans_pp(emb, 3, rng=np.random.default_rng(0))
    emb64 = FactorizedEmbedding(emb.r.astype(np.float64), u.astype(np.float64))
    assert kmeans_pp(emb64, 3, rng=np.random.default_rng(0))[0] == 4


# -- non-finite values: the same one-line refusal as `mmal inspect` ------------------------------

@pytest.mark.parametrize(("field", "value"), [
    ("head/weight", np.nan), ("head/bias", np.inf), ("features/m0", np.nan),
])
@pytest.mark.parametrize("strategy", ["badge", "kmeans", "random"])
def test_select_refuses_non_finite_values_as_inspect_does(cache_factory, tmp_path, field,
                                                          value, strategy):
    path = tmp_path / "cache.h5"
    shutil.copy(cache_factory("concat2"), path)
    with h5py.File(path, "r+") as f:
        data = f[field][()]
        data.flat[data.size // 2] = value
        f[field][...] = data
    inspect = subprocess.run([sys.executable, "-m", "mmal", "inspect", str(path)],
                             capture_output=True, text=True, timeout=60)
    code, output, wall = _select_cli(path, strategy, tmp_path)
    assert wall < WALL_LIMIT_S
    if field.startswith("features") and strategy == "random":
        assert code == 0, output  # random reads no features
        return
    assert code == 1
    assert output.strip().splitlines() == _error_lines(inspect.stdout + inspect.stderr)
    assert f"field '{field}' has NaN or Inf" in output


# -- the rejection sampler's bound -------------------------------------------------------------

class _CountingSampler(kmeanspp._BoundSampler):
    made: list = []

    def __init__(self, *args):
        super().__init__(*args)
        self.made.append(self)


def test_mostly_rejected_proposals_hit_the_bound_and_stay_exact(monkeypatch):
    # A far cluster of three (distance² ~900 from the first center) and two
    # points near that center. Once a cluster point is the second center, the
    # stale bound still puts ~99% of the proposal mass on the cluster, whose D²
    # is now ~5: over 99% of proposals are rejected, and most third picks come
    # from the exact draw after the rejection limit (24 at block_size 2).
    points = np.array([[50.0, 0, 0], [49, 1, 0], [49, -1, 0],
                       [20, 1, 1], [20, -1, 1], [20, 0, -1.2]])
    emb = FactorizedEmbedding(np.ones((6, 1)), points)
    first, probs = pair_probabilities(points)
    monkeypatch.setattr(kmeanspp, "_BoundSampler", _CountingSampler)
    _CountingSampler.made = []
    runs = 2000
    picks = [kmeans_pp(emb, 3, rng=np.random.default_rng(seed), block_size=2)
             for seed in range(runs)]
    assert all(p[0] == first for p in picks)
    samplers = _CountingSampler.made
    assert len(samplers) == runs
    assert sum(s.total_rejections + s.rejections for s in samplers) > 15 * runs
    assert sum(s.limit_refreshes for s in samplers) > 0.6 * runs
    assert chi_square_of_pairs(picks, probs, runs) > 1e-3


def test_a_sampler_that_rejects_every_proposal_still_ends_and_is_exact(monkeypatch):
    # Worst case of the acceptance test: D² read as 0 for every pending check.
    # Every center then comes from the exact draw after the rejection limit.
    monkeypatch.setattr(kmeanspp._BoundSampler, "exact_sq_distance", lambda self, x: 0.0)
    rng = np.random.default_rng(0)
    points = rng.normal(size=(6, 4))
    emb = FactorizedEmbedding(np.ones((6, 1)), points)
    _, probs = pair_probabilities(points)
    runs = 1500
    picks = [kmeans_pp(emb, 3, rng=np.random.default_rng(seed), block_size=4)
             for seed in range(runs)]
    assert all(len(set(p.tolist())) == 3 for p in picks)
    assert chi_square_of_pairs(picks, probs, runs) > 1e-3
    # and the whole pool, with repeats impossible, in bounded passes
    big = FactorizedEmbedding(np.ones((40, 1)), rng.normal(size=(40, 3)))
    assert sorted(kmeans_pp(big, 40, rng=np.random.default_rng(1), block_size=3)) == list(range(40))
