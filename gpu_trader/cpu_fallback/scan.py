"""CPU-compiled twin of the CUDA chunked scan: checks the scan's math without a GPU.

The GPU's long-series indicator path (:mod:`gpu_trader.kernels.scan`, loop bodies in
:mod:`gpu_trader._internal.scan_loops`) launches one CUDA thread per (row, chunk).
Here the very same ``register_jitable`` bodies are compiled for the CPU by numba and
driven by serial loops, one iteration per thread index, on NumPy arrays, through the
same array glue (:func:`gpu_trader.kernels.scan.scan_compute`). Tests compare
:func:`twin_compute` with the CPU backend's batch indicators to check the scan's math
(chunk bounds, carries, seeds, windows) on machines without a GPU.

This is a test instrument, not a backend area: no public function reaches it through
:meth:`gpu_trader.backend.Backend.ops`, and the CPU backend's indicators never take
the scan path (:mod:`gpu_trader.cpu_fallback.indicators` walks each (series, parameter
set) row in time order).
numba is imported with this module; drivers are compiled (or loaded from the on-disk
cache) on first use.
"""
from __future__ import annotations

import functools

import numpy as np

from .._internal.jit import njit_cached
from .._internal.scan_loops import (
    FLAG_AGGREGATE, FLAG_PREFIX, N_STATES, PHASE1, PHASE3, lookback_fold, lookback_publish, lookback_start,
    pairs_expand, pairs_reduce, pairs_serial,
)
from ..kernels.scan import PAIR_BLOCK, scan_compute

__all__ = ["CpuScanExecutor", "twin_compute"]


# One driver per (entry point, indicator code), closing over that indicator's body, so
# each compiled driver holds one indicator only (as the CUDA kernels do).
@functools.lru_cache(maxsize=None)
def _cpu_driver(kind: str, code: int):
    """Compiled loop running entry point ``kind`` (phase1, phase3, single_pass, pairs_reduce,
    pairs_expand, pairs_serial; ``code`` picks the indicator of the phases) for j = 0 .. nthreads - 1."""
    if kind == "phase1":
        body = PHASE1[code]

        def drive(nthreads, nc, T, a, b, c, d, params, info, A, B, seed):
            for j in range(nthreads):
                body(j, nc, T, a, b, c, d, params, info, A, B, seed)
    elif kind == "phase3":
        body = PHASE3[code]

        def drive(nthreads, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out):
            for j in range(nthreads):
                body(j, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out)
    elif kind == "single_pass":  # the look-back in thread order: each chunk finds its predecessor's prefix
        phase1, phase3, S = PHASE1[code], PHASE3[code], N_STATES[code]

        def drive(nthreads, nc, T, a, b, c, d, params, info, A, B, seed, Ain, Bin, Ainc, Binc, flags, ticket,
                  out):
            acc_a = np.empty(S)
            acc_b = np.empty(S)
            for j in range(nthreads):
                phase1(j, nc, T, a, b, c, d, params, info, A, B, seed)
                r = j // nc
                cc = j - r * nc
                lookback_start(acc_a, acc_b)
                if cc > 0:
                    flags[j] = FLAG_AGGREGATE
                    p = cc - 1
                    while not lookback_fold(S, r, p, flags[j - cc + p], A, B, Ainc, Binc, acc_a, acc_b):
                        p -= 1
                lookback_publish(S, r, cc, A, B, acc_a, acc_b, Ain, Bin, Ainc, Binc)
                flags[j] = FLAG_PREFIX
                phase3(j, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out)
    elif kind == "pairs_reduce":
        def drive(nthreads, m, blk, A, B, A2, B2):
            for j in range(nthreads):
                pairs_reduce(j, m, blk, A, B, A2, B2)
    elif kind == "pairs_expand":
        def drive(nthreads, m, blk, A, B, A2in, B2in, Ain, Bin):
            for j in range(nthreads):
                pairs_expand(j, m, blk, A, B, A2in, B2in, Ain, Bin)
    elif kind == "pairs_serial":
        def drive(nthreads, m, A, B, Ain, Bin):
            for j in range(nthreads):
                pairs_serial(j, m, A, B, Ain, Bin)
    else:
        raise ValueError(kind)
    return njit_cached(nogil=True)(drive)


class CpuScanExecutor:
    """The executor of :func:`gpu_trader.kernels.scan.scan_compute` on the CPU: each step runs
    its body once per GPU thread index, in a compiled serial loop, on NumPy arrays."""

    def phase1(self, code, nthreads, *args):
        _cpu_driver("phase1", code)(nthreads, *args)

    def phase3(self, code, nthreads, *args):
        _cpu_driver("phase3", code)(nthreads, *args)

    def single_pass(self, code, nthreads, *args):
        _cpu_driver("single_pass", code)(nthreads, *args)

    def pairs_reduce(self, nthreads, *args):
        _cpu_driver("pairs_reduce", 0)(nthreads, *args)

    def pairs_expand(self, nthreads, *args):
        _cpu_driver("pairs_expand", 0)(nthreads, *args)

    def pairs_serial(self, nthreads, *args):
        _cpu_driver("pairs_serial", 0)(nthreads, *args)


def twin_compute(name: str, inputs, params: np.ndarray, n_out: int, chunk: int | None = None,
                 pair_block: int = PAIR_BLOCK, single_pass: bool | None = None) -> np.ndarray:
    """The scan path on NumPy arrays with CPU-compiled bodies.

    Same contract as :func:`gpu_trader.cpu_fallback.indicators.compute`: inputs are 1-4
    ``(n_series, T)`` arrays of one float dtype, ``params`` is ``(P, k)`` float64, the
    result is ``(n_out, P, n_series, T)`` in the inputs' dtype (NaN before each series'
    first output, as the batch). ``chunk`` (default :func:`~gpu_trader.kernels.scan.choose_chunk`)
    and ``pair_block`` set the chunk length and the carry scan's block size; ``single_pass``
    (default :func:`~gpu_trader.kernels.scan.use_single_pass`) picks the single-pass scan (its
    look-back run in thread order, so each chunk folds its predecessor's inclusive prefix; the
    CUDA simulator runs it concurrently) or the three phases.
    """
    params = np.ascontiguousarray(params, dtype=np.float64)
    return scan_compute(name, [np.ascontiguousarray(x) for x in inputs], params, n_out, np,
                        CpuScanExecutor(), chunk, pair_block, single_pass)
