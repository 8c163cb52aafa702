"""CPU batch accounting for many positions: numba over rows, NumPy BLAS for marks.

``apply_fills(qty, avg, realized, fill_qty, fill_price)``: ``qty``, ``avg``,
``realized`` are ``(R,)`` (one row per position, e.g. portfolio x asset flattened);
``fill_qty``, ``fill_price`` are ``(R, K)``, K fills per row applied in order along the
last axis (a zero quantity is no fill). Accounting runs in float64; returns new
float64 ``(qty, avg, realized)`` arrays; the inputs are not modified. Rows run in
parallel (``prange``) above :data:`SERIAL_MAX_FILLS` fills, on the calling thread below.

``mark_to_market(qty, avg, prices)``: :func:`gpu_trader._internal.position_loops.mark_to_market`
on NumPy.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .._internal import position_loops
from .._internal.jit import njit_cached

__all__ = ["apply_fills", "mark_to_market"]

SERIAL_MAX_FILLS = 50_000

_fill_row = position_loops.jitable()


@njit_cached(parallel=True, nogil=True)
def _rows_parallel(qty, avg, realized, fill_qty, fill_price):
    for r in prange(qty.shape[0]):
        _fill_row(r, qty, avg, realized, fill_qty, fill_price)


@njit_cached(nogil=True)
def _rows_serial(qty, avg, realized, fill_qty, fill_price):
    for r in range(qty.shape[0]):
        _fill_row(r, qty, avg, realized, fill_qty, fill_price)


def apply_fills(qty, avg, realized, fill_qty, fill_price):
    out = [np.array(a, dtype=np.float64, order="C") for a in (qty, avg, realized)]
    fq = np.ascontiguousarray(fill_qty, dtype=np.float64)
    fp = np.ascontiguousarray(fill_price, dtype=np.float64)
    driver = _rows_parallel if fq.size > SERIAL_MAX_FILLS else _rows_serial
    driver(out[0], out[1], out[2], fq, fp)
    return tuple(out)


def mark_to_market(qty, avg, prices):
    return position_loops.mark_to_market(np, qty, avg, prices)
