"""BLAS thread-pool policy for the CPU backend's matrix products.

A multi-threaded BLAS call on a small product costs more in waking and joining
threads than it saves, and on a busy machine (another process, or numba's OpenMP
pool still spinning after a parallel kernel) a thread that gets descheduled makes
the others spin: we measured a 50 x 252 correlation matrix at 50 us on one
OpenBLAS thread, 170 us on two, and 8 ms on two right after a numba parallel call.
So products below :data:`SMALL_GEMM_FLOPS` run on one BLAS thread; larger ones
keep the pool the user configured. The switch is two ctypes calls per BLAS
library (about 1.5 us) through threadpoolctl; it is process-wide for its duration,
like every BLAS thread setting.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Iterator

__all__ = ["SMALL_GEMM_FLOPS", "blas_threads_for"]

SMALL_GEMM_FLOPS = 2e7  # below ~20 MFLOP one thread wins even on an idle 2-core machine
_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _blas_libraries() -> tuple:
    """threadpoolctl controllers of the BLAS libraries loaded now (NumPy's at least)."""
    import numpy  # noqa: F401 -- its BLAS must be loaded before we look
    from threadpoolctl import ThreadpoolController

    return tuple(lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas")


@contextlib.contextmanager
def blas_threads_for(flops: float) -> Iterator[None]:
    """Run the body on one BLAS thread when ``flops`` is below :data:`SMALL_GEMM_FLOPS`."""
    if flops >= SMALL_GEMM_FLOPS:
        yield
        return
    libs = _blas_libraries()
    with _LOCK:
        previous = [lib.get_num_threads() for lib in libs]
        for lib in libs:
            lib.set_num_threads(1)
    try:
        yield
    finally:
        with _LOCK:
            for lib, n in zip(libs, previous):
                lib.set_num_threads(n)
