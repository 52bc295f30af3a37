"""Sequential GCN selection (Caramalau et al., CVPR 2021): CoreGCN and UncertainGCN.

The labeled and unlabeled samples are nodes of a feature-similarity graph; a
graph convolutional network learns to tell labeled nodes (target 1) from
unlabeled ones (target 0). Its confidence and its hidden node embeddings then
drive the selection:

* ``uncertaingcn``: the unlabeled nodes whose confidence ``s`` is closest to
  the margin ``s_margin`` (paper: 0.1), i.e. smallest ``|s - s_margin|``;
* ``coregcn``: greedy k-center on the GCN's hidden embeddings, the labeled
  nodes as initial centers (the same exact k-center as ``coreset``);
* ``gcn``: either, chosen by ``variant="core"`` (default) or ``"uncertain"``.

As in the paper: node features are the L2-normalised fused features ``h``;
two graph convolutions ``x -> relu(A x W1) -> dropout -> A (.) w2 -> sigmoid``
with 128 hidden units and dropout 0.3; loss
``-mean_labeled log s - λ mean_unlabeled log(1 - s)`` with ``λ = 1.2``; Adam
(lr 1e-3, weight decay 5e-4) for 200 full-graph epochs.

Bounded memory, where mmal departs from the paper: the paper's adjacency is
the dense N×N correlation of the normalised features (about 130 GB at 180k
samples). mmal instead

1. like the paper, works on a random subset of the unlabeled pool: ``subset``
   unlabeled nodes (paper: 10,000; at least ``budget``), plus the labeled
   samples (a random ``subset`` of them when there are more); both drawn with
   ``rng``, all nodes when the pool is small enough;
2. keeps, for each node, only its ``neighbors`` most similar other nodes
   (cosine similarity, exact FAISS inner-product search), negative
   similarities set to 0, row-normalised, plus a self loop of weight 1 — the
   paper's ``D⁻¹(S - I) + I`` restricted to a k-nearest-neighbour graph.

Memory is then O(n_nodes · (D + neighbors)). torch is imported inside the
strategy only; it runs on the GPU when ``xp`` is CuPy and torch sees CUDA.
Weights and dropout masks are drawn from a ``torch.Generator`` seeded with
``rng.integers``, so a seed fixes the result (for a given torch build and
device). A GCN needs positives: with no labeled sample the strategy raises a
:class:`SelectionError` (use ``random`` for the first round).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmal.cache.reader import Cache
from mmal.errors import SelectionError
from mmal.progress import progress_bar
from mmal.select.backend import backend_name
from mmal.select.knn import FlatIndex
from mmal.select.params import float_param, int_param
from mmal.select.registry import Selection, register
from mmal.select.scoring import head_inputs, top_scores
from mmal.select.strategies.coreset import k_center_greedy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GCNConfig:
    """Graph and training settings (defaults: the paper's, graph size: mmal's bound)."""

    subset: int = 10_000
    neighbors: int = 10
    hidden: int = 128
    dropout: float = 0.3
    epochs: int = 200
    lr: float = 1e-3
    weight_decay: float = 5e-4
    lambda_unlabeled: float = 1.2

    def __post_init__(self) -> None:
        """Refuse settings outside their range (ValueError naming the field)."""
        for name in ("subset", "neighbors", "hidden", "epochs"):
            object.__setattr__(self, name, int_param(name, getattr(self, name), minimum=1))
        checked = {
            "dropout": float_param("dropout", self.dropout, low=0, high=1, open_high=True),
            "lr": float_param("lr", self.lr, low=0, open_low=True),
            "weight_decay": float_param("weight_decay", self.weight_decay, low=0),
            "lambda_unlabeled": float_param("lambda_unlabeled", self.lambda_unlabeled, low=0),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """(n, D) float32 rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def knn_graph(x: np.ndarray, neighbors: int, *, xp: Any = np) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse adjacency ``A = D⁻¹ S + I`` of the k-nearest-neighbour cosine graph.

    Parameters
    ----------
    x : (n, D) float32, rows of unit norm
    neighbors : int
        Other nodes kept per node (fewer when ``n - 1`` is smaller).

    Returns
    -------
    rows, cols : (nnz,) int64
    values : (nnz,) float32
        Entries of ``A``: row ``i`` holds ``max(cos(i, j), 0) / Σ_j max(cos, 0)``
        over its neighbours ``j`` and 1 on the diagonal.
    """
    n = len(x)
    k = min(neighbors, n - 1)
    diag = np.arange(n, dtype=np.int64)
    if k < 1:
        return diag, diag, np.ones(n, dtype=np.float32)
    index = FlatIndex(x.shape[1], metric="ip", xp=xp)
    index.add(x)
    sims, ids = index.search(x, k + 1)
    keep = ids != diag[:, None]
    no_self = keep.all(axis=1)  # duplicates can push a node out of its own list
    keep[no_self, -1] = False
    sims = np.maximum(sims[keep].reshape(n, k), 0.0).astype(np.float64)
    ids = ids[keep].reshape(n, k)
    degree = sims.sum(axis=1, keepdims=True)
    weights = np.where(degree > 0, sims / np.where(degree > 0, degree, 1.0), 0.0)
    rows = np.concatenate([np.repeat(diag, k), diag])
    cols = np.concatenate([ids.ravel(), diag])
    values = np.concatenate([weights.ravel(), np.ones(n)]).astype(np.float32)
    return rows, cols, values


def train_gcn(
    features: np.ndarray, is_labeled: np.ndarray, *, config: GCNConfig, seed: int, xp: Any = np,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Train the labeled-vs-unlabeled GCN on the nodes; return its confidences and embeddings.

    Parameters
    ----------
    features : (n, D) float32
        Node features (raw; normalised here).
    is_labeled : (n,) bool
        Node targets; at least one True and one False.
    seed : int
        Seeds the ``torch.Generator`` for initial weights and dropout.
    progress : bool
        Show a tqdm bar over the training epochs.

    Returns
    -------
    scores : (n,) float64
        ``s``, the GCN's probability that each node is labeled.
    embeddings : (n, hidden) float32
        First-layer node embeddings (after ReLU, no dropout).
    """
    import torch  # deferred: keeps torch out of `mmal select` for every other strategy

    device = "cuda" if backend_name(xp) == "cupy" and torch.cuda.is_available() else "cpu"
    x_np = normalize_rows(features)
    rows, cols, values = knn_graph(x_np, config.neighbors, xp=xp)
    n = len(x_np)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    adj = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([rows, cols])), torch.from_numpy(values), (n, n),
        check_invariants=True,
    ).coalesce().to(device)
    # The first layer's input A·x is fixed: propagate it once, not every epoch.
    ax = torch.sparse.mm(adj, torch.from_numpy(x_np).to(device))
    target = torch.from_numpy(np.asarray(is_labeled, dtype=bool)).to(device)

    def uniform(*shape: int) -> torch.Tensor:
        bound = 1.0 / np.sqrt(shape[-1])
        t = (torch.rand(*shape, generator=gen, device=device) * 2.0 - 1.0) * bound
        return t.requires_grad_()

    w1, b1 = uniform(x_np.shape[1], config.hidden), uniform(config.hidden)
    w2, b2 = uniform(config.hidden, 1), uniform(1)
    params = [w1, b1, w2, b2]

    def forward(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = torch.relu(ax @ w1 + b1)
        dropped = hidden
        if train and config.dropout > 0:
            keep = torch.rand(hidden.shape, generator=gen, device=device) >= config.dropout
            dropped = hidden * keep / (1.0 - config.dropout)
        logit = torch.sparse.mm(adj, dropped @ w2)[:, 0] + b2
        return logit, hidden

    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    loss = torch.zeros(())
    for _ in progress_bar(range(config.epochs), enabled=progress, desc="GCN", unit="epoch",
                          leave=False):
        optimizer.zero_grad()
        logit, _ = forward(train=True)
        log_s = torch.nn.functional.logsigmoid(logit)
        log_not_s = torch.nn.functional.logsigmoid(-logit)
        loss = -log_s[target].mean() - config.lambda_unlabeled * log_not_s[~target].mean()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logit, hidden = forward(train=False)
        scores = torch.sigmoid(logit.double()).cpu().numpy()
        embeddings = hidden.float().cpu().numpy()
    log.debug("GCN trained on %d nodes, final loss %.4f", n, float(loss.detach()))
    return scores, embeddings


def _nodes(cache: Cache, budget: int, subset: int, rng: np.random.Generator) -> np.ndarray:
    """(N,) bool mask of the graph's nodes: the labeled samples and an unlabeled subset."""
    labeled = cache.labeled
    mask = np.zeros_like(labeled)
    for pool, size in ((np.flatnonzero(labeled), subset),
                       (np.flatnonzero(~labeled), max(subset, budget))):
        take = pool if len(pool) <= size else rng.choice(pool, size=size, replace=False)
        mask[take] = True
    return mask


def _run(cache: Cache, budget: int, variant: str, rng: np.random.Generator, xp: Any,
         progress: bool, params: dict[str, Any]) -> Selection:
    if variant not in ("core", "uncertain"):
        raise SelectionError(f"gcn variant must be 'core' or 'uncertain', got {variant!r}")
    if not cache.labeled.any():
        raise SelectionError(
            f"{cache.path}: strategy '{variant}gcn' needs labeled samples to train its graph "
            "network and this cache has none; use --strategy random for the first round"
        )
    margin = float_param("s_margin", params.pop("s_margin", 0.1), low=0, high=1)
    try:
        config = GCNConfig(**params)
    except TypeError as exc:
        raise SelectionError(f"gcn: {exc}; known settings: {', '.join(GCNConfig.__annotations__)}") from None
    nodes = _nodes(cache, budget, config.subset, rng)
    positions = np.flatnonzero(nodes).astype(np.int64)
    is_labeled = cache.labeled[positions]
    scores, emb = train_gcn(head_inputs(cache, nodes), is_labeled, config=config,
                            seed=int(rng.integers(2**63 - 1)), xp=xp, progress=progress)
    unl = ~is_labeled
    if variant == "uncertain":
        picks = top_scores(positions[unl], np.abs(scores[unl] - margin), budget, largest=False)
    else:
        order = k_center_greedy(emb[unl], budget, centers=emb[is_labeled], rng=rng, xp=xp)
        picks = positions[unl][order]
    summary = {"graph_nodes": int(len(positions)), "labeled_nodes": int(is_labeled.sum()),
               "mean_score_labeled": float(scores[is_labeled].mean()),
               "mean_score_unlabeled": float(scores[unl].mean())}
    return Selection(positions=picks, summary=summary)


@register("coregcn", "CoreGCN: k-center greedy on GCN embeddings of a labeled-vs-unlabeled graph")
def select_coregcn(cache: Cache, budget: int, *, rng: np.random.Generator, xp: Any = np,
                   progress: bool = False, **params: Any) -> Selection:
    """CoreGCN; ``params`` are :class:`GCNConfig` fields (see the module docstring).

    ``progress`` shows a bar over the training epochs.
    """
    return _run(cache, budget, "core", rng, xp, progress, params)


@register("uncertaingcn", "UncertainGCN: GCN labeled-vs-unlabeled confidence closest to s_margin")
def select_uncertaingcn(cache: Cache, budget: int, *, rng: np.random.Generator, xp: Any = np,
                        progress: bool = False, **params: Any) -> Selection:
    """UncertainGCN; ``s_margin`` (default 0.1) and :class:`GCNConfig` fields as ``params``.

    ``progress`` shows a bar over the training epochs.
    """
    return _run(cache, budget, "uncertain", rng, xp, progress, params)


@register("gcn", "CoreGCN (variant='core', default) or UncertainGCN (variant='uncertain')")
def select_gcn(cache: Cache, budget: int, *, rng: np.random.Generator, xp: Any = np,
               variant: str = "core", progress: bool = False, **params: Any) -> Selection:
    """``coregcn`` or ``uncertaingcn`` by ``variant``; other ``params`` as theirs."""
    return _run(cache, budget, variant, rng, xp, progress, params)
