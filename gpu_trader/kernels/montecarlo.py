"""GPU primitives of the Monte Carlo VaR driver (:mod:`gpu_trader._internal.montecarlo_xp`): CuPy, cuBLAS, numba.cuda.

* random numbers: Philox4x32-10 inside the kernels (:mod:`gpu_trader._internal.philox_loops`):
  every scenario's normals and Student-t factor come from its own counters, so chunking,
  thread layout and path never change them. The GPU draws different numbers from the CPU
  backend (NumPy's Philox4x64 and ziggurat); the two agree statistically (the tests check
  both against closed forms, and these kernels against a NumPy GEMM of the same numbers);
* the projection ``Bt @ z.T`` of a chunk (:func:`project`), by the policy :func:`fused`:

  - ``P + U <= FUSED_MAX_ROWS`` (a few portfolios, few option underlyings): one kernel, one
    thread per scenario, draws the scenario's ``n`` normals in registers and accumulates the
    ``P + U`` dot products; nothing of size ``rows x n`` is written. Per scenario that is
    ``n`` normals and ``(P + U) n`` FMAs against ``2 n s`` bytes of traffic for writing the
    normals and reading them back: at ``n = 1000``, 1M scenarios, float64, 16 GB (about 5 ms
    of HBM time on an H100) saved, for at most ``16 n`` FMAs a scenario (1.6e10: about
    1 ms of FP64);
  - more rows: the normals of the chunk are written by :func:`normals` (one kernel) and
    multiplied by cuBLAS (``2 (P + U) n`` flops per ``2 n s`` bytes: compute-bound from
    ``P + U`` of a few dozen);

* the contribution band is re-drawn scenario by scenario (:func:`normals_at`), not block by block;
* chunk size: :data:`CHUNK_BYTES` of device memory a chunk (its arrays and its merge
  scratch, :func:`gpu_trader._internal.montecarlo_xp.default_chunk`): the fused path
  computes up to millions of scenarios a launch;
* Black-Scholes revaluation: one kernel per chunk, one thread per (option, scenario),
  running :func:`gpu_trader._internal.option_loops.option_pnl_item` -- the same source the
  CPU backend compiles -- on the projection's underlying rows;
* the tail: :func:`gpu_trader._internal.montecarlo_xp.merge_tail_candidates` (only the chunk's
  candidates above each portfolio's current threshold are sorted and merged: CuPy's
  ``argpartition`` is a full sort).

Every launch goes through an executor (``exe=``, default
:func:`gpu_trader.kernels.launch.default_executor`); :func:`normals`, :func:`normals_at`,
:func:`project` and :func:`option_pnl` take the array module from their arrays or ``xp=``, which is how the
tests run them on NumPy arrays in numba's CUDA simulator.
"""
from __future__ import annotations

import functools
import sys

import numpy as np
from numba import cuda
from numba import float64

from .._internal import montecarlo_xp
from .._internal import option_loops
from .._internal.jit import cuda_jit_cached
from .._internal import philox_loops
from .launch import default_executor

__all__ = ["run", "map_chunks", "normals", "normals_at", "project", "option_pnl", "tail_update", "scatter_add", "fused",
           "BLOCK", "CHUNKS_IN_FLIGHT", "MERGE_SCRATCH", "FUSED_MAX_ROWS", "CHUNK_BYTES"]

BLOCK = 1024  # chunk granularity only: the streams are per scenario
CHUNKS_IN_FLIGHT = 1  # one chunk at a time (map_chunks)
MERGE_SCRATCH = True  # merge_tail_candidates builds (P, m + c) arrays
FUSED_MAX_ROWS = 16  # P + U up to this: normals generated in the projection kernel (one compiled per P + U)
CHUNK_BYTES = 1 << 30  # device memory for one chunk's arrays and its merge


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


def fused(gemm_rows: int) -> bool:
    """The projection policy: normals generated inside the projection kernel for ``P + U <= FUSED_MAX_ROWS``."""
    return montecarlo_xp.fused(sys.modules[__name__], gemm_rows)


@functools.lru_cache(maxsize=64)
def _key(seed: int) -> tuple[np.uint64, np.uint64]:
    k0, k1 = philox_loops.seed_key(seed)
    return np.uint64(k0), np.uint64(k1)


def _array_module(a):
    return sys.modules[type(a).__module__.split(".")[0]]


@functools.lru_cache(maxsize=1)
def _normals_kernel():
    @cuda_jit_cached()
    def kernel(n_items, scenarios, k0, k1, z):
        """Work item ``j = r * n_pairs + q``: assets ``2q, 2q + 1`` of scenario ``scenarios[r]`` into ``z[r]``."""
        j = cuda.grid(1)
        if j < n_items:
            n = z.shape[1]
            n_pairs = (n + 1) // 2
            r = j // n_pairs
            q = j - r * n_pairs
            a, b = philox_loops.scenario_normal_pair(scenarios[r], q, k0, k1)
            z[r, 2 * q] = a
            if 2 * q + 1 < n:
                z[r, 2 * q + 1] = b

    return kernel


