"""The GPU's long-series path for indicators: when to take the chunked scan, and its array glue.

The loop bodies and the algorithm are in :mod:`gpu_trader._internal.scan_loops`. This
module decides when :mod:`gpu_trader.kernels.indicators` takes that path
(:func:`use_scan`, :func:`choose_chunk`: pure functions of the shape and the device's
:class:`DeviceProps`) and runs it (:func:`scan_compute`): it finds every series' first valid
bar (:func:`series_info`, one or two more phase-1 launches), then runs each affine pass as one
single-pass launch (:func:`single_pass_kernel`, chained scan with decoupled look-back;
:func:`use_single_pass`) or as phase 1, the carry scan (:func:`exclusive_affine_scan`) and
phase 3, and the windowed indicators as phase 3 alone, on the user's ``(n_series, T)`` arrays,
writing the ``(n_out, P, n_series, T)`` result in place (no transposed or padded copies;
:func:`traffic_bytes` counts the bytes per call, :func:`launches` the launches).

The glue is written against an array module ``xp`` (CuPy on a GPU; NumPy in numba's
CUDA simulator and in the CPU twin :mod:`gpu_trader.cpu_fallback.scan`) and an
executor ``exe`` that runs one per-thread entry point over ``nthreads`` thread indices
``j = 0 .. nthreads - 1``; it provides

* ``phase1(code, nthreads, nc, T, a, b, c, d, params, info, A, B, seed)`` and
  ``phase3(code, nthreads, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out)``:
  :data:`~gpu_trader._internal.scan_loops.PHASE1` / ``PHASE3`` ``[code]``;
* ``single_pass(code, nthreads, nc, T, a, b, c, d, params, info, A, B, seed, Ain, Bin, Ainc, Binc,
  flags, ticket, out)``: :func:`single_pass_kernel` ``(code)``;
* ``pairs_reduce(nthreads, m, blk, A, B, A2, B2)``,
  ``pairs_expand(nthreads, m, blk, A, B, A2in, B2in, Ain, Bin)`` and
  ``pairs_serial(nthreads, m, A, B, Ain, Bin)``: the carry-scan steps of the same names.

Importing this module imports numba (the loop bodies) but not ``numba.cuda`` (which
:func:`single_pass_kernel` imports when it builds a kernel).
"""
from __future__ import annotations

import functools
import math
import time
from typing import NamedTuple

import numpy as np
from numba.extending import register_jitable

from .._internal.indicator_specs import INPUT_FIELDS, MACD, SPECS
from .._internal.scan_loops import (
    FIRST_NONFINITE, FIRST_VALID, MACD_SIGNAL, N_STATES, SCAN_NAMES, WINDOWED_NAMES,
)

__all__ = [
    "DeviceProps", "H100", "SCAN_MIN_T", "ROWS_MIN_FILL", "MIN_CHUNK", "PAIR_BLOCK", "L2_SHARE", "use_scan",
    "use_single_pass", "choose_chunk", "carry_block", "traffic_bytes", "launches", "series_info",
    "exclusive_affine_scan", "single_pass_kernel", "scan_compute",
]


class DeviceProps(NamedTuple):
    """What the launch policies need to know about a GPU (read from the device by
    :func:`gpu_trader.kernels.launch.device_props`)."""

    sm_count: int        #: streaming multiprocessors
    threads_per_sm: int  #: resident threads per multiprocessor (its occupancy limit)
    l2_bytes: int = 50 << 20  #: L2 cache (an H100's 50 MiB where the reader does not say)

    @property
    def resident_threads(self) -> int:
        """Threads the device holds at once: ``sm_count * threads_per_sm``."""
        return self.sm_count * self.threads_per_sm


#: NVIDIA H100 SXM (132 SMs x 2048 resident threads, 50 MiB L2): the policies' device where there
#: is none (numba's simulator, PTX compilation, CPU-side tests).
H100 = DeviceProps(132, 2048, 50 << 20)


cuda = None  # numba.cuda, bound by single_pass_kernel (a module global: numba's simulator swaps it)


