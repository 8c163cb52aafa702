"""Risk and performance metrics over batches of return series.

Conventions (docs/design.md#conventions):

* ``r`` holds **simple returns as fractions** (0.01 = +1 %), shape ``(..., T)`` with
  time on the last axis; every metric reduces that axis, so the result has shape
  ``(...)`` (a scalar for one series). A pandas ``Series`` gives a scalar, a
  ``DataFrame`` (time along the index, one column per series) a ``Series`` indexed
  by its columns.
* **VaR and CVaR are positive losses** (a 1-day 99 % VaR of 0.023 means a loss of
  2.3 % is exceeded on 1 % of days). empyrical and quantstats return the same
  numbers with a negative sign; :func:`max_drawdown` is likewise positive here
  (empyrical: negative).
* **NaN policy**: NaNs are dropped per series, like pandas; the metric of a series
  equals the metric of the same series without its NaNs (so for compounding
  metrics a NaN counts as a day with no return). A series with no valid value
  (or fewer than two, for anything using a standard deviation) is a ``ValueError``
  naming it, never a silent NaN. NaN results remain only where the metric itself is
  undefined: Calmar of a series that never draws down, Kelly without a win or a
  loss, a ratio 0 / 0.
* **Zero dispersion** (as empyrical-reloaded): a constant series has a standard
  deviation of exactly 0, also where the floating-point mean leaves a rounding residue
  of about 1e-18 (:func:`gpu_trader._internal.risk_xp.rounding_residue`: ``std <= n * eps *
  |mean|``). So its Sharpe ratio is ``+inf``/``-inf`` by the sign of its mean excess
  return, or NaN when that is 0 (never an arbitrary 1e16); its ``volatility`` is 0,
  its parametric VaR (both methods) ``-mean`` and its skewness-based terms NaN. Sortino's
  downside deviation is exactly 0 when no return falls below the required return
  (``+inf``, or NaN for 0 / 0), and Calmar is NaN without a drawdown.
* ``level`` is a confidence with ``0.5 <= level < 1`` (0.99, not a tail probability
  such as 0.01: that is refused with a hint). It may be a sequence (at most
  :data:`gpu_trader._internal.validation.MAX_GRID` levels): that adds a leading axis.
* ``periods_per_year`` (annualization) is a real number in ``(0, MAX_PERIODS_PER_YEAR]``
  (one period per second of a leap year); rates are per period.
* A call whose per-series results would exceed
  :data:`gpu_trader._internal.validation.WORK_MEMORY_LIMIT` (16 + 2 x levels float64 values per
  series) is refused before they are allocated.
* float32 in gives float32 out; all arithmetic is float64. Inputs are never modified;
  read-only arrays (e.g. pandas' copy-on-write columns) are accepted.
* Every function runs on every backend (``backend=`` or the input's array type).

Oracles the tests compare against: empyrical-reloaded (historical VaR, CVaR,
drawdown, Sharpe, Sortino, Calmar), scipy.stats (parametric and Cornish-Fisher
VaR), and independent NumPy/pandas code (Kelly).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .correlation import corr, cov, ewma_cov, ledoit_wolf, rolling_corr
from .montecarlo import EuropeanOptions, MonteCarloVaR, var_monte_carlo
from ._internal.risk_xp import check_levels
from ._internal.validation import check_float, check_periods_per_year, check_work_memory
from ._internal.series_input import SeriesInput
from .profiling import annotate

__all__ = [
    "var_historical", "var_parametric", "cvar", "max_drawdown", "sharpe", "sortino", "calmar",
    "kelly_fraction", "risk_report", "REPORT_FIELDS", "MAX_PERIODS_PER_YEAR",
    # correlation and covariance live in gpu_trader.correlation; re-exported here (docs/design.md#public-api)
    "corr", "cov", "rolling_corr", "ewma_cov", "ledoit_wolf",
    # Monte Carlo VaR lives in gpu_trader.montecarlo; re-exported here (docs/design.md#public-api)
    "var_monte_carlo", "EuropeanOptions", "MonteCarloVaR",
]

REPORT_FIELDS = (
    "n", "mean", "volatility", "var_historical", "var_parametric", "var_cornish_fisher", "cvar",
    "max_drawdown", "sharpe", "sortino", "calmar", "kelly_fraction",
)

_PARAMETRIC_METHODS = ("gaussian", "cornish-fisher")
MAX_PERIODS_PER_YEAR = 366 * 24 * 3600  # one period per second of a leap year


_ONE_LEVEL: dict[float, tuple[tuple[float, ...], bool]] = {}
""":func:`_tail_probabilities` of the single float levels seen (at most 256): calls repeat them."""


def _tail_probabilities(level: Any) -> tuple[tuple[float, ...], bool]:
    """Validate ``level`` (one confidence or a sequence, :func:`check_levels`) -> tail
    probabilities ``1 - level``."""
    if type(level) is float:  # the common case, kept cheap
        known = _ONE_LEVEL.get(level)
        if known is not None:
            return known
        if 0.5 <= level < 1.0:
            known = (round(1.0 - level, 15),), False
            if len(_ONE_LEVEL) < 256:
                _ONE_LEVEL[level] = known
            return known
    levels, grid = check_levels(level)
    # 1 - 0.9 is 0.09999999999999998 in binary; rounding gives the tail a user means
    # (the same cutoff empyrical is called with), which matters where n * q is whole
    return tuple(round(1.0 - v, 15) for v in levels), grid


def _periods_per_year(value: Any) -> float:
    """Validate an annualization factor: a real number in ``(0, MAX_PERIODS_PER_YEAR]``."""
    return check_periods_per_year(value, MAX_PERIODS_PER_YEAR)


class _Call(SeriesInput):
    """One metric call on ``(..., T)`` series; results reduce the time axis."""

    __slots__ = ()

    @staticmethod
    def formulas_of(be: Any) -> Any:
        """The backend's :class:`gpu_trader._internal.risk_xp.RiskMetrics` (or its CPU twin)."""
        return be.ops("risk").metrics

    def __init__(self, r: Any, backend: Any, what: str, minimum: int = 1, n_levels: int = 0) -> None:
        super().__init__(r, backend, what, minimum)
        self.check_summary_memory(n_levels, what)

    def check_summary_memory(self, n_levels: int, what: str) -> None:
        """Refuse a call whose per-series results would exceed the working-memory limit: each
        series gets up to 16 float64 summary values plus two per level (the CPU backend's
        summary; the array backends keep fewer). Memory in proportion to ``r`` itself is
        the caller's (``r`` is already allocated)."""
        n_series = self.x.size // self.x.shape[-1]
        check_work_memory(8.0 * n_series * (16 + 2 * n_levels), lambda: f"{what} on {n_series} series, {n_levels} levels")

    def out(self, res: Any, grid: bool | None = None, levels: Any = None) -> Any:
        """Wrap a result. ``grid``: None for a metric without a level axis, False to drop the
        leading level axis of a one-level call, True to keep it (``levels`` labels it for
        pandas). Reshapes rather than indexes: on JAX an index costs ~40 us a call."""
        if grid is False:
            res = res.reshape(res.shape[1:])
        if self.dtype != np.float64 and res.dtype.kind == "f":
            res = res.astype(self.dtype)
        if self.rewrap is not None:
            return self.rewrap(res, "reduced", list(levels) if grid and levels is not None else None)
        return res[()] if res.ndim == 0 and isinstance(res, np.ndarray) else res


