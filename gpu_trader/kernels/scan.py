"""The GPU's long-series path for indicators: when to take the chunked scan, and its array glue.

The loop bodies and the algorithm are in :mod:`gpu_trader._internal.scan_loops`. This
module decides when :mod:`gpu_trader.kernels.indicators` takes that path
(:func:`use_scan`, :func:`choose_chunk`) and runs its three phases
(:func:`scan_compute`): it lays each series out in chunks (:func:`to_chunked`), finds
every series' first valid bar (:func:`series_info`), runs phase 1, the carry scan
(:func:`exclusive_affine_scan`) and phase 3, and lays the outputs back out
(:func:`from_chunked`).

The glue is written against an array module ``xp`` (CuPy on a GPU; NumPy in numba's
CUDA simulator and in the CPU twin :mod:`gpu_trader.cpu_fallback.scan`) and an
executor ``exe`` that runs one per-thread entry point over ``nthreads`` thread indices
``j = 0 .. nthreads - 1``; it provides

* ``phase1(code, nthreads, nc, T, a, b, c, d, params, info, A, B, seed)`` and
  ``phase3(code, nthreads, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out)``:
  :data:`~gpu_trader._internal.scan_loops.PHASE1` / ``PHASE3`` ``[code]``;
* ``pairs_reduce(nthreads, m, blk, A, B, A2, B2)``,
  ``pairs_expand(nthreads, m, blk, A, B, A2in, B2in, Ain, Bin)`` and
  ``pairs_serial(nthreads, m, A, B, Ain, Bin)``: the carry-scan steps of the same names.

Importing this module imports numba (the loop bodies) but not ``numba.cuda``.
"""
from __future__ import annotations

import numpy as np

from .._internal.indicator_specs import MACD, SPECS
from .._internal.scan_loops import MACD_SIGNAL, N_STATES, SCAN_NAMES, WINDOWED_NAMES

__all__ = [
    "SCAN_MAX_ROWS", "SCAN_MIN_T", "TARGET_THREADS", "MIN_CHUNK", "PAIR_BLOCK", "use_scan", "choose_chunk",
    "to_chunked", "from_chunked", "series_info", "exclusive_affine_scan", "scan_compute",
]

# --- automatic path choice -----------------------------------------------------------
# The batch path has rows = P * n_series threads; below SCAN_MAX_ROWS an H100
# (132 SMs x 2048 resident threads) is mostly idle, so when the series are also
# long (T >= SCAN_MIN_T) the chunked scan is used. The chunk length is chosen so
# that rows * n_chunks ~ TARGET_THREADS (~1 thread per resident slot on an H100),
# never below MIN_CHUNK bars (the per-chunk overhead -- carry math, seed, the
# overlapping window of windowed indicators -- must stay small next to L) and, for
# windowed indicators, never below 2 windows (so re-reading the preceding window
# costs at most half the chunk).
SCAN_MAX_ROWS = 4096
SCAN_MIN_T = 4096
TARGET_THREADS = 1 << 17
MIN_CHUNK = 64
# Maps composed per thread in each level of the carry scan.
PAIR_BLOCK = 32


def use_scan(name: str, n_rows: int, T: int) -> bool:
    """True when ``name`` over ``n_rows`` rows of ``T`` bars should take the scan path."""
    return name in SCAN_NAMES and n_rows < SCAN_MAX_ROWS and T >= SCAN_MIN_T


