"""GPU primitives of the Monte Carlo VaR driver (:mod:`gpu_trader._internal.montecarlo_xp`): CuPy, cuRAND, cuBLAS, numba.cuda.

* random numbers: cuRAND's Philox4_32_10 through ``cupy.random.RandomState``; block
  ``b`` of :data:`BLOCK` scenarios has its own generator seeded with a 64-bit key
  derived from ``(seed, b)`` (``numpy.random.SeedSequence``), so chunking does not change
  the numbers. The GPU draws different numbers from the CPU backend;
* GEMMs: CuPy ``matmul`` (cuBLAS);
* Black-Scholes revaluation: one numba.cuda kernel per chunk, one thread per
  (option, scenario), running :func:`gpu_trader._internal.option_loops.option_pnl_item` -- the
  same source the CPU backend compiles -- on the GEMM's output, so the underlyings'
  returns are read once and the value changes written once;
* the tail: :func:`merge_tail`, an ``argpartition`` of the kept losses and the chunk's
  losses per portfolio (written against ``xp``, so the tests run it with NumPy).

Only :func:`run`/:func:`normals`/:func:`scatter_add` need CuPy (imported on first use);
:func:`option_pnl` and :func:`merge_tail` take arrays of any module, which is how the
tests run them on NumPy arrays (the kernel under numba's CUDA simulator).
"""
from __future__ import annotations

import functools
import sys

import numpy as np
from numba import cuda

from .._internal import montecarlo_xp
from .._internal import option_loops
from .._internal.montecarlo_xp import merge_tail

__all__ = ["run", "map_chunks", "normals", "option_pnl", "tail_update", "merge_tail", "scatter_add", "BLOCK",
           "THREADS_PER_BLOCK", "CHUNKS_IN_FLIGHT", "MERGE_SCRATCH"]

BLOCK = 1 << 16
THREADS_PER_BLOCK = 128
CHUNKS_IN_FLIGHT = 1  # one chunk at a time (map_chunks)
MERGE_SCRATCH = True  # merge_tail partitions (P, m + rows) arrays


def __getattr__(name: str):
    """``xp`` (the engine's array module) is CuPy, imported on first use."""
    if name == "xp":
        import cupy

        return cupy
    raise AttributeError(name)


def run(plan: montecarlo_xp.Plan) -> dict:
    """Execute a validated plan on the current CUDA device."""
    return montecarlo_xp.run(plan, sys.modules[__name__])


def map_chunks(fn, firsts):
    """Chunks one after the other (the GPU is busy enough with one)."""
    return map(fn, firsts)


def block_seed(seed: int, block: int) -> int:
    """The 64-bit cuRAND seed of scenario block ``block``."""
    return int(np.random.SeedSequence([seed, block]).generate_state(1, np.uint64)[0])


def normals(seed: int, first: int, rows: int, n: int, dtype, dof: float | None):
    """Standard normals ``(rows, n)`` of scenarios ``first ..`` and the t mixing factors (CuPy)."""
    import cupy
    from cupy.cuda import curand

    z = cupy.empty((rows, n), dtype=dtype)
    g = cupy.empty(rows, dtype=dtype) if dof is not None else None
    for r0 in range(0, rows, BLOCK):
        r1 = min(r0 + BLOCK, rows)
        rs = cupy.random.RandomState(block_seed(seed, (first + r0) // BLOCK),
                                     method=curand.CURAND_RNG_PSEUDO_PHILOX4_32_10)
        z[r0:r1] = rs.standard_normal((r1 - r0, n), dtype=dtype)
        if g is not None:
            g[r0:r1] = cupy.sqrt((dof - 2.0) / rs.chisquare(dof, r1 - r0, dtype=np.float64)).astype(dtype)
    return z, g


@functools.lru_cache(maxsize=1)
def _pnl_kernel():
    @cuda.jit
    def kernel(n_items, returns, drift, under, spot, strike, tau, rate, vol, is_call, value0, out):
        j = cuda.grid(1)
        if j < n_items:
            option_loops.option_pnl_item(j, returns.shape[1], returns, drift, under, spot, strike, tau, rate, vol,
                               is_call, value0, out)

    return kernel


def option_pnl(returns, o: dict, dtype):
    """``(n_options, rows)`` value changes for underlying returns ``(U, rows)``: one kernel launch."""
    xp = sys.modules[type(returns).__module__.split(".")[0]]
    returns = xp.ascontiguousarray(returns)
    out = xp.empty((o["n"], returns.shape[1]), dtype=dtype)
    n_items = out.size
    if n_items:
        blocks = -(-n_items // THREADS_PER_BLOCK)
        _pnl_kernel()[blocks, THREADS_PER_BLOCK](
            n_items, returns, o["drift"], o["under"], o["spot"], o["strike"], o["tau"], o["rate"], o["vol"],
            o["is_call"], o["value0"], out,
        )
    return out


def tail_update(vals, idx, loss, first: int):
    import cupy

    return merge_tail(cupy, vals, idx, loss, first)


def scatter_add(acc, rows, values):
    import cupyx

    cupyx.scatter_add(acc, rows, values)
    return acc