# --- automatic path choice: by occupancy, not by T ----------------------------------------
# The batch path runs rows = P * n_series threads, each walking its series in time order.
# It is taken when those threads fill at least ROWS_MIN_FILL of the threads the device
# holds at once (``DeviceProps.resident_threads``: 132 SMs x 2048 = 270,336 on an H100);
# below that the device is mostly idle (2000 series = 2000 threads = 0.7 % of an H100), and
# the chunked scan gives every (row, chunk of L bars) a thread: L is chosen so that
# rows * n_chunks ~ resident_threads (one thread per resident slot), never below MIN_CHUNK
# bars (the per-chunk overhead -- carry math, seed, the overlapping window of windowed
# indicators -- must stay small next to L) and, for windowed indicators, never below 2
# windows (8 for WMA's re-anchoring), so re-reading the preceding window costs at most half
# the chunk. Series shorter than SCAN_MIN_T bars stay on the batch path: a walk of a few
# hundred dependent steps costs less than the scan's 2-4 extra launches.
ROWS_MIN_FILL = 0.5
SCAN_MIN_T = 256
MIN_CHUNK = 16
# Fewest maps composed per thread in each level of the carry scan (see carry_block).
PAIR_BLOCK = 32
# The affine recurrences take the single-pass scan (use_single_pass): a thread reads its chunk
# in phase 1 and again in phase 3 of the same launch, moments later, so the second read is an
# L2 hit while the chunks in flight -- resident_threads * L bars of float64 -- fit in this
# share of the L2 (choose_chunk caps L so; MIN_CHUNK still bounds it below).
L2_SHARE = 0.75


def use_scan(name: str, n_rows: int, T: int, device=None) -> bool:
    """True when ``name`` over ``n_rows`` rows of ``T`` bars should take the scan path on
    ``device`` (a :class:`DeviceProps`; default :data:`H100`): the indicator has one, the
    series are at least :data:`SCAN_MIN_T` bars, and the batch path's ``n_rows`` threads would fill less than
    :data:`ROWS_MIN_FILL` of the device's resident threads."""
    device = device or H100
    return name in SCAN_NAMES and T >= SCAN_MIN_T and n_rows < ROWS_MIN_FILL * device.resident_threads


def use_single_pass(name: str) -> bool:
    """True when ``name``'s scan runs as one launch (:func:`single_pass_kernel`: chained scan with
    decoupled look-back) instead of phase 1, the carry scan and phase 3: the affine recurrences
    (EMA, RSI, ATR, OBV, MACD). The windowed indicators need no carry (phase 3 only)."""
    return name in SCAN_NAMES and name not in WINDOWED_NAMES


