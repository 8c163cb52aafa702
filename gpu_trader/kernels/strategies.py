"""GPU strategy kernels: the row bodies of :mod:`gpu_trader._internal.strategy_loops` as numba.cuda device code.

Same contract as :func:`gpu_trader.cpu_fallback.strategies.backtest` and
:func:`~gpu_trader.cpu_fallback.strategies.sweep`, CuPy arrays in and out. One thread per
(parameter set, series) row, ``THREADS_PER_BLOCK`` threads a block. The inputs are
transposed to a time-major layout (close and bar returns ``(T, n)``, features ``(R, T, n)``),
so at each bar the threads of a warp (consecutive series) read consecutive addresses;
:func:`backtest` writes its signals to ``(P, T, n)`` likewise and transposes them back to
``(P, n, T)`` at the end; :func:`sweep` writes only ``(N_STATS, P, n)`` statistics.

Everything is written against ``xp`` (:func:`backtest_xp`, :func:`sweep_xp`), so the tests run
the same launchers on NumPy arrays in numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).
"""
from __future__ import annotations

import functools

from numba import cuda

from .._internal import strategy_loops
from .._internal.jit import cuda_jit_cached
from .launch import default_executor

THREADS_PER_BLOCK = 128
SWEEP_FEATURE_COPIES = 2  # the features and their time-major copy


@functools.lru_cache(maxsize=None)
def _rows_kernel():
    @cuda_jit_cached()
    def rows(nthreads, close, ret, feats, kinds, a_idx, b_idx, ks, cost, sig, pnl):
        j = cuda.grid(1)
        if j < nthreads:
            n = close.shape[1]
            p = j // n
            i = j - p * n
            pnl[p, i] = strategy_loops.backtest_row(kinds[p], close[:, i], ret[:, i], feats[a_idx[p], :, i],
                                        feats[b_idx[p], :, i], ks[p], cost, sig[p, :, i])

    return rows


@functools.lru_cache(maxsize=None)
def _sweep_kernel():
    @cuda_jit_cached()
    def rows(nthreads, close, ret, feats, kinds, a_idx, b_idx, ks, cost, sharpe_scale, stats):
        j = cuda.grid(1)
        if j < nthreads:
            n = close.shape[1]
            p = j // n
            i = j - p * n
            strategy_loops.store_stats(stats, p, i, strategy_loops.sweep_row(
                kinds[p], close[:, i], ret[:, i], feats[a_idx[p], :, i], feats[b_idx[p], :, i], ks[p], cost,
                sharpe_scale))

    return rows


def _time_major(close, feats, kinds, a_idx, b_idx, ks, xp, exe):
    """The kernels' common inputs: close and bar returns ``(T, n)``, features ``(R, T, n)``
    (contiguous copies) and the rule arrays (host NumPy) on the device through ``exe.constant``
    (uploaded once per content: a sweep's symbol chunks reuse their tile's rules)."""
    return (xp.ascontiguousarray(close.T), xp.ascontiguousarray(strategy_loops.bar_returns(xp, close).T),
            xp.ascontiguousarray(feats.transpose(0, 2, 1)),
            *(exe.constant(a) for a in (kinds, a_idx, b_idx, ks)))


def backtest_xp(close, feats, kinds, a_idx, b_idx, ks, cost, *, xp, exe=None):
    """:func:`backtest` on arrays of module ``xp`` (``cupy``, or ``numpy`` in the simulator);
    ``exe`` launches the kernel (default :func:`~gpu_trader.kernels.launch.default_executor`; the tests pass a
    ``PtxExecutor`` to compile it for sm_90 without a GPU)."""
    n, T = close.shape
    P = int(kinds.shape[0])
    sig = xp.empty((P, T, n), dtype=xp.int8)
    pnl = xp.empty((P, n), dtype=xp.float64)
    exe = exe or default_executor(xp, THREADS_PER_BLOCK)
    args = (*_time_major(close, feats, kinds, a_idx, b_idx, ks, xp, exe), float(cost), sig, pnl)
    exe.launch(_rows_kernel(), P * n, args)
    return xp.ascontiguousarray(sig.transpose(0, 2, 1)), pnl


def sweep_xp(close, feats, kinds, a_idx, b_idx, ks, cost, sharpe_scale, *, xp, exe=None):
    """:func:`sweep` on arrays of module ``xp`` (see :func:`backtest_xp`)."""
    n = close.shape[0]
    P = int(kinds.shape[0])
    stats = xp.empty((strategy_loops.N_STATS, P, n), dtype=xp.float64)
    exe = exe or default_executor(xp, THREADS_PER_BLOCK)
    args = (*_time_major(close, feats, kinds, a_idx, b_idx, ks, xp, exe), float(cost), float(sharpe_scale), stats)
    exe.launch(_sweep_kernel(), P * n, args)
    return stats


def backtest(close, feats, kinds, a_idx, b_idx, ks, cost):
    """Signals int8 (P, n, T) and P&L float64 (P, n) on the GPU (see the CPU twin)."""
    import cupy

    return backtest_xp(close, feats, kinds, a_idx, b_idx, ks, cost, xp=cupy)


def sweep(close, feats, kinds, a_idx, b_idx, ks, cost, sharpe_scale):
    """P&L and statistics float64 (N_STATS, P, n) on the GPU, no signals (see the CPU twin)."""
    import cupy

    return sweep_xp(close, feats, kinds, a_idx, b_idx, ks, cost, sharpe_scale, xp=cupy)
