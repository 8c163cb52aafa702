"""CPU twin of the strategy kernels: the row bodies of :mod:`gpu_trader._internal.strategy_loops`
(:func:`~gpu_trader._internal.strategy_loops.backtest_row`,
:func:`~gpu_trader._internal.strategy_loops.sweep_row`) mapped over (parameter set, series)
rows with numba (``prange``; serial for tiny batches).

Work items are series-major (item ``j = i * P + p``), so one thread runs every
parameter set of a symbol back to back while its close, returns and indicator rows
are in cache; memory traffic is then mostly the int8 signals written (none in a sweep).
"""
from __future__ import annotations

import numpy as np
from numba import prange
from numba.extending import register_jitable

from .._internal import strategy_loops
from .._internal.jit import njit_cached
from . import output_pool

# Batches with fewer elements (rows x bars) than this run on the calling thread.
SERIAL_MAX_ELEMENTS = 50_000
SWEEP_FEATURE_COPIES = 1  # the sweep reads the features in place


@register_jitable
def _backtest_item(j, close, ret, feats, kinds, a_idx, b_idx, ks, cost, sig, pnl):
    P = kinds.shape[0]
    i = j // P
    p = j - i * P
    pnl[p, i] = strategy_loops.backtest_row(kinds[p], close[i], ret[i], feats[a_idx[p], i], feats[b_idx[p], i], ks[p],
                                            cost, sig[p, i])


@njit_cached(parallel=True, nogil=True)
def _backtest_parallel(close, ret, feats, kinds, a_idx, b_idx, ks, cost, sig, pnl):
    for j in prange(kinds.shape[0] * close.shape[0]):
        _backtest_item(j, close, ret, feats, kinds, a_idx, b_idx, ks, cost, sig, pnl)


@njit_cached(nogil=True)
def _backtest_serial(close, ret, feats, kinds, a_idx, b_idx, ks, cost, sig, pnl):
    for j in range(kinds.shape[0] * close.shape[0]):
        _backtest_item(j, close, ret, feats, kinds, a_idx, b_idx, ks, cost, sig, pnl)


@register_jitable
def _sweep_item(j, close, ret, feats, kinds, a_idx, b_idx, ks, cost, sharpe_scale, stats):
    P = kinds.shape[0]
    i = j // P
    p = j - i * P
    strategy_loops.store_stats(stats, p, i, strategy_loops.sweep_row(
        kinds[p], close[i], ret[i], feats[a_idx[p], i], feats[b_idx[p], i], ks[p], cost, sharpe_scale))


@njit_cached(parallel=True, nogil=True)
def _sweep_parallel(close, ret, feats, kinds, a_idx, b_idx, ks, cost, sharpe_scale, stats):
    for j in prange(kinds.shape[0] * close.shape[0]):
        _sweep_item(j, close, ret, feats, kinds, a_idx, b_idx, ks, cost, sharpe_scale, stats)


@njit_cached(nogil=True)
def _sweep_serial(close, ret, feats, kinds, a_idx, b_idx, ks, cost, sharpe_scale, stats):
    for j in range(kinds.shape[0] * close.shape[0]):
        _sweep_item(j, close, ret, feats, kinds, a_idx, b_idx, ks, cost, sharpe_scale, stats)


@njit_cached(nogil=True)
def signals_now(kinds, a_idx, b_idx, ks, close, feats, out):
    """One bar of every rule for every symbol: close (n,), feats (R, n) -> out (P, n) int8."""
    for p in range(kinds.shape[0]):
        for i in range(close.shape[0]):
            out[p, i] = strategy_loops.bar_signal(kinds[p], close[i], feats[a_idx[p], i], feats[b_idx[p], i], ks[p])


def _serial(n_rules: int, close: np.ndarray) -> bool:
    return n_rules * close.size < SERIAL_MAX_ELEMENTS


def backtest(close, feats, kinds, a_idx, b_idx, ks, cost):
    """Signals and P&L of P rules over n series.

    close: C-contiguous (n, T) float; feats: C-contiguous (R, n, T) float (the rules'
    inputs); kinds, a_idx, b_idx: int64 (P,) (rule code, rows of feats read as ``a``
    and ``b``); ks: float64 (P,); cost: float (fraction per unit of position change).
    Returns ``(signals int8 (P, n, T), pnl float64 (P, n))``.
    """
    n, T = close.shape
    P = kinds.shape[0]
    sig = output_pool.empty((P, n, T), np.int8)
    pnl = np.empty((P, n), dtype=np.float64)
    run = _backtest_serial if _serial(P, close) else _backtest_parallel
    run(close, strategy_loops.bar_returns(np, close), feats, kinds, a_idx, b_idx, ks, cost, sig, pnl)
    return sig, pnl


def sweep(close, feats, kinds, a_idx, b_idx, ks, cost, sharpe_scale):
    """P&L and summary statistics of P rules over n series, no signals stored.

    Arguments as :func:`backtest`; ``sharpe_scale``: the Sharpe ratio's annualization
    factor. Returns float64 ``(N_STATS, P, n)``, rows as
    :data:`gpu_trader._internal.strategy_loops.N_STATS` lists them.
    """
    P = kinds.shape[0]
    stats = np.empty((strategy_loops.N_STATS, P, close.shape[0]), dtype=np.float64)
    run = _sweep_serial if _serial(P, close) else _sweep_parallel
    run(close, strategy_loops.bar_returns(np, close), feats, kinds, a_idx, b_idx, ks, cost, sharpe_scale, stats)
    return stats
