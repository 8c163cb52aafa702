"""GPU strategy kernel: :func:`gpu_trader._internal.strategy_loops.backtest_row` as numba.cuda device code.

Same contract as :func:`gpu_trader.cpu_fallback.strategies.backtest`, CuPy arrays in
and out. One thread per (parameter set, series) row, ``THREADS_PER_BLOCK`` threads a
block. The inputs are transposed to a time-major layout (close and bar returns ``(T, n)``, features
``(R, T, n)``) and signals are written to ``(P, T, n)``, so at each bar the threads of
a warp (consecutive series) read and write consecutive addresses; the signals are
transposed back to ``(P, n, T)`` at the end.

Everything is written against ``xp`` (:func:`backtest_xp`), so the tests run the same
launcher on NumPy arrays in numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).
"""
from __future__ import annotations

import functools

from numba import cuda

from .._internal import strategy_loops
from .launch import CudaExecutor

THREADS_PER_BLOCK = 128


@functools.lru_cache(maxsize=None)
def _rows_kernel():
    @cuda.jit
    def rows(nthreads, close, ret, feats, kinds, a_idx, b_idx, ks, cost, sig, pnl):
        j = cuda.grid(1)
        if j < nthreads:
            n = close.shape[1]
            p = j // n
            i = j - p * n
            pnl[p, i] = strategy_loops.backtest_row(kinds[p], close[:, i], ret[:, i], feats[a_idx[p], :, i],
                                        feats[b_idx[p], :, i], ks[p], cost, sig[p, :, i])

    return rows


def backtest_xp(close, feats, kinds, a_idx, b_idx, ks, cost, *, xp, exe=None):
    """:func:`backtest` on arrays of module ``xp`` (``cupy``, or ``numpy`` in the simulator);
    ``exe`` launches the kernel (default a :class:`CudaExecutor`; the tests pass a
    ``PtxExecutor`` to compile it for sm_90 without a GPU)."""
    n, T = close.shape
    P = int(kinds.shape[0])
    close_tm = xp.ascontiguousarray(close.T)
    ret_tm = xp.ascontiguousarray(strategy_loops.bar_returns(xp, close).T)
    feats_tm = xp.ascontiguousarray(feats.transpose(0, 2, 1))
    sig = xp.empty((P, T, n), dtype=xp.int8)
    pnl = xp.empty((P, n), dtype=xp.float64)
    args = (close_tm, ret_tm, feats_tm, xp.asarray(kinds), xp.asarray(a_idx), xp.asarray(b_idx), xp.asarray(ks),
            float(cost), sig, pnl)
    (exe or CudaExecutor(xp, THREADS_PER_BLOCK)).launch(_rows_kernel(), P * n, args)
    return xp.ascontiguousarray(sig.transpose(0, 2, 1)), pnl


def backtest(close, feats, kinds, a_idx, b_idx, ks, cost):
    """Signals int8 (P, n, T) and P&L float64 (P, n) on the GPU (see the CPU twin)."""
    import cupy

    return backtest_xp(close, feats, kinds, a_idx, b_idx, ks, cost, xp=cupy)