def choose_chunk(name: str, params: np.ndarray, n_rows: int, T: int) -> int:
    """Chunk length for the scan path (see the constants above); ``params`` is the host
    ``(P, k)`` float64 parameter grid (its first column is the window of windowed indicators)."""
    L = max(MIN_CHUNK, -(-(n_rows * T) // TARGET_THREADS))
    if name in WINDOWED_NAMES and params.size:
        # WMA replays up to 8 windows from its last re-anchor; the others re-read one window
        L = max(L, (8 if name == "wma" else 2) * int(np.max(params[:, 0])))
    return int(max(1, min(L, T)))


# --- array glue ------------------------------------------------------------------------
def to_chunked(x, L: int, nc: int, xp):
    """(n, T) -> (L, n*nc) chunk-major transposed copy, padded with NaN to nc*L bars."""
    n, T = x.shape
    Tp = nc * L
    if Tp != T:
        xpad = xp.empty((n, Tp), dtype=x.dtype)
        xpad[:, :T] = x
        xpad[:, T:] = np.nan
        x = xpad
    return xp.ascontiguousarray(x.reshape(n, nc, L).transpose(2, 0, 1)).reshape(L, n * nc)


def from_chunked(oc, P: int, n: int, nc: int, T: int, xp):
    """(n_out, L, P*n*nc) -> (n_out, P, n, T) C-contiguous."""
    n_out, L = oc.shape[0], oc.shape[1]
    o = xp.ascontiguousarray(oc.reshape(n_out, L, P, n, nc).transpose(0, 2, 3, 4, 1))
    o = o.reshape(n_out, P, n, nc * L)
    if nc * L != T:
        o = xp.ascontiguousarray(o[..., :T])
    return o


def series_info(name: str, inputs, xp):
    """(n, 2) int64 per series: [begin (indicator_loops.first_valid* semantics), ff].

    ``ff`` (SMA and Bollinger only, else 0) is the first index >= begin holding a
    non-finite value, T when none: TA-Lib's SMA running sum stays NaN from the bar
    where such a value leaves the window.
    """
    x0 = inputs[0]
    n, T = x0.shape
    valid = x0 == x0
    for x in inputs[1:]:
        valid = valid & (x == x)
    begin = xp.where(valid.any(axis=1), xp.argmax(valid, axis=1), T - 1).astype(np.int64)
    info = xp.zeros((n, 2), dtype=np.int64)
    info[:, 0] = begin
    if name in ("sma", "bollinger"):
        idx = xp.arange(T, dtype=np.int64)
        bad = ~xp.isfinite(x0) & (idx[None, :] >= begin[:, None])
        info[:, 1] = xp.where(bad.any(axis=1), xp.argmax(bad, axis=1), T)
    return info


def exclusive_affine_scan(A, B, xp, exe, blk: int = PAIR_BLOCK):
    """Exclusive left-to-right composition of the maps y -> A*y + B along axis 1.

    A, B: (Q, m) float64. Returns (Ain, Bin): the map of chunks [0, c) for each c.
    """
    Q, m = A.shape
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


def _affine_pass(code, nc, T, xs, params, info, out, R, xp, exe, blk):
    """Phase 1, the carry scan and phase 3 of one affine recurrence, writing ``out``."""
    S = N_STATES[code]
    A = xp.empty((S, R, nc), dtype=np.float64)
    B = xp.empty((S, R, nc), dtype=np.float64)
    seed = xp.zeros((S, R), dtype=np.float64)
    exe.phase1(code, R * nc, nc, T, xs[0], xs[1], xs[2], xs[3], params, info, A, B, seed)
    Ain, Bin = exclusive_affine_scan(A.reshape(S * R, nc), B.reshape(S * R, nc), xp, exe, blk)
    exe.phase3(code, R * nc, nc, T, xs[0], xs[1], xs[2], xs[3], params, info,
               Ain.reshape(S, R, nc), Bin.reshape(S, R, nc), seed, out)


def scan_compute(name: str, inputs, params, n_out: int, xp, exe, chunk: int | None = None,
                 pair_block: int = PAIR_BLOCK):
    """Scan path of ``compute``: inputs (n, T) arrays of ``xp``, params (P, k) float64 ``xp`` array.

    Returns (n_out, P, n, T) in the inputs' dtype.
    """
    if name not in SCAN_NAMES:
        raise ValueError(f"{name!r} has no scan path")
    code = SPECS[name][0]
    x0 = inputs[0]
    n, T = x0.shape
    P = params.shape[0]
    R = P * n
    if chunk is None:
        host_params = params if isinstance(params, np.ndarray) else xp.asnumpy(params)
        chunk = choose_chunk(name, host_params, R, T)
    L = int(max(1, min(int(chunk), T)))
    nc = -(-T // L)
    info = series_info(name, inputs, xp)
    xs = [to_chunked(x, L, nc, xp) for x in inputs]
    xs = xs + [xs[0]] * (4 - len(xs))
    out = xp.empty((n_out, L, R * nc), dtype=x0.dtype)
    if name in WINDOWED_NAMES:
        dummy3 = xp.zeros((1, 1, 1), dtype=np.float64)
        dummy2 = xp.zeros((1, 1), dtype=np.float64)
        exe.phase3(code, R * nc, nc, T, xs[0], xs[1], xs[2], xs[3], params, info,
                   dummy3, dummy3, dummy2, out)
    elif code == MACD:
        line = xp.empty((1, L, R * nc), dtype=np.float64)
        _affine_pass(MACD, nc, T, xs, params, info, line, R, xp, exe, pair_block)
        lx = line[0]
        _affine_pass(MACD_SIGNAL, nc, T, [lx, lx, lx, lx], params, info, out, R, xp, exe, pair_block)
    else:
        _affine_pass(code, nc, T, xs, params, info, out, R, xp, exe, pair_block)
    return from_chunked(out, P, n, nc, T, xp)
