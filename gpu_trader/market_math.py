"""Array math of :mod:`gpu_trader.marketdata`, written once against an array module ``xp``.

Both backends use these functions: the CPU twin with ``xp = numpy``, the GPU
kernels with ``xp = cupy``. Nothing here validates input (the public module does).

* :func:`quote_metrics` -- mid, spread, spread in basis points and a status code
  per quote (elementwise).
* :func:`bars_by_sort` -- tick -> OHLCV bar aggregation by segmented reductions:
  sort the ticks by (bar cell, timestamp, arrival), find the segment of each
  non-empty cell, and reduce each segment (``kernels.marketdata.reduce_segment``,
  compiled for CUDA there and for the CPU in the tests). This is
  the GPU algorithm; the CPU runs a one-pass numba loop instead
  (``cpu_fallback.marketdata``) and the tests check both, and this function on
  NumPy, against pandas.
"""
from __future__ import annotations

# Quote status codes, in order of precedence (the first that applies is reported).
QUOTE_OK = 0
QUOTE_INVALID = 1  # a price is NaN, infinite or <= 0, or a size is NaN, infinite or < 0
QUOTE_CROSSED = 2  # bid > ask (a locked quote, bid == ask, is accepted)
QUOTE_STALE = 3  # now - ts > max_age
QUOTE_REASONS = ("ok", "invalid", "crossed", "stale")


def _positive_finite(xp, x):
    return (x > 0) & (x < xp.inf)


def _nonnegative_finite(xp, x):
    return (x >= 0) & (x < xp.inf)


def quote_metrics(xp, bid, ask, bid_size, ask_size, ts, now, max_age):
    """Elementwise quote processing.

    bid, ask: float arrays of one shape; bid_size, ask_size: arrays of that shape
    or None; ts: int64 array of that shape or None; now, max_age: ints (ns) or None
    (staleness is checked only when all three are given). Returns
    ``(mid, spread, spread_bps, status)``: float64 arrays (NaN where status != 0)
    and an int8 status array (``QUOTE_*`` codes). ``spread_bps = spread / mid * 1e4``.
    """
    bid = bid.astype(xp.float64, copy=False)
    ask = ask.astype(xp.float64, copy=False)
    valid = _positive_finite(xp, bid) & _positive_finite(xp, ask)
    if bid_size is not None:
        valid &= _nonnegative_finite(xp, bid_size)
    if ask_size is not None:
        valid &= _nonnegative_finite(xp, ask_size)
    status = (~valid).astype(xp.int8) * QUOTE_INVALID  # QUOTE_OK where valid
    status[valid & (bid > ask)] = QUOTE_CROSSED
    if ts is not None and now is not None and max_age is not None:
        status[(status == QUOTE_OK) & (now - ts > max_age)] = QUOTE_STALE
    ok = status == QUOTE_OK
    mid = xp.where(ok, (bid + ask) * 0.5, xp.nan)
    spread = xp.where(ok, ask - bid, xp.nan)
    return mid, spread, spread / mid * 1e4, status


def bar_cells(xp, ts, symbol, timeframe, first_bar, n_bars):
    """Flat cell index ``symbol * n_bars + (ts // timeframe - first_bar)`` of every tick (int64)."""
    return symbol.astype(xp.int64) * n_bars + (ts // timeframe - first_bar)


def bars_by_sort(xp, reduce_segments, ts, price, size, symbol, timeframe, first_bar, n_bars, n_symbols):
    """OHLCV bars of ticks by segmented reductions (the GPU algorithm).

    ts: int64 ns (n,), n >= 1; price, size: float64 (n,); symbol: integer ids (n,) in
    ``[0, n_symbols)``; bars are ``[first_bar + k) * timeframe`` for k < n_bars. The
    ticks are sorted by (cell, ts, arrival) with ``xp.lexsort``; each run of one cell is
    a segment, and ``reduce_segments(n_segments, *args)`` applies ``reduce_segment``
    to every segment (a CUDA kernel, one thread per segment, on the GPU; a numba loop in
    the tests). No atomics, so results are deterministic. Returns ``(open, high, low,
    close, volume, vwap, count)``, each ``(n_symbols, n_bars)``: float64 (NaN prices
    where count == 0, NaN VWAP where volume == 0) and int64 counts. Open/close are the
    prices of the tick with the smallest/largest ts of the bar, ties going to the
    earliest/latest in input order.
    """
    n = ts.shape[0]
    n_cells = n_symbols * n_bars
    cell = bar_cells(xp, ts, symbol, timeframe, first_bar, n_bars)
    order = xp.lexsort(xp.stack([xp.arange(n, dtype=xp.int64), ts, cell]))
    cell_sorted = cell[order]
    head = xp.ones(n, dtype=bool)
    head[1:] = cell_sorted[1:] != cell_sorted[:-1]
    starts = xp.flatnonzero(head)
    ends = xp.empty_like(starts)
    ends[:-1] = starts[1:] - 1
    ends[-1] = n - 1
    o, h, lo, c = (xp.full(n_cells, xp.nan, dtype=xp.float64) for _ in range(4))
    v = xp.zeros(n_cells, dtype=xp.float64)
    pv = xp.zeros(n_cells, dtype=xp.float64)
    count = xp.zeros(n_cells, dtype=xp.int64)
    reduce_segments(int(starts.shape[0]), price[order], size[order], starts, ends, cell_sorted[starts],
                    o, h, lo, c, v, pv, count)
    vwap = xp.where(v > 0, pv / xp.where(v > 0, v, 1.0), xp.nan)
    shape = (n_symbols, n_bars)
    return tuple(a.reshape(shape) for a in (o, h, lo, c, v, vwap, count))
