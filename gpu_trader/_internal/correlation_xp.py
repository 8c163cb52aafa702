"""Covariance and correlation matrices, written once against an array namespace ``xp``.

Every estimator is a handful of batched matrix products (BLAS on the CPU, cuBLAS on
the GPU). Shapes: ``x`` is ``(..., n, T)`` (n series, time last); matrices are
``(..., n, n)``; a path of matrices over time is ``(..., n, n, T)``. All float64.

NaN handling is *pairwise-complete*, like pandas: the entry for series ``i`` and
``j`` uses the periods where both are valid. With the validity mask ``M`` (1 where
valid) and the zero-filled, shifted data ``X`` the sums a pair needs are all GEMMs:
``N = M M^T`` (common count), ``S = X M^T`` (sum of ``x_i`` over the common periods),
``Q = X^2 M^T`` (sum of squares) and ``P = X X^T`` (cross products). Each series is
first shifted by its own mean, which leaves covariances unchanged and keeps the
one-pass sums free of cancellation.

Zero dispersion: a correlation divides by both series' sums of squared deviations
``V = Q - S^2 / N``. For a series that is constant over the periods used, ``V`` is 0
in exact arithmetic but a rounding residue in floating point, which would make an
arbitrary correlation (often +-1) out of noise. :func:`rounding_zero`
bounds that residue from the sums themselves (their length and magnitude) and a
``V`` within it counts as 0, so the correlation is NaN (pandas' result for a
constant series).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .series_input import has_nan
from .validation import check_count

__all__ = ["CorrelationEstimators", "rounding_zero", "WORK_BYTES", "ROLLING_TEMPORARIES"]

EPS = float(np.finfo(np.float64).eps)

WORK_BYTES = 256 << 20
"""Default bytes of temporaries :meth:`CorrelationEstimators.rolling_corr` may hold besides its
result (``work_bytes``; an integer from 1 to :data:`MAX_WORK_BYTES`): pairs are computed in
tiles of about that size, so the peak is the ``(..., n, n, T)`` result plus one tile, never ten
arrays of the result's size. A tile holds at least one pair over the whole batch."""
MAX_WORK_BYTES = 1 << 50
ROLLING_TEMPORARIES = 10
"""float64 arrays of a tile's shape ``(B, rows, cols, T)`` one tile of
:meth:`CorrelationEstimators.rolling_corr` holds at its peak (measured with tracemalloc on
NumPy in ``tests/test_device_memory.py``)."""


def _quiet():
    """0/0 for a pair without enough common periods is NaN by design; NumPy would warn."""
    return np.errstate(invalid="ignore", divide="ignore")


def rounding_zero(v, n, terms, q_bound):
    """Whether ``v = Q - S^2 / n`` (a sum of squared deviations of ``n`` values) is within the
    rounding error of its sums, i.e. the series is constant over those values.

    ``Q`` and ``S`` are sums of ``terms`` values each (pairwise or by differences of
    cumulative sums), ``q_bound`` bounds the sum of squares they were taken from. The
    error of such a sum is at most ``terms * u`` times the sum of the absolute values
    (``u = eps / 2``), and ``sum |x| <= sqrt(terms * q_bound)`` (Cauchy-Schwarz), so
    ``|error of v| <= terms * eps * q_bound * (1 + 2 sqrt(terms / n))`` to first order.
    Plain arithmetic on scalars or arrays of any namespace; the CPU backend compiles it with
    numba's ``register_jitable``.
    """
    return v <= terms * EPS * q_bound * (1.0 + 2.0 * (terms / n) ** 0.5)


@dataclass
class _PairSums:
    n: Any   # common count N
    s: Any   # S[i, j]: sum of x_i over periods where i and j are valid
    q: Any   # Q[i, j]: sum of x_i^2 over the same periods
    p: Any   # P[i, j]: sum of x_i x_j


def _put(out, index, tile):
    """``out`` with ``tile`` written at ``index``: in place for NumPy/CuPy, the functional
    update ``out.at[index].set(tile)`` for immutable arrays (JAX; in place inside ``jax.jit``)."""
    if hasattr(out, "at"):
        return out.at[index].set(tile)
    out[index] = tile
    return out


