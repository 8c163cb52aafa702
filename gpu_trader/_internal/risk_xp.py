"""Risk metrics over return series, written once against an array namespace ``xp``.

:class:`RiskMetrics` is the array formulation (a batched sort, then reductions) that the
``cuda`` and ``jax`` backends run: :mod:`gpu_trader.kernels.risk` instantiates it over CuPy
with :func:`doubling_running_max` (a log-depth scan: CuPy's ``maximum`` has no
``accumulate``), :mod:`gpu_trader.jax_backend.risk` over ``jax.numpy`` with ``lax.cummax``,
jitted. The ``cpu`` backend does not use it: :mod:`gpu_trader.cpu_fallback.risk` summarizes
each series in one numba pass and finishes the metrics with this module's scalar pieces
(:func:`normal_quantile`, :func:`cornish_fisher_z`; :func:`rounding_residue` is compiled
into the pass). The tests run :class:`RiskMetrics` over NumPy against the CPU backend, and
both against the same oracles. Nothing here validates input; the public module
:mod:`gpu_trader.risk` does.

Shapes: ``r`` is ``(..., T)`` with time last; every metric reduces the last axis.
A level grid ``q`` (tail probabilities ``1 - level``, a 1-D tuple) adds a leading
axis. All arithmetic is float64; NaNs are dropped per series (the metric of a
series equals the metric of that series without its NaNs). A series with too few
valid values for a metric (none; one for a standard deviation) gives NaN.

Zero dispersion: the standard deviation of a constant series is exactly 0, but the
floating-point mean it is centred on can miss the common value in its last bits,
leaving a residue (about 1e-18 for daily returns) that would turn an infinite
Sharpe ratio into an arbitrary 1e16. :func:`rounding_residue` says when a standard
deviation is no larger than that rounding can make it, and such a deviation is
taken as 0 (empyrical's rule for exactly equal values, made robust to the order of
summation of every backend).

The module also holds the argument rule the public risk and Monte Carlo modules
share (:func:`check_levels`).
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Callable

import numpy as np

from .series_input import has_nan
from .validation import check_floats

__all__ = [
    "RiskMetrics", "doubling_running_max", "normal_quantile", "cornish_fisher_z", "rounding_residue",
    "check_levels", "LEVEL_HINT",
]

EPS = float(np.finfo(np.float64).eps)
TINY = float(np.finfo(np.float64).smallest_subnormal)
LEVEL_HINT = "level is a confidence such as 0.99, not a tail probability such as 0.01"


def check_levels(level: Any, name: str = "level") -> tuple[tuple[float, ...], bool]:
    """Validate a confidence level, or a grid (sequence) of them.

    Every level must be a real number (Python or NumPy; not a bool) with
    ``0.5 <= level < 1``: a level below 0.5 is almost always a tail probability
    written where a confidence belongs, so the ``ValueError`` says so
    (:data:`LEVEL_HINT`). Returns ``(levels, is_grid)`` like
    :func:`gpu_trader._internal.validation.check_floats` (which also bounds a grid's length).
    """
    levels, grid = check_floats(level, name)
    for v in levels:
        if not 0.5 <= v < 1.0:
            raise ValueError(f"{name} must satisfy 0.5 <= {name} < 1, got {v}: {LEVEL_HINT}")
    return levels, grid


def rounding_residue(std, mean, n):
    """Whether a standard deviation ``std`` of ``n`` values with mean ``mean`` is no larger
    than the rounding of the mean can make it for a constant series (then it is 0).

    Whatever the order of summation, a computed mean of ``n`` equal values ``c`` is
    within ``(n - 1) u |c|`` of ``c`` (``u`` the unit roundoff, ``eps / 2``; plus the
    subnormal spacing where ``c`` is tiny), and the deviations ``c - mean`` then give
    ``std <= n u |c| sqrt(n / (n - 1))``; the test ``std <= n * (eps * |mean| + tiny)``
    accepts that with room to spare and nothing a real series produces
    (``std / |mean|`` below ``5.6e-14`` for 252 values). Plain Python on scalars or arrays
    of any namespace; the CPU backend compiles it with numba's ``register_jitable``.
    """
    return std <= n * (EPS * abs(mean) + TINY)


def _quiet():
    """NumPy warns on 0/0 for an empty series (the result is NaN by design); CuPy never warns."""
    return np.errstate(invalid="ignore", divide="ignore")


def normal_quantile(p: float) -> float:
    """Standard normal quantile (Wichura's AS241 through :class:`statistics.NormalDist`)."""
    return NormalDist().inv_cdf(p)


def cornish_fisher_z(z, skew, excess_kurtosis):
    """Cornish-Fisher expansion of the quantile ``z`` for given skewness and excess kurtosis."""
    return (
        z
        + (z * z - 1.0) * skew / 6.0
        + (z ** 3 - 3.0 * z) * excess_kurtosis / 24.0
        - (2.0 * z ** 3 - 5.0 * z) * skew * skew / 36.0
    )


def doubling_running_max(xp: Any, x):
    """Running maximum along the last axis by log2(T) shifted ``maximum`` passes (Hillis-Steele).

    Pure element-wise array operations, so it runs on any ``xp``; O(T log T) work but
    log-depth, which suits a GPU. Equal to ``numpy.maximum.accumulate(x, axis=-1)``.
    """
    out = x.copy()
    shift = 1
    n = x.shape[-1]
    while shift < n:
        out[..., shift:] = xp.maximum(out[..., shift:], out[..., :-shift].copy())
        shift *= 2
    return out


@dataclass
class _Sorted:
    """Each series sorted ascending with NaNs last, and its count of valid values."""

    values: Any  # (..., T)
    n: Any       # (...,) int64


@dataclass
class _Moments:
    n: Any
    mean: Any
    std: Any       # ddof = 1; 0 where it is only a rounding residue (rounding_residue)
    skew: Any      # biased (scipy.stats.skew default); NaN where std is 0
    kurt: Any      # biased excess kurtosis (scipy.stats.kurtosis default); NaN where std is 0


class RiskMetrics:
    """The risk metrics for one array namespace.

    ``xp``: NumPy-compatible module; ``running_max(x)``: running maximum along the
    last axis. Every method takes float64 arrays (the public layer converts).
    """

    def __init__(self, xp: Any, running_max: Callable[[Any], Any]) -> None:
        self.xp = xp
        self.running_max = running_max

    # -- shared pieces ---------------------------------------------------------
    def has_nan(self, r) -> bool:
        """Whether ``r`` holds a NaN (:func:`gpu_trader._internal.series_input.has_nan`)."""
        return has_nan(self.xp, r)

    def sort_valid(self, r) -> _Sorted:
        xp = self.xp
        return _Sorted(xp.sort(r, axis=-1), xp.sum(~xp.isnan(r), axis=-1))

    def moments(self, r) -> _Moments:
        """Count, mean, sample std (ddof 1), biased skewness and excess kurtosis; two-pass.
        A std that is only a rounding residue is 0 and then skewness and kurtosis are NaN."""
        xp = self.xp
        valid = ~xp.isnan(r)
        n = xp.sum(valid, axis=-1)
        with _quiet():
            mean = xp.where(valid, r, 0.0).sum(axis=-1) / n
            d = xp.where(valid, r - mean[..., None], 0.0)
            d2 = d * d
            m2 = d2.sum(axis=-1)
            m3 = (d2 * d).sum(axis=-1) / n
            m4 = (d2 * d2).sum(axis=-1) / n
            var_pop = m2 / n
            std = xp.sqrt(m2 / (n - 1))
            constant = rounding_residue(std, mean, n)
            std = xp.where(n > 1, xp.where(constant, 0.0, std), xp.nan)
            skew = xp.where(constant, xp.nan, m3 / var_pop ** 1.5)
            kurt = xp.where(constant, xp.nan, m4 / (var_pop * var_pop) - 3.0)
        return _Moments(n, mean, std, skew, kurt)

    def excess_mean(self, r, rate: float):
        """``(mean of r - rate over the valid values, r - rate with NaNs as 0, valid count)``:
        empyrical's order (subtract, then average), so a series equal to ``rate`` has an
        excess of exactly 0."""
        xp = self.xp
        valid = ~xp.isnan(r)
        n = valid.sum(axis=-1)
        adj = xp.where(valid, r - rate, 0.0)
        with _quiet():
            return adj.sum(axis=-1) / n, adj, n

    def _grid(self, q: tuple[float, ...], like):
        """Tail probabilities as an array broadcastable against ``like`` with a leading axis."""
        xp = self.xp
        return xp.asarray(q, dtype=xp.float64).reshape((len(q),) + (1,) * like.ndim)

    # -- quantile-based --------------------------------------------------------
    def quantile_sorted(self, s: _Sorted, q: tuple[float, ...]):
        """Quantiles of each series at probabilities ``q``: NumPy's ``linear`` method
        (``numpy.nanpercentile``), bit for bit including its two-sided lerp."""
        xp = self.xp
        n = s.n
        qa = self._grid(q, n)
        last = xp.maximum(n - 1, 0)
        pos = qa * last
        lo = xp.floor(pos)
        t = pos - lo
        lo = lo.astype(xp.int64)
        hi = xp.minimum(lo + 1, last)
        vals = xp.broadcast_to(s.values, (len(q),) + s.values.shape)
        a = xp.take_along_axis(vals, lo[..., None], axis=-1)[..., 0]
        b = xp.take_along_axis(vals, hi[..., None], axis=-1)[..., 0]
        diff = b - a
        out = xp.where(t >= 0.5, b - diff * (1.0 - t), a + diff * t)
        return xp.where(n > 0, out, xp.nan)

    def var_historical(self, r, q):
        return -self.quantile_sorted(self.sort_valid(r), q)

    def cvar_sorted(self, s: _Sorted, q: tuple[float, ...]):
        """Mean of the ``floor((n - 1) q) + 1`` smallest values, negated (empyrical's definition)."""
        xp = self.xp
        n = s.n
        k = xp.floor(self._grid(q, n) * xp.maximum(n - 1, 0)).astype(xp.int64)
        csum = xp.cumsum(xp.where(xp.isnan(s.values), 0.0, s.values), axis=-1)
        csum = xp.broadcast_to(csum, (len(q),) + csum.shape)
        tail = xp.take_along_axis(csum, k[..., None], axis=-1)[..., 0]
        return xp.where(n > 0, -tail / (k + 1), xp.nan)

    def cvar(self, r, q):
        return self.cvar_sorted(self.sort_valid(r), q)

    # -- moment-based ----------------------------------------------------------
    def var_parametric_moments(self, m: _Moments, q: tuple[float, ...], cornish_fisher: bool):
        """``-(mean + z std)``; a series with a zero std has every quantile at its mean (VaR ``-mean``)."""
        xp = self.xp
        z = self._grid(tuple(normal_quantile(p) for p in q), m.n)
        if cornish_fisher:
            z = cornish_fisher_z(z, m.skew, m.kurt)
        return -(m.mean + xp.where(m.std == 0, 0.0, z * m.std))

    def var_parametric(self, r, q, cornish_fisher: bool):
        return self.var_parametric_moments(self.moments(r), q, cornish_fisher)

    def sharpe_moments(self, m: _Moments, excess, periods_per_year: float):
        """Mean excess return over the std (0 for a constant series: +-inf, or NaN for 0/0)."""
        with _quiet():
            return excess / m.std * periods_per_year ** 0.5  # (** not math.sqrt: JAX traces it)

    def sharpe(self, r, periods_per_year: float, risk_free: float):
        excess, _, _ = self.excess_mean(r, risk_free)
        return self.sharpe_moments(self.moments(r), excess, periods_per_year)

    def sortino(self, r, periods_per_year: float, required_return: float):
        """Annualized mean excess return over annualized downside deviation (empyrical's). The
        downside deviation is exactly 0 when no return is below ``required_return`` (no
        rounding residue to clean): then +-inf, or NaN for 0/0."""
        return self.sortino_excess(self.excess_mean(r, required_return), periods_per_year)

    def sortino_excess(self, excess, periods_per_year: float):
        """:meth:`sortino` from :meth:`excess_mean`'s ``(mean, adj, n)`` at the required return."""
        xp = self.xp
        mean, adj, n = excess
        with _quiet():
            down = xp.minimum(adj, 0.0)
            downside = xp.sqrt((down * down).sum(axis=-1) / n)
            return mean * periods_per_year / (downside * periods_per_year ** 0.5)

    # -- path-based ------------------------------------------------------------
    def wealth(self, r):
        """Compounded wealth path from 1 (NaN returns count as 0), shape (..., T)."""
        xp = self.xp
        return xp.cumprod(1.0 + xp.where(xp.isnan(r), 0.0, r), axis=-1)

    def max_drawdown_wealth(self, w, n):
        """Largest peak-to-trough loss of the wealth path, the start (1.0) counting as a peak."""
        xp = self.xp
        peak = self.running_max(xp.maximum(w, 1.0))
        dd = (1.0 - w / peak).max(axis=-1)
        return xp.where(n > 0, dd, xp.nan)

    def max_drawdown(self, r):
        return self.max_drawdown_wealth(self.wealth(r), (~self.xp.isnan(r)).sum(axis=-1))

    def calmar_wealth(self, w, n, periods_per_year: float):
        """Compound annual growth rate / max drawdown; NaN without a drawdown."""
        xp = self.xp
        mdd = self.max_drawdown_wealth(w, n)
        with _quiet():
            annual = w[..., -1] ** (periods_per_year / n) - 1.0
            return xp.where(mdd > 0, annual / mdd, xp.nan)

    def calmar(self, r, periods_per_year: float):
        return self.calmar_wealth(self.wealth(r), (~self.xp.isnan(r)).sum(axis=-1), periods_per_year)

    def kelly_fraction(self, r):
        """Discrete Kelly fraction ``p - (1 - p) / b``: p = wins / (wins + losses),
        b = mean win / |mean loss| (zero returns ignored); NaN without wins or losses."""
        xp = self.xp
        win = r > 0
        loss = r < 0
        n_win = win.sum(axis=-1)
        n_loss = loss.sum(axis=-1)
        with _quiet():
            avg_win = xp.where(win, r, 0.0).sum(axis=-1) / n_win
            avg_loss = -xp.where(loss, r, 0.0).sum(axis=-1) / n_loss
            p = n_win / (n_win + n_loss)
            kelly = p - (1.0 - p) * avg_loss / avg_win
        return xp.where((n_win > 0) & (n_loss > 0), kelly, xp.nan)

    # -- everything at once ----------------------------------------------------
    def risk_report(self, r, q: float, periods_per_year: float, risk_free: float) -> dict[str, Any]:
        """All metrics of one series batch, sharing the sort, the moments and the wealth path."""
        s = self.sort_valid(r)
        m = self.moments(r)
        w = self.wealth(r)
        excess = self.excess_mean(r, risk_free)  # Sortino's required return is the risk-free rate
        with _quiet():
            return {
                "n": m.n,
                "mean": m.mean,
                "volatility": m.std * periods_per_year ** 0.5,
                "var_historical": -self.quantile_sorted(s, (q,))[0],
                "var_parametric": self.var_parametric_moments(m, (q,), False)[0],
                "var_cornish_fisher": self.var_parametric_moments(m, (q,), True)[0],
                "cvar": self.cvar_sorted(s, (q,))[0],
                "max_drawdown": self.max_drawdown_wealth(w, m.n),
                "sharpe": self.sharpe_moments(m, excess[0], periods_per_year),
                "sortino": self.sortino_excess(excess, periods_per_year),
                "calmar": self.calmar_wealth(w, m.n, periods_per_year),
                "kelly_fraction": self.kelly_fraction(r),
            }
