"""GPU market-data kernels: elementwise quote math (CuPy) and bars by segmented reductions.

Same contract as :mod:`gpu_trader.cpu_fallback.marketdata`. The math is
:mod:`gpu_trader._internal.market_xp` with ``xp = cupy``: bars sort the ticks on the device
(``cupy.lexsort``) and reduce each (symbol, bar) segment with one CUDA thread
(:func:`reduce_segment`, a numba ``register_jitable`` body compiled by numba.cuda), so there
are no atomics and the results are deterministic. :func:`aggregate_bars_xp` runs
the same launcher on NumPy arrays in numba's CUDA simulator (the tests do).
"""
from __future__ import annotations

import functools

from numba import cuda
from numba.extending import register_jitable

from .._internal import market_xp
from .._internal.jit import cuda_jit_cached
from .launch import CudaExecutor

THREADS_PER_BLOCK = 128


@register_jitable
def reduce_segment(j, price, size, starts, ends, cells, o, h, lo, c, v, pv, count):
    """Bar of segment j of the sorted ticks: ``price``/``size`` sorted by (cell, ts, arrival),
    segment j is ``[starts[j], ends[j]]`` and belongs to cell ``cells[j]``; writes that cell's
    open, high, low, close, volume, sum(price * size) and count (sums in time order). A slot
    past the last segment (``starts[j] == len(price)``) writes nothing."""
    first = starts[j]
    if first >= price.shape[0]:
        return
    last = ends[j]
    k = cells[j]
    high = price[first]
    low = high
    vol = 0.0
    pvs = 0.0
    for i in range(first, last + 1):
        p = price[i]
        q = size[i]
        if p > high:
            high = p
        if p < low:
            low = p
        vol += q
        pvs += p * q
    o[k] = price[first]
    h[k] = high
    lo[k] = low
    c[k] = price[last]
    v[k] = vol
    pv[k] = pvs
    count[k] = last - first + 1


@functools.lru_cache(maxsize=None)
def _segments_kernel():
    @cuda_jit_cached()
    def segments(nthreads, price, size, starts, ends, cells, o, h, lo, c, v, pv, count):
        j = cuda.grid(1)
        if j < nthreads:
            reduce_segment(j, price, size, starts, ends, cells, o, h, lo, c, v, pv, count)

    return segments


def quote_metrics(bid, ask, bid_size, ask_size, ts, now, max_age):
    """See :func:`gpu_trader._internal.market_xp.quote_metrics` (``xp = cupy``)."""
    import cupy

    return market_xp.quote_metrics(cupy, bid, ask, bid_size, ask_size, ts, now, max_age)


def aggregate_bars_xp(ts, price, size, symbol, timeframe, first_bar, n_bars, n_symbols, *, xp, exe=None):
    """:func:`aggregate_bars` on arrays of module ``xp`` (``cupy``, or ``numpy`` in the simulator);
    ``exe`` launches the kernel (default a :class:`CudaExecutor`; the tests pass a
    ``PtxExecutor`` to compile it for sm_90 without a GPU)."""
    exe = exe or CudaExecutor(xp, THREADS_PER_BLOCK)

    def reduce_segments(n_slots, *args):
        exe.launch(_segments_kernel(), n_slots, args)

    return market_xp.bars_by_sort(xp, reduce_segments, ts, price, size, symbol, timeframe, first_bar, n_bars, n_symbols)


def aggregate_bars(ts, price, size, symbol, timeframe, first_bar, n_bars, n_symbols):
    """See :func:`gpu_trader._internal.market_xp.bars_by_sort`."""
    import cupy

    return aggregate_bars_xp(ts, price, size, symbol, timeframe, first_bar, n_bars, n_symbols, xp=cupy)