@annotate
def var_historical(r: Any, level: Any = 0.99, *, backend: Any = None) -> Any:
    """Historical VaR: minus the ``1 - level`` quantile of each series' returns.

    The quantile interpolates linearly between order statistics (NumPy's default,
    as in ``empyrical.value_at_risk(r, cutoff=1 - level)``, sign flipped).
    Returns shape ``(...)``, or ``(len(level), ...)`` for a sequence of levels.
    """
    q, grid = _tail_probabilities(level)
    c = _Call(r, backend, "var_historical", n_levels=len(q))
    return c.out(c.formulas.var_historical(c.x, q), grid, level)


@annotate
def cvar(r: Any, level: Any = 0.99, *, backend: Any = None) -> Any:
    """Conditional VaR (expected shortfall): minus the mean of the worst returns.

    The tail is the ``floor((n - 1) * (1 - level)) + 1`` smallest of the ``n`` valid
    returns, exactly ``empyrical.conditional_value_at_risk`` (sign flipped); so
    ``cvar >= var_historical`` up to interpolation. Shape as :func:`var_historical`.
    """
    q, grid = _tail_probabilities(level)
    c = _Call(r, backend, "cvar", n_levels=len(q))
    return c.out(c.formulas.cvar(c.x, q), grid, level)


@annotate
def var_parametric(r: Any, level: Any = 0.99, *, method: str = "gaussian", backend: Any = None) -> Any:
    """Parametric VaR from the series' mean and sample standard deviation (ddof=1).

    ``method="gaussian"``: ``-(mean + z * std)`` with ``z`` the standard normal
    ``1 - level`` quantile, i.e. ``-scipy.stats.norm.ppf(1 - level, mean, std)``
    (quantstats' ``value_at_risk``). ``method="cornish-fisher"`` replaces ``z`` by its
    Cornish-Fisher expansion with the sample skewness and excess kurtosis (biased
    moment estimators, scipy.stats' defaults), which widens the VaR of fat-tailed
    series. A constant series (zero std, see the module docstring) has VaR ``-mean`` with
    either method. Shape as :func:`var_historical`.
    """
    if method not in _PARAMETRIC_METHODS:
        raise ValueError(f"method must be one of {_PARAMETRIC_METHODS}, got {method!r}")
    q, grid = _tail_probabilities(level)
    c = _Call(r, backend, "var_parametric (mean and standard deviation)", 2, len(q))
    return c.out(c.formulas.var_parametric(c.x, q, method == "cornish-fisher"), grid, level)


