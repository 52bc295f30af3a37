"""BALD: the direct mutual-information formula, known cases, the missing-mc_logits error."""

from __future__ import annotations

import numpy as np
import pytest

from mmal.cache.reader import open_cache
from mmal.errors import SelectionError
from mmal.select.backend import asnumpy
from mmal.select.strategies.bald import mutual_information, select_bald


def _direct(mc_logits, multi_label):
    """I = H(mean_t p_t) - mean_t H(p_t), one sample and one pass at a time."""
    out = []
    for sample in mc_logits.astype(np.float64):
        if multi_label:
            total = 0.0
            for k in range(sample.shape[1]):
                ps = [1 / (1 + np.exp(-z)) for z in sample[:, k]]
                hb = [-(p * np.log(p) + (1 - p) * np.log(1 - p)) for p in ps]
                pm = np.mean(ps)
                total += -(pm * np.log(pm) + (1 - pm) * np.log(1 - pm)) - np.mean(hb)
            out.append(total)
        else:
            ps = [np.exp(z - z.max()) / np.exp(z - z.max()).sum() for z in sample]
            pm = np.mean(ps, axis=0)
            out.append(-(pm * np.log(pm)).sum() - np.mean([-(p * np.log(p)).sum() for p in ps]))
    return np.array(out)


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_direct_formula(xp, multi_label, seed):
    mc = np.random.default_rng(seed).normal(scale=2.0, size=(12, 5, 4)).astype(np.float32)
    got = asnumpy(mutual_information(xp.asarray(mc), multi_label=multi_label, xp=xp))
    np.testing.assert_allclose(got, _direct(mc, multi_label), rtol=1e-10, atol=1e-12)
    assert (got > -1e-12).all()


def test_known_cases():
    agree = np.tile([[3.0, 0.0, -1.0]], (4, 1))          # every pass identical: I = 0
    split = np.array([[50.0, 0.0, 0.0], [0.0, 50.0, 0.0]] * 2)  # confident, disagreeing: I = log 2
    got = mutual_information(np.stack([agree, split]))
    np.testing.assert_allclose(got, [0.0, np.log(2.0)], atol=1e-12)
    ml = mutual_information(np.array([[[60.0], [-60.0]]]), multi_label=True)
    np.testing.assert_allclose(ml, [np.log(2.0)], atol=1e-12)


@pytest.mark.parametrize("kind", ["concat2", "multilabel", "featuresum3"])
def test_selection_is_brute_force_top_b(cache_factory, xp, kind):
    with open_cache(cache_factory(kind, mc_samples=4)) as cache:
        chosen = select_bald(cache, 20, rng=np.random.default_rng(0), xp=xp).positions
        unlabeled = np.flatnonzero(~cache.labeled)
        scores = _direct(cache.mc_logits()[unlabeled], cache.meta.multi_label)
    np.testing.assert_array_equal(chosen, unlabeled[np.argsort(-scores, kind="stable")[:20]])


def test_cache_without_mc_logits_is_a_clear_error(cache_factory):
    with open_cache(cache_factory("concat2")) as cache:
        with pytest.raises(SelectionError, match=r"cache\.h5: strategy 'bald' needs MC-dropout.*"
                                                 r"mmal extract --mc-dropout T"):
            select_bald(cache, 5, rng=np.random.default_rng(0))
