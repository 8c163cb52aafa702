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
"""
from __future__ import annotations

from numba import float64 as f64
from numba.extending import register_jitable

MOMENTUM = 0
MEAN_REVERSION = 1


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
        pnl += prev * ret[t] - cost * abs(s - prev)
        prev = s
    return pnl


def bar_returns(xp, close):
    """``ret[..., t] = close[..., t] / close[..., t-1] - 1`` in float64, 0 where not finite
    and at t = 0 (the return bar t earns for the position of bar t-1)."""
    c = close.astype(xp.float64, copy=False)
    ret = xp.zeros(c.shape, dtype=xp.float64)
    ret[..., 1:] = c[..., 1:] / c[..., :-1] - 1.0
    ret[~xp.isfinite(ret)] = 0.0
    return ret
