"""FAISS behind a tiny interface: exact nearest-neighbour search and k-means.

The FAISS backend is chosen once from the array module: GPU FAISS when ``xp``
is CuPy and the installed FAISS was built with GPU support, CPU FAISS
otherwise. Vectors cross the boundary as C-contiguous float32 host arrays
(FAISS copies them to the GPU itself), results come back as NumPy arrays.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from mmal.select.backend import asnumpy, backend_name

log = logging.getLogger(__name__)

#: Query rows per FAISS call: bounds the host copy of a CuPy block and the
#: (rows, k) results held at once.
SEARCH_BLOCK_ROWS = 16384

_GPU_RESOURCES = None


def faiss_uses_gpu(xp: Any) -> bool:
    """True when ``xp`` is CuPy and FAISS can run on a GPU."""
    if backend_name(xp) != "cupy":
        return False
    # deferred (here and below): `mmal strategies` and `mmal select` import every strategy
    # module, and only kmeans, coreset and gcn search
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _gpu_resources():
    global _GPU_RESOURCES
    if _GPU_RESOURCES is None:
        import faiss  # deferred: see faiss_uses_gpu

        _GPU_RESOURCES = faiss.StandardGpuResources()
    return _GPU_RESOURCES


def as_faiss(x: Any) -> np.ndarray:
    """``x`` as a C-contiguous float32 host array (copies only when needed)."""
    return np.ascontiguousarray(asnumpy(x), dtype=np.float32)


class FlatIndex:
    """Exact (brute-force) search over the added vectors.

    Parameters
    ----------
    dim : int
        Vector width ``D``.
    metric : {"l2", "ip"}
        Squared Euclidean distance (smallest first) or inner product
        (largest first).
    xp : array module
        CuPy selects GPU FAISS when available.

    Examples
    --------
    >>> index = FlatIndex(2)
    >>> index.add(np.array([[0.0, 0.0], [3.0, 4.0]]))
    >>> index.search(np.array([[3.0, 3.0]]), 1)
    (array([[1.]], dtype=float32), array([[1]]))
    """

    def __init__(self, dim: int, *, metric: str = "l2", xp: Any = np) -> None:
        import faiss  # deferred: see faiss_uses_gpu

        if metric not in ("l2", "ip"):
            raise ValueError(f"unknown metric {metric!r}; expected 'l2' or 'ip'")
        self.dim, self.metric = int(dim), metric
        self.on_gpu = faiss_uses_gpu(xp)
        if self.on_gpu:
            make = faiss.GpuIndexFlatL2 if metric == "l2" else faiss.GpuIndexFlatIP
            self._index = make(_gpu_resources(), self.dim)
        else:
            self._index = faiss.IndexFlatL2(self.dim) if metric == "l2" else faiss.IndexFlatIP(self.dim)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, x: Any) -> None:
        """Append the rows of ``x`` (n, D); they get ids ``len(self) .. len(self)+n-1``."""
        self._index.add(self._checked(x))

    def search(self, x: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest added vectors of each row of ``x`` (n, D).

        Returns
        -------
        scores : (n, k) float32
            Squared distances (``l2``, clipped at 0) or inner products (``ip``),
            best first.
        ids : (n, k) int64
            Row numbers in the order of :meth:`add`.
        """
        if not 1 <= k <= len(self):
            raise ValueError(f"k must be in [1, {len(self)}] (the vectors added), got {k}")
        n = int(x.shape[0])
        scores = np.empty((n, k), dtype=np.float32)
        ids = np.empty((n, k), dtype=np.int64)
        for start in range(0, n, SEARCH_BLOCK_ROWS):
            stop = min(start + SEARCH_BLOCK_ROWS, n)
            scores[start:stop], ids[start:stop] = self._index.search(self._checked(x[start:stop]), k)
        if self.metric == "l2":
            np.maximum(scores, 0.0, out=scores)  # the BLAS expansion can round below 0
        return scores, ids

    def _checked(self, x: Any) -> np.ndarray:
        x = as_faiss(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (n, {self.dim}), got {x.shape}")
        return x


def kmeans(x: Any, k: int, *, seed: int, niter: int = 20, xp: Any = np,
           init_centroids: Any = None) -> np.ndarray:
    """Lloyd's k-means by FAISS; returns the (k, D) float32 centroids.

    Parameters
    ----------
    x : (n, D) array, ``n >= k``
    k : int
    seed : int
        FAISS's seed for the initial centroids and its training subsample
        (at most 256 points per centroid are used, FAISS's default).
    niter : int
        Lloyd iterations.
    xp : array module
        CuPy selects GPU FAISS when available.
    init_centroids : (k, D) array, optional
        Starting centroids (e.g. k-means++ seeds); default FAISS's random
        sample of ``k`` points.
    """
    import faiss  # deferred: see faiss_uses_gpu

    data = as_faiss(x)
    n, dim = data.shape
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] (the points), got {k}")
    model = faiss.Kmeans(dim, int(k), niter=int(niter), seed=int(seed), verbose=False,
                         gpu=faiss_uses_gpu(xp), min_points_per_centroid=1)
    model.train(data, init_centroids=None if init_centroids is None else as_faiss(init_centroids))
    return np.array(model.centroids, dtype=np.float32).reshape(k, dim)
