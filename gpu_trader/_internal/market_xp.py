"""Array math of :mod:`gpu_trader.marketdata`, written once against an array module ``xp``.

Both backends use these functions: the CPU twin with ``xp = numpy``, the GPU
kernels with ``xp = cupy``. Nothing here validates input (the public module does).

* :func:`midpoint` -- ``(a + b) / 2`` without overflow (scalars or arrays).
* :func:`quote_metrics` -- mid, spread, spread in basis points and a status code
  per quote (elementwise).
* :func:`bars_by_sort` -- tick -> OHLCV bar aggregation by segmented reductions:
  sort the ticks by (bar cell, timestamp, arrival), find the segment of each
  non-empty cell, and reduce each segment (``kernels.marketdata.reduce_segment``,
  compiled for CUDA there and for the CPU in the tests). This is
  the GPU algorithm; the CPU runs a one-pass numba loop instead
  (``cpu_fallback.marketdata``) and the tests check both, and this function on
  NumPy, against pandas.
* :func:`tick_ranges` / :func:`tick_ranges_host` -- every range the checks and the bar grid of
  :func:`gpu_trader.marketdata.aggregate_bars` need, as one device vector read in one transfer.
* :func:`bar_workspace_bytes` -- the memory bound of a bar aggregation (both algorithms),
  which :func:`gpu_trader.marketdata.aggregate_bars` checks before allocating.
* :func:`scaled_vwap` -- VWAP of the rare bars whose ``sum(price * size)`` or volume
  overflows float64 (host NumPy; the public module applies it to both backends' results).
"""
from __future__ import annotations

import numpy as np

# Quote status codes, in order of precedence (the first that applies is reported).
QUOTE_OK = 0
QUOTE_INVALID = 1  # a price is NaN, infinite or <= 0, or a size is NaN, infinite or < 0
QUOTE_CROSSED = 2  # bid > ask (a locked quote, bid == ask, is accepted)
QUOTE_STALE = 3  # now - ts > max_age
QUOTE_REASONS = ("ok", "invalid", "crossed", "stale")

# Peak bytes of one bar aggregation, upper bounds over both algorithms: per (symbol, bar)
# cell the 7 outputs plus the work arrays (open/close timestamps on the CPU, sum(price *
# size) and the VWAP temporaries); per tick the converted input columns plus, on the GPU,
# the sort keys, the permutation, the segment bounds and the gathered price/size; and a
# fixed allowance for array headers and small Python objects.
BAR_BYTES_PER_CELL = 96
BAR_BYTES_PER_TICK = 128
BAR_BYTES_FIXED = 1 << 16


def midpoint(a, b):
    """``(a + b) / 2`` as ``a + (b - a) / 2``: no overflow for finite ``a, b > 0`` (``a + b``
    overflows when both are near the float64 maximum). Where ``b`` is within a factor
    of 2 of ``a`` (any sane quote) ``b - a`` is exact, so the result is the correctly
    rounded midpoint, bit-equal to ``(a + b) * 0.5`` where that does not overflow.
    Python floats or arrays (any array module), elementwise.
    """
    return a + (b - a) * 0.5


