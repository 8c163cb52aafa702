"""RiskStream's compiled kernels: every book's risk advanced by one bar (area ``risk_stream``).

The backend area ``risk_stream`` exists on the CPU backend only (a stream is host state, one
small update per bar); :class:`gpu_trader.risk_stream.RiskStream` reaches this module through
``get_backend("cpu").ops("risk_stream")``. Importing it imports numba and compiles
:data:`advance_kernel` (or loads it from the on-disk cache, :mod:`gpu_trader._internal.jit`);
the others compile on first use.

The steps are the loop bodies of :mod:`gpu_trader._internal.risk_stream_loops` (its docstring
gives the state layout); the window's VaR and CVaR are read off the sorted window with the
batch's own order-statistic formula (:func:`gpu_trader.cpu_fallback.risk._losses`), so they
equal ``risk.var_historical``/``risk.cvar`` of the window bit for bit.

``out`` ``(OUT_FIXED + 4 L, B)`` float64 (``L`` levels): rows :data:`RETURN`,
:data:`DRAWDOWN`, :data:`MAX_DRAWDOWN`, :data:`SHARPE`, :data:`VOLATILITY_EWMA`, then ``L``
rows each of EWMA VaR, parametric VaR, historical VaR and CVaR. ``lv`` ``(2, L)``: the tail
probabilities ``1 - level`` and their standard normal quantiles.
"""
from __future__ import annotations

import math

from numba import types
from numba.extending import register_jitable

from .._internal.jit import njit_cached
from .._internal.risk_stream_loops import (
    B_M, B_MDD, B_N, B_PEAK, B_RETURN, B_WEALTH, BOOK_SIZE, G_BARS, G_COMMON, G_DECAY, G_DEN, G_RF, G_SIZE,
    G_SQRT_PPY, book_ewma_variance, books_step, ewma_step, parametric_of, reweight_book, series_step,
    sharpe_of, window_replace,
)
from .risk import _losses

__all__ = [
    "advance_kernel", "reweight_kernel", "cov_kernel", "G_SIZE", "G_DECAY", "G_COMMON", "G_RF",
    "G_SQRT_PPY", "BOOK_SIZE", "B_RETURN", "B_WEALTH", "B_PEAK", "OUT_FIXED", "RETURN", "DRAWDOWN",
    "MAX_DRAWDOWN", "SHARPE", "VOLATILITY_EWMA",
]

RETURN, DRAWDOWN, MAX_DRAWDOWN, SHARPE, VOLATILITY_EWMA = range(5)
OUT_FIXED = 5


@register_jitable
def _advance(x, num, den, g, wptr, widx, wval, wt, book, ring, srt, acc):
    """Feed the bar ``x`` ``(n,)`` to every state (``acc``: scratch, ``(B,)``)."""
    ewma_step(x, num, den, g)
    books_step(x, wptr, widx, wval, wt, acc, book, g[G_DECAY])
    window = ring.shape[1]
    pos = int(g[G_BARS]) % window
    rf = g[G_RF]
    for k in range(book.shape[0]):
        r = book[k, B_RETURN]
        old = ring[k, pos]
        ring[k, pos] = r
        book[k, B_M] = window_replace(srt[k], int(book[k, B_M]), old, r)
        series_step(book[k], r, rf)
    g[G_BARS] += 1.0


@register_jitable
def _write(num, den, g, wptr, widx, wval, book, srt, lv, out):
    """Every book's metrics from the state into ``out``."""
    n_levels = lv.shape[1]
    for k in range(book.shape[0]):
        b = book[k]
        out[RETURN, k] = b[B_RETURN]
        if b[B_N] > 0.0:
            out[DRAWDOWN, k] = 1.0 - b[B_WEALTH] / b[B_PEAK]
            out[MAX_DRAWDOWN, k] = b[B_MDD]
        else:
            out[DRAWDOWN, k] = math.nan
            out[MAX_DRAWDOWN, k] = math.nan
        out[SHARPE, k] = sharpe_of(b, g[G_SQRT_PPY])
        sigma = math.sqrt(book_ewma_variance(k, wptr, widx, wval, num, den, g, book))
        out[VOLATILITY_EWMA, k] = sigma
        m = int(b[B_M])
        for j in range(n_levels):
            q = lv[0, j]
            z = lv[1, j]
            out[OUT_FIXED + j, k] = -z * sigma
            out[OUT_FIXED + n_levels + j, k] = parametric_of(b, z)
            if m > 0:
                var, cvar = _losses(srt[k], m, q)
            else:
                var = cvar = math.nan
            out[OUT_FIXED + 2 * n_levels + j, k] = var
            out[OUT_FIXED + 3 * n_levels + j, k] = cvar


def _advance_bars(hist, num, den, g, wptr, widx, wval, wt, book, ring, srt, lv, out):
    for t in range(hist.shape[0]):
        _advance(hist[t], num, den, g, wptr, widx, wval, wt, book, ring, srt, out[RETURN])
    _write(num, den, g, wptr, widx, wval, book, srt, lv, out)


def _reweight(wptr, widx, wval, num, den, g, book, srt, lv, out):
    for k in range(book.shape[0]):
        reweight_book(k, wptr, widx, wval, num, den, g, book)
    _write(num, den, g, wptr, widx, wval, book, srt, lv, out)


def _cov(num, den, g, out):
    n = num.shape[0]
    common = g[G_COMMON] != 0.0
    d = g[G_DEN]
    for i in range(n):
        for j in range(i, n):
            v = num[i, j] / (d if common else den[i, j])
            out[i, j] = v
            out[j, i] = v


_F2 = types.float64[:, ::1]
_F1 = types.float64[::1]
_I1 = types.int64[::1]
# The bars as advance_kernel takes them: any 2-D float64 array (strided, read-only, unaligned).
_BARS = types.Array(types.float64, 2, "A", readonly=True, aligned=False)
_STATE = (_F2, _F2, _F1, _I1, _I1, _F1, _F2, _F2, _F2, _F2, _F2, _F2)

# Compiled without NRT (nothing allocates) and for one signature, so a call skips numba's typing
# (as gpu_trader.cpu_fallback.streaming's update_kernel); error_model="numpy": x / 0 is inf or NaN.
# One kernel serves an update (one bar, ``x[None]``) and a warmup (many): compiled once.
_OPTIONS = {"nogil": True, "_nrt": False, "error_model": "numpy"}
advance_kernel = njit_cached(**_OPTIONS)(_advance_bars).compile((_BARS,) + _STATE)
"""``advance_kernel(hist, num, den, g, wptr, widx, wval, wt, book, ring, srt, lv, out)``: feed the
``T`` bars of ``hist`` (any ``(T, n)`` float64 array; ``x[None]`` for one bar ``x``) to every book
in order and write the last bar's metrics into ``out`` (whose :data:`RETURN` row is also the
scratch of the book returns' sums). The arguments are not checked."""
reweight_kernel = njit_cached(**_OPTIONS)(_reweight)
"""``reweight_kernel(wptr, widx, wval, num, den, g, book, srt, lv, out)``: restart every book's
EWMA variance recursion for new weights and rewrite ``out``."""
cov_kernel = njit_cached(**_OPTIONS)(_cov)
"""``cov_kernel(num, den, g, out)``: the EWMA covariance matrix ``(n, n)`` into ``out``."""
