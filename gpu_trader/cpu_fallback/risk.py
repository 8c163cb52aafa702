"""Risk metrics on the CPU: one numba pass per series, parallel over series.

The GPU (:mod:`gpu_trader.kernels.risk`) runs the array formulation of
:class:`gpu_trader._internal.risk_xp.RiskMetrics` on CuPy (one segmented sort for all
series, then reductions). On the CPU that formulation costs ~15 NumPy calls per
metric, too slow for a one-series latency path, so here each series is summarized
in one compiled loop (valid count, moments, wealth path and drawdown, win/loss
tallies, and — only when a quantile is asked for — reads of its sorted values,
sorted by NumPy beforehand),
and the metrics are finished from that summary with the same closed forms as
:mod:`gpu_trader._internal.risk_xp` (including its zero-dispersion rule,
:func:`gpu_trader._internal.risk_xp.rounding_residue`, compiled into the loop). Both
formulations are tested against the same oracles (empyrical, scipy) and against
each other.

Semantics, NaN policy and sign conventions: see :mod:`gpu_trader.risk`.
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange
from numba.extending import register_jitable

from .._internal.jit import njit_cached
from .._internal.risk_xp import cornish_fisher_z, normal_quantile, rounding_residue

# columns of a series summary; the per-level quantiles and tail means follow. EXCESS is the
# mean of r - mar, DOWNSIDE the root mean square of min(r - mar, 0) (``mar``: summarize's rate)
N, MEAN, STD, SKEW, KURT, MDD, WEALTH, EXCESS, DOWNSIDE, KELLY = range(10)
N_FIXED = 10
_rounding_residue = register_jitable(rounding_residue)
_PARALLEL_MIN_VALUES = 50_000  # below this many values the thread pool costs more than it saves


@register_jitable
def _summarize_row(x, sorted_x, qs, mar, buf, out):
    """Summary of one series ``x`` (NaNs skipped) into ``out``; ``sorted_x`` is ``x`` sorted
    ascending with NaNs last (read only when ``qs`` is not empty); ``buf``: scratch, len(x)."""
    n = 0
    total = 0.0
    wealth = 1.0
    peak = 1.0
    mdd = 0.0
    excess = 0.0
    down = 0.0
    n_win = 0
    n_loss = 0
    win = 0.0
    loss = 0.0
    for i in range(x.shape[0]):
        v = x[i]
        if v != v:
            continue
        # branch-free: the signs of returns are a coin flip for the branch predictor
        buf[n] = v
        n += 1
        total += v
        wealth *= 1.0 + v
        peak = max(peak, wealth)
        mdd = max(mdd, 1.0 - wealth / peak)
        a = v - mar
        excess += a
        a_down = min(a, 0.0)
        down += a_down * a_down
        n_win += v > 0.0
        n_loss += v < 0.0
        win += max(v, 0.0)
        loss -= min(v, 0.0)
    nq = qs.shape[0]
    if n == 0:
        out[:] = np.nan
        out[N] = 0.0
        return
    mean = total / n
    m2 = 0.0
    m3 = 0.0
    m4 = 0.0
    for i in range(n):
        d = buf[i] - mean
        d2 = d * d
        m2 += d2
        m3 += d2 * d
        m4 += d2 * d2
    var_pop = m2 / n
    std = math.sqrt(m2 / (n - 1)) if n > 1 else np.nan
    out[N] = n
    out[MEAN] = mean
    if _rounding_residue(std, mean, n):  # a constant series: see risk_math.rounding_residue
        out[STD] = 0.0
        out[SKEW] = np.nan
        out[KURT] = np.nan
    else:
        out[STD] = std
        out[SKEW] = (m3 / n) / var_pop ** 1.5
        out[KURT] = (m4 / n) / (var_pop * var_pop) - 3.0
    out[MDD] = mdd
    out[WEALTH] = wealth
    out[EXCESS] = excess / n
    out[DOWNSIDE] = math.sqrt(down / n)
    if n_win > 0 and n_loss > 0:
        p = n_win / (n_win + n_loss)
        out[KELLY] = p - (1.0 - p) * (loss / n_loss) / (win / n_win)
    else:
        out[KELLY] = np.nan
    s = sorted_x
    last = n - 1
    for j in range(nq):
        pos = qs[j] * last
        lo = int(math.floor(pos))
        t = pos - lo
        hi = min(lo + 1, last)
        a = s[lo]
        diff = s[hi] - a
        # NumPy's two-sided lerp, so the quantile equals numpy.percentile bit for bit
        out[N_FIXED + j] = s[hi] - diff * (1.0 - t) if t >= 0.5 else a + diff * t
        tail = 0.0  # empyrical's CVaR: mean of the floor((n - 1) q) + 1 smallest
        for i in range(lo + 1):
            tail += s[i]
        out[N_FIXED + nq + j] = tail / (lo + 1)


@njit_cached(parallel=True, nogil=True, error_model="numpy")
def _summarize_parallel(x, sorted_x, qs, mar, out):
    for r in prange(x.shape[0]):
        buf = np.empty(x.shape[1])
        _summarize_row(x[r], sorted_x[r], qs, mar, buf, out[r])


@njit_cached(nogil=True, error_model="numpy")
def _summarize_serial(x, sorted_x, qs, mar, out):
    buf = np.empty(x.shape[1])
    for r in range(x.shape[0]):
        _summarize_row(x[r], sorted_x[r], qs, mar, buf, out[r])


def summarize(x: np.ndarray, qs: tuple[float, ...] = (), mar: float = 0.0) -> np.ndarray:
    """Summaries of every series of ``x`` (..., T) -> (..., N_FIXED + 2 * len(qs)) float64."""
    rows = x.reshape(-1, x.shape[-1])
    qa = np.asarray(qs, dtype=np.float64)
    out = np.empty((rows.shape[0], N_FIXED + 2 * len(qs)))
    run = _summarize_parallel if rows.size >= _PARALLEL_MIN_VALUES and rows.shape[0] > 1 else _summarize_serial
    # NumPy's vectorized sort is ~5x faster than numba's quicksort; NaNs sort last
    sorted_rows = np.sort(rows, axis=-1) if qs else rows
    run(rows, sorted_rows, qa, float(mar), out)
    return out.reshape(x.shape[:-1] + (out.shape[-1],))


def _levels(s: np.ndarray, first: int, nq: int) -> np.ndarray:
    """Per-level columns moved to a leading axis: (nq, ...) (a transpose view; np.moveaxis
    costs ~2 us of argument handling, as much as the whole one-series computation)."""
    cols = s[..., first:first + nq]
    return cols.transpose((cols.ndim - 1,) + tuple(range(cols.ndim - 1)))


def _parametric(s: np.ndarray, qs, cornish_fisher: bool) -> np.ndarray:
    """``-(mean + z std)``; ``-mean`` where the std is 0, as
    :meth:`gpu_trader._internal.risk_xp.RiskMetrics.var_parametric_moments`."""
    z = np.asarray([normal_quantile(p) for p in qs]).reshape((len(qs),) + (1,) * (s.ndim - 1))
    if cornish_fisher:
        z = cornish_fisher_z(z, s[..., SKEW], s[..., KURT])
    std = s[..., STD]
    return -(s[..., MEAN] + np.where(std == 0, 0.0, z * std))


def _sharpe(s: np.ndarray, ppy: float) -> np.ndarray:
    """From a summary taken with ``mar`` = the risk-free rate."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return s[..., EXCESS] / s[..., STD] * math.sqrt(ppy)


