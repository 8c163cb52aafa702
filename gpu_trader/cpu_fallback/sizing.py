"""CPU ops of the ``sizing`` area: the array module for sizing and exposure, stop recurrences in numba.

The sizing and exposure math is :mod:`gpu_trader._internal.sizing_xp` run on :data:`xp`
(NumPy); the trailing stop and the rolling extremes run the row bodies of
:mod:`gpu_trader._internal.stop_loops`, compiled by ``numba.njit`` and mapped over rows
with ``prange`` (on the calling thread below :data:`SERIAL_MAX_BARS` bars).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .._internal import stop_loops
from .._internal.jit import njit_cached
from . import output_pool

__all__ = ["xp", "trailing_stop", "rolling_extreme"]

xp = np
SERIAL_MAX_BARS = 50_000

_trailing_row, _extreme_row = stop_loops.jitable()


@njit_cached(parallel=True, nogil=True)
def _trailing_parallel(price, atr, start, fraction, multiple, short, use_atr, out):
    for r in prange(price.shape[0]):
        _trailing_row(r, price, atr, start, fraction, multiple, short, use_atr, out)


@njit_cached(nogil=True)
def _trailing_serial(price, atr, start, fraction, multiple, short, use_atr, out):
    for r in range(price.shape[0]):
        _trailing_row(r, price, atr, start, fraction, multiple, short, use_atr, out)


@njit_cached(parallel=True, nogil=True)
def _extreme_parallel(x, window, lowest, out):
    for r in prange(x.shape[0]):
        _extreme_row(r, x, window, lowest, out)


@njit_cached(nogil=True)
def _extreme_serial(x, window, lowest, out):
    for r in range(x.shape[0]):
        _extreme_row(r, x, window, lowest, out)


def trailing_stop(price, atr, start, fraction, multiple, short):
    out = output_pool.empty(price.shape, np.float64)
    use_atr = atr is not None
    driver = _trailing_parallel if price.size > SERIAL_MAX_BARS else _trailing_serial
    driver(price, atr if use_atr else price, start, fraction, multiple, int(short), int(use_atr), out)
    return out


def rolling_extreme(x, window, lowest):
    out = output_pool.empty(x.shape, np.float64)
    driver = _extreme_parallel if x.size > SERIAL_MAX_BARS else _extreme_serial
    driver(x, window, int(lowest), out)
    return out

