"""Covariance and correlation matrices of many series, GEMM-based on every backend.

Input ``r``: shape ``(..., n, T)`` — ``n`` series (assets) with time on the last
axis, any leading batch axes (e.g. many universes) — or a pandas ``DataFrame``
with time along the index and one column per series (the result is then a
``DataFrame`` labelled by the columns, as pandas' own ``df.corr()``).

NaN policy, as pandas: each pair of series uses the periods where both are valid
(pairwise-complete), and a pair with fewer than ``min_periods`` common periods
gives NaN (so does any ``min_periods`` above the number of periods). A series
without any valid value, or fewer periods than a rolling window, is a ``ValueError``.
A series that is constant over the periods a correlation uses has NaN correlations
(pandas' result), also where floating-point rounding leaves its deviations a tiny
residue instead of exact zeros (:mod:`gpu_trader._internal.correlation_xp`). float32 in
gives float32 out; the arithmetic is float64. Inputs are never modified; read-only
arrays and pandas' copy-on-write columns are accepted. A call whose ``n x n``
matrices (``n x n x T`` for :func:`rolling_corr`) would exceed
:data:`gpu_trader._internal.validation.WORK_MEMORY_LIMIT` is refused before they are allocated.
:func:`rolling_corr` holds its result plus bounded temporaries: the fused pass per pair on the CPU,
tiles of pairs within :data:`gpu_trader._internal.correlation_xp.WORK_BYTES` on the array backends.
Oracles in the tests: ``numpy.cov``/``corrcoef``, pandas ``DataFrame.cov``/``corr``/
``rolling().corr``/``ewm``, scikit-learn's ``LedoitWolf``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._internal.host import host_bool
from ._internal.validation import check_count, check_float, check_work_memory
from ._internal.series_input import SeriesInput
from .profiling import annotate

__all__ = ["cov", "corr", "rolling_corr", "ewma_cov", "ledoit_wolf"]


class _Call(SeriesInput):
    """One call on ``(..., n, T)`` series; results are series-by-series matrices."""

    __slots__ = ()

    # float64 arrays of the matrices' size a kernel holds at its peak (measured with tracemalloc);
    # rolling_corr's peak is the estimators' own count (rolling_corr_bytes: its result plus one tile)
    MATRIX_COPIES = 8

    @staticmethod
    def formulas_of(be: Any) -> Any:
        """The backend's :class:`gpu_trader._internal.correlation_xp.CorrelationEstimators`."""
        return be.ops("correlation").estimators

    def __init__(self, r: Any, backend: Any, what: str, minimum: int = 1, path: bool = False) -> None:
        super().__init__(r, backend, what, minimum, matrix=True)
        n, t = self.x.shape[-2], self.x.shape[-1]
        if path:
            nbytes = float(self.formulas.rolling_corr_bytes(self.x.shape))
        else:
            nbytes = 8.0 * self.MATRIX_COPIES * (self.x.size // (n * t)) * n * n
        check_work_memory(nbytes, lambda: f"{what} of {n} series")

    @property
    def periods(self) -> int:
        return self.x.shape[-1]

    def out(self, res: Any, kind: str = "matrix") -> Any:
        if self.dtype != np.float64:
            res = res.astype(self.dtype)
        return self.rewrap(res, kind) if self.rewrap is not None else res


@annotate
def cov(r: Any, *, min_periods: int = 1, ddof: int = 1, backend: Any = None) -> Any:
    """Sample covariance matrix ``(..., n, n)`` (``ddof=1``: ``numpy.cov``/``DataFrame.cov``).

    A pair needs ``max(min_periods, ddof + 1)`` common valid periods, else NaN.
    """
    min_periods = check_count(min_periods, "min_periods", 1)
    ddof = check_count(ddof, "ddof", 0)
    c = _Call(r, backend, "cov")
    # past the number of periods every value gives all NaN: pass the estimators a small one
    return c.out(c.formulas.cov(c.x, min(min_periods, c.periods + 1), min(ddof, c.periods), c.has_nan))


@annotate
def corr(r: Any, *, min_periods: int = 1, backend: Any = None) -> Any:
    """Pearson correlation matrix ``(..., n, n)``, values clipped to [-1, 1].

    Each pair uses its common valid periods for the means and both standard
    deviations (pandas' ``DataFrame.corr``); needs ``max(min_periods, 2)`` of them.
    A series constant over a pair's common periods (up to rounding) has a NaN
    correlation there, its diagonal entry included.
    """
    min_periods = check_count(min_periods, "min_periods", 1)
    c = _Call(r, backend, "corr")
    return c.out(c.formulas.corr(c.x, min(min_periods, c.periods + 1), c.has_nan))


@annotate
def rolling_corr(r: Any, window: int, *, min_periods: int | None = None, backend: Any = None) -> Any:
    """Correlation of every pair over a trailing window, at every time step, in one pass.

    Returns ``(..., n, n, T)`` (time last): entry ``[i, j, t]`` correlates series ``i``
    and ``j`` over periods ``t - window + 1 .. t``, using the periods where both are
    valid, NaN when fewer than ``min_periods`` (default ``window``, as pandas) — so
    the first ``window - 1`` steps are NaN by default. Equal to pandas'
    ``df.rolling(window, min_periods).corr()``; a DataFrame input returns that layout
    (rows ``(time, column)``). A series constant over a window's common periods (up to
    rounding) has NaN correlations there. Cost O(n^2 T) time and the result's memory plus
    bounded temporaries (see the module docstring): window sums are taken from cumulative
    sums, independent of ``window``.
    """
    window = check_count(window, "window", 2)
    min_periods = window if min_periods is None else check_count(min_periods, "min_periods", 1)
    if min_periods > window:
        raise ValueError(f"min_periods ({min_periods}) must be <= window ({window})")
    c = _Call(r, backend, f"rolling_corr with window={window}", path=True)
    if c.periods < window:
        raise ValueError(f"r has {c.periods} periods, fewer than window={window}")
    return c.out(c.formulas.rolling_corr(c.x, window, min_periods), "matrix_path")


@annotate
def ewma_cov(r: Any, halflife: float, *, backend: Any = None) -> Any:
    """RiskMetrics exponentially weighted covariance ``(..., n, n)`` at the last period.

    Zero-mean (returns are assumed to average zero over the horizon, as in
    RiskMetrics): ``sum_t w_t r_i r_j / sum_t w_t`` with ``w_t = 0.5 ** ((T - 1 - t) / halflife)``
    — the weight halves every ``halflife`` periods back (``halflife`` = ln 2 / -ln(lambda);
    RiskMetrics' daily lambda = 0.94 is ``halflife ~ 11.2``). This is pandas'
    ``(r_i * r_j).ewm(halflife=halflife).mean()`` at the last row; pairwise-complete
    over NaNs.
    """
    h = check_float(halflife, "halflife", positive=True)
    c = _Call(r, backend, "ewma_cov")
    return c.out(c.formulas.ewma_cov(c.x, 0.5 ** (1.0 / h)))


@annotate
def ledoit_wolf(r: Any, *, backend: Any = None) -> tuple[Any, Any]:
    """Ledoit-Wolf shrunk covariance: ``(covariance (..., n, n), shrinkage (...))``.

    ``(1 - s) * S + s * mu * I`` with ``S`` the 1/T-normalized sample covariance,
    ``mu`` its mean eigenvalue and ``s`` the Ledoit-Wolf optimal intensity, exactly
    scikit-learn's ``LedoitWolf().fit(r.T)``. Needs complete data: NaNs raise
    ``ValueError`` (drop or fill them first; shrinkage has no pairwise form).
    """
    c = _Call(r, backend, "ledoit_wolf", 2)
    xp = c.formulas.xp
    # has_nan is also True inside a jax.jit trace, where host_bool gives None: not checkable there
    if c.has_nan and host_bool(xp.isnan(c.x).any()):
        raise ValueError("r must not contain NaN for ledoit_wolf (drop or fill missing periods first)")
    cov_, shrink = c.formulas.ledoit_wolf(c.x)
    if c.dtype != np.float64:
        shrink = shrink.astype(c.dtype)
    return c.out(cov_), (shrink[()] if shrink.ndim == 0 else shrink)
