"""CPU twin of the strategy kernels: :func:`gpu_trader._internal.strategy_loops.backtest_row` mapped
over (parameter set, series) rows with numba (``prange``; serial for tiny batches).

Work items are series-major (item ``j = i * P + p``), so one thread runs every
parameter set of a symbol back to back while its close, returns and indicator rows
are in cache; memory traffic is then mostly the int8 signals written.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .._internal import strategy_loops
from .._internal.jit import njit_cached

# Batches with fewer elements (rows x bars) than this run on the calling thread.
SERIAL_MAX_ELEMENTS = 50_000


@njit_cached(parallel=True, nogil=True)
def _rows_parallel(close, ret, feats, kinds, a_idx, b_idx, ks, cost, sig, pnl):
    P = kinds.shape[0]
    for j in prange(P * close.shape[0]):
        i = j // P
        p = j - i * P
        pnl[p, i] = strategy_loops.backtest_row(kinds[p], close[i], ret[i], feats[a_idx[p], i], feats[b_idx[p], i], ks[p],
                                    cost, sig[p, i])


@njit_cached(nogil=True)
def _rows_serial(close, ret, feats, kinds, a_idx, b_idx, ks, cost, sig, pnl):
    P = kinds.shape[0]
    for j in range(P * close.shape[0]):
        i = j // P
        p = j - i * P
        pnl[p, i] = strategy_loops.backtest_row(kinds[p], close[i], ret[i], feats[a_idx[p], i], feats[b_idx[p], i], ks[p],
                                    cost, sig[p, i])


@njit_cached(nogil=True)
def signals_now(kinds, a_idx, b_idx, ks, close, feats, out):
    """One bar of every rule for every symbol: close (n,), feats (R, n) -> out (P, n) int8."""
    for p in range(kinds.shape[0]):
        for i in range(close.shape[0]):
            out[p, i] = strategy_loops.bar_signal(kinds[p], close[i], feats[a_idx[p], i], feats[b_idx[p], i], ks[p])


def backtest(close, feats, kinds, a_idx, b_idx, ks, cost):
    """Signals and P&L of P rules over n series.

    close: C-contiguous (n, T) float; feats: C-contiguous (R, n, T) float (the rules'
    inputs); kinds, a_idx, b_idx: int64 (P,) (rule code, rows of feats read as ``a``
    and ``b``); ks: float64 (P,); cost: float (fraction per unit of position change).
    Returns ``(signals int8 (P, n, T), pnl float64 (P, n))``.
    """
    n, T = close.shape
    P = kinds.shape[0]
    sig = np.empty((P, n, T), dtype=np.int8)
    pnl = np.empty((P, n), dtype=np.float64)
    run = _rows_serial if P * n * T < SERIAL_MAX_ELEMENTS else _rows_parallel
    run(close, strategy_loops.bar_returns(np, close), feats, kinds, a_idx, b_idx, ks, cost, sig, pnl)
    return sig, pnl
