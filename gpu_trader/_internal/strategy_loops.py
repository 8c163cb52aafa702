"""Per-bar signal rule and per-series backtest loop, written once for every backend.

Plain Python decorated with numba's ``register_jitable``: compiled by ``numba.njit``
for the CPU (``cpu_fallback.strategies``, parallel over (parameter set, series)
rows), by ``numba.cuda.jit`` for the GPU (``kernels.strategies``, one thread per
row) and run as Python by numba's CUDA simulator in the tests.

Rules (``kind``), on float64 values of one bar; a NaN anywhere gives 0 (flat):

* ``MOMENTUM``: ``a`` fast EMA, ``b`` slow EMA: +1 when a > b, -1 when a < b, else 0.
* ``MEAN_REVERSION``: ``a`` SMA, ``b`` population standard deviation over the same
  window, ``k`` the band width in deviations: +1 when close < a - k*b, -1 when
  close > a + k*b, else 0 (stateless: flat again once back inside the bands).

P&L convention of :func:`backtest_row` (per unit notional, simple returns, summed,
no compounding): the signal ``s[t]`` is computed on the close of bar t and held
over bar t -> t+1, so bar t+1 earns ``s[t] * (close[t+1] / close[t] - 1)``; every
change of position costs ``cost * |s[t] - s[t-1]|`` (``s[-1] = 0``: entering from
flat costs, a position still open at the end is not closed). A bar return that is
not finite (a NaN close) earns 0.

:func:`sweep_row` runs the same rule and P&L without storing the signals and returns
the series' summary statistics instead (definitions in its docstring).
"""
from __future__ import annotations

import math

from numba import float64 as f64
from numba.extending import register_jitable

from .risk_xp import rounding_residue

MOMENTUM = 0
MEAN_REVERSION = 1
N_STATS = 5
"""Statistics :func:`sweep_row` returns, in this order: ``PNL, SHARPE, MAX_DRAWDOWN, TURNOVER, HIT_RATE``."""
PNL, SHARPE, MAX_DRAWDOWN, TURNOVER, HIT_RATE = range(N_STATS)

ONE_PASS_CANCELLATION = 100.0
"""Largest ``sum(x^2) / sum((x - mean)^2)`` for which :func:`sweep_row` takes the variance from its
running sums (losing at most two digits); beyond it, a second pass over the series."""

_is_rounding_residue = register_jitable(rounding_residue)


@register_jitable
def bar_signal(kind, close, a, b, k):
    """The position (+1 long, -1 short, 0 flat) of one bar; see the module docstring."""
    if kind == MOMENTUM:
        if a > b:
            return 1
        if a < b:
            return -1
        return 0
    if close < a - k * b:
        return 1
    if close > a + k * b:
        return -1
    return 0


@register_jitable
def backtest_row(kind, close, ret, a, b, k, cost, sig):
    """Signals of one series into ``sig`` (int8 view, length T) and its total P&L.

    close, a, b: 1-D views of length T (any float dtype, read as float64); ret: the
    series' bar returns from :func:`bar_returns` (float64, length T); k, cost: floats
    (cost as a fraction of notional per unit of position change).
    """
    prev = 0
    pnl = 0.0
    for t in range(close.shape[0]):
        s = bar_signal(kind, f64(close[t]), f64(a[t]), f64(b[t]), k)
        sig[t] = s
        pnl += bar_pnl(prev, s, ret[t], cost)
        prev = s
    return pnl


@register_jitable
def bar_pnl(prev, s, ret, cost):
    """P&L of one bar: the position ``prev`` held into it earns the bar return ``ret``, and
    moving to the bar's signal ``s`` costs ``cost`` per unit of position change."""
    return prev * ret - cost * abs(s - prev)


