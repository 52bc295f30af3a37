"""BMMAL: the paper's three guidelines, embedding and diagnostics on synthetic caches."""

from __future__ import annotations

import numpy as np
import pytest

from mmal.cache import open_cache
from mmal.select.balance import dominance_summary, modality_balance
from mmal.select.embedding import cache_embedding, logit_gradient
from mmal.select.strategies.bmmal import select_bmmal
from mmal.shapley import coalition_values, shapley_values


def _linear_coalitions(z1, z2, weight, bias):
    """Coalition logits (n, 4, K) of a concat head: modalities outside the mask zeroed."""
    out = []
    for mask in range(4):
        h = np.concatenate([z1 * (mask & 1), z2 * (mask >> 1 & 1)], axis=1)
        out.append(h @ weight.T + bias)
    return np.stack(out, axis=1)


def test_guideline1_equal_badge_norm_the_balanced_sample_keeps_the_larger_norm():
    # Two samples with identical logits and features (so identical BADGE embeddings) whose
    # coalition outcomes differ: sample 0 is balanced, sample 1 is dominated by modality 0.
    logits = np.array([[2.0, 0.5, -1.0]] * 2)
    z1, z2 = np.array([[1.0, 2.0]] * 2), np.array([[0.5, -1.0]] * 2)
    coalitions = np.zeros((2, 4, 3))
    coalitions[:, 3] = logits[0]
    coalitions[0, 1] = coalitions[0, 2] = [1.0, 0.5, -1.0]  # each alone helps equally
    coalitions[1, 1] = [1.9, 0.5, -1.0]  # modality 0 alone almost reaches the full outcome
    coalitions[1, 2] = [0.0, 0.5, -1.0]
    balance = modality_balance(logits, coalitions)
    assert balance["rho"][0] == pytest.approx(0.0)
    assert balance["rho"][1] > 0.5
    r = logit_gradient(logits)
    badge = np.linalg.norm(r, axis=1) * np.linalg.norm(np.concatenate([z1, z2], 1), axis=1)
    w = balance["weights"]
    scaled = np.concatenate([w[:, :1] * z1, w[:, 1:] * z2], axis=1)
    bmmal = np.linalg.norm(r, axis=1) * np.linalg.norm(scaled, axis=1)
    assert badge[0] == pytest.approx(badge[1])
    assert bmmal[0] == pytest.approx(badge[0])  # balanced: not damped
    assert bmmal[1] < bmmal[0]


