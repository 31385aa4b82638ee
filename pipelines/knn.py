"""Exact cosine nearest neighbours of the fitted verbatims, given to UMAP instead of its approximate search.

Above 4,096 points UMAP finds neighbours with pynndescent, whose search functions are numba closures built per
process: they cannot be cached on disk and compiled for ~30 s on every 20,000-verbatim fit (bench/run.py
topics100k). For the fitted sample (``topics.fit_max_verbatims``, 20,000 by default) the exact answer is a few
blocked matrix products: seconds, no compilation, and no approximation error. ``ExactIndex`` also answers
UMAP's ``transform`` queries (codebook themes transform a subset), the one thing UMAP asks of its search index.
Beyond ``EXACT_MAX`` points the quadratic cost would exceed the search's, and UMAP searches as before.
Not scikit-learn's brute-force ``kneighbors``: UMAP's graph wants each point first among its neighbours, and
with duplicate verbatims (distance 0 to each other) scikit-learn's order among ties is not guaranteed.
"""

from __future__ import annotations

import numpy as np

EXACT_MAX = 50_000  # 2.5e9 dot products of 512 floats: ~25 s on 2 cores, about pynndescent's time with its compile
SMALL = 4096  # below this UMAP computes exact distances itself
BLOCK = 1024  # query rows per matrix product (1,024 × 50,000 float32 = 200 MB at most)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_knn(queries: np.ndarray, data: np.ndarray, k: int, exclude_self: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
    """(indices int32, cosine distances float32) of the ``k`` nearest rows of ``data`` for each query row, nearest
    first, ties by row number. With ``exclude_self`` (queries are ``data``), each row's first neighbour is itself at
    distance 0, as UMAP's own graph has it."""
    q, d = _unit(queries), _unit(data)
    k = min(k, d.shape[0])
    indices = np.empty((q.shape[0], k), dtype=np.int32)
    dists = np.empty((q.shape[0], k), dtype=np.float32)
    for start in range(0, q.shape[0], BLOCK):
        stop = min(start + BLOCK, q.shape[0])
        sim = q[start:stop] @ d.T
        rows = np.arange(stop - start)
        if exclude_self:
            sim[rows, np.arange(start, stop)] = np.inf
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top.sort(axis=1)  # row order first, so the stable sort below breaks ties by row number
        order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
        best = np.take_along_axis(top, order, axis=1)
        near = np.take_along_axis(sim, best, axis=1)
        if exclude_self:
            near[:, 0] = 1.0
        indices[start:stop] = best
        dists[start:stop] = np.maximum(1.0 - near, 0.0)
    return indices, dists


class ExactIndex:
    """UMAP's search index, exactly: ``query`` is what ``UMAP.transform`` calls on pynndescent's NNDescent."""

    _angular_trees = False  # read by UMAP.transform to pick a search epsilon, which an exact search ignores

    def __init__(self, data: np.ndarray):
        self._raw_data = _unit(data)

    def query(self, queries: np.ndarray, k: int = 10, epsilon: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        return cosine_knn(queries, self._raw_data, k)


def precomputed(x: np.ndarray, n_neighbors: int):
    """UMAP's ``precomputed_knn`` for ``x`` (cosine), or None where UMAP's own way is the better one."""
    if not SMALL <= x.shape[0] <= EXACT_MAX:
        return None
    indices, dists = cosine_knn(x, x, n_neighbors, exclude_self=True)
    return indices, dists, ExactIndex(x)
