"""GPU k-NN and k-means on CuPy arrays (twin of :mod:`gpu_trader.cpu_fallback.vectors`).

Exact search is :func:`gpu_trader._internal.vector_xp.search` on CuPy: one cuBLAS GEMM per database
tile (up to ``TILE_BYTES`` of scores plus dequantized rows, so a store of millions of vectors
never needs a score matrix of its full size) and a top-k that never sorts whole score rows:
:func:`gpu_trader._internal.vector_xp.select_by_group_max` (a max-reduction over groups of 64 scores,
a selection among the group maxima, then among the 64 k candidates). ``cupy.argpartition``
is not used: CuPy implements it as a full sort. L1 distances are
:func:`gpu_trader._internal.vector_xp.l1_distances` on CuPy (broadcast differences in blocks of
queries within ``TILE_BYTES``). Normalization and cosine are vectorized
CuPy expressions (float32 inputs accumulate in float32 here, float64 on the CPU twin).
"""
from __future__ import annotations

import functools

import cupy as cp

from .._internal import vector_xp

# Bytes of scores plus dequantized rows per database tile.
TILE_BYTES = 1 << 30

__all__ = [
    "search", "pairwise", "l1_distances", "select_topk", "normalize_vector", "normalize_rows", "cosine_pair",
    "cosine_rows", "quantize_int8", "row_sq_norms", "kmeans", "encode_binary", "pq_train", "pq_encode"
]

select_topk = functools.partial(vector_xp.select_by_group_max, cp)
l1_distances = functools.partial(vector_xp.l1_distances, cp)


def search(db, scales, norms, queries, k, l2, rows=None, l1=False, codebooks=None):
    """See :func:`gpu_trader._internal.vector_xp.search`."""
    return vector_xp.search(cp, select_topk, db, scales, norms, queries, k, l2, TILE_BYTES, rows,
                            l1_distances if l1 else None, codebooks)


def pairwise(a, b, metric):
    """See :func:`gpu_trader._internal.vector_xp.pairwise` (L1 blocks within ``TILE_BYTES``)."""
    return vector_xp.pairwise(cp, a, b, metric, TILE_BYTES, l1_distances)


def normalize_rows(x):
    """Rows of ``x`` (n, dim) scaled to unit L2 norm (zero rows stay zero) and the norms (n,)."""
    norms = cp.sqrt(cp.einsum("ij,ij->i", x, x))
    return x / cp.where(norms > 0, norms, 1)[:, None], norms


def cosine_rows(a, b):
    """Cosine similarity of each row pair of ``a`` and ``b`` (n, dim); NaN for a zero row."""
    den = cp.sqrt(cp.einsum("ij,ij->i", a, a) * cp.einsum("ij,ij->i", b, b))
    return cp.einsum("ij,ij->i", a, b) / cp.where(den > 0, den, cp.nan)


def normalize_vector(x):
    """``x`` (dim,) scaled to unit L2 norm (a zero vector stays zero)."""
    return normalize_rows(x[None])[0][0]


def cosine_pair(a, b) -> float:
    """Cosine similarity of two 1-D vectors; NaN if one is zero."""
    return float(cosine_rows(a[None], b[None])[0])


quantize_int8 = functools.partial(vector_xp.quantize_int8, cp)
row_sq_norms = functools.partial(vector_xp.row_sq_norms, cp)
encode_binary = functools.partial(vector_xp.encode_binary, cp)
pq_encode = functools.partial(vector_xp.pq_encode, cp)
pq_train = functools.partial(vector_xp.pq_train, cp)


def kmeans(x, n_clusters, n_iter, seed, tol):
    """See :func:`gpu_trader._internal.vector_xp.kmeans`."""
    return vector_xp.kmeans(cp, x, n_clusters, n_iter, seed, tol, cp.asnumpy)