@annotate
def max_drawdown(r: Any, *, backend: Any = None) -> Any:
    """Largest peak-to-trough fall of the compounded wealth path, as a positive fraction.

    Wealth starts at 1 (the start counts as a peak, so a first-day loss is a
    drawdown) and compounds ``1 + r``; equal to ``-empyrical.max_drawdown(r)``. 0 for
    a path that never falls.
    """
    c = _Call(r, backend, "max_drawdown")
    return c.out(c.formulas.max_drawdown(c.x))


@annotate
def sharpe(r: Any, periods_per_year: float = 252, risk_free: float = 0.0, *, backend: Any = None) -> Any:
    """Annualized Sharpe ratio: ``mean(r - risk_free) / std(r, ddof=1) * sqrt(periods_per_year)``.

    ``risk_free`` is a per-period rate (as in ``empyrical.sharpe_ratio``). A constant
    series (a std that is zero up to the rounding of its mean, see the module docstring)
    gives ``+inf``/``-inf`` by the sign of its mean excess return and NaN when that is
    exactly 0 (the series equals ``risk_free``), as empyrical-reloaded does.
    """
    ppy = _periods_per_year(periods_per_year)
    rf = check_float(risk_free, "risk_free")
    c = _Call(r, backend, "sharpe (standard deviation)", 2)
    return c.out(c.formulas.sharpe(c.x, ppy, rf))


@annotate
def sortino(r: Any, periods_per_year: float = 252, required_return: float = 0.0, *, backend: Any = None) -> Any:
    """Annualized Sortino ratio, as ``empyrical.sortino_ratio``.

    ``mean(r - required_return) * ppy / (sqrt(mean(min(r - required_return, 0)^2)) * sqrt(ppy))``:
    the downside deviation averages over *all* periods (ddof 0), not only the losing ones.
    ``required_return`` is a per-period rate. No return below ``required_return`` makes
    the downside deviation exactly 0: ``+inf``, or NaN when the mean excess is 0 too
    (a series equal to ``required_return``), as empyrical.
    """
    ppy = _periods_per_year(periods_per_year)
    mar = check_float(required_return, "required_return")
    c = _Call(r, backend, "sortino")
    return c.out(c.formulas.sortino(c.x, ppy, mar))


@annotate
def calmar(r: Any, periods_per_year: float = 252, *, backend: Any = None) -> Any:
    """Calmar ratio: compound annual growth rate / :func:`max_drawdown` (``empyrical.calmar_ratio``).

    The growth rate is ``wealth_T ** (periods_per_year / n) - 1`` over the ``n`` valid
    periods. NaN when the series never draws down.
    """
    ppy = _periods_per_year(periods_per_year)
    c = _Call(r, backend, "calmar")
    return c.out(c.formulas.calmar(c.x, ppy))


@annotate
def kelly_fraction(r: Any, *, backend: Any = None) -> Any:
    """Kelly fraction of a win/loss bet: ``p - (1 - p) / b`` (quantstats' ``kelly_criterion``).

    ``p`` = share of winning periods among non-zero ones, ``b`` = mean win / |mean loss|.
    NaN when a series has no win or no loss. May be negative (the bet loses).
    """
    c = _Call(r, backend, "kelly_fraction")
    return c.out(c.formulas.kelly_fraction(c.x))


@annotate
def risk_report(
    r: Any,
    level: float = 0.99,
    periods_per_year: float = 252,
    risk_free: float = 0.0,
    *,
    backend: Any = None,
) -> dict[str, Any]:
    """Every metric of this module for a batch, in one pass over the data.

    Returns ``{field: array of shape (...)}`` for :data:`REPORT_FIELDS`: ``n`` (valid
    observations), ``mean`` (per period), ``volatility`` (annualized std; 0 for a constant series),
    ``var_historical``, ``var_parametric`` (Gaussian), ``var_cornish_fisher``, ``cvar``
    (all at ``level``), ``max_drawdown``, ``sharpe`` (``risk_free``), ``sortino``
    (``risk_free`` as the required return), ``calmar``, ``kelly_fraction``; each equal
    to the function of the same name. The sort, the moments and the wealth path are
    computed once. ``level`` is one number here.
    """
    qs, grid = _tail_probabilities(level)
    if grid:
        raise TypeError("level must be one number for risk_report, got a sequence")
    q = qs[0]
    ppy = _periods_per_year(periods_per_year)
    rf = check_float(risk_free, "risk_free")
    c = _Call(r, backend, "risk_report (standard deviation)", 2, 1)
    report = c.formulas.risk_report(c.x, q, ppy, rf)
    return {k: c.out(v) for k, v in report.items()}
