"""k-NN and k-means math written once against an array module ``xp`` (NumPy or CuPy).

The backend modules (:mod:`gpu_trader.cpu_fallback.vectors`, :mod:`gpu_trader.kernels.vectors`)
instantiate these with their array module and their top-k selection. Internal scores are
"larger is better" for every metric: ``q . x`` for inner product and cosine (vectors
stored normalized), ``2 q . x - |x|^2`` for L2 (the squared distance is ``|q|^2`` minus it).

Storage: ``db`` is ``(n, dim)`` float32, or int8 codes with ``scales`` ``(n,)`` float32
(row ``i`` stands for ``scales[i] * db[i]``); ``norms`` ``(n,)`` float32 holds ``|x_i|^2``
of the stored (dequantized) rows. Queries are ``(nq, dim)`` float32. No NaN reaches
here (the public module refuses them).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .validation import check_count

__all__ = [
    "initial_rows", "tile_rows", "search", "select_by_group_max", "quantize_int8", "row_sq_norms",
    "assign", "kmeans", "kmeanspp_seeds", "kmeans_chunk_rows", "KMEANS_WORK_BYTES",
]

GROUP = 64  # elements per group in select_by_group_max
SORT_BELOW = 2048  # rows this short (or shorter) are simply sorted by select_by_group_max
MIN_CAPACITY = 1024  # rows a new storage buffer holds ...
MIN_CAPACITY_BYTES = 4 << 20  # ... unless that many rows would take more than this

Select = Callable[[Any, int], Any]


def initial_rows(row_bytes: int) -> int:
    """Rows a new storage buffer (vectors, a graph) starts with: :data:`MIN_CAPACITY`, fewer
    when rows of ``row_bytes`` bytes are so wide that these would exceed
    :data:`MIN_CAPACITY_BYTES` (at least 1). Buffers grow by doubling from there."""
    return max(1, min(MIN_CAPACITY, MIN_CAPACITY_BYTES // max(1, row_bytes)))


def tile_rows(n_queries: int, dim: int, tile_bytes: int) -> int:
    """Database rows per tile so that the float32 score tile ``(n_queries, rows)`` plus a
    dequantized copy of the tile ``(rows, dim)`` take at most ``tile_bytes``: a multiple of
    1024 (so only the last tile's rows need padding to whole groups), at least 1024."""
    rows = tile_bytes // (4 * (n_queries + dim))
    return max(1024, rows - rows % 1024)


def row_sq_norms(xp, db, scales=None):
    """``|x_i|^2`` of each stored row (dequantized when ``scales`` is given), float32 ``(n,)``."""
    x = db.astype(xp.float32)
    sq = xp.einsum("ij,ij->i", x, x)
    if scales is not None:
        sq *= scales * scales
    return sq.astype(xp.float32)


def quantize_int8(xp, x):
    """Symmetric per-row int8 scalar quantization of ``x`` ``(n, dim)`` float.

    Returns ``(codes int8 (n, dim), scales float32 (n,))`` with ``x ~= scales[:, None] * codes``;
    the error per element is at most ``scale / 2`` (``scale = max|x_i| / 127``). A zero row
    gets scale 1 and zero codes.
    """
    amax = xp.abs(x).max(axis=1)
    scales = xp.where(amax > 0, amax / 127.0, 1.0).astype(xp.float32)
    codes = xp.clip(xp.rint(x / scales[:, None]), -127, 127).astype(xp.int8)
    return codes, scales


def _tile_scores(xp, queries, tile, scales, norms, l2: bool):
    """Scores ``(nq, rows)`` float32 of one database tile: the module docstring's, halved for L2
    (``q . x - |x|^2 / 2``; :func:`search` doubles the ``k`` it keeps, exactly), which saves a
    pass over the score tile: the GEMM output is touched once (L2) or not at all before the
    selection reads it."""
    if tile.dtype != queries.dtype:
        tile = tile.astype(queries.dtype)
    s = queries @ tile.T
    if scales is not None:
        s *= scales[None, :]
    if l2:
        s -= (0.5 * norms)[None, :]  # a (rows,) product, then one pass over the tile
    return s


def search(xp, select: Select, db, scales, norms, queries, k: int, l2: bool, tile_bytes: int, rows=None):
    """Exact best ``k`` stored rows for each query, tiled over the database.

    Passes over a tile's ``(nq, rows)`` scores: the GEMM writes them, L2 subtracts
    ``|x|^2 / 2`` in place (one read and write; inner product and cosine: none), the
    selection reads them once (its group maxima) and gathers ``64 k`` candidates per query.
    At ``nq = 1000``, ``dim = 384`` the GEMM does ``2 dim = 768`` flops per score against
    4 bytes written and 4 read by the selection (12 for L2): GEMM-bound on an H100 (FP32 at
    ~60 TFLOPS against 3 TB/s is ~20 flops per byte).

    ``rows``: optional int64 ``(m,)`` row subset to search (a metadata filter); ``k`` must not
    exceed the rows searched. Each tile is one GEMM followed by ``select`` (indices of the
    ``k`` largest entries of each row, any order); the running best ``k`` and each tile's
    best ``k`` are merged by the same selection. Queries are processed in passes small enough
    for a 1024-row tile, so memory stays within about ``tile_bytes`` whatever the numbers of
    queries and stored vectors. Returns ``(scores (nq, k) float32 best first, row indices (nq, k) int64)``.
    """
    q_step = max(1, tile_bytes // (4 * (1024 + db.shape[1])))  # queries per pass: a 1024-row tile fits
    if queries.shape[0] > q_step:
        parts = [search(xp, select, db, scales, norms, queries[i:i + q_step], k, l2, tile_bytes, rows)
                 for i in range(0, queries.shape[0], q_step)]
        return xp.concatenate([p[0] for p in parts]), xp.concatenate([p[1] for p in parts])
    n = db.shape[0] if rows is None else rows.shape[0]
    step = tile_rows(queries.shape[0], db.shape[1], tile_bytes)
    best_s = best_i = None
    for start in range(0, n, step):
        stop = min(n, start + step)
        if rows is None:
            tile_idx = None
            tile, sc, nm = db[start:stop], _part(scales, start, stop), norms[start:stop]
        else:
            tile_idx = rows[start:stop]
            tile, sc, nm = db[tile_idx], _take(scales, tile_idx), norms[tile_idx]
        s = _tile_scores(xp, queries, tile, sc, nm, l2)
        top = select(s, min(k, stop - start))
        ts = xp.take_along_axis(s, top, axis=1)
        ti = top + start if tile_idx is None else tile_idx[top]
        if best_s is not None:
            ts = xp.concatenate([best_s, ts], axis=1)
            ti = xp.concatenate([best_i, ti], axis=1)
            keep = select(ts, min(k, ts.shape[1]))
            ts, ti = xp.take_along_axis(ts, keep, axis=1), xp.take_along_axis(ti, keep, axis=1)
        best_s, best_i = ts, ti
    order = xp.argsort(-best_s, axis=1)  # only k columns are sorted
    best_s = xp.take_along_axis(best_s, order, axis=1)
    if l2:
        best_s *= 2.0  # the tiles' halved L2 scores, doubled exactly (a power of two)
    return best_s, xp.take_along_axis(best_i, order, axis=1).astype(xp.int64)


def _part(a, start, stop):
    return None if a is None else a[start:stop]


def _take(a, idx):
    return None if a is None else a[idx]


def select_by_group_max(xp, s, k: int):
    """Column indices of the ``k`` largest entries of each row of ``s`` ``(nq, n)`` (any order),
    without sorting whole rows.

    The row is cut into groups of :data:`GROUP`; the ``k`` largest entries all lie in the ``k``
    groups with the largest maxima (a group outside them has ``k`` group maxima above its own
    maximum). So: one max-reduction over the row, a recursive selection over the ``n / 64``
    group maxima, then a selection among the ``64 k`` candidates. Rows of at most
    :data:`SORT_BELOW` entries, or with ``64 k >= n``, are sorted directly. Ties: some valid
    top-k set is returned.
    """
    nq, n = s.shape
    if n <= SORT_BELOW or GROUP * k >= n:
        return xp.argsort(-s, axis=1)[:, :k]
    n_groups = -(-n // GROUP)
    if n_groups * GROUP != n:
        padded = xp.full((nq, n_groups * GROUP), -xp.inf, dtype=s.dtype)
        padded[:, :n] = s
    else:
        padded = s
    gmax = padded.reshape(nq, n_groups, GROUP).max(axis=2)
    groups = select_by_group_max(xp, gmax, k)  # (nq, k)
    cand = (groups[:, :, None] * GROUP + xp.arange(GROUP)[None, None, :]).reshape(nq, k * GROUP)
    cs = xp.take_along_axis(padded, cand, axis=1)
    return xp.take_along_axis(cand, select_by_group_max(xp, cs, k), axis=1)


def assign(xp, x, x_sq, centroids):
    """Nearest centroid of each row of ``x`` by one GEMM: ``|x|^2 - 2 x . c + |c|^2``.

    Returns ``(labels int64 (n,), squared distances (n,) clipped at 0)``.
    """
    return _nearest(xp, x, x_sq, centroids, xp.einsum("ij,ij->i", centroids, centroids))


KMEANS_WORK_BYTES = 256 << 20
"""Default bytes of temporaries one k-means pass may hold (``work_bytes`` of :func:`kmeans`, an
integer from 1 to :data:`MAX_KMEANS_WORK_BYTES`): rows are assigned and summed in chunks whose
``(rows, k)`` distances and ``(k, rows)`` one-hot take at most that (:func:`kmeans_chunk_rows`),
never an ``(n, k)`` matrix. A chunk holds at least one row."""
MAX_KMEANS_WORK_BYTES = 1 << 50
KMEANS_ROW_BYTES = 3
"""Bytes per (row, cluster) of a chunk, in units of the data's item size: the distances, the
one-hot matrix and its boolean source (measured with tracemalloc in ``tests/test_device_memory.py``)."""


def kmeans_chunk_rows(n: int, n_clusters: int, itemsize: int, work_bytes: int) -> int:
    """Rows per chunk of a k-means pass over ``n`` rows: ``KMEANS_ROW_BYTES * itemsize`` bytes per
    (row, cluster) within ``work_bytes``, at least 1, at most ``n``. ``TypeError``/``ValueError``
    naming ``work_bytes`` unless it is an integer from 1 to :data:`MAX_KMEANS_WORK_BYTES`."""
    work_bytes = check_count(work_bytes, "work_bytes", 1, MAX_KMEANS_WORK_BYTES)
    return int(max(1, min(n, work_bytes // (KMEANS_ROW_BYTES * itemsize * n_clusters))))


def kmeanspp_seeds(xp, x, x_sq, n_clusters: int, seed: int):
    """Row indices ``(n_clusters,)`` int64 (on ``xp``'s device) of k-means++ seeds (Arthur &
    Vassilvitskii 2007), sampled on the device: no host round trip per centre.

    The random numbers come from NumPy's ``default_rng(seed)``, drawn at once and uploaded once:
    the first seed is ``integers(n)``, seed ``i`` is chosen by uniform ``u_i`` exactly as
    ``Generator.choice(n, p=d2 / d2.sum())`` chooses (cumulative sum in float64, normalized
    by its last entry, ``searchsorted(..., u_i, side="right")``), so the seeds are those of
    the host loop that calls ``choice`` per centre. Where every remaining distance is 0 (fewer
    distinct rows than clusters) the row ``floor(u_i * n)`` is taken.
    """
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    first = int(rng.integers(n))
    u = xp.asarray(rng.random(n_clusters - 1))
    picks = [xp.asarray(first, dtype=xp.int64)]
    d2 = xp.maximum(x_sq - 2.0 * (x @ x[first]) + x_sq[first], 0.0)
    for i in range(n_clusters - 1):
        p = d2.astype(xp.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            cdf = xp.cumsum(p / p.sum())
            cdf = cdf / cdf[-1]  # not in place: on CuPy cdf[-1] is a view that the kernel would overwrite
        drawn = xp.minimum(xp.searchsorted(cdf, u[i], side="right"), n - 1)
        nxt = xp.where(cdf[-1] == 1.0, drawn, xp.minimum((u[i] * n).astype(xp.int64), n - 1)).astype(xp.int64)
        picks.append(nxt)
        d2 = xp.minimum(d2, xp.maximum(x_sq - 2.0 * (x @ x[nxt]) + x_sq[nxt], 0.0))
    return xp.stack(picks)


def _nearest(xp, x, x_sq, centroids, c_sq):
    """:func:`assign` given the centroids' squared norms ``c_sq``."""
    d = x @ centroids.T
    d *= -2.0
    d += c_sq[None, :]
    labels = xp.argmin(d, axis=1)
    best = xp.take_along_axis(d, labels[:, None], axis=1)[:, 0] + x_sq
    return labels, xp.maximum(best, 0.0)


def kmeans(xp, x, n_clusters: int, n_iter: int, seed: int, tol: float, to_host,
           work_bytes: int = KMEANS_WORK_BYTES):
    """Lloyd's k-means with k-means++ seeding (:func:`kmeanspp_seeds`); assignment and update
    are GEMMs over chunks of rows (:func:`kmeans_chunk_rows` within ``work_bytes``).

    ``x`` ``(n, dim)`` float; ``n_clusters <= n``. Per chunk, the update multiplies a one-hot
    ``(n_clusters, rows)`` matrix by the chunk's rows; counts are exact integers. An empty
    cluster keeps its previous centroid. Stops after ``n_iter`` iterations or when no centroid
    moves by more than ``tol`` (Euclidean; one host read per iteration, through ``to_host``).
    Returns ``(centroids (n_clusters, dim), labels int64 (n,), inertia float)`` where inertia
    is the sum of squared distances to the assigned centroids. Temporaries beyond O(n + k dim)
    stay within ``work_bytes``; the chunking changes only the order of the centroid sums.
    """
    n = x.shape[0]
    rows = kmeans_chunk_rows(n, n_clusters, x.dtype.itemsize, work_bytes)
    x_sq = xp.einsum("ij,ij->i", x, x)
    c = x[kmeanspp_seeds(xp, x, x_sq, n_clusters, seed)]
    ks = xp.arange(n_clusters)
    for _ in range(n_iter):
        c_sq = xp.einsum("ij,ij->i", c, c)
        sums = counts = None
        for lo in range(0, n, rows):
            part = x[lo:lo + rows]
            labels, _ = _nearest(xp, part, x_sq[lo:lo + rows], c, c_sq)
            part_sums = (labels[None, :] == ks[:, None]).astype(x.dtype) @ part
            part_counts = xp.bincount(labels, minlength=n_clusters)
            sums = part_sums if sums is None else sums + part_sums
            counts = part_counts if counts is None else counts + part_counts
        new = xp.where(counts[:, None] > 0, sums / xp.maximum(counts, 1)[:, None].astype(x.dtype), c)
        shift = float(to_host(xp.sqrt(((new - c) ** 2).sum(axis=1)).max()))
        c = new
        if shift <= tol:
            break
    c_sq = xp.einsum("ij,ij->i", c, c)
    parts = [_nearest(xp, x[lo:lo + rows], x_sq[lo:lo + rows], c, c_sq) for lo in range(0, n, rows)]
    labels = xp.concatenate([p[0] for p in parts]).astype(xp.int64)
    inertia = float(to_host(xp.stack([p[1].sum(dtype=xp.float64) for p in parts]).sum()))
    return c, labels, inertia