@functools.lru_cache(maxsize=1)
def _t_factor_kernel():
    @cuda_jit_cached()
    def kernel(n_items, scenarios, dof, k0, k1, g):
        j = cuda.grid(1)
        if j < n_items:
            g[j] = philox_loops.t_factor(scenarios[j], dof, k0, k1)

    return kernel


@functools.lru_cache(maxsize=FUSED_MAX_ROWS)
def _project_kernel(rows_out: int):
    """The fused projection for exactly ``rows_out`` GEMM rows: a compile-time count, so the
    accumulators are unrolled into registers (a runtime count would put them in local memory)."""

    @cuda_jit_cached()
    def kernel(n_items, first, dof, k0, k1, bt, y):
        """Scenario ``s``: ``y[:, s] = g * (bt @ z_s)`` with ``z_s`` drawn here (``dof <= 0``: ``g = 1``)."""
        s = cuda.grid(1)
        if s < n_items:
            n = bt.shape[1]
            acc = cuda.local.array(rows_out, float64)
            for j in range(rows_out):
                acc[j] = 0.0
            for q in range((n + 1) // 2):
                a, b = philox_loops.scenario_normal_pair(first + s, q, k0, k1)
                i = 2 * q
                for j in range(rows_out):
                    acc[j] += bt[j, i] * a
                if i + 1 < n:
                    for j in range(rows_out):
                        acc[j] += bt[j, i + 1] * b
            g = philox_loops.t_factor(first + s, dof, k0, k1) if dof > 0.0 else 1.0
            for j in range(rows_out):
                y[j, s] = acc[j] * g

    return kernel


def normals(seed: int, first: int, rows: int, n: int, dtype, dof: float | None, *, xp=None, exe=None):
    """Standard normals ``(rows, n)`` of scenarios ``first ..`` and the t mixing factors ``(rows,)`` (else
    None): :func:`normals_at` of ``arange(first, first + rows)`` (CuPy unless ``xp``)."""
    if xp is None:
        import cupy as xp
    return normals_at(seed, xp.arange(first, first + rows, dtype=xp.int64), n, dtype, dof, exe=exe)


def normals_at(seed: int, scenarios, n: int, dtype, dof: float | None, *, exe=None):
    """Standard normals ``(len(scenarios), n)`` of the scenario numbers ``scenarios`` (int64, on the
    device) and their t mixing factors (else None): one kernel each, any scenarios in any order."""
    xp = _array_module(scenarios)
    exe = exe or default_executor(xp)
    k0, k1 = _key(seed)
    rows = scenarios.shape[0]
    z = xp.empty((rows, n), dtype=dtype)
    exe.launch(_normals_kernel(), rows * ((n + 1) // 2), (scenarios, k0, k1, z))
    g = None
    if dof is not None:
        g = xp.empty(rows, dtype=dtype)
        exe.launch(_t_factor_kernel(), rows, (scenarios, float(dof), k0, k1, g))
    return z, g


def project(seed: int, first: int, rows: int, bt, dtype, dof: float | None, *, exe=None):
    """``(len(bt), rows)``: ``bt @ z.T`` times the t factors for scenarios ``first ..``, the normals drawn
    inside the kernel (``len(bt) <= FUSED_MAX_ROWS``; :func:`gpu_trader._internal.montecarlo_xp.project`
    calls it where :func:`fused`)."""
    if bt.shape[0] > FUSED_MAX_ROWS:
        raise ValueError(f"project draws at most {FUSED_MAX_ROWS} rows in registers, got {bt.shape[0]}")
    xp = _array_module(bt)
    exe = exe or default_executor(xp)
    k0, k1 = _key(seed)
    y = xp.empty((bt.shape[0], rows), dtype=dtype)
    exe.launch(_project_kernel(int(bt.shape[0])), rows, (first, 0.0 if dof is None else float(dof), k0, k1, bt, y))
    return y


@functools.lru_cache(maxsize=1)
def _pnl_kernel():
    @cuda_jit_cached()
    def kernel(n_items, returns, drift, under, spot, strike, tau, rate, vol, is_call, value0, out):
        j = cuda.grid(1)
        if j < n_items:
            option_loops.option_pnl_item(j, returns.shape[1], returns, drift, under, spot, strike, tau, rate, vol,
                                         is_call, value0, out)

    return kernel


def option_pnl(returns, o: dict, dtype, *, exe=None):
    """``(n_options, rows)`` value changes for underlying returns ``(U, rows)``: one kernel launch."""
    xp = _array_module(returns)
    exe = exe or default_executor(xp)
    returns = xp.ascontiguousarray(returns)
    out = xp.empty((o["n"], returns.shape[1]), dtype=dtype)
    exe.launch(_pnl_kernel(), out.size, (returns, o["drift"], o["under"], o["spot"], o["strike"], o["tau"],
                                         o["rate"], o["vol"], o["is_call"], o["value0"], out))
    return out


def tail_update(vals, idx, loss, first: int):
    import cupy

    return montecarlo_xp.merge_tail_candidates(cupy, vals, idx, loss, first)


def scatter_add(acc, rows, values):
    import cupyx

    cupyx.scatter_add(acc, rows, values)
    return acc
