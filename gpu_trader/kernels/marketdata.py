"""GPU market-data kernels (CuPy): elementwise quote math and bars by segmented reductions.

Same contract as :mod:`gpu_trader.cpu_fallback.marketdata`; the math is
:mod:`gpu_trader.market_math` with ``xp = cupy`` and CuPy's atomic scatter
reductions (``cupyx.scatter_add/max/min``) for the per-bar sums and extremes.
"""
from __future__ import annotations

import cupy
import cupyx

from .. import market_math as mm


def quote_metrics(bid, ask, bid_size, ask_size, ts, now, max_age):
    """See :func:`gpu_trader.market_math.quote_metrics` (``xp = cupy``)."""
    return mm.quote_metrics(cupy, bid, ask, bid_size, ask_size, ts, now, max_age)


def aggregate_bars(ts, price, size, symbol, timeframe, first_bar, n_bars, n_symbols):
    """See :func:`gpu_trader.market_math.bars_by_sort`."""
    return mm.bars_by_sort(cupy, cupyx.scatter_add, cupyx.scatter_max, cupyx.scatter_min,
                           ts, price, size, symbol, timeframe, first_bar, n_bars, n_symbols)
