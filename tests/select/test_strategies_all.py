"""Properties every registered strategy keeps, on every kind of synthetic cache."""

from __future__ import annotations

import numpy as np
import pytest

from mmal.cache.reader import open_cache
from mmal.select.registry import available_strategies

STRATEGIES = sorted(available_strategies())
KINDS = ["concat2", "featuresum2", "concat3", "featuresum3", "sum2", "nlgate2", "nlgate3",
         "multilabel", "float16"]
BASELINES = {"random", "entropy", "margin", "least-confidence", "bald", "coreset", "kmeans",
             "deepfool", "gcn", "coregcn", "uncertaingcn"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(cache, name, budget, seed):
    sel = available_strategies()[name].func(cache, budget, rng=np.random.default_rng(seed), xp=np)
    return np.asarray(sel.positions)


def _check(cache, positions, budget):
    assert positions.dtype == np.int64
    assert positions.shape == (budget,)
    assert len(np.unique(positions)) == budget, "a sample was picked twice"
    assert ((positions >= 0) & (positions < cache.num_samples)).all()
    assert not cache.labeled[positions].any(), "a labeled sample was picked"


def test_every_baseline_is_registered():
    assert BASELINES <= set(STRATEGIES)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", STRATEGIES)
def test_budget_respected_no_labeled_no_repeat_deterministic(cache_factory, name, kind):
    with open_cache(cache_factory(kind, mc_samples=3)) as cache:
        first = _run(cache, name, 17, seed=7)
        _check(cache, first, 17)
        np.testing.assert_array_equal(first, _run(cache, name, 17, seed=7))


@pytest.mark.parametrize("name", STRATEGIES)
def test_whole_unlabeled_pool(cache_factory, name):
    with open_cache(cache_factory("concat2", mc_samples=3)) as cache:
        n = cache.num_unlabeled
        positions = _run(cache, name, n, seed=1)
        _check(cache, positions, n)
        np.testing.assert_array_equal(np.sort(positions), np.flatnonzero(~cache.labeled))


@pytest.mark.parametrize("name", STRATEGIES)
def test_budget_of_one(cache_factory, name):
    with open_cache(cache_factory("multilabel", mc_samples=3)) as cache:
        _check(cache, _run(cache, name, 1, seed=2), 1)