class CorrelationEstimators:
    """The covariance estimators for one array namespace ``xp``."""

    def __init__(self, xp: Any, work_bytes: int = WORK_BYTES) -> None:
        self.xp = xp
        self.work_bytes = check_count(work_bytes, "work_bytes", 1, MAX_WORK_BYTES)
        """Bytes of temporaries one :meth:`rolling_corr` tile may hold (:data:`WORK_BYTES`)."""

    def _t(self, a):
        return self.xp.swapaxes(a, -1, -2)

    def has_nan(self, x) -> bool:
        """Whether ``x`` holds a NaN (read on the host: it picks the estimator's variant); True
        inside a ``jax.jit`` trace, where the pairwise-complete variant is right for any data
        (:func:`gpu_trader._internal.series_input.has_nan`)."""
        return has_nan(self.xp, x)

    def _centered(self, x, has_nan: bool):
        """(zero-filled data shifted by each series' mean, validity mask as float or None)."""
        xp = self.xp
        if not has_nan:
            return x - x.mean(axis=-1, keepdims=True), None
        valid = ~xp.isnan(x)
        m = valid.astype(x.dtype)
        with _quiet():
            mean = xp.where(valid, x, 0.0).sum(axis=-1, keepdims=True) / m.sum(axis=-1, keepdims=True)
        return xp.where(valid, x - xp.nan_to_num(mean), 0.0), m

    def _pair_sums(self, x0, m) -> _PairSums:
        mt = self._t(m)
        return _PairSums(n=m @ mt, s=x0 @ mt, q=(x0 * x0) @ mt, p=x0 @ self._t(x0))

    def _cov_from_sums(self, ps: _PairSums, ddof: int):
        with _quiet():
            return (ps.p - ps.s * self._t(ps.s) / ps.n) / (ps.n - ddof)

    def rounding_zero(self, v, n, terms, q_bound):
        """:func:`rounding_zero`, quiet about the 0 / 0 of a pair without common periods."""
        with _quiet():
            return rounding_zero(v, n, terms, q_bound)

    def _corr_from_sums(self, ps: _PairSums):
        xp = self.xp
        with _quiet():
            cxy = ps.p - ps.s * self._t(ps.s) / ps.n
            vx = ps.q - ps.s * ps.s / ps.n      # var of x_i over the common periods (times N)
            vx = xp.where(self.rounding_zero(vx, ps.n, ps.n, ps.q), xp.nan, vx)
            return self._clip(cxy / xp.sqrt(vx * self._t(vx)))

    def _clip(self, c):
        """Correlations into [-1, 1] with an exact 1 on a defined diagonal (rounding aside)."""
        xp = self.xp
        c = xp.clip(c, -1.0, 1.0)
        n = c.shape[-1]
        diag = xp.diagonal(c, axis1=-2, axis2=-1)
        eye = xp.eye(n, dtype=bool)
        return xp.where(eye & ~xp.isnan(diag)[..., None], 1.0, c)

    @staticmethod
    def _min_count(min_periods: int, ddof: int) -> int:
        return max(min_periods, ddof + 1)

    # -- full-sample ------------------------------------------------------------
    def cov(self, x, min_periods: int, ddof: int, has_nan: bool | None = None):
        """``has_nan``: whether ``x`` holds a NaN, when the caller knows (else it is looked up)."""
        return self.cov_given(x, min_periods, ddof, self.has_nan(x) if has_nan is None else has_nan)

    def cov_given(self, x, min_periods: int, ddof: int, has_nan: bool):
        """:meth:`cov` for data known to hold NaNs or not (a pure array function)."""
        xp = self.xp
        x0, m = self._centered(x, has_nan)
        if m is None:
            t = x.shape[-1]
            c = (x0 @ self._t(x0)) / (t - ddof)
            return c if t >= self._min_count(min_periods, ddof) else xp.full_like(c, xp.nan)
        ps = self._pair_sums(x0, m)
        c = self._cov_from_sums(ps, ddof)
        return xp.where(ps.n >= self._min_count(min_periods, ddof), c, xp.nan)

    def corr(self, x, min_periods: int, has_nan: bool | None = None):
        """``has_nan`` as for :meth:`cov`."""
        return self.corr_given(x, min_periods, self.has_nan(x) if has_nan is None else has_nan)

    def corr_given(self, x, min_periods: int, has_nan: bool):
        """:meth:`corr` for data known to hold NaNs or not (a pure array function)."""
        xp = self.xp
        x0, m = self._centered(x, has_nan)
        if m is None:
            t = x.shape[-1]
            c = self.normalize_dense(x0 @ self._t(x0), x0.sum(axis=-1), t)
            return c if t >= max(min_periods, 2) else xp.full_like(c, xp.nan)
        ps = self._pair_sums(x0, m)
        return xp.where(ps.n >= max(min_periods, 2), self._corr_from_sums(ps), xp.nan)

    def normalize_dense(self, p, s, t: int):
        """Correlations ``(..., n, n)`` of complete data from the cross products ``p = X0 X0^T`` of
        its mean-shifted series ``X0`` and their sums ``s`` ``(..., n)`` (the rounding left by the
        shift) over ``t`` periods: ``p_ij / sqrt(p_ii p_jj)`` clipped to [-1, 1], an exact 1 on the
        diagonal, NaN for a series constant up to rounding (:func:`rounding_zero`). May reuse
        ``p``'s memory."""
        xp = self.xp
        q = xp.diagonal(p, axis1=-2, axis2=-1)
        constant = self.rounding_zero(q - s * s / t, t, t, q)
        d = xp.where(constant, xp.nan, xp.sqrt(q))
        with _quiet():
            return self._clip(p / (d[..., :, None] * d[..., None, :]))

    # -- rolling ----------------------------------------------------------------
    def _window_sums(self, a, window: int):
        """Sum over the trailing ``window`` periods at every time step (last axis), by a
        cumulative sum and one subtraction; entries before the first full window sum
        what is there."""
        xp = self.xp
        c = xp.cumsum(a, axis=-1)
        return xp.concatenate([c[..., :window], c[..., window:] - c[..., :-window]], axis=-1)

    def rolling_tile(self, batch: int, n: int, t: int) -> tuple[int, int, int]:
        """The tile ``(batch elements, rows, columns)`` of pairs :meth:`rolling_corr` computes at
        once: as many pair paths as :data:`ROLLING_TEMPORARIES` float64 ``(T,)`` arrays each fit
        in :attr:`work_bytes` (at least one pair), filling whole rows, then whole matrices,
        first (contiguous writes)."""
        pairs = max(1, self.work_bytes // (ROLLING_TEMPORARIES * 8 * t))
        if pairs >= n * n:
            return min(batch, pairs // (n * n)), n, n
        if pairs >= n:
            return 1, pairs // n, n
        return 1, 1, pairs

    def rolling_corr_bytes(self, shape: tuple[int, ...]) -> int:
        """Peak bytes :meth:`rolling_corr` allocates for ``x`` of ``shape`` ``(..., n, T)``: the
        ``(..., n, n, T)`` float64 result, one tile's temporaries (:meth:`rolling_tile`) and
        the per-series arrays (mean-shifted data, mask, running squares)."""
        n, t = shape[-2], shape[-1]
        batch = int(np.prod(shape[:-2], dtype=np.int64))
        bb, bi, bj = self.rolling_tile(batch, n, t)
        return 8 * (batch * n * n * t + ROLLING_TEMPORARIES * bb * bi * bj * t + 4 * batch * n * t)

    def rolling_corr(self, x, window: int, min_periods: int):
        """Correlation of every pair over a trailing window at every step: ``(..., n, n, T)``.

        Computed tile by tile (:meth:`rolling_tile`), so the temporaries stay within
        :attr:`work_bytes` whatever ``n`` and ``T``; every pair's numbers are the same whatever
        the tiling (each pair's sums run over time alone)."""
        xp = self.xp
        lead, n, t = x.shape[:-2], x.shape[-2], x.shape[-1]
        x0, m = self._centered(x.reshape((-1, n, t)), True)
        # window sums are differences of cumulative sums: their rounding grows with the
        # periods summed so far and the squares accumulated (bounded by the series' own)
        q_cum = xp.cumsum(x0 * x0, axis=-1)
        terms = xp.arange(1, t + 1, dtype=x.dtype)
        batch = x0.shape[0]
        bb, bi, bj = self.rolling_tile(batch, n, t)
        out = None if bb * bi * bj == batch * n * n else xp.empty((batch, n, n, t), dtype=x.dtype)
        for b in range(0, batch, bb):
            for i in range(0, n, bi):
                for j in range(0, n, bj):
                    rows, cols = slice(i, i + bi), slice(j, j + bj)
                    tile = self._rolling_tile_corr(x0[b:b + bb], m[b:b + bb], q_cum[b:b + bb], terms,
                                                   rows, cols, window, max(min_periods, 2))
                    if out is None:
                        return tile.reshape(lead + (n, n, t))
                    out = _put(out, (slice(b, b + bb), rows, cols), tile)
        return out.reshape(lead + (n, n, t))

    def _rolling_tile_corr(self, x0, m, q_cum, terms, rows, cols, window: int, min_count: int):
        """Rolling correlations ``(B, rows, cols, T)`` of series ``rows`` against series ``cols``
        (slices) of mean-shifted, zero-filled ``x0`` with validity mask ``m`` and running sums of
        squares ``q_cum``, all ``(B, n, T)``."""
        xp = self.xp
        xi, mi, qi = x0[:, rows, None, :], m[:, rows, None, :], q_cum[:, rows, None, :]
        xj, mj, qj = x0[:, None, cols, :], m[:, None, cols, :], q_cum[:, None, cols, :]
        sums = self._window_sums
        n = sums(mi * mj, window)
        s = sums(xi * mj, window)         # sum of x_i where both valid
        st = sums(xj * mi, window)        # sum of x_j where both valid
        with _quiet():
            vx = sums(xi * xi * mj, window) - s * s / n
            vy = sums(xj * xj * mi, window) - st * st / n
            cxy = sums(xi * xj, window) - s * st / n
            constant = self.rounding_zero(vx, n, terms, qi) | self.rounding_zero(vy, n, terms, qj)
            c = xp.clip(cxy / xp.sqrt(vx * vy), -1.0, 1.0)
        return xp.where((n >= min_count) & ~constant, c, xp.nan)

    # -- weighted and shrunk ------------------------------------------------------
    def ewma_cov(self, x, decay: float):
        """Zero-mean exponentially weighted covariance at the last step (RiskMetrics):
        ``sum_t w_t x_i x_j / sum_t w_t`` with ``w_t = decay ** (T - 1 - t)`` over the
        periods where both series are valid."""
        xp = self.xp
        t = x.shape[-1]
        w = decay ** xp.arange(t - 1, -1, -1, dtype=x.dtype)
        valid = ~xp.isnan(x)
        x0 = xp.where(valid, x, 0.0)
        m = valid.astype(x.dtype)
        with _quiet():
            return ((x0 * w) @ self._t(x0)) / ((m * w) @ self._t(m))

    def ledoit_wolf(self, x):
        """Ledoit-Wolf shrinkage towards ``mu * I`` (scikit-learn's ``LedoitWolf``, centered data,
        1/T normalization). Returns ``(covariance (..., n, n), shrinkage (...))``."""
        xp = self.xp
        n, t = x.shape[-2], x.shape[-1]
        x0 = x - x.mean(axis=-1, keepdims=True)
        s = (x0 @ self._t(x0)) / t
        trace = xp.trace(s, axis1=-2, axis2=-1)
        mu = trace / n
        x2 = x0 * x0
        beta_ = (x2 @ self._t(x2)).sum(axis=(-2, -1))
        delta_ = (s * s).sum(axis=(-2, -1))
        beta = (beta_ / t - delta_) / (n * t)
        delta = (delta_ - 2.0 * mu * trace + n * mu * mu) / n
        beta = xp.minimum(beta, delta)
        with _quiet():
            shrink = xp.where(beta == 0, 0.0, beta / delta)
        eye = xp.eye(n, dtype=x.dtype)
        cov = (1.0 - shrink)[..., None, None] * s + (shrink * mu)[..., None, None] * eye
        return cov, shrink
