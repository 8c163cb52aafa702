"""CPU twin of the market-data kernels: NumPy quote math and a one-pass numba bar loop.

Same contract as :mod:`gpu_trader.kernels.marketdata` (see
:mod:`gpu_trader._internal.market_xp` for the shared math and the shapes).
"""
from __future__ import annotations

import numpy as np

from .._internal import market_xp
from .._internal.jit import njit_cached


def quote_metrics(bid, ask, bid_size, ask_size, ts, now, max_age):
    """See :func:`gpu_trader._internal.market_xp.quote_metrics` (``xp = numpy``). Invalid quotes (NaN,
    inf prices) make NaN intermediates that are masked out: NumPy's warning is silenced."""
    with np.errstate(invalid="ignore"):
        return market_xp.quote_metrics(np, bid, ask, bid_size, ask_size, ts, now, max_age)


@njit_cached(nogil=True)
def _bars_loop(ts, price, size, symbol, timeframe, first_bar, n_bars, o, h, lo, c, v, pv, count):
    """One pass over the ticks in input order; each tick updates its (symbol, bar) cell.

    Open/close track the smallest/largest timestamp seen in the cell (ties: the
    earliest/latest tick in input order), so the ticks need not be sorted. Consecutive
    ticks of one cell (the usual case: time-sorted ticks of one symbol) accumulate in
    registers and are folded into the cell once per run (iteration ``n`` only flushes
    the last run), and the integer division runs only when a symbol's tick leaves the
    bar of its previous tick.
    """
    first_ts = np.empty(o.shape[0], dtype=np.int64)
    last_ts = np.empty(o.shape[0], dtype=np.int64)
    n_symbols = o.shape[0] // n_bars
    lo_ns = np.ones(n_symbols, dtype=np.int64)  # per symbol: [lo, hi) of its previous tick's bar
    hi_ns = np.zeros(n_symbols, dtype=np.int64)
    cell = np.zeros(n_symbols, dtype=np.int64)
    n = ts.shape[0]
    run = -1
    ro = rh = rl = rc = rv = rpv = p = q = 0.0
    rn = rt0 = rt1 = t = 0
    for i in range(n + 1):
        k = -2
        if i < n:
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
            if k == run:
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
                continue
        if run >= 0:  # fold the finished run into its cell
            if count[run] == 0:
                o[run] = ro
                h[run] = rh
                lo[run] = rl
                c[run] = rc
                first_ts[run] = rt0
                last_ts[run] = rt1
            else:
                h[run] = max(h[run], rh)
                lo[run] = min(lo[run], rl)
                if rt0 < first_ts[run]:
                    o[run] = ro
                    first_ts[run] = rt0
                if rt1 >= last_ts[run]:
                    c[run] = rc
                    last_ts[run] = rt1
            v[run] += rv
            pv[run] += rpv
            count[run] += rn
        run = k
        ro = rh = rl = rc = p
        rv = q
        rpv = p * q
        rn = 1
        rt0 = rt1 = t


def _frozen(a, dtype):
    """``a`` as a C-contiguous, read-only array of ``dtype`` (a view when it already is one):
    the loop then compiles once, whatever mix of writable, read-only (pandas copy-on-write
    columns) or strided inputs it gets, and can never write into them."""
    view = np.ascontiguousarray(a, dtype=dtype).view()
    view.flags.writeable = False
    return view


def aggregate_bars(ts, price, size, symbol, timeframe, first_bar, n_bars, n_symbols):
    """See :func:`gpu_trader._internal.market_xp.bars_by_sort` (same arguments less the scatters, same
    results); inputs may be read-only or strided (see :func:`_frozen`)."""
    ts, symbol = _frozen(ts, np.int64), _frozen(symbol, np.int64)
    price, size = _frozen(price, np.float64), _frozen(size, np.float64)
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