def test_guideline1_on_a_consistent_linear_head():
    # Damping grows with imbalance: the BMMAL/BADGE norm ratio falls as rho rises.
    rng = np.random.default_rng(0)
    n, k = 400, 4
    z1, z2 = rng.normal(size=(n, 3)), rng.normal(size=(n, 3)) * rng.uniform(0.05, 2, size=(n, 1))
    weight, bias = rng.normal(size=(k, 6)), np.zeros(k)
    coalitions = _linear_coalitions(z1, z2, weight, bias)
    balance = modality_balance(coalitions[:, 3], coalitions)
    w = balance["weights"]
    h = np.concatenate([z1, z2], axis=1)
    ratio = np.linalg.norm(np.concatenate([w[:, :1] * z1, w[:, 1:] * z2], 1), axis=1) / np.linalg.norm(h, axis=1)
    assert np.all(ratio <= 1 + 1e-12)
    order = np.argsort(balance["rho"])
    assert ratio[order[: n // 4]].mean() > ratio[order[-n // 4:]].mean()


@pytest.mark.parametrize("kind", ["concat2", "concat3", "featuresum2", "featuresum3", "sum2",
                                  "sum3", "nlgate2", "nlgate3"])
def test_guideline2_stronger_modality_subpool_is_damped_more(cache_factory, kind):
    path = cache_factory(kind, num_samples=600, dominance=3.0)
    with open_cache(path) as cache:
        sel = select_bmmal(cache, 5, rng=np.random.default_rng(0))
    pools = sel.summary["subpools"]
    assert pools["m0"]["size"] > pools["m1"]["size"] > 0  # m0 is the stronger modality
    assert pools["m0"]["mean_weaker_weight"] < pools["m1"]["mean_weaker_weight"]


@pytest.mark.parametrize("num_modalities", [2, 3])
def test_guideline3_dominant_modality_keeps_the_larger_weight(num_modalities):
    rng = np.random.default_rng(num_modalities)
    coalitions = rng.normal(size=(300, 2**num_modalities, 6)) * 2
    balance = modality_balance(coalitions[:, -1], coalitions)
    w, share = balance["weights"], balance["Phi"]
    dominant = np.argmax(share, axis=1)
    np.testing.assert_allclose(w[np.arange(300), dominant], 1.0)
    assert np.all(w <= 1.0 + 1e-12) and np.all(w >= 0.0)
    assert np.all(w.max(axis=1) == w[np.arange(300), dominant])
    np.testing.assert_allclose(balance["rho"], share.max(axis=1) - share.min(axis=1))
    if num_modalities == 2:
        np.testing.assert_allclose(balance["rho"], np.abs(share[:, 0] - share[:, 1]))
        np.testing.assert_allclose(w.min(axis=1), 1 - balance["rho"])


def test_dominance_summary_known_answer():
    share = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
    weights = 1 - (share.max(axis=1, keepdims=True) - share)
    summary = dominance_summary(share, weights, ["audio", "video"])
    assert summary["pool_size"] == 4
    audio, video = summary["subpools"]["audio"], summary["subpools"]["video"]
    assert audio["size"] == 3 and video["size"] == 1  # the tie goes to the first modality
    assert audio["mean_weaker_weight"] == pytest.approx((0.4 + 0.8 + 1.0) / 3)
    assert video["mean_weight"]["audio"] == pytest.approx(0.6)
    empty = dominance_summary(share[:1], weights[:1], ["audio", "video"])["subpools"]["video"]
    assert empty["size"] == 0 and empty["mean_weaker_weight"] is None


@pytest.mark.parametrize("kind", ["concat2", "featuresum2", "concat3", "featuresum3", "sum2",
                                  "sum3", "nlgate2", "nlgate3", "multilabel", "float16"])
def test_embedding_and_diagnostics_match_direct_computation(cache_factory, kind):
    path = cache_factory(kind)
    with open_cache(path) as cache:
        sel = select_bmmal(cache, 7, rng=np.random.default_rng(0), precision="float64")
        rows = np.flatnonzero(~cache.labeled)
        logits = cache.logits("mm", rows).astype(np.float64)
        coalitions = cache.coalitions(rows)
        feats = [cache.features(m, rows).astype(np.float64) for m in cache.meta.modalities]
        target = logits.argmax(axis=1)
        values = coalition_values(coalitions, target, multi_label=cache.meta.multi_label)
        phi = shapley_values(values)
        np.testing.assert_allclose(sel.diagnostics["phi"], phi, rtol=1e-10, atol=1e-12)
        w = sel.diagnostics["weights"]
        scaled = [w[:, m:m + 1] * z for m, z in enumerate(feats)]
        # the weighted blocks: summed for feature-sum, concatenated for every other fusion
        u = sum(scaled) if cache.meta.fusion == "feature-sum" else np.concatenate(scaled, 1)
        modality_weights = lambda rows_, keep, _: w[np.searchsorted(rows, np.arange(rows_.start, rows_.stop)[keep])]  # noqa: E731
        positions, emb = cache_embedding(cache, dtype="float64", modality_weights=modality_weights,
                                         block_rows=50)
        np.testing.assert_array_equal(positions, rows)
        np.testing.assert_allclose(emb.u, u, rtol=1e-6)
        assert not cache.labeled[sel.positions].any()
        assert len(set(sel.positions.tolist())) == 7
        assert sel.diagnostics["Phi"].shape == (len(rows), cache.meta.num_modalities)
        assert sel.diagnostics["rho"].shape == (len(rows),)


@pytest.mark.parametrize("kind", ["concat3", "featuresum2", "sum2", "nlgate2"])
def test_numpy_and_backend_pick_the_same_rows_in_float64(cache_factory, xp, kind):
    with open_cache(cache_factory(kind)) as cache:
        cpu = select_bmmal(cache, 20, rng=np.random.default_rng(0), precision="float64")
        dev = select_bmmal(cache, 20, rng=np.random.default_rng(0), xp=xp, precision="float64")
    np.testing.assert_array_equal(cpu.positions, dev.positions)
    np.testing.assert_allclose(cpu.diagnostics["weights"], dev.diagnostics["weights"], rtol=1e-12)


def test_nl_gate_bmmal_embeds_the_weighted_single_modality_latents(cache_factory):
    """Not the head input: with every weight 1, BMMAL's u is [z_1, z_2], BADGE's the fused latent."""
    with open_cache(cache_factory("nlgate2")) as cache:
        ones = lambda rows, keep, logits: np.ones((int(keep.sum()), 2))  # noqa: E731
        _, bmmal = cache_embedding(cache, dtype="float64", modality_weights=ones)
        _, badge = cache_embedding(cache, dtype="float64")
        rows = np.flatnonzero(~cache.labeled)
        np.testing.assert_array_equal(
            bmmal.u, np.concatenate([cache.features(m, rows) for m in ("m0", "m1")], axis=1))
        np.testing.assert_array_equal(badge.u, cache.read("head_input", rows))
        assert bmmal.u.shape[1] == 2 * badge.u.shape[1]


def test_bmmal_equals_badge_when_every_sample_is_balanced(cache_factory):
    # With w = 1 everywhere BMMAL's embedding is BADGE's, so the same seed picks the same rows.
    from mmal.select.strategies import bmmal as bmmal_module
    from mmal.select.strategies.badge import select_badge

    path = cache_factory("concat2")
    original = bmmal_module.modality_balance

    def balanced(*args, **kwargs):
        out = original(*args, **kwargs)
        out["weights"] = np.ones_like(out["weights"])
        return out

    with open_cache(path) as cache:
        badge = select_badge(cache, 10, rng=np.random.default_rng(4))
        bmmal_module.modality_balance = balanced
        try:
            bmmal = select_bmmal(cache, 10, rng=np.random.default_rng(4))
        finally:
            bmmal_module.modality_balance = original
        unbalanced = select_bmmal(cache, 10, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(badge.positions, bmmal.positions)
    assert not np.array_equal(badge.positions, unbalanced.positions)