def bar_workspace_bytes(n_ticks: int, n_symbols: int, n_bars: int) -> int:
    """Upper bound of the bytes :func:`bars_by_sort` or the CPU loop allocate for ``n_ticks``
    ticks on an ``n_symbols x n_bars`` grid (outputs, work arrays and the bar start times);
    exact Python integers, so any size can be checked before anything is allocated."""
    return n_symbols * n_bars * BAR_BYTES_PER_CELL + n_ticks * BAR_BYTES_PER_TICK + n_bars * 8 + BAR_BYTES_FIXED


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
    and an int8 status array (``QUOTE_*`` codes). ``mid`` is :func:`midpoint` (finite for
    every valid quote), ``spread_bps = spread / mid * 1e4``.
    """
    bid = bid.astype(xp.float64, copy=False)
    ask = ask.astype(xp.float64, copy=False)
    valid = _positive_finite(xp, bid) & _positive_finite(xp, ask)
    if bid_size is not None:
        valid &= _nonnegative_finite(xp, bid_size)
    if ask_size is not None:
        valid &= _nonnegative_finite(xp, ask_size)
    status = xp.where(valid, QUOTE_OK, QUOTE_INVALID).astype(xp.int8)  # an array, also for 0-d quotes
    status[valid & (bid > ask)] = QUOTE_CROSSED
    if ts is not None and now is not None and max_age is not None:
        status[(status == QUOTE_OK) & (now - ts > max_age)] = QUOTE_STALE
    ok = status == QUOTE_OK
    mid = xp.where(ok, midpoint(bid, ask), xp.nan)
    spread = xp.where(ok, ask - bid, xp.nan)
    return mid, spread, xp.where(ok, spread / mid * 1e4, xp.nan), status


def bar_cells(xp, ts, symbol, timeframe, first_bar, n_bars):
    """Flat cell index ``symbol * n_bars + (ts // timeframe - first_bar)`` of every tick (int64)."""
    return symbol.astype(xp.int64) * n_bars + (ts // timeframe - first_bar)


def tick_ranges(xp, ts, price, size, symbol):
    """The ranges :func:`gpu_trader.marketdata.aggregate_bars` checks, as one int64 vector ``(8,)`` on
    the device, so the host reads them in one transfer (not one per ``min``/``max``): the bits of
    ``ts.min(), ts.max(), symbol.min(), symbol.max()`` (``0, 0`` for ``symbol=None``) as int64
    (unsigned values keep their bits) and of ``price.min(), price.max(), size.min(), size.max()``
    as float64 (NaN if any is NaN). ``n >= 1`` ticks; decode with :func:`tick_ranges_host`."""
    zero = xp.zeros((), dtype=xp.int64)
    ints = [ts.min(), ts.max()] + ([zero, zero] if symbol is None else [symbol.min(), symbol.max()])
    floats = xp.stack([price.min(), price.max(), size.min(), size.max()]).astype(xp.float64)
    return xp.concatenate([xp.stack([xp.asarray(v).astype(xp.int64) for v in ints]), floats.view(xp.int64)])


def tick_ranges_host(ranges: np.ndarray, ts_dtype, symbol) -> tuple:
    """Decode :func:`tick_ranges` read on the host: ``(ts_lo, ts_hi, id_lo, id_hi)`` as Python ints
    (unsigned inputs read as unsigned) and ``(price_lo, price_hi, size_lo, size_hi)`` as floats."""
    ranges = np.asarray(ranges, dtype=np.int64)
    t = ranges[:2].view(np.uint64) if np.dtype(ts_dtype).kind == "u" else ranges[:2]
    ids = ranges[2:4].view(np.uint64) if symbol is not None and symbol.dtype.kind == "u" else ranges[2:4]
    return (*(int(v) for v in t), *(int(v) for v in ids), *(float(v) for v in ranges[4:].view(np.float64)))


def bars_by_sort(xp, reduce_segments, ts, price, size, symbol, timeframe, first_bar, n_bars, n_symbols):
    """OHLCV bars of ticks by segmented reductions (the GPU algorithm).

    ts: int64 ns (n,), n >= 1; price, size: float64 (n,); symbol: integer ids (n,) in
    ``[0, n_symbols)``; bars are ``[first_bar + k) * timeframe`` for k < n_bars. The
    ticks are sorted by (cell, ts, arrival) with ``xp.lexsort``; each run of one cell is
    a segment, and ``reduce_segments(n, *args)`` applies ``reduce_segment`` to slots
    ``0 .. n - 1``, the segments first and then empty slots (``starts[j] == n``) that do
    nothing (a CUDA kernel, one thread per slot, on the GPU; a numba loop in the tests): the
    number of segments is never read on the host. No atomics, so results are deterministic. Returns ``(open, high, low,
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
    head = xp.ones(n, dtype=bool)                  # first tick of its cell
    head[1:] = cell_sorted[1:] != cell_sorted[:-1]
    last = xp.ones(n, dtype=bool)                  # last tick of its cell
    last[:-1] = head[1:]
    # segment bounds by scatter, not xp.flatnonzero (whose result size costs a device -> host
    # read on the GPU): segment k = [starts[k], ends[k]]; past the last segment starts[k] = n
    seg = xp.cumsum(head, dtype=xp.int64) - 1
    tick = xp.arange(n, dtype=xp.int64)
    starts = xp.full(n + 1, n, dtype=xp.int64)
    starts[xp.where(head, seg, n)] = tick          # slot n takes the other ticks and is dropped
    ends = xp.full(n + 1, n, dtype=xp.int64)
    ends[xp.where(last, seg, n)] = tick
    starts, ends = starts[:n], ends[:n]
    o, h, lo, c = (xp.full(n_cells, xp.nan, dtype=xp.float64) for _ in range(4))
    v = xp.zeros(n_cells, dtype=xp.float64)
    pv = xp.zeros(n_cells, dtype=xp.float64)
    count = xp.zeros(n_cells, dtype=xp.int64)
    reduce_segments(n, price[order], size[order], starts, ends, cell_sorted[xp.minimum(starts, n - 1)],
                    o, h, lo, c, v, pv, count)
    vwap = xp.where(v > 0, pv / xp.where(v > 0, v, 1.0), xp.nan)
    shape = (n_symbols, n_bars)
    return tuple(a.reshape(shape) for a in (o, h, lo, c, v, vwap, count))


# Below this a ``price * size`` product (or a bar's ``sum(price * size)``) may have lost
# bits to underflow (float64's smallest normal times 2**53): such bars take the scaled or
# exact VWAP path.
PRECISE_PV = 2.0 ** -969


def scaled_vwap(cell, price, size, cells):
    """VWAP of the bars ``cells`` computed in scaled form (host NumPy, float64).

    For the rare bars whose ``sum(price * size)`` or ``sum(size)`` overflows float64 (or
    whose ``price * size`` does), or whose ``sum(price * size)`` falls below
    :data:`PRECISE_PV` (underflowed products lost their bits), although the VWAP, a
    weighted mean of the prices, lies between their lowest and highest price. cell: int64
    (n,) flat cell of every tick (:func:`bar_cells`); price, size: float64 (n,); cells:
    int64 (k,) the cells to compute, ascending, each with a positive volume.
    Each product is split into mantissa and exponent (``price * size = m * 2**e``, ``m`` in
    ``[1/4, 1)``) and scaled by the cell's largest product exponent ``E``, each size likewise
    by the cell's largest size exponent ``F``: ``vwap = 2**(E - F) * sum(m * 2**(e - E)) /
    sum(mq * 2**(eq - F))``. Every scaled term is at most 1, so neither sum overflows, and the
    terms that underflow are below ``2**-1074`` of the cell's largest one, so they do not
    change the sums: relative error a few ulps per tick, whatever the magnitudes (weightless
    ticks are left out). Returns float64 (k,).
    """
    pick = np.isin(cell, cells) & (size > 0)  # weightless ticks carry no weight
    group = np.searchsorted(cells, cell[pick])  # position of each picked tick's cell in ``cells``
    mp, ep = np.frexp(price[pick])
    mq, eq = np.frexp(size[pick])
    k = cells.shape[0]
    e = ep + eq
    top_e, top_q = np.full(k, np.iinfo(np.int64).min), np.full(k, np.iinfo(np.int64).min)
    np.maximum.at(top_e, group, e)
    np.maximum.at(top_q, group, eq)
    pv = np.bincount(group, weights=np.ldexp(mp * mq, e - top_e[group]), minlength=k)
    volume = np.bincount(group, weights=np.ldexp(mq, eq - top_q[group]), minlength=k)
    return np.ldexp(pv / volume, top_e - top_q)