def _sortino(s: np.ndarray, ppy: float) -> np.ndarray:
    """From a summary taken with ``mar`` = the required return."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return s[..., EXCESS] / s[..., DOWNSIDE] * math.sqrt(ppy)


def _calmar(s: np.ndarray, ppy: float) -> np.ndarray:
    mdd = s[..., MDD]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        annual = s[..., WEALTH] ** (ppy / s[..., N]) - 1.0
        return np.where(mdd > 0, annual / mdd, np.nan)


class _NumbaRiskMetrics:
    """Same methods and results as :class:`gpu_trader._internal.risk_xp.RiskMetrics`."""

    xp = np

    def var_historical(self, x, qs):
        return -_levels(summarize(x, qs), N_FIXED, len(qs))

    def cvar(self, x, qs):
        return -_levels(summarize(x, qs), N_FIXED + len(qs), len(qs))

    def var_parametric(self, x, qs, cornish_fisher):
        return _parametric(summarize(x), qs, cornish_fisher)

    def max_drawdown(self, x):
        return summarize(x)[..., MDD]

    def sharpe(self, x, ppy, rf):
        return _sharpe(summarize(x, (), rf), ppy)

    def sortino(self, x, ppy, mar):
        return _sortino(summarize(x, (), mar), ppy)

    def calmar(self, x, ppy):
        return _calmar(summarize(x), ppy)

    def kelly_fraction(self, x):
        return summarize(x)[..., KELLY]

    def risk_report(self, x, q, ppy, rf):
        s = summarize(x, (q,), rf)
        return {
            "n": s[..., N].astype(np.int64),
            "mean": s[..., MEAN],
            "volatility": s[..., STD] * math.sqrt(ppy),
            "var_historical": -s[..., N_FIXED],
            "var_parametric": _parametric(s, (q,), False)[0],
            "var_cornish_fisher": _parametric(s, (q,), True)[0],
            "cvar": -s[..., N_FIXED + 1],
            "max_drawdown": s[..., MDD],
            "sharpe": _sharpe(s, ppy),
            "sortino": _sortino(s, ppy),
            "calmar": _calmar(s, ppy),
            "kelly_fraction": s[..., KELLY],
        }


metrics = _NumbaRiskMetrics()
