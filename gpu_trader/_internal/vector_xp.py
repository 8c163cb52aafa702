"""k-NN and k-means math written once against an array module ``xp`` (NumPy or CuPy).

The backend modules (:mod:`gpu_trader.cpu_fallback.vectors`, :mod:`gpu_trader.kernels.vectors`)
instantiate these with their array module and their top-k selection. Internal scores are
"larger is better" for every metric: ``q . x`` for inner product and cosine (vectors
stored normalized), ``2 q . x - |x|^2`` for L2 (the squared distance is ``|q|^2`` minus it),
``-sum_j |q_j - x_j|`` for L1 (no GEMM form: :func:`l1_distances`, in blocks).

Storage (:func:`code_rows` decodes a tile): ``db`` is ``(n, dim)`` float32; int8 codes with
``scales`` ``(n,)`` float32 (row ``i`` stands for ``scales[i] * db[i]``); binary: uint8
``(n, ceil(dim / 8))`` sign bits (bit set: ``+1``, else ``-1``; most significant bit first) with
``scales`` (row ``i`` stands for ``scales[i] * signs``, the scale being ``mean |x_i|``, which
minimizes the squared error); product quantization (PQ): uint8 ``(n, M)`` codes with
``codebooks`` ``(M, 256, dim / M)`` float32 (row ``i`` is the concatenation of
``codebooks[m, db[i, m]]``). ``norms`` ``(n,)`` float32 holds ``|x_i|^2`` of the stored
(decoded) rows. Queries are ``(nq, dim)`` float32. No NaN reaches
here (the public module refuses them).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from .validation import check_count

__all__ = [
    "initial_rows", "tile_rows", "search", "select_by_group_max", "quantize_int8", "row_sq_norms",
    "assign", "kmeans", "kmeanspp_seeds", "kmeans_chunk_rows", "KMEANS_WORK_BYTES", "l1_distances",
    "pairwise", "PAIRWISE_METRICS", "code_rows", "dequantize", "encode_binary", "pq_train", "pq_encode",
    "PQ_CENTROIDS",
]

GROUP = 64  # elements per group in select_by_group_max
SORT_BELOW = 2048  # rows this short (or shorter) are simply sorted by select_by_group_max
MIN_CAPACITY = 1024  # rows a new storage buffer holds ...
MIN_CAPACITY_BYTES = 4 << 20  # ... unless that many rows would take more than this

Select = Callable[[Any, int], Any]
L1 = Callable[[Any, Any, int], Any]  # (a (m, dim), b (n, dim), work bytes) -> L1 distances (m, n)


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


def row_sq_norms(xp, db, scales=None, codebooks=None, dim=None):
    """``|x_i|^2`` of each stored row (decoded, see :func:`code_rows`), float32 ``(n,)``."""
    x = code_rows(xp, db, codebooks, dim).astype(xp.float32)
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


def l1_distances(xp, a, b, work_bytes: int):
    """``out[i, j] = sum_k |a[i, k] - b[j, k]|`` ``(m, n)`` in the dtype of ``a`` and ``b`` (one
    float dtype), summed in that dtype. Computed in blocks of rows of ``a`` whose ``(rows, n,
    dim)`` difference array takes at most ``work_bytes`` (at least one row per block)."""
    m, n, dim = a.shape[0], b.shape[0], a.shape[1]
    out = xp.empty((m, n), a.dtype)
    step = max(1, work_bytes // max(1, n * dim * a.dtype.itemsize))
    for lo in range(0, m, step):
        out[lo:lo + step] = xp.abs(a[lo:lo + step, None, :] - b[None, :, :]).sum(axis=2)
    return out


_BIT_SHIFTS = (7, 6, 5, 4, 3, 2, 1, 0)  # most significant bit first, as numpy.packbits


def code_rows(xp, db, codebooks=None, dim=None):
    """Stored rows ``(rows, dim)`` before their per-row scales: float32 rows as they are, int8
    codes as they are, binary sign bits as ``+-1`` float32 (``dim`` the vectors' dimension),
    PQ codes as their codebook entries (``codebooks`` given)."""
    if codebooks is not None:
        n_sub = codebooks.shape[0]
        return codebooks[xp.arange(n_sub)[None, :], db.astype(xp.int64)].reshape(db.shape[0], -1)
    if db.dtype != xp.uint8:
        return db
    shifts = xp.asarray(_BIT_SHIFTS, dtype=xp.uint8)
    bits = ((db[:, :, None] >> shifts) & 1).reshape(db.shape[0], -1)[:, :dim]
    return bits.astype(xp.float32) * 2.0 - 1.0


def dequantize(xp, db, scales=None, codebooks=None, dim=None):
    """The float32 rows ``(rows, dim)`` the stored rows stand for (:func:`code_rows` times the
    scales); may be ``db`` itself for float32 storage."""
    x = code_rows(xp, db, codebooks, dim)
    if x.dtype != xp.float32:
        x = x.astype(xp.float32)
    return x if scales is None else x * scales[:, None]


def encode_binary(xp, x):
    """Sign bits of ``x`` ``(n, dim)`` float (``x > 0``: 1) packed 8 to a uint8, most significant
    first, ``(n, ceil(dim / 8))``, and float32 scales ``mean |x_i|`` ``(n,)`` (0 for a zero row)."""
    n, dim = x.shape
    width = -(-dim // 8)
    bits = xp.zeros((n, width * 8), dtype=xp.uint8)
    bits[:, :dim] = x > 0
    weights = xp.asarray([1 << b for b in _BIT_SHIFTS], dtype=xp.uint8)
    codes = (bits.reshape(n, width, 8) * weights).sum(axis=2, dtype=xp.uint8)
    return codes, xp.abs(x).mean(axis=1).astype(xp.float32)


PQ_CENTROIDS = 256  # centroids per sub-quantizer: one uint8 code
PQ_TRAIN_ROWS = 8192  # rows (evenly spaced) the codebooks are trained on, at most
PQ_ITERATIONS = 20  # Lloyd iterations


def pq_train(xp, x, n_sub: int, seed: int):
    """PQ codebooks ``(n_sub, PQ_CENTROIDS, dim / n_sub)`` float32 for ``x`` ``(n, dim)`` float32
    (``dim`` a multiple of ``n_sub``, ``n >= PQ_CENTROIDS``): Lloyd's k-means on each sub-space
    of at most ``PQ_TRAIN_ROWS`` evenly spaced rows, started from ``PQ_CENTROIDS`` distinct rows
    drawn by NumPy's ``default_rng(seed)`` (as FAISS's PQ training starts), ``PQ_ITERATIONS``
    iterations; an empty cluster keeps its centroid. The sub-spaces run as batched GEMMs, in
    groups whose ``(group, rows, 256)`` distances stay within :data:`KMEANS_WORK_BYTES`; the
    centroid sums are ``bincount`` s over (sub-space, label) (float64)."""
    n, dim = x.shape
    sample = x[::max(1, -(-n // PQ_TRAIN_ROWS))]
    t, dsub = sample.shape[0], dim // n_sub
    sub = xp.ascontiguousarray(sample.reshape(t, n_sub, dsub).transpose(1, 0, 2))  # (n_sub, t, dsub)
    rng = np.random.default_rng(seed)
    starts = xp.asarray(np.stack([rng.choice(t, PQ_CENTROIDS, replace=False) for _ in range(n_sub)]))
    books = xp.take_along_axis(sub, starts[:, :, None], axis=1)  # (n_sub, 256, dsub)
    group = max(1, KMEANS_WORK_BYTES // (t * PQ_CENTROIDS * 4))
    for lo in range(0, n_sub, group):
        part, c = sub[lo:lo + group], books[lo:lo + group]
        g = part.shape[0]
        bins = g * PQ_CENTROIDS
        offsets = (xp.arange(g) * PQ_CENTROIDS)[:, None]
        for _ in range(PQ_ITERATIONS):
            d = xp.einsum("gtd,gkd->gtk", part, c)  # (g, t, 256); NumPy's batched matmul is slow at this dsub
            d *= -2.0
            d += xp.einsum("gkd,gkd->gk", c, c)[:, None, :]
            flat = (d.argmin(axis=2) + offsets).ravel()  # (sub-space, label) of each row
            counts = xp.bincount(flat, minlength=bins).reshape(g, PQ_CENTROIDS, 1)
            sums = xp.stack([xp.bincount(flat, weights=part[:, :, j].ravel(), minlength=bins)
                             for j in range(dsub)], axis=1).reshape(g, PQ_CENTROIDS, dsub)
            c = xp.where(counts > 0, sums / xp.maximum(counts, 1), c).astype(x.dtype)
        books[lo:lo + group] = c
    return books.astype(xp.float32)


def pq_encode(xp, x, codebooks):
    """PQ codes uint8 ``(n, M)`` of ``x`` ``(n, dim)`` float32: each sub-vector's nearest
    codebook entry (squared Euclidean, as FAISS's ``ProductQuantizer.compute_codes``), rows in
    chunks whose ``(rows, 256)`` distances stay within :data:`KMEANS_WORK_BYTES`."""
    n, dim = x.shape
    n_sub, n_cent, dsub = codebooks.shape
    codes = xp.empty((n, n_sub), dtype=xp.uint8)
    rows = kmeans_chunk_rows(max(1, n), n_cent, 4, KMEANS_WORK_BYTES)
    for m in range(n_sub):
        book = codebooks[m]
        book_sq = xp.einsum("ij,ij->i", book, book)
        for lo in range(0, n, rows):
            part = xp.ascontiguousarray(x[lo:lo + rows, m * dsub:(m + 1) * dsub])
            labels, _ = _nearest(xp, part, xp.einsum("ij,ij->i", part, part), book, book_sq)
            codes[lo:lo + rows, m] = labels.astype(xp.uint8)
    return codes


def _tile_scores(xp, queries, tile, scales, norms, l2: bool, l1: L1 | None, tile_bytes: int, codebooks=None):
    """Scores ``(nq, rows)`` float32 of one database tile: the module docstring's, halved for L2
    (``q . x - |x|^2 / 2``; :func:`search` doubles the ``k`` it keeps, exactly), which saves a
    pass over the score tile: the GEMM output is touched once (L2) or not at all before the
    selection reads it. L1: minus ``l1``'s distances to the dequantized tile."""
    tile = code_rows(xp, tile, codebooks, queries.shape[1])
    if tile.dtype != queries.dtype:
        tile = tile.astype(queries.dtype)
    if l1:
        if scales is not None:
            tile = tile * scales[:, None]
        s = l1(queries, tile, tile_bytes)
        return xp.negative(s, out=s)
    s = queries @ tile.T
    if scales is not None:
        s *= scales[None, :]
    if l2:
        s -= (0.5 * norms)[None, :]  # a (rows,) product, then one pass over the tile
    return s


def search(xp, select: Select, db, scales, norms, queries, k: int, l2: bool, tile_bytes: int, rows=None,
           l1: L1 | None = None, codebooks=None):
    """Exact best ``k`` stored rows for each query, tiled over the database.

    ``l1``: rank by L1 distance instead, computed by this function (``l1(queries, tile,
    tile_bytes)``: :func:`l1_distances` bound to ``xp``, or a backend's loop); ``l2`` must then be
    False; scores are minus the distances. ``codebooks``: PQ storage (see the module docstring).

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
    q_step = max(1, tile_bytes // (4 * (1024 + queries.shape[1])))  # queries per pass: a 1024-row tile fits
    if queries.shape[0] > q_step:
        parts = [search(xp, select, db, scales, norms, queries[i:i + q_step], k, l2, tile_bytes, rows, l1,
                        codebooks)
                 for i in range(0, queries.shape[0], q_step)]
        return xp.concatenate([p[0] for p in parts]), xp.concatenate([p[1] for p in parts])
    n = db.shape[0] if rows is None else rows.shape[0]
    step = tile_rows(queries.shape[0], queries.shape[1], tile_bytes)
    best_s = best_i = None
    for start in range(0, n, step):
        stop = min(n, start + step)
        if rows is None:
            tile_idx = None
            tile, sc, nm = db[start:stop], _part(scales, start, stop), norms[start:stop]
        else:
            tile_idx = rows[start:stop]
            tile, sc, nm = db[tile_idx], _take(scales, tile_idx), norms[tile_idx]
        s = _tile_scores(xp, queries, tile, sc, nm, l2, l1, tile_bytes, codebooks)
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


PAIRWISE_METRICS = ("cosine", "l2", "sqeuclidean", "l1", "ip")


def pairwise(xp, a, b, metric: str, work_bytes: int, l1: L1 | None = None):
    """Distances (similarity for ``ip``) ``(m, n)`` between the rows of ``a`` ``(m, dim)`` and
    ``b`` ``(n, dim)``, both of one float dtype (the result's): ``cosine`` ``1 - a.b / (|a| |b|)``
    (NaN where a row is all zero), ``sqeuclidean`` the GEMM form ``|a|^2 - 2 a.b + |b|^2``
    clipped at 0 (absolute error about ``eps (|a|^2 + |b|^2)``: rounding, no cancellation
    guard), ``l2`` its square root, ``l1`` by ``l1`` (default :func:`l1_distances` on ``xp``,
    blocks within ``work_bytes``), ``ip`` ``a . b``. NaN propagates."""
    if metric == "l1":
        return (l1 or functools.partial(l1_distances, xp))(a, b, work_bytes)
    g = a @ b.T
    if metric == "ip":
        return g
    if metric == "cosine":
        na, nb = xp.sqrt(xp.einsum("ij,ij->i", a, a)), xp.sqrt(xp.einsum("ij,ij->i", b, b))
        with np.errstate(invalid="ignore", divide="ignore"):
            g /= xp.where(na > 0, na, xp.nan)[:, None]
            g /= xp.where(nb > 0, nb, xp.nan)[None, :]
        return xp.subtract(1.0, g, out=g)
    g *= -2.0
    g += xp.einsum("ij,ij->i", a, a)[:, None]
    g += xp.einsum("ij,ij->i", b, b)[None, :]
    g = xp.maximum(g, 0.0, out=g)
    return g if metric == "sqeuclidean" else xp.sqrt(g, out=g)


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
