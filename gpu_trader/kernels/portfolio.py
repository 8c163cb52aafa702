"""GPU twin of :mod:`gpu_trader.cpu_fallback.portfolio` on CuPy arrays.

``apply_fills``: one numba.cuda thread per row (position) runs the very same loop body
as the CPU backend (:func:`gpu_trader._internal.position_loops.fill_row`, compiled as device
code), applying that row's K fills in order; float64 throughout; 1-D grid of
:data:`THREADS_PER_BLOCK` threads, launched through
:func:`gpu_trader.kernels.launch.default_executor`. ``mark_to_market``: one cuBLAS GEMM/GEMV
plus a row sum via :func:`gpu_trader._internal.position_loops.mark_to_market` on CuPy.

:func:`apply_fills_xp` takes the array module, so the tests run the real launcher on
NumPy arrays under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).
"""
from __future__ import annotations

import functools

from numba import cuda

from .._internal import position_loops
from .._internal.jit import cuda_jit_cached
from .launch import default_executor

__all__ = ["apply_fills", "apply_fills_xp", "mark_to_market", "THREADS_PER_BLOCK"]

THREADS_PER_BLOCK = 128


@functools.lru_cache(maxsize=1)
def _kernel():
    fill_row = position_loops.jitable()

    @cuda_jit_cached()
    def rows(nthreads, qty, avg, realized, fill_qty, fill_price):
        r = cuda.grid(1)
        if r < nthreads:
            fill_row(r, qty, avg, realized, fill_qty, fill_price)

    return rows


def apply_fills_xp(xp, qty, avg, realized, fill_qty, fill_price):
    """The launcher, on any array module (CuPy on a GPU, NumPy under the simulator)."""
    out = [xp.array(a, dtype=xp.float64, order="C") for a in (qty, avg, realized)]
    fq = xp.ascontiguousarray(fill_qty, dtype=xp.float64)
    fp = xp.ascontiguousarray(fill_price, dtype=xp.float64)
    default_executor(xp, THREADS_PER_BLOCK).launch(_kernel(), out[0].shape[0], (*out, fq, fp))
    return tuple(out)


def apply_fills(qty, avg, realized, fill_qty, fill_price):
    import cupy

    return apply_fills_xp(cupy, qty, avg, realized, fill_qty, fill_price)


def mark_to_market(qty, avg, prices):
    import cupy

    return position_loops.mark_to_market(cupy, qty, avg, prices)
