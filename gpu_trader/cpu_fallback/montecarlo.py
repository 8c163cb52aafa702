"""CPU primitives of the Monte Carlo VaR driver (:mod:`gpu_trader._internal.montecarlo_xp`): NumPy + BLAS + numba.

* parallelism: whole chunks are computed on :data:`THREADS` worker threads
  (:func:`map_chunks`), each single-threaded -- its random numbers, its GEMMs (BLAS is
  limited to one thread with threadpoolctl for the duration of the pass) and its
  option kernel -- while the calling thread merges finished chunks into the tail, at
  most ``THREADS + 1`` chunks in flight; the re-draw of the contribution band's
  scenarios likewise. One pool of threads, so BLAS, numba and the generators never
  compete for the cores. A single chunk runs on the calling thread, its random numbers
  filled by the pool and BLAS/numba using every core;
* random numbers: NumPy's ``Generator`` over ``Philox`` (counter-based). Block ``b``
  of :data:`BLOCK` scenarios uses the key derived from the seed and starts its counter
  at ``b * 2**128``, so its numbers never overlap another block's and do not depend
  on how the scenarios are chunked (NumPy's generators release the GIL);
* Black-Scholes revaluation: :func:`gpu_trader._internal.option_loops.option_pnl_item` compiled by
  numba over (option, scenario);
* the tail: one binary min-heap of the ``m`` largest losses per portfolio, so a chunk
  costs one comparison per loss plus ``O(log m)`` per loss that enters the tail.
"""
from __future__ import annotations

import functools
import itertools
import os
import sys
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import prange

from .._internal import montecarlo_xp
from .._internal import option_loops
from .._internal.jit import njit_cached

__all__ = ["run", "map_chunks", "normals", "option_pnl", "tail_update", "scatter_add", "BLOCK", "THREADS",
           "CHUNKS_IN_FLIGHT", "MERGE_SCRATCH", "FUSED_MAX_ROWS", "CHUNK_BYTES", "normals_at",
           "project"]

xp = np
BLOCK = 256
THREADS = max(1, min(os.cpu_count() or 1, 16))
CHUNKS_IN_FLIGHT = THREADS + 2  # computing on every worker, one queued, one being merged (map_chunks)
MERGE_SCRATCH = False  # the tail is a heap updated in place
FUSED_MAX_ROWS = 0  # no fused projection: project draws the normals and multiplies
CHUNK_BYTES = None  # chunks of about montecarlo_xp.CHUNK_ELEMENTS normals
normals_at = None  # per-block streams: the driver re-draws the blocks that hold the band's scenarios
_worker = threading.local()  # .active: this thread computes a chunk of map_chunks


def run(plan: montecarlo_xp.Plan) -> dict:
    """Execute a validated plan (see :func:`gpu_trader._internal.montecarlo_xp.run`)."""
    return montecarlo_xp.run(plan, sys.modules[__name__])


@functools.lru_cache(maxsize=64)
def _key(seed: int) -> np.ndarray:
    return np.random.SeedSequence(seed).generate_state(2, np.uint64)


def _fill(seed: int, first_block: int, z: np.ndarray, g: np.ndarray | None, dof: float | None) -> None:
    """Fill ``z`` (and ``g``) block by block starting at block ``first_block``."""
    key = _key(seed)
    for i, r0 in enumerate(range(0, z.shape[0], BLOCK)):
        gen = np.random.Generator(np.random.Philox(counter=[0, 0, first_block + i, 0], key=key))
        r1 = min(r0 + BLOCK, z.shape[0])
        gen.standard_normal(dtype=z.dtype, out=z[r0:r1])
        if g is not None:
            g[r0:r1] = np.sqrt((dof - 2.0) / gen.chisquare(dof, r1 - r0))


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="gpu_trader_rng")


def _in_worker(fn, first):
    _worker.active = True
    try:
        return fn(first)
    finally:
        _worker.active = False


def map_chunks(fn, firsts):
    """``fn(first)`` for each chunk start (or other work item), computed on the worker threads,
    yielded in order."""
    firsts = list(firsts)
    if THREADS == 1 or len(firsts) == 1:
        yield from map(fn, firsts)
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        todo = iter(firsts)
        pending = deque(_pool().submit(_in_worker, fn, f) for f in itertools.islice(todo, THREADS + 1))
        while pending:
            result = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(_pool().submit(_in_worker, fn, nxt))
            yield result


