"""Covariance and correlation on the CPU: :class:`gpu_trader._internal.correlation_xp.CorrelationEstimators`
over NumPy, with small products on one BLAS thread (see :mod:`.blas`), and two compiled passes
where NumPy would make many: the normalization of a complete-data correlation matrix
(:func:`_normalize_dense`, one pass over ``n x n`` instead of ten small NumPy calls) and the
rolling correlation (:func:`_rolling_pairs`, one pass per pair over time instead of ten full
``(n, n, T)`` NumPy passes). Both take the same sums in the same order as the array
formulation, so the results are the same to the last bit up to the rounding test's square
root (:func:`gpu_trader._internal.correlation_xp.rounding_zero`, compiled here)."""
from __future__ import annotations

import math

import numpy as np
from numba import prange
from numba.extending import register_jitable

from .._internal.correlation_xp import CorrelationEstimators, rounding_zero
from .._internal.jit import njit_cached
from . import output_pool
from .blas import blas_threads_for
from .risk import has_nan

_rounding_zero = register_jitable(rounding_zero)
_PARALLEL_MIN_STEPS = 50_000  # pairs x periods below which the thread pool costs more than it saves


def _gemm_flops(x) -> float:
    """Multiply-adds of one (n x T) @ (T x n) product per batch element, times 2."""
    n, t = x.shape[-2], x.shape[-1]
    return 2.0 * n * n * t * (x.size // (n * t))


@register_jitable
def _clip_unit(c):
    """``c`` clipped to [-1, 1]; NaN stays NaN (``numpy.clip``)."""
    if c < -1.0:
        return -1.0
    if c > 1.0:
        return 1.0
    return c


@njit_cached(nogil=True, error_model="numpy")
def _normalize_dense(p, s, t):
    """:meth:`CorrelationEstimators.normalize_dense` in place: ``p`` (B, n, n) cross products,
    ``s`` (B, n) sums of the mean-shifted series, ``t`` periods."""
    n = s.shape[1]
    d = np.empty(n)
    for b in range(s.shape[0]):
        for i in range(n):
            q = p[b, i, i]
            d[i] = np.nan if _rounding_zero(q - s[b, i] * s[b, i] / t, t, t, q) else math.sqrt(q)
        for i in range(n):
            for j in range(n):
                p[b, i, j] = _clip_unit(p[b, i, j] / (d[i] * d[j]))
            if p[b, i, i] == p[b, i, i]:  # a defined diagonal is exactly 1
                p[b, i, i] = 1.0


@register_jitable
def _rolling_pair(xi, xj, mi, mj, qci, qcj, window, min_count, out_ij, out_ji):
    """Rolling correlation of one pair of mean-shifted, zero-filled series ``xi``, ``xj`` with
    validity masks ``mi``, ``mj`` (1.0 / 0.0) and cumulative sums of squares ``qci``, ``qcj``,
    as :meth:`CorrelationEstimators.rolling_corr`: window sums are differences of running
    sums (accumulated as ``numpy.cumsum`` does, from -0.0 so a first -0.0 stays), into
    ``out_ij`` and ``out_ji`` (the same values)."""
    # running sums of: common count, x_i and x_j over common periods, their squares, x_i x_j
    hist = np.empty((6, window))  # the running sums of the last `window` steps, a ring
    cn = cs = cst = cq = cqt = cp = -0.0
    k = 0  # t % window
    for t in range(xi.shape[0]):
        cn += mi[t] * mj[t]
        cs += xi[t] * mj[t]
        cst += xj[t] * mi[t]
        cq += xi[t] * xi[t] * mj[t]
        cqt += xj[t] * xj[t] * mi[t]
        cp += xi[t] * xj[t]
        if t >= window:
            n, s, st = cn - hist[0, k], cs - hist[1, k], cst - hist[2, k]
            q, qt, p = cq - hist[3, k], cqt - hist[4, k], cp - hist[5, k]
        else:
            n, s, st, q, qt, p = cn, cs, cst, cq, cqt, cp
        hist[0, k], hist[1, k], hist[2, k] = cn, cs, cst
        hist[3, k], hist[4, k], hist[5, k] = cq, cqt, cp
        k = 0 if k == window - 1 else k + 1
        c = np.nan
        if n >= min_count:
            vx = q - s * s / n
            vy = qt - st * st / n
            terms = t + 1.0
            if not (_rounding_zero(vx, n, terms, qci[t]) or _rounding_zero(vy, n, terms, qcj[t])):
                c = _clip_unit((p - s * st / n) / np.sqrt(vx * vy))
        out_ij[t] = c
        out_ji[t] = c


@njit_cached(parallel=True, nogil=True, error_model="numpy")
def _rolling_pairs(x0, m, q_cum, rows, cols, window, min_count, out):
    """Every pair ``(rows[k], cols[k])`` (the upper triangle, so that the threads share the
    work evenly) of every batch element: ``x0``, ``m``, ``q_cum`` (B, n, T) -> ``out``
    (B, n, n, T), both halves; parallel over pairs."""
    n_pairs = rows.shape[0]
    for k in prange(x0.shape[0] * n_pairs):
        _rolling_pair_k(x0, m, q_cum, rows, cols, window, min_count, out, k)


@njit_cached(nogil=True, error_model="numpy")
def _rolling_pairs_serial(x0, m, q_cum, rows, cols, window, min_count, out):
    """:func:`_rolling_pairs` on the calling thread, for small inputs."""
    for k in range(x0.shape[0] * rows.shape[0]):
        _rolling_pair_k(x0, m, q_cum, rows, cols, window, min_count, out, k)


@register_jitable
def _rolling_pair_k(x0, m, q_cum, rows, cols, window, min_count, out, k):
    """Pair ``k`` of :func:`_rolling_pairs`: batch element ``k // len(rows)``, pair ``k % len(rows)``."""
    b = k // rows.shape[0]
    i = rows[k % rows.shape[0]]
    j = cols[k % rows.shape[0]]
    _rolling_pair(x0[b, i], x0[b, j], m[b, i], m[b, j], q_cum[b, i], q_cum[b, j], window, min_count,
                  out[b, i, j], out[b, j, i])


class _CpuCorrelationEstimators(CorrelationEstimators):
    has_nan = staticmethod(has_nan)  # a compiled scan

    def cov(self, x, min_periods, ddof, has_nan=None):
        with blas_threads_for(_gemm_flops(x)):
            return super().cov(x, min_periods, ddof, has_nan)

    def corr(self, x, min_periods, has_nan=None):
        with blas_threads_for(_gemm_flops(x)):
            return super().corr(x, min_periods, has_nan)

    def normalize_dense(self, p, s, t):
        n = p.shape[-1]
        _normalize_dense(p.reshape(-1, n, n), s.reshape(-1, n), t)
        return p

    def rolling_corr(self, x, window, min_periods):
        n, t = x.shape[-2], x.shape[-1]
        x0, m = self._centered(x, True)
        q_cum = np.cumsum(x0 * x0, axis=-1)
        out = output_pool.empty(x.shape[:-1] + (n, t), np.float64)
        rows, cols = np.triu_indices(n)
        steps = out.size // n * (n + 1) // 2  # pairs x periods
        run = _rolling_pairs if steps >= _PARALLEL_MIN_STEPS else _rolling_pairs_serial
        run(x0.reshape(-1, n, t), m.reshape(-1, n, t), q_cum.reshape(-1, n, t), rows, cols, window,
            max(min_periods, 2), out.reshape(-1, n, n, t))
        return out

    def ewma_cov(self, x, decay):
        with blas_threads_for(_gemm_flops(x)):
            return super().ewma_cov(x, decay)

    def ledoit_wolf(self, x):
        with blas_threads_for(_gemm_flops(x)):
            return super().ledoit_wolf(x)


estimators = _CpuCorrelationEstimators(np)