def choose_chunk(name: str, params: np.ndarray, n_rows: int, T: int, device=None) -> int:
    """Chunk length for the scan path (see the constants above); ``params`` is the host
    ``(P, k)`` float64 parameter grid (its first column is the window of windowed indicators),
    ``device`` as in :func:`use_scan`. For the single pass (:func:`use_single_pass`) at most the
    length whose in-flight chunks fit :data:`L2_SHARE` of the L2 (see there), at least
    :data:`MIN_CHUNK`."""
    device = device or H100
    L = -(-(n_rows * T) // device.resident_threads)
    if use_single_pass(name):
        k = len(INPUT_FIELDS[name])
        L = min(L, int(L2_SHARE * device.l2_bytes) // (device.resident_threads * k * 8))
    L = max(MIN_CHUNK, L)
    if name in WINDOWED_NAMES and params.size:
        # WMA replays up to 8 windows from its last re-anchor; the others re-read one window
        L = max(L, (8 if name == "wma" else 2) * int(np.max(params[:, 0])))
    return int(max(1, min(L, T)))


def carry_block(m: int) -> int:
    """Maps composed per thread in the carry scan of ``m`` chunk maps: ``ceil(sqrt(m))``, at
    least :data:`PAIR_BLOCK`, so the block maps fit one serial level: at most 3 launches
    (reduce, serial, expand) however many chunks."""
    return max(PAIR_BLOCK, math.isqrt(max(m - 1, 0)) + 1)


def traffic_bytes(name: str, n_series: int, n_params: int, T: int, itemsize: int, path: str) -> dict:
    """DRAM bytes one ``compute`` call moves, by a counting model: each launch reads each input
    item it touches once (re-reads by the same thread, such as a window's trailing bar, come
    from the caches) and writes each output item once; arrays of one item per series or chunk
    (parameters, begin indices, chunk maps and status words) are left out. ``path``: "rows",
    "scan" (three launches per affine pass: phase 1, carry scan, phase 3) or "single_pass"
    (:func:`single_pass_kernel`; for the windowed indicators the same as "scan"). (The
    design this replaced also copied the inputs in and the outputs out transposed and read
    every input once for the first valid bar: 8N instead of 3N for a float64 EMA scan of N
    bars in all, 6N instead of 2N on the batch path.)

    Returns ``{"kernels", "info", "total"}`` in bytes: the batch kernel or the scan
    phases (inputs once per parameter set; on "scan" twice for the affine recurrences,
    whose phase 1 and phase 3 both read them from DRAM, while "single_pass" re-reads the
    chunk within its launch from the L2, :data:`L2_SHARE`; MACD's float64 line is written
    once and read twice on "scan", once on "single_pass"), the first-valid searches (they
    stop at each chunk's first valid bar: only SMA and Bollinger read a whole input, for the
    first non-finite bar). A float64 EMA of N bars: 2N on "rows" and "single_pass", 3N on
    "scan".
    """
    if path not in ("rows", "scan", "single_pass"):
        raise ValueError(f"path must be 'rows', 'scan' or 'single_pass', got {path!r}")
    k = len(INPUT_FIELDS[name])
    n_out = SPECS[name][2]
    N = n_series * T
    R = n_params * N
    kernels = (k * R + n_out * R) * itemsize
    info = 0
    if path != "rows":
        if name not in WINDOWED_NAMES:
            if path == "scan":
                kernels += k * R * itemsize
            if SPECS[name][0] == MACD:
                kernels += (3 if path == "scan" else 2) * R * 8
        nonfinite = N * itemsize if name in ("sma", "bollinger") else 0
        info = nonfinite
    return {"kernels": kernels, "info": info, "total": kernels + info}


def launches(name: str, n_chunks: int, path: str, pair_block: int | None = None) -> int:
    """Kernel launches of one ``compute`` call on ``path`` ("rows", "scan", "single_pass") with
    ``n_chunks`` chunks per series: the batch kernel; or the first-valid search (two for SMA and
    Bollinger), then phase 3 (windowed), or per affine pass (two for MACD) phase 1, the carry
    scan (:func:`exclusive_affine_scan`'s launches) and phase 3 -- or one single-pass launch."""
    if path == "rows":
        return 1
    if path not in ("scan", "single_pass"):
        raise ValueError(f"path must be 'rows', 'scan' or 'single_pass', got {path!r}")
    info = 2 if name in ("sma", "bollinger") else 1
    if name in WINDOWED_NAMES:
        return info + 1
    passes = 2 if SPECS[name][0] == MACD else 1
    if path == "single_pass":
        return info + passes
    carry, m = 0, n_chunks
    blk = carry_block(m) if pair_block is None else pair_block
    while m > blk:  # reduce and expand per level, then one serial launch
        carry += 2
        m = -(-m // blk)
    return info + passes * (2 + carry + 1)


# --- array glue ------------------------------------------------------------------------
def series_info(name: str, xs, params, nc: int, xp, exe):
    """(n, 2) int64 per series: [begin (indicator_loops.first_valid* semantics), ff].

    ``xs``: the four ``(n, T)`` kernel inputs (copies of the first where the indicator has
    fewer); ``nc`` chunks per series. ``ff`` (SMA and Bollinger only, else 0) is the first
    index >= begin holding a non-finite value, T when none: TA-Lib's SMA running sum stays
    NaN from the bar where such a value leaves the window. Found by the per-chunk searches
    :data:`~gpu_trader._internal.scan_loops.FIRST_VALID` / ``FIRST_NONFINITE`` (one launch
    each, a chunk stops at its first hit) and a minimum over each series' chunks.
    """
    n, T = xs[0].shape
    info = xp.zeros((n, 2), dtype=np.int64)
    first = xp.empty((1, n, nc), dtype=np.float64)
    # B and seed are unused: small, distinct arrays (the simulator copies each argument back)
    unused_b = xp.zeros((1, 1, 1), dtype=np.float64)
    unused_seed = xp.zeros((1, 1), dtype=np.float64)
    exe.phase1(FIRST_VALID, n * nc, nc, T, xs[0], xs[1], xs[2], xs[3], params, info, first, unused_b,
               unused_seed)
    begin = first[0].min(axis=1)
    info[:, 0] = xp.where(begin < T, begin, T - 1)
    if name in ("sma", "bollinger"):
        exe.phase1(FIRST_NONFINITE, n * nc, nc, T, xs[0], xs[0], xs[0], xs[0], params, info, first, unused_b,
                   unused_seed)
        info[:, 1] = first[0].min(axis=1)
    return info


def exclusive_affine_scan(A, B, xp, exe, blk: int | None = None):
    """Exclusive left-to-right composition of the maps y -> A*y + B along axis 1.

    A, B: (Q, m) float64. Returns (Ain, Bin): the map of chunks [0, c) for each c. ``blk``
    maps are composed per thread at each level (default :func:`carry_block` ``(m)``: one
    serial launch for ``m <= PAIR_BLOCK``, else reduce, serial, expand).
    """
    Q, m = A.shape
    if blk is None:
        blk = carry_block(m)
    Ain = xp.empty_like(A)
    Bin = xp.empty_like(B)
    if m <= blk:
        exe.pairs_serial(Q, m, A, B, Ain, Bin)
        return Ain, Bin
    mb = -(-m // blk)
    A2 = xp.empty((Q, mb), dtype=np.float64)
    B2 = xp.empty((Q, mb), dtype=np.float64)
    exe.pairs_reduce(Q * mb, m, blk, A, B, A2, B2)
    A2in, B2in = exclusive_affine_scan(A2, B2, xp, exe, blk)
    exe.pairs_expand(Q * mb, m, blk, A, B, A2in, B2in, Ain, Bin)
    return Ain, Bin


@functools.lru_cache(maxsize=None)
def single_pass_kernel(code: int):
    """The single-pass scan of affine recurrence ``code`` (a key of ``scan_loops.N_STATES``): one
    CUDA kernel, one thread per (row, chunk), a chained scan with decoupled look-back (Merrill &
    Garland 2016, CUB's ``DeviceScan``) over the chunk maps of :mod:`gpu_trader._internal.scan_loops`.

    Launched as ``kernel(nthreads, nc, T, a, b, c, d, params, info, A, B, seed, Ain, Bin, Ainc,
    Binc, flags, ticket, out)`` with ``nthreads = rows * nc``; ``A .. Binc`` ``(S, rows, nc)``
    float64, ``flags`` ``(rows * nc,)`` int32 zeros (``scan_loops.FLAG_INVALID``), ``ticket``
    ``(1,)`` int32 zero. Each block claims the next block number from ``ticket`` (an atomic
    counter, not ``blockIdx``: a block only waits on chunks of lower numbers, which were claimed
    by blocks already running, so it cannot wait on one not yet scheduled); its thread ``j``
    then runs, for chunk ``cc`` of row ``r`` (``j = r * nc + cc``):

    1. the phase-1 body: the chunk's map (``A``, ``B``; the seed where the chunk holds it);
    2. (``cc > 0``) fence, status FLAG_AGGREGATE; then walks back over the row's earlier chunks,
       reading each status with an atomic (a coherent load, spinning while FLAG_INVALID), a
       fence, then its inclusive prefix (done) or its aggregate (``scan_loops.lookback_fold``);
    3. stores its exclusive and inclusive prefixes (``scan_loops.lookback_publish``), fence,
       status FLAG_PREFIX;
    4. the phase-3 body from the exclusive prefix: its outputs, the inputs re-read from the L2.

    Statuses are written after the values they announce (with a fence) and read before them
    (with a fence), so a reader never sees a half-written map.
    """
    global cuda  # a module global, as numba's simulator swaps the kernel's global ``cuda`` for its own
    from numba import cuda, float64, int32

    from .._internal import scan_loops
    from .._internal.jit import cuda_jit_cached

    phase1, phase3, S = scan_loops.PHASE1[code], scan_loops.PHASE3[code], N_STATES[code]
    backoff = _backoff()
    aggregate, prefix, invalid = scan_loops.FLAG_AGGREGATE, scan_loops.FLAG_PREFIX, scan_loops.FLAG_INVALID

    @cuda_jit_cached()
    def kernel(nthreads, nc, T, a, b, c, d, params, info, A, B, seed, Ain, Bin, Ainc, Binc, flags, ticket, out):
        claimed = cuda.shared.array(1, int32)
        if cuda.threadIdx.x == 0:
            claimed[0] = cuda.atomic.add(ticket, 0, 1)
        cuda.syncthreads()
        j = claimed[0] * cuda.blockDim.x + cuda.threadIdx.x
        if j < nthreads:
            phase1(j, nc, T, a, b, c, d, params, info, A, B, seed)
            r = j // nc
            cc = j - r * nc
            acc_a = cuda.local.array(S, float64)
            acc_b = cuda.local.array(S, float64)
            scan_loops.lookback_start(acc_a, acc_b)
            if cc > 0:
                cuda.threadfence()
                cuda.atomic.exch(flags, j, aggregate)
                p = cc - 1
                while True:
                    flag = cuda.atomic.add(flags, j - cc + p, 0)
                    if flag == invalid:
                        backoff()
                    else:
                        cuda.threadfence()
                        if scan_loops.lookback_fold(S, r, p, flag, A, B, Ainc, Binc, acc_a, acc_b):
                            break
                        p -= 1
            scan_loops.lookback_publish(S, r, cc, A, B, acc_a, acc_b, Ain, Bin, Ainc, Binc)
            cuda.threadfence()
            cuda.atomic.exch(flags, j, prefix)
            phase3(j, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out)

    return kernel


def _backoff():
    """The look-back's pause while a predecessor's status is FLAG_INVALID: ``nanosleep`` on a GPU
    (fewer polls of the status word, as CUB does); in numba's simulator, whose threads are Python
    threads, a yield of the interpreter lock, so the awaited thread runs."""
    from numba import config

    return _yield_thread if config.ENABLE_CUDASIM else _nanosleep


def _yield_thread():
    time.sleep(0)


@register_jitable
def _nanosleep():
    cuda.nanosleep(64)  # the module global single_pass_kernel sets (compiled for CUDA only)


def _affine_pass(code, nc, T, xs, params, info, out, R, xp, exe, blk, single_pass):
    """One affine recurrence, writing ``out``: the single-pass launch (``exe.single_pass``), or
    phase 1, the carry scan and phase 3."""
    S = N_STATES[code]
    A = xp.empty((S, R, nc), dtype=np.float64)
    B = xp.empty((S, R, nc), dtype=np.float64)
    seed = xp.zeros((S, R), dtype=np.float64)
    if single_pass:
        Ain, Bin, Ainc, Binc = (xp.empty((S, R, nc), dtype=np.float64) for _ in range(4))
        flags = xp.zeros((R * nc,), dtype=np.int32)
        ticket = xp.zeros((1,), dtype=np.int32)
        exe.single_pass(code, R * nc, nc, T, xs[0], xs[1], xs[2], xs[3], params, info, A, B, seed,
                        Ain, Bin, Ainc, Binc, flags, ticket, out)
        return
    exe.phase1(code, R * nc, nc, T, xs[0], xs[1], xs[2], xs[3], params, info, A, B, seed)
    Ain, Bin = exclusive_affine_scan(A.reshape(S * R, nc), B.reshape(S * R, nc), xp, exe, blk)
    exe.phase3(code, R * nc, nc, T, xs[0], xs[1], xs[2], xs[3], params, info,
               Ain.reshape(S, R, nc), Bin.reshape(S, R, nc), seed, out)


def scan_compute(name: str, inputs, params, n_out: int, xp, exe, chunk: int | None = None,
                 pair_block: int | None = None, single_pass: bool | None = None):
    """Scan path of ``compute``: inputs C-contiguous (n, T) arrays of ``xp``, params (P, k)
    float64 ``xp`` array; ``chunk`` (default :func:`choose_chunk` on an H100) is rounded to
    ``ceil(T / ceil(T / chunk))`` so the chunks cover the series evenly; ``pair_block`` as
    ``blk`` of :func:`exclusive_affine_scan`; ``single_pass`` (default :func:`use_single_pass`)
    runs each affine pass as one :func:`single_pass_kernel` launch instead of three phases.

    Returns (n_out, P, n, T) in the inputs' dtype, written in place by phase 3.
    """
    if name not in SCAN_NAMES:
        raise ValueError(f"{name!r} has no scan path")
    if single_pass is None:
        single_pass = use_single_pass(name)
    code = SPECS[name][0]
    x0 = inputs[0]
    n, T = x0.shape
    P = params.shape[0]
    R = P * n
    if chunk is None:
        host_params = params if isinstance(params, np.ndarray) else xp.asnumpy(params)
        chunk = choose_chunk(name, host_params, R, T)
    nc = -(-T // int(max(1, min(int(chunk), T))))
    xs = list(inputs) + [x0] * (4 - len(inputs))
    info = series_info(name, xs, params, nc, xp, exe)
    result = xp.empty((n_out, P, n, T), dtype=x0.dtype)
    out = result.reshape(n_out, R, T)
    if name in WINDOWED_NAMES:
        dummy3 = xp.zeros((1, 1, 1), dtype=np.float64)
        dummy2 = xp.zeros((1, 1), dtype=np.float64)
        exe.phase3(code, R * nc, nc, T, xs[0], xs[1], xs[2], xs[3], params, info,
                   dummy3, dummy3, dummy2, out)
    elif code == MACD:
        line = xp.empty((1, R, T), dtype=np.float64)
        _affine_pass(MACD, nc, T, xs, params, info, line, R, xp, exe, pair_block, single_pass)
        lx = line[0]
        _affine_pass(MACD_SIGNAL, nc, T, [lx, lx, lx, lx], params, info, out, R, xp, exe, pair_block,
                     single_pass)
    else:
        _affine_pass(code, nc, T, xs, params, info, out, R, xp, exe, pair_block, single_pass)
    return result