def normals(seed: int, first: int, rows: int, n: int, dtype, dof: float | None):
    """Standard normals ``(rows, n)`` of scenarios ``first ..`` and the t mixing factors; see the engine.

    Filled by the thread pool, or serially inside a :func:`map_chunks` worker."""
    z = np.empty((rows, n), dtype=dtype)
    g = np.empty(rows, dtype=dtype) if dof is not None else None
    n_blocks = -(-rows // BLOCK)
    per = n_blocks if getattr(_worker, "active", False) else -(-n_blocks // THREADS)
    jobs = []
    for b0 in range(0, n_blocks, per):
        r0, r1 = b0 * BLOCK, min((b0 + per) * BLOCK, rows)
        gi = g[r0:r1] if g is not None else None
        jobs.append((first // BLOCK + b0, z[r0:r1], gi))
    if len(jobs) == 1:
        _fill(seed, *jobs[0], dof)
    else:
        for f in [_pool().submit(_fill, seed, b, zz, gg, dof) for b, zz, gg in jobs]:
            f.result()
    return z, g


def project(seed: int, first: int, rows: int, bt, dtype, dof: float | None):
    """``bt @ z.T`` ``(len(bt), rows)`` times the t factors for the :func:`normals` of scenarios ``first ..``
    (:func:`gpu_trader._internal.montecarlo_xp.gemm_projection`: the normals, then one GEMM)."""
    return montecarlo_xp.gemm_projection(normals, seed, first, rows, bt, dtype, dof)


@njit_cached(parallel=True, nogil=True)
def _option_pnl_parallel(returns, drift, under, spot, strike, tau, rate, vol, is_call, value0, out):
    rows = returns.shape[1]
    for j in prange(out.shape[0] * rows):
        option_loops.option_pnl_item(j, rows, returns, drift, under, spot, strike, tau, rate, vol, is_call, value0, out)


@njit_cached(nogil=True)
def _option_pnl_serial(returns, drift, under, spot, strike, tau, rate, vol, is_call, value0, out):
    rows = returns.shape[1]
    for j in range(out.shape[0] * rows):
        option_loops.option_pnl_item(j, rows, returns, drift, under, spot, strike, tau, rate, vol, is_call, value0, out)


def option_pnl(returns: np.ndarray, o: dict, dtype) -> np.ndarray:
    """``(n_options, rows)`` value changes for underlying returns ``(U, rows)`` (drift added inside)."""
    out = np.empty((o["n"], returns.shape[1]), dtype=dtype)
    kernel = _option_pnl_serial if getattr(_worker, "active", False) else _option_pnl_parallel
    kernel(np.ascontiguousarray(returns), o["drift"], o["under"], o["spot"], o["strike"], o["tau"],
                o["rate"], o["vol"], o["is_call"], o["value0"], out)
    return out


@njit_cached(nogil=True)
def _heap_update(vals, idx, loss, first):
    m = vals.shape[1]
    rows = loss.shape[1]
    for p in range(vals.shape[0]):
        hv = vals[p]
        hi = idx[p]
        for s in range(rows):
            v = loss[p, s]
            if v > hv[0]:  # replace the smallest kept loss and sift it down
                i = 0
                while True:
                    c = 2 * i + 1
                    if c >= m:
                        break
                    if c + 1 < m and hv[c + 1] < hv[c]:
                        c += 1
                    if hv[c] >= v:
                        break
                    hv[i] = hv[c]
                    hi[i] = hi[c]
                    i = c
                hv[i] = v
                hi[i] = first + s


def tail_update(vals: np.ndarray, idx: np.ndarray, loss: np.ndarray, first: int):
    """Merge ``loss`` ``(P, rows)`` (scenarios ``first ..``) into the per-portfolio min-heaps, in place."""
    _heap_update(vals, idx, np.ascontiguousarray(loss), first)
    return vals, idx


def scatter_add(acc: np.ndarray, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    np.add.at(acc, rows, values)
    return acc
