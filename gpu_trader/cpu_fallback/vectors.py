"""CPU twin of :mod:`gpu_trader.kernels.vectors`: NumPy/BLAS GEMMs plus a one-pass top-k.

The tiled search and k-means are :mod:`gpu_trader._internal.vector_xp` instantiated with NumPy; the
top-k of each score tile is a numba insertion scan (one comparison for nearly every score),
or ``numpy.argpartition`` (introselect) for ``k > 128``. Normalizing
rows and the cosine of vector pairs are numba loops (accumulating in float64), which are
several times faster than NumPy's calls on one 384-vector; L1 distances are a numba loop
(:func:`l1_distances`, SIMD over the dimension). Thread use: BLAS's pool (set it
with threadpoolctl) and numba's (``NUMBA_NUM_THREADS``); the loops here are serial.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .._internal import vector_xp
from .._internal.jit import njit_cached

# Bytes of scores plus dequantized rows per database tile (fits a server's L3 share).
TILE_BYTES = 32 << 20

__all__ = [
    "search", "pairwise", "l1_distances", "select_topk", "normalize_vector", "normalize_rows", "cosine_pair",
    "cosine_rows", "quantize_int8", "row_sq_norms", "kmeans", "encode_binary", "pq_train", "pq_encode"
]


# Above this k the insertion scan's O(k) inserts cost more than introselect.
SCAN_MAX_K = 128


@njit_cached(nogil=True)
def _topk_scan(s, k, out):
    """``out[i]`` = columns of the ``k`` largest entries of row ``i`` of ``s``, best first.

    One pass per row keeping a sorted buffer of ``k``: an entry not above the buffer's
    smallest costs one comparison, which is nearly all of them (FAISS's heap idea).
    """
    vals = np.empty(k, s.dtype)
    for i in range(s.shape[0]):
        row = s[i]
        cnt = 0
        for j in range(row.shape[0]):
            v = row[j]
            if cnt == k:
                if not v > vals[k - 1]:
                    continue
                p = k - 1
            else:
                p = cnt
                cnt += 1
            while p > 0 and vals[p - 1] < v:
                vals[p] = vals[p - 1]
                out[i, p] = out[i, p - 1]
                p -= 1
            vals[p] = v
            out[i, p] = j


def select_topk(s: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest entries of each row of ``s`` (nq, n): best first
    (an insertion scan) for ``k <= SCAN_MAX_K``, in any order (``argpartition``) above."""
    n = s.shape[1]
    if k >= n:
        return np.broadcast_to(np.arange(n), s.shape).copy()
    if k <= SCAN_MAX_K:
        out = np.empty((s.shape[0], k), np.int64)
        _topk_scan(s, k, out)
        return out
    return np.argpartition(s, n - k, axis=1)[:, n - k:]


L1_BLOCK = 128  # database rows whose L1 distances to every query are computed before the next rows


@njit_cached(nogil=True, fastmath={"reassoc", "nsz"})
def _l1_block(a, b, out):
    """``out[i, j] = sum_k |a[i, k] - b[j, k]|`` in the inputs' dtype, database rows in blocks of
    :data:`L1_BLOCK` (they stay in cache across the queries). Reassociation lets the sum over
    ``k`` run in SIMD lanes (its order differs from a serial sum, not its precision class);
    no other fast-math flag, so NaN and inf propagate."""
    m, n, dim = a.shape[0], b.shape[0], a.shape[1]
    for lo in range(0, n, L1_BLOCK):
        hi = min(n, lo + L1_BLOCK)
        for i in range(m):
            q = a[i]
            for j in range(lo, hi):
                x = b[j]
                acc = out.dtype.type(0)
                for k in range(dim):
                    acc += abs(q[k] - x[k])
                out[i, j] = acc


def l1_distances(a, b, work_bytes=0):
    """L1 distances ``(m, n)`` between the rows of ``a`` and ``b`` (one float dtype, C-contiguous),
    a numba loop (no ``(rows, n, dim)`` temporary: ``work_bytes`` is not needed)."""
    out = np.empty((a.shape[0], b.shape[0]), a.dtype)
    _l1_block(np.ascontiguousarray(a), np.ascontiguousarray(b), out)
    return out


def search(db, scales, norms, queries, k, l2, rows=None, l1=False, codebooks=None):
    """See :func:`gpu_trader._internal.vector_xp.search` (L1 by :func:`l1_distances`)."""
    return vector_xp.search(np, select_topk, db, scales, norms, queries, k, l2, TILE_BYTES, rows,
                            l1_distances if l1 else None, codebooks)


def pairwise(a, b, metric):
    """See :func:`gpu_trader._internal.vector_xp.pairwise` (L1 by :func:`l1_distances`)."""
    return vector_xp.pairwise(np, a, b, metric, TILE_BYTES, l1_distances)


@njit_cached(nogil=True)
def _normalize_vector(x, out):
    """``out = x / |x|`` (zeros for a zero ``x``), accumulating in float64; returns ``|x|``."""
    acc = 0.0
    for j in range(x.shape[0]):
        acc += float(x[j]) * float(x[j])
    nrm = math.sqrt(acc)
    inv = 1.0 / nrm if nrm > 0.0 else 0.0
    for j in range(x.shape[0]):
        out[j] = x[j] * inv
    return nrm


@njit_cached(nogil=True)
def _normalize_rows(x, out, norms):
    for i in range(x.shape[0]):
        norms[i] = _normalize_vector(x[i], out[i])


@njit_cached(nogil=True)
def cosine_pair(a, b):
    """Cosine similarity of two 1-D vectors of one dtype, float64 accumulation; NaN if one is zero."""
    ab = 0.0
    aa = 0.0
    bb = 0.0
    for j in range(a.shape[0]):
        x = float(a[j])
        y = float(b[j])
        ab += x * y
        aa += x * x
        bb += y * y
    den = math.sqrt(aa * bb)
    return ab / den if den > 0.0 else np.nan


@njit_cached(nogil=True)
def _cosine_rows(a, b, out):
    for i in range(a.shape[0]):
        out[i] = cosine_pair(a[i], b[i])


def normalize_vector(x: np.ndarray) -> np.ndarray:
    """``x`` (dim,) scaled to unit L2 norm (a zero vector stays zero), same dtype."""
    out = np.empty_like(x)
    _normalize_vector(x, out)
    return out


def normalize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``x`` (n, dim) scaled to unit L2 norm (zero rows stay zero) and the norms (n,) float64."""
    out = np.empty_like(x)
    norms = np.empty(x.shape[0], np.float64)
    _normalize_rows(x, out, norms)
    return out, norms


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row pair of ``a`` and ``b`` (n, dim), float64 (n,); NaN for a zero row."""
    out = np.empty(a.shape[0], np.float64)
    _cosine_rows(a, b, out)
    return out


quantize_int8 = functools.partial(vector_xp.quantize_int8, np)
row_sq_norms = functools.partial(vector_xp.row_sq_norms, np)
encode_binary = functools.partial(vector_xp.encode_binary, np)
pq_encode = functools.partial(vector_xp.pq_encode, np)
pq_train = functools.partial(vector_xp.pq_train, np)


def kmeans(x, n_clusters, n_iter, seed, tol):
    """See :func:`gpu_trader._internal.vector_xp.kmeans`."""
    return vector_xp.kmeans(np, x, n_clusters, n_iter, seed, tol, np.asarray)