@register_jitable
def sweep_row(kind, close, ret, a, b, k, cost, sharpe_scale):
    """:func:`backtest_row`'s P&L and the summary statistics of one series, signals not stored.

    Arguments as :func:`backtest_row` (no ``sig``); ``sharpe_scale`` multiplies the per-bar
    Sharpe ratio (``sqrt(periods_per_year)``). With ``x[t]`` the P&L of bar ``t``
    (:func:`bar_pnl`, ``t = 0 .. T-1``; ``x[0]`` is the cost of the first position) it returns,
    in the order of :data:`N_STATS`:

    * ``pnl = sum(x)``, bit for bit :func:`backtest_row`'s;
    * ``sharpe = mean(x) / std(x, ddof=1) * sharpe_scale`` over all ``T`` bars (flat bars earn
      0 and count). The squared deviations come from the running sums ``sum(x)``, ``sum(x^2)``
      when the sum of squares is at most :data:`ONE_PASS_CANCELLATION` times their result (a
      relative error of order ``ONE_PASS_CANCELLATION * T * eps``), else from a second pass that
      re-derives ``x`` (a mean large against the spread, a constant ``x``). NaN when ``T < 2``; a ``std``
      that is only the rounding residue of a constant ``x``
      (:func:`gpu_trader._internal.risk_xp.rounding_residue`) is 0, giving ``+inf``/``-inf`` by
      the sign of the mean, NaN when the mean is 0 too (a series never in the market, no cost);
    * ``max_drawdown``: the largest fall of the cumulative P&L ``E[t] = x[0] + .. + x[t]`` from
      its running maximum, the start (``E = 0``) counting as a peak: ``max(peak - E[t]) >= 0``,
      in P&L units (simple returns summed: not a fraction of compounded wealth), 0 for ``T = 0``;
    * ``turnover = sum(|s[t] - s[t-1]|)`` with ``s[-1] = 0``: units of position traded per unit
      notional (the P&L paid ``cost * turnover``);
    * ``hit_rate``: among the bars ``t`` held in a position (``s[t-1] != 0``), the fraction whose
      gross return ``s[t-1] * ret[t]`` is > 0 (a bar with no finite return counts as a miss);
      NaN when the series is never in the market.
    """
    T = close.shape[0]
    prev = 0
    pnl = 0.0
    peak = 0.0
    drawdown = 0.0
    turnover = 0
    held = 0
    hits = 0
    squares = 0.0
    for t in range(T):  # branch-free updates (selects): the conditions flip at random
        s = bar_signal(kind, f64(close[t]), f64(a[t]), f64(b[t]), k)
        r = ret[t]
        x = bar_pnl(prev, s, r, cost)
        pnl += x
        squares += x * x
        peak = pnl if pnl > peak else peak  # (not max(): numba.cuda fails to type it in a jitable)
        fall = peak - pnl
        drawdown = fall if fall > drawdown else drawdown
        turnover += abs(s - prev)
        held += prev != 0
        hits += prev * r > 0.0
        prev = s
    sharpe = math.nan
    if T >= 2:
        mean = pnl / T
        m2 = squares - pnl * mean
        if m2 * ONE_PASS_CANCELLATION < squares:
            prev = 0
            m2 = 0.0
            for t in range(T):
                s = bar_signal(kind, f64(close[t]), f64(a[t]), f64(b[t]), k)
                d = bar_pnl(prev, s, ret[t], cost) - mean
                m2 += d * d
                prev = s
        std = math.sqrt(m2 / (T - 1))
        if not _is_rounding_residue(std, mean, T):
            sharpe = mean / std * sharpe_scale
        elif mean > 0.0:
            sharpe = math.inf
        elif mean < 0.0:
            sharpe = -math.inf
    hit_rate = hits / held if held > 0 else math.nan
    return pnl, sharpe, drawdown, f64(turnover), hit_rate


@register_jitable
def store_stats(out, p, i, row):
    """Write the statistics ``row`` of :func:`sweep_row` into ``out[:, p, i]`` (``out`` ``(N_STATS, P, n)``)."""
    out[PNL, p, i] = row[PNL]
    out[SHARPE, p, i] = row[SHARPE]
    out[MAX_DRAWDOWN, p, i] = row[MAX_DRAWDOWN]
    out[TURNOVER, p, i] = row[TURNOVER]
    out[HIT_RATE, p, i] = row[HIT_RATE]


def bar_returns(xp, close):
    """``ret[..., t] = close[..., t] / close[..., t-1] - 1`` in float64, 0 where not finite
    and at t = 0 (the return bar t earns for the position of bar t-1)."""
    c = close.astype(xp.float64, copy=False)
    ret = xp.zeros(c.shape, dtype=xp.float64)
    ret[..., 1:] = c[..., 1:] / c[..., :-1] - 1.0
    ret[~xp.isfinite(ret)] = 0.0
    return ret
