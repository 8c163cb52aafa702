"""CPU twin of the market-data kernels: NumPy quote math and a one-pass numba bar loop.

Same contract as :mod:`gpu_trader.kernels.marketdata` (see
:mod:`gpu_trader.market_math` for the shared math and the shapes).
"""
from __future__ import annotations

import numpy as np
from numba.extending import register_jitable

from .. import market_math as mm
from ..jit import njit_cached


def quote_metrics(bid, ask, bid_size, ask_size, ts, now, max_age):
    """See :func:`gpu_trader.market_math.quote_metrics` (``xp = numpy``)."""
    return mm.quote_metrics(np, bid, ask, bid_size, ask_size, ts, now, max_age)


@register_jitable
def _merge(k, ro, rh, rl, rc, rv, rpv, rn, rt0, rt1, o, h, lo, c, v, pv, count, first_ts, last_ts):
    """Fold a run of ticks of one cell (open ro at ts rt0, close rc at ts rt1, ...) into cell k."""
    if count[k] == 0:
        o[k], h[k], lo[k], c[k] = ro, rh, rl, rc
        first_ts[k], last_ts[k] = rt0, rt1
    else:
        if rh > h[k]:
            h[k] = rh
        if rl < lo[k]:
            lo[k] = rl
        if rt0 < first_ts[k]:
            o[k] = ro
            first_ts[k] = rt0
        if rt1 >= last_ts[k]:
            c[k] = rc
            last_ts[k] = rt1
    v[k] += rv
    pv[k] += rpv
    count[k] += rn


@njit_cached(nogil=True)
def _bars_loop(ts, price, size, symbol, timeframe, first_bar, n_bars, o, h, lo, c, v, pv, count):
    """One pass over the ticks in input order; each tick updates its (symbol, bar) cell.

    Open/close track the smallest/largest timestamp seen in the cell (ties: the
    earliest/latest tick in input order), so the ticks need not be sorted. Consecutive
    ticks of one cell (the usual case: time-sorted ticks of one symbol) accumulate in
    registers and are folded into the cell once per run, and the integer division
    runs only when a symbol's tick leaves the bar of its previous tick.
    """
    first_ts = np.empty(o.shape[0], dtype=np.int64)
    last_ts = np.empty(o.shape[0], dtype=np.int64)
    n_symbols = o.shape[0] // n_bars
    lo_ns = np.ones(n_symbols, dtype=np.int64)  # per symbol: [lo, hi) of its previous tick's bar
    hi_ns = np.zeros(n_symbols, dtype=np.int64)
    cell = np.zeros(n_symbols, dtype=np.int64)
    run = -1
    ro = rh = rl = rc = rv = rpv = 0.0
    rn = rt0 = rt1 = 0
    for i in range(ts.shape[0]):
        t = ts[i]
        s = symbol[i]
        if lo_ns[s] <= t < hi_ns[s]:
            k = cell[s]
        else:
            b = t // timeframe
            lo_ns[s] = b * timeframe
            hi_ns[s] = lo_ns[s] + timeframe
            k = s * n_bars + (b - first_bar)
            cell[s] = k
        p = price[i]
        q = size[i]
        if k != run:
            if run >= 0:
                _merge(run, ro, rh, rl, rc, rv, rpv, rn, rt0, rt1, o, h, lo, c, v, pv, count, first_ts, last_ts)
            run = k
            ro = rh = rl = rc = p
            rv = q
            rpv = p * q
            rn = 1
            rt0 = rt1 = t
            continue
        rh = max(rh, p)
        rl = min(rl, p)
        if t < rt0:
            ro = p
            rt0 = t
        if t >= rt1:
            rc = p
            rt1 = t
        rv += q
        rpv += p * q
        rn += 1
    if run >= 0:
        _merge(run, ro, rh, rl, rc, rv, rpv, rn, rt0, rt1, o, h, lo, c, v, pv, count, first_ts, last_ts)


def aggregate_bars(ts, price, size, symbol, timeframe, first_bar, n_bars, n_symbols):
    """See :func:`gpu_trader.market_math.bars_by_sort` (same arguments less the scatters, same
    results); ``symbol`` is int64 here."""
    n_cells = n_symbols * n_bars
    o, h, lo, c = (np.full(n_cells, np.nan) for _ in range(4))
    v = np.zeros(n_cells)
    pv = np.zeros(n_cells)
    count = np.zeros(n_cells, dtype=np.int64)
    _bars_loop(ts, price, size, symbol, timeframe, first_bar, n_bars, o, h, lo, c, v, pv, count)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = np.where(v > 0, pv / v, np.nan)
    shape = (n_symbols, n_bars)
    return tuple(a.reshape(shape) for a in (o, h, lo, c, v, vwap, count))
