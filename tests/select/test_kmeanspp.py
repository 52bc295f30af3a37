"""k-means++ seeding: exact D² distribution, first center, no repeats, backends."""

from __future__ import annotations

import itertools
import logging
import re

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import cdist

from mmal.select.embedding import FactorizedEmbedding
from mmal.select.kmeanspp import kmeans_pp
from tests.select.d2 import chi_square_of_pairs, pair_probabilities


def _small_pool(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return FactorizedEmbedding(rng.normal(size=(n, 3)), rng.normal(size=(n, 4)))


def _exact_pair_probabilities(emb):
    """P(second = s, third = t) of exact k-means++ after the largest-norm first center."""
    return pair_probabilities(emb.materialize())


@pytest.mark.parametrize("block_size", [1, 2, 8])
def test_draws_follow_exact_d2_distribution(block_size):
    emb = _small_pool()
    first, probs = _exact_pair_probabilities(emb)
    runs = 3000
    picks = [kmeans_pp(emb, 3, rng=np.random.default_rng(seed), block_size=block_size)
             for seed in range(runs)]
    assert all(p[0] == first for p in picks)
    assert chi_square_of_pairs(picks, probs, runs) > 1e-3


def test_chi_square_detects_a_wrong_distribution():
    # The same test statistic rejects D (not D²) weighting: the check can fail.
    emb = _small_pool()
    g = emb.materialize()
    d = np.sqrt(cdist(g, g, "sqeuclidean"))
    first = int(np.argmax((g**2).sum(axis=1)))
    rng = np.random.default_rng(0)
    wrong = rng.choice(len(g), size=3000, p=d[first] / d[first].sum())
    _, probs = _exact_pair_probabilities(emb)
    p_second = np.zeros(len(g))
    for (s, _), p in probs.items():
        p_second[s] += p
    observed = np.bincount(wrong, minlength=len(g))[p_second > 0]
    assert stats.chisquare(observed, p_second[p_second > 0] * 3000).pvalue < 1e-3


def test_first_center_is_largest_norm():
    emb = _small_pool(50, seed=3)
    norms = (emb.materialize() ** 2).sum(axis=1)
    for seed in range(5):
        assert kmeans_pp(emb, 4, rng=np.random.default_rng(seed))[0] == np.argmax(norms)


@pytest.mark.parametrize("block_size", [1, 3, 128])
def test_never_repeats_even_with_duplicates_and_zero_rows(block_size):
    rng = np.random.default_rng(8)
    r = rng.normal(size=(10, 3))
    u = rng.normal(size=(10, 4))
    r[5:] = r[:5]  # exact duplicates
    u[5:] = u[:5]
    r[0] = 0.0  # a zero embedding (and its duplicate, row 5)
    r[5] = 0.0
    picks = kmeans_pp(FactorizedEmbedding(r, u), 10, rng=np.random.default_rng(1), block_size=block_size)
    assert sorted(picks.tolist()) == list(range(10))
    # The five distinct points come first: duplicates have D² = 0 once their twin is chosen.
    assert {int(p) % 5 for p in picks[:5]} == set(range(5))


def test_same_seed_same_picks_any_block_size_differs_only_in_speed():
    emb = _small_pool(300, seed=9)
    a = kmeans_pp(emb, 40, rng=np.random.default_rng(5), block_size=16)
    b = kmeans_pp(emb, 40, rng=np.random.default_rng(5), block_size=16)
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 40


def test_float32_and_float64_agree_on_well_separated_pool():
    emb = _small_pool(200, seed=10)
    emb32 = FactorizedEmbedding(emb.r.astype(np.float32), emb.u.astype(np.float32))
    a = kmeans_pp(emb, 10, rng=np.random.default_rng(2))
    b = kmeans_pp(emb32, 10, rng=np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)


def test_numpy_and_backend_pick_the_same_ids_in_float64(xp):
    rng = np.random.default_rng(11)
    r, u = rng.normal(size=(3000, 7)), rng.normal(size=(3000, 33))
    cpu = kmeans_pp(FactorizedEmbedding(r, u), 200, rng=np.random.default_rng(0), block_size=32)
    dev = kmeans_pp(FactorizedEmbedding(xp.asarray(r), xp.asarray(u)), 200,
                    rng=np.random.default_rng(0), xp=xp, block_size=32)
    np.testing.assert_array_equal(cpu, dev)


@pytest.mark.parametrize(("budget", "block_size", "message"), [
    (0, None, "budget must be in"), (7, None, "budget must be in"), (2, 0, "block_size must be"),
])
def test_bad_arguments(budget, block_size, message):
    with pytest.raises(ValueError, match=message):
        kmeans_pp(_small_pool(), budget, rng=np.random.default_rng(0), block_size=block_size)


def test_all_pairs_reachable():
    # Every ordered pair of non-first samples has positive probability in the pool used above.
    _, probs = _exact_pair_probabilities(_small_pool())
    assert len(probs) == len(list(itertools.permutations(range(5), 2)))
    assert min(probs.values()) > 0


@pytest.mark.parametrize("block_size", [1, 4])
def test_duplicates_of_chosen_centers_leave_a_uniform_draw(block_size):
    # Three distinct points repeated 3, 3 and 2 times: after one copy of each is
    # chosen every D² is exactly 0, so the 4th pick is uniform over the 5 unchosen
    # rows. (Rounding noise in the expansion used to decide it: always rows 3-5.)
    rng = np.random.default_rng(0)
    rep = np.repeat(np.arange(3), [3, 3, 2])
    emb = FactorizedEmbedding(rng.normal(size=(3, 7))[rep], rng.normal(size=(3, 33))[rep])
    runs = 250
    ranks = np.zeros(5, dtype=int)
    for seed in range(runs):
        picks = kmeans_pp(emb, 4, rng=np.random.default_rng(seed), block_size=block_size)
        assert sorted(rep[picks[:3]].tolist()) == [0, 1, 2]
        unchosen = np.setdiff1d(np.arange(8), picks[:3])
        ranks[np.searchsorted(unchosen, picks[3])] += 1
    result = stats.chisquare(ranks, np.full(5, runs / 5))
    assert result.pvalue > 1e-3, (result, ranks)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_center_groups_change_the_speed_not_the_picks(monkeypatch, caplog, dtype):
    # Clustered pseudo-labels, so most pairs are skipped and the grouped path runs.
    import mmal.select.refresh as refresh

    rng = np.random.default_rng(23)
    label = rng.integers(0, 12, size=3000)
    r = 0.05 * rng.uniform(size=(3000, 12))
    r[np.arange(3000), label] = -0.9
    u = 3 * rng.normal(size=(12, 40))[label] + rng.normal(size=(3000, 40))
    emb = FactorizedEmbedding(r.astype(dtype), u.astype(dtype))
    picks, work = {}, {}
    for group in (4, 1 << 30):
        monkeypatch.setattr(refresh, "CENTER_GROUP", group)
        monkeypatch.setattr(refresh, "REFRESH_CHUNK_ROWS", 500)
        with caplog.at_level(logging.DEBUG, logger="mmal.select.kmeanspp"):
            picks[group] = kmeans_pp(emb, 300, rng=np.random.default_rng(4), block_size=60)
        work[group] = int(re.search(r"for (\d+)% of the dense work", caplog.text).group(1))
        caplog.clear()
    np.testing.assert_array_equal(picks[4], picks[1 << 30])
    assert work[4] < work[1 << 30]  # the grouped path ran


def test_budgets_up_to_129_pick_the_same_with_the_old_and_new_default_block(caplog):
    # 0.3.0's default block was 128; the rejection limit stays that of 128-center blocks,
    # so until a 128-center block would have been refreshed the two schedules are one.
    rng = np.random.default_rng(5)
    label = rng.integers(0, 6, size=2000)
    r = 0.05 * rng.uniform(size=(2000, 6))
    r[np.arange(2000), label] = -0.9
    u = 6 * rng.normal(size=(6, 20))[label] + rng.normal(size=(2000, 20))
    emb = FactorizedEmbedding(r, u)
    picks = {}
    for block in (128, 256):
        with caplog.at_level(logging.DEBUG, logger="mmal.select.kmeanspp"):
            picks[block] = kmeans_pp(emb, 129, rng=np.random.default_rng(9), block_size=block)
        limited = int(re.search(r"\((\d+) after the rejection limit\)", caplog.text).group(1))
        assert limited >= 1  # a run of rejections ended in a refresh: the limit mattered
        caplog.clear()
    np.testing.assert_array_equal(picks[128], picks[256])
