"""CoreGCN / UncertainGCN: the k-NN graph, the labeled-vs-unlabeled GCN, selection wiring."""

from __future__ import annotations

import numpy as np
import pytest

from mmal.cache.reader import open_cache
from mmal.cache.synthetic import make_synthetic_cache
from mmal.errors import SelectionError
from mmal.select.strategies import gcn
from mmal.select.strategies.gcn import (
    GCNConfig,
    knn_graph,
    normalize_rows,
    select_coregcn,
    select_gcn,
    select_uncertaingcn,
    train_gcn,
)
from tests.select.test_coreset import brute_k_center

FAST = dict(epochs=30)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_knn_graph_is_the_row_normalised_cosine_neighbourhood():
    x = normalize_rows(np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32))
    rows, cols, values = knn_graph(x, 4)
    adj = np.zeros((40, 40))
    np.add.at(adj, (rows, cols), values)
    np.testing.assert_allclose(np.diag(adj), 1.0)
    cos = x.astype(np.float64) @ x.T.astype(np.float64)
    np.fill_diagonal(cos, -np.inf)
    for i in range(40):
        nbrs = np.argsort(-cos[i])[:4]
        sims = np.maximum(cos[i, nbrs], 0.0)
        expected = np.zeros(40)
        if sims.sum() > 0:
            expected[nbrs] = sims / sims.sum()
        off = adj[i].copy()
        off[i] = 0.0
        np.testing.assert_allclose(off, expected, atol=1e-5)
    assert len(rows) == 40 * 5


def test_knn_graph_of_a_single_node_is_a_self_loop():
    rows, cols, values = knn_graph(np.ones((1, 3), np.float32), 10)
    assert rows.tolist() == [0] and cols.tolist() == [0] and values.tolist() == [1.0]


def test_gcn_learns_where_the_labeled_nodes_are():
    """Labeled nodes all in blob A: unlabeled nodes of A score higher than those of blob B."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(90, 6)) + np.array([4.0, 0, 0, 0, 0, 0])
    b = rng.normal(size=(60, 6)) + np.array([0, 4.0, 0, 0, 0, 0])
    features = np.concatenate([a, b]).astype(np.float32)
    labeled = np.zeros(150, dtype=bool)
    labeled[:30] = True
    scores, emb = train_gcn(features, labeled, config=GCNConfig(epochs=150), seed=1)
    assert scores.shape == (150,) and emb.shape == (150, 128) and emb.dtype == np.float32
    assert scores[30:90].mean() > scores[90:].mean() + 0.05, (scores[30:90].mean(), scores[90:].mean())
    assert scores[:30].mean() > scores[30:].mean()
    again, emb2 = train_gcn(features, labeled, config=GCNConfig(epochs=150), seed=1)
    np.testing.assert_array_equal(scores, again)
    np.testing.assert_array_equal(emb, emb2)


@pytest.fixture
def fake_training(monkeypatch):
    """Replace the GCN by fixed scores and embeddings so the selection rules can be checked."""
    seen = {}

    def fake(features, is_labeled, *, config, seed, xp=np, progress=False):
        rng = np.random.default_rng(len(features))
        seen.update(n=len(features), labeled=int(is_labeled.sum()), config=config)
        seen["scores"] = rng.random(len(features))
        seen["emb"] = rng.normal(size=(len(features), 3)).astype(np.float32)
        seen["is_labeled"] = is_labeled
        return seen["scores"], seen["emb"]

    monkeypatch.setattr(gcn, "train_gcn", fake)
    return seen


def test_uncertaingcn_takes_scores_closest_to_the_margin(cache_factory, fake_training):
    with open_cache(cache_factory("concat2")) as cache:
        sel = select_uncertaingcn(cache, 12, rng=np.random.default_rng(0), s_margin=0.3)
        unl = np.flatnonzero(~cache.labeled)
    unl_scores = fake_training["scores"][~fake_training["is_labeled"]]
    expected = unl[np.argsort(np.abs(unl_scores - 0.3), kind="stable")[:12]]
    np.testing.assert_array_equal(sel.positions, expected)
    assert sel.summary["graph_nodes"] == cache.num_samples  # small pool: every sample is a node


def test_coregcn_is_k_center_on_the_embeddings(cache_factory, fake_training):
    with open_cache(cache_factory("concat2")) as cache:
        sel = select_coregcn(cache, 12, rng=np.random.default_rng(0))
        unl = np.flatnonzero(~cache.labeled)
    emb, lab = fake_training["emb"], fake_training["is_labeled"]
    np.testing.assert_array_equal(sel.positions, unl[brute_k_center(emb[~lab], 12, centers=emb[lab])])


def test_large_pools_are_subsampled(cache_factory, fake_training):
    with open_cache(cache_factory("concat2")) as cache:
        sel = select_coregcn(cache, 35, rng=np.random.default_rng(0), subset=20)
        n_lab = cache.num_labeled
    # labeled nodes capped at subset, unlabeled nodes at max(subset, budget)
    assert fake_training["labeled"] == min(n_lab, 20)
    assert fake_training["n"] == min(n_lab, 20) + 35
    assert fake_training["config"].subset == 20
    assert len(set(sel.positions.tolist())) == 35


@pytest.mark.parametrize("variant, func", [("core", select_coregcn), ("uncertain", select_uncertaingcn)])
def test_gcn_alias_is_its_variant(cache_factory, variant, func):
    with open_cache(cache_factory("featuresum2")) as cache:
        a = select_gcn(cache, 10, rng=np.random.default_rng(5), variant=variant, **FAST).positions
        b = func(cache, 10, rng=np.random.default_rng(5), **FAST).positions
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, message", [
    (dict(variant="both"), "gcn variant must be"),
    (dict(hiden=3), "unexpected keyword argument 'hiden'.*known settings"),
])
def test_bad_settings(cache_factory, kwargs, message):
    with open_cache(cache_factory("concat2")) as cache:
        with pytest.raises(SelectionError, match=message):
            select_gcn(cache, 5, rng=np.random.default_rng(0), **kwargs)


def test_no_labeled_sample_is_a_clear_error(tmp_path):
    path = make_synthetic_cache(tmp_path / "c.h5", num_samples=50, labeled_fraction=0.0)
    with open_cache(path) as cache:
        with pytest.raises(SelectionError, match="needs labeled samples.*--strategy random"):
            select_coregcn(cache, 5, rng=np.random.default_rng(0))


def test_progress_bar_counts_the_training_epochs(capsys, monkeypatch):
    from mmal import progress

    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: True)  # bars show on terminals
    features = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    labeled = np.arange(20) < 5
    train_gcn(features, labeled, config=GCNConfig(epochs=3, hidden=4), seed=0, progress=True)
    err = capsys.readouterr().err
    assert "GCN" in err and "/3 " in err and "epoch" in err, err
    train_gcn(features, labeled, config=GCNConfig(epochs=3, hidden=4), seed=0)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("strategy", ["coregcn", "uncertaingcn", "gcn"])
def test_progress_reaches_the_gcn_and_stays_out_of_provenance(cache_factory, tmp_path, strategy):
    from mmal.select import select

    index = select(cache_factory("concat2"), strategy, 5, out=tmp_path / "s.json",
                   params={"epochs": 2}, progress=True)
    assert len(index.ids) == 5
    assert "progress" not in index.provenance["params"]
    assert index.provenance["params"]["epochs"] == 2
