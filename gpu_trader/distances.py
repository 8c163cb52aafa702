"""Batched distances between a set of query vectors and a set of database vectors.

``pairwise_distances(q, db, metric)`` and its shorthands :func:`cosine`, :func:`l2`,
:func:`l1`, :func:`ip` take ``q`` ``(m, dim)`` and ``db`` ``(n, dim)`` and return the
``(m, n)`` matrix ``out[i, j] = d(q[i], db[j])`` on the backend's device (NumPy on ``cpu``,
CuPy on ``cuda``; the area ``vectors``: the backends that have it). Metrics, with their
SciPy ``cdist`` equivalents:

* ``"cosine"``: ``1 - q.x / (|q| |x|)`` (``cdist(..., "cosine")``); NaN where a row is all zero;
* ``"l2"``: Euclidean distance (``"euclidean"``); ``"sqeuclidean"``: its square (the
  ``l2`` score of :class:`gpu_trader.vectors.VectorIndex`);
* ``"l1"``: Manhattan distance ``sum_j |q_j - x_j|`` (``"cityblock"``);
* ``"ip"``: the inner product ``q . x`` (a similarity, larger is closer).

dtype: float32 when both inputs are float32, else float64 (integers, float16 and other reals
are promoted to float64 as :func:`gpu_trader.backend.as_float_array` does); sums run in that
dtype. ``cosine``, ``l2``, ``sqeuclidean`` and ``ip`` are one GEMM (``l2`` from
``|q|^2 - 2 q.x + |x|^2``, clipped at 0: absolute error about ``eps * (|q|^2 + |x|^2)``, so
two nearly equal rows may get a small positive distance instead of 0); ``l1`` is formed
in blocks of query rows whose ``(rows, n, dim)`` differences stay within the backend's tile
budget (32 MiB on cpu). NaN in an input propagates to the entries it touches.

Memory: the result's ``m * n * itemsize`` bytes may not exceed ``max_bytes`` (default
:data:`DEFAULT_MAX_BYTES`, 1 GiB): past it a ``ValueError`` names ``max_bytes`` before
anything is allocated (split ``q`` into chunks, or raise the budget). Errors: ``TypeError``
naming the argument for a non-real or masked input, a metric that is not a str, or a
``max_bytes`` that is not an int; ``ValueError`` for a metric not listed, inputs not 2-D,
dimensions that differ, or ``max_bytes`` below 1. Inputs are never modified; read-only and
non-contiguous arrays are accepted.
"""
from __future__ import annotations

import numpy as np

from ._internal.validation import check_count
from ._internal.vector_xp import PAIRWISE_METRICS
from .backend import as_float_array, select_backend
from .profiling import annotate

__all__ = ["pairwise_distances", "cosine", "l2", "l1", "ip", "METRICS", "DEFAULT_MAX_BYTES"]

METRICS = PAIRWISE_METRICS
DEFAULT_MAX_BYTES = 1 << 30
MAX_BYTES_LIMIT = 1 << 50


def _rows(be, x, name: str):
    arr = as_float_array(be, x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (rows, dim), got {arr.shape}")
    return arr


@annotate
def pairwise_distances(q, db, metric: str = "l2", *, backend=None, max_bytes: int = DEFAULT_MAX_BYTES):
    """``(m, n)`` distances between the rows of ``q`` ``(m, dim)`` and ``db`` ``(n, dim)`` under
    ``metric`` (one of :data:`METRICS`, see the module docstring); float32 for two float32
    inputs, else float64; on ``backend`` (default: resolved from ``q``)."""
    if not isinstance(metric, str):
        raise TypeError(f"metric must be one of {METRICS}, got {type(metric).__name__} {metric!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    max_bytes = check_count(max_bytes, "max_bytes", 1, MAX_BYTES_LIMIT)
    be = select_backend(q, backend)
    ops = be.ops("vectors")
    a, b = _rows(be, q, "q"), _rows(be, db, "db")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"q has dimension {a.shape[1]} but db has dimension {b.shape[1]}; they must match")
    dtype = np.result_type(a.dtype, b.dtype)  # float32 only for two float32 inputs
    need = a.shape[0] * b.shape[0] * dtype.itemsize
    if need > max_bytes:
        raise ValueError(f"the {a.shape[0]} x {b.shape[0]} result takes {need} bytes, more than max_bytes="
                         f"{max_bytes}: pass fewer query rows at a time or a larger max_bytes")
    xp = be.xp
    return ops.pairwise(xp.ascontiguousarray(a, dtype=dtype), xp.ascontiguousarray(b, dtype=dtype), metric)


@annotate
def cosine(q, db, *, backend=None, max_bytes: int = DEFAULT_MAX_BYTES):
    """Cosine distances ``1 - cos`` ``(m, n)``: :func:`pairwise_distances` with ``metric="cosine"``."""
    return pairwise_distances(q, db, "cosine", backend=backend, max_bytes=max_bytes)


@annotate
def l2(q, db, *, squared: bool = False, backend=None, max_bytes: int = DEFAULT_MAX_BYTES):
    """Euclidean distances ``(m, n)`` (``squared=True``: their squares), :func:`pairwise_distances`
    with ``metric="l2"`` (``"sqeuclidean"``)."""
    if not isinstance(squared, bool):
        raise TypeError(f"squared must be a bool, got {type(squared).__name__}")
    return pairwise_distances(q, db, "sqeuclidean" if squared else "l2", backend=backend, max_bytes=max_bytes)


@annotate
def l1(q, db, *, backend=None, max_bytes: int = DEFAULT_MAX_BYTES):
    """Manhattan distances ``(m, n)``: :func:`pairwise_distances` with ``metric="l1"``."""
    return pairwise_distances(q, db, "l1", backend=backend, max_bytes=max_bytes)


@annotate
def ip(q, db, *, backend=None, max_bytes: int = DEFAULT_MAX_BYTES):
    """Inner products ``q @ db.T`` ``(m, n)``: :func:`pairwise_distances` with ``metric="ip"``."""
    return pairwise_distances(q, db, "ip", backend=backend, max_bytes=max_bytes)
