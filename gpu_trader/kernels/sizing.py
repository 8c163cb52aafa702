"""GPU ops of the ``sizing`` area, on CuPy arrays.

The sizing and exposure math is :mod:`gpu_trader._internal.sizing_xp` run on :data:`xp`
(CuPy, imported on first use). The trailing stop and the rolling extremes run one
numba.cuda thread per row over the very same row bodies as the CPU backend
(:mod:`gpu_trader._internal.stop_loops`, compiled as device code), launched through
:func:`gpu_trader.kernels.launch.default_executor`.

:func:`trailing_stop_xp` and :func:`rolling_extreme_xp` take the array module, so the
tests run the real launchers on NumPy arrays under numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``).
"""
from __future__ import annotations

import functools

from numba import cuda

from .._internal import stop_loops
from .._internal.jit import cuda_jit_cached
from .launch import default_executor

__all__ = ["trailing_stop", "trailing_stop_xp", "rolling_extreme", "rolling_extreme_xp", "THREADS_PER_BLOCK"]

THREADS_PER_BLOCK = 128


@functools.lru_cache(maxsize=1)
def _kernels():
    trailing_row, extreme_row = stop_loops.jitable()

    @cuda_jit_cached()
    def trailing(nthreads, price, atr, start, fraction, multiple, short, use_atr, out):
        r = cuda.grid(1)
        if r < nthreads:
            trailing_row(r, price, atr, start, fraction, multiple, short, use_atr, out)

    @cuda_jit_cached()
    def extreme(nthreads, x, window, lowest, out):
        r = cuda.grid(1)
        if r < nthreads:
            extreme_row(r, x, window, lowest, out)

    return trailing, extreme


def trailing_stop_xp(xp, price, atr, start, fraction, multiple, short):
    """The trailing-stop launcher, on any array module (CuPy on a GPU, NumPy under the simulator)."""
    out = xp.empty(price.shape, dtype=xp.float64)
    use_atr = atr is not None
    args = (price, atr if use_atr else price, start, fraction, multiple, int(short), int(use_atr), out)
    default_executor(xp, THREADS_PER_BLOCK).launch(_kernels()[0], price.shape[0], args)
    return out


def rolling_extreme_xp(xp, x, window, lowest):
    """The rolling-extreme launcher, on any array module."""
    out = xp.empty(x.shape, dtype=xp.float64)
    default_executor(xp, THREADS_PER_BLOCK).launch(_kernels()[1], x.shape[0], (x, window, int(lowest), out))
    return out


def trailing_stop(price, atr, start, fraction, multiple, short):
    import cupy

    return trailing_stop_xp(cupy, price, atr, start, fraction, multiple, short)


def rolling_extreme(x, window, lowest):
    import cupy

    return rolling_extreme_xp(cupy, x, window, lowest)


def __getattr__(name):
    if name == "xp":
        import cupy

        return cupy
    raise AttributeError(name)
