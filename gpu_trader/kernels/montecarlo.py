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
* the tail: one kernel launch a chunk (:func:`tail_update`, one block per portfolio): only the
  chunk's candidates above each portfolio's current ``m``-th largest are buffered in shared
  memory, sorted there and merged into the sorted tail -- the same result as
  :func:`gpu_trader._internal.montecarlo_xp.merge_tail_candidates` (its array formulation, about
  80 CuPy launches and one host read a chunk), which the simulator tests compare it with.

Every launch goes through an executor (``exe=``, default
:func:`gpu_trader.kernels.launch.default_executor`); :func:`normals`, :func:`normals_at`,
:func:`project` and :func:`option_pnl` take the array module from their arrays or ``xp=``, which is how the
tests run them on NumPy arrays in numba's CUDA simulator.
"""
from __future__ import annotations

import functools
import math
import sys

import numpy as np
from numba import cuda
from numba import float64
from numba.extending import register_jitable

from .._internal import montecarlo_xp
from .._internal import option_loops
from .._internal.jit import cuda_jit_cached
from .._internal import philox_loops
from .launch import default_executor

__all__ = ["run", "map_chunks", "normals", "normals_at", "project", "option_pnl", "tail_update", "scatter_add", "fused",
           "BLOCK", "CHUNKS_IN_FLIGHT", "MERGE_SCRATCH", "FUSED_MAX_ROWS", "CHUNK_BYTES", "MERGE_BUFFER"]

BLOCK = 1024  # chunk granularity only: the streams are per scenario
CHUNKS_IN_FLIGHT = 1  # one chunk at a time (map_chunks)
MERGE_SCRATCH = True  # the merge kernel alternates between the tail and a (P, m) spare
FUSED_MAX_ROWS = 16  # P + U up to this: normals generated in the projection kernel (one compiled per P + U)
MERGE_BUFFER = 256  # candidates the tail-merge kernel sorts and merges at a time (a power of two, >= its block)
_NO_SCENARIO = (1 << 63) - 1  # the buffer's padding: after every scenario in tail order
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
    """``(len(bt), rows)``: ``bt @ z.T`` times the t factors for scenarios ``first ..``: the normals drawn
    inside one kernel where :func:`fused` (``len(bt) <= FUSED_MAX_ROWS``), else :func:`normals` and one
    cuBLAS GEMM (:func:`gpu_trader._internal.montecarlo_xp.gemm_projection`)."""
    xp = _array_module(bt)
    exe = exe or default_executor(xp)
    if not fused(bt.shape[0]):
        draw = functools.partial(normals, xp=xp, exe=exe)
        return montecarlo_xp.gemm_projection(draw, seed, first, rows, bt, dtype, dof)
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


@register_jitable
def _before(v1, s1, v2, s2):
    """Tail order: loss ``v1`` of scenario ``s1`` ranks before ``(v2, s2)`` (larger loss; a tie keeps
    the earlier scenario, like the CPU heap). NaN ranks before nothing and nothing ranks before it."""
    return v1 > v2 or (v1 == v2 and s1 < s2)


@register_jitable
def _count_before(keys_v, keys_i, n, v, s):
    """How many of the first ``n`` keys ``(keys_v, keys_i)``, sorted in tail order, rank before
    ``(v, s)`` (:func:`_before`): a binary search, the merge position of one entry."""
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) // 2
        if _before(float64(keys_v[mid]), keys_i[mid], v, s):
            lo = mid + 1
        else:
            hi = mid
    return lo


@functools.lru_cache(maxsize=1)
def _merge_kernel():
    """The tail merge of one chunk: one block per portfolio ``p`` (block ``p``, any block size up to
    :data:`MERGE_BUFFER`), the tail ``(vals, idx)[p]`` kept sorted in tail order (:func:`_before`).

    The block reads the chunk's losses ``blockDim`` at a time (coalesced); a loss that ranks before
    the tail's last entry is a candidate and goes to a shared-memory buffer. When the buffer could
    overflow with the next read, and at the end, the block sorts the buffer (bitonic, in shared
    memory) and merges it with the tail: each tail entry moves down by the number of candidates
    before it, each candidate lands at its index plus the number of tail entries before it (binary
    searches), entries past ``m`` drop out. Merges alternate between the tail and ``spare`` (same
    shapes); the result is copied back when it ended in ``spare``."""
    from numba import int64

    @cuda_jit_cached()
    def kernel(n_items, vals, idx, loss, first, spare_v, spare_i):
        p = cuda.blockIdx.x
        t = cuda.threadIdx.x
        nt = cuda.blockDim.x
        m = vals.shape[1]
        rows = loss.shape[1]
        buf_v = cuda.shared.array(MERGE_BUFFER, float64)
        buf_i = cuda.shared.array(MERGE_BUFFER, int64)
        state = cuda.shared.array(3, int64)  # candidates buffered, the tail is in spare (0/1), last's scenario
        last = cuda.shared.array(1, float64)  # the tail's last loss: the bar a candidate must pass
        if t == 0:
            state[0] = 0
            state[1] = 0
            state[2] = idx[p, m - 1]
            last[0] = vals[p, m - 1]
        cuda.syncthreads()
        for base in range(0, rows, nt):
            s = base + t
            if s < rows:
                v = float64(loss[p, s])
                if _before(v, first + s, last[0], state[2]):
                    k = cuda.atomic.add(state, 0, 1)
                    buf_v[k] = v
                    buf_i[k] = first + s
            cuda.syncthreads()
            n = state[0]
            cuda.syncthreads()
            if n > MERGE_BUFFER - nt or (base + nt >= rows and n > 0):
                for i in range(n + t, MERGE_BUFFER, nt):  # padding, sorted last
                    buf_v[i] = -math.inf
                    buf_i[i] = _NO_SCENARIO
                cuda.syncthreads()
                width = 2
                while width <= MERGE_BUFFER:  # bitonic sort into tail order
                    half = width // 2
                    while half > 0:
                        for i in range(t, MERGE_BUFFER, nt):
                            other = i ^ half
                            if other > i and _before(buf_v[other], buf_i[other], buf_v[i], buf_i[i]) == (
                                    (i & width) == 0):
                                tv = buf_v[i]
                                ti = buf_i[i]
                                buf_v[i] = buf_v[other]
                                buf_i[i] = buf_i[other]
                                buf_v[other] = tv
                                buf_i[other] = ti
                        cuda.syncthreads()
                        half //= 2
                    width *= 2
                if state[1] == 0:
                    cur_v, cur_i, nxt_v, nxt_i = vals, idx, spare_v, spare_i
                else:
                    cur_v, cur_i, nxt_v, nxt_i = spare_v, spare_i, vals, idx
                for i in range(t, m, nt):  # tail entries: down by the candidates before them
                    cv = float64(cur_v[p, i])
                    ci = cur_i[p, i]
                    lo = _count_before(buf_v, buf_i, n, cv, ci)
                    if i + lo < m:
                        nxt_v[p, i + lo] = cv
                        nxt_i[p, i + lo] = ci
                for k in range(t, n, nt):  # candidates: after the tail entries before them
                    bv = buf_v[k]
                    bi = buf_i[k]
                    lo = _count_before(cur_v[p], cur_i[p], m, bv, bi)
                    if k + lo < m:
                        nxt_v[p, k + lo] = bv
                        nxt_i[p, k + lo] = bi
                cuda.syncthreads()
                if t == 0:
                    state[0] = 0
                    state[1] = 1 - state[1]
                    last[0] = nxt_v[p, m - 1]
                    state[2] = nxt_i[p, m - 1]
                cuda.syncthreads()
        if state[1] == 1:
            for i in range(t, m, nt):
                vals[p, i] = spare_v[p, i]
                idx[p, i] = spare_i[p, i]

    return kernel


def tail_update(vals, idx, loss, first: int, *, exe=None):
    """Merge the chunk's losses ``loss`` ``(P, rows)`` (scenarios ``first ..``) into each portfolio's
    ``m`` largest, ``vals`` / ``idx`` ``(P, m)`` kept sorted in tail order (larger loss first, a tie
    keeps the earlier scenario; ``-inf`` / ``-1`` padding last), in place: one launch of
    :func:`_merge_kernel`, one block per portfolio, no host read. Returns ``(vals, idx)``."""
    xp = _array_module(vals)
    exe = exe or default_executor(xp)
    P = vals.shape[0]
    exe.launch(_merge_kernel(), P * exe.tpb, (vals, idx, xp.ascontiguousarray(loss), int(first),
                                              xp.empty_like(vals), xp.empty_like(idx)))
    return vals, idx


def scatter_add(acc, rows, values):
    import cupyx

    cupyx.scatter_add(acc, rows, values)
    return acc
