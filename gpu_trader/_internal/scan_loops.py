"""Loop bodies of the chunked parallel-in-time scans for the indicator recurrences (the GPU's
long-series path).

The batch kernels run one thread per (parameter set, series) and walk the series in
time order. That leaves a GPU idle when there are few series and many bars (one
10M-bar series is one thread). This module splits each series into chunks of
``L`` bars and gives every (row, chunk) its own thread.

* **Affine recurrences** -- EMA ``y = (x - y)*k + y`` (``y_t = (1-k) y_{t-1} + k x_t``),
  Wilder smoothing (RSI's gain/loss ``g = (g*(p-1) + up) * (1/p)``, ATR's
  ``a = alpha*tr + beta*a``), OBV's running sum, and MACD (fast and slow EMAs, then
  the signal EMA over their difference, as a second pass) -- use a 3-phase scan:

  1. each chunk runs the row body's recurrence from state 0 over its bars and,
     beside it, the homogeneous recurrence from state 1: that is the chunk's affine
     map ``y_out = A*y_in + B``. The chunk holding the series' ``start`` bar also
     computes the TA-Lib seed (the mean of the first window), exactly like the row
     body;
  2. an exclusive scan composes the chunk maps
     (:func:`gpu_trader.kernels.scan.exclusive_affine_scan` over :func:`pairs_reduce`,
     :func:`pairs_expand` and :func:`pairs_serial`: a recursive blocked scan -- blocks of
     ``pair_block`` maps are composed by one thread each, the block maps are scanned the
     same way, then expanded), giving every chunk its carry-in ``A_in * seed + B_in``;
  3. each chunk re-runs the exact row-body recurrence (same operations, same order)
     from its carry-in and writes its outputs. Only the carry-ins differ from the
     sequential states, by rounding (~1e-16 relative: these recurrences contract).

  The GPU runs the three steps as one launch per pass (the single-pass scan with decoupled
  look-back, :func:`gpu_trader.kernels.scan.single_pass_kernel`): the chunk's thread runs
  phase 1, composes its carry-in from its predecessors' published maps
  (:func:`lookback_fold`, :func:`lookback_publish`) and runs phase 3; the three-phase form
  remains for comparison (``scan_compute(single_pass=False)``).

* **Windowed indicators** need no carry: the chunk holding ``start`` runs the row
  body from the series' beginning; a later chunk rebuilds the state from the bars
  before its first output (overlapping the previous chunk):

  - SMA and the Bollinger middle band: the sum of the ``window - 1`` preceding bars.
    TA-Lib's running sum stays NaN for good once a non-finite bar has left the
    window; ``ff`` (the series' first non-finite index, computed up front) says
    whether that has happened before the chunk;
  - Bollinger's variance: sums shifted by the window mean, as if re-seeded at the
    bar before the chunk (the row body re-seeds on a data-dependent schedule, so
    this agrees with it to rounding);
  - WMA: bit-exact. TA-Lib re-anchors its running sums every ``8 * window`` bars
    after ``start`` (a fixed schedule), so the chunk rebuilds the sums at the last
    re-anchor before it (or at ``begin``) and replays to its first output;
  - VWAP: window sums of the finite bars and a count of the non-finite ones.

* STOCH has no scan path (its rolling min/max feed two SMAs); it always takes the
  batch path.

Leading NaNs are skipped per series exactly like the row bodies do
(``first_valid*``: the first index where every input is non-NaN, else the last
index), so ragged batches give the same NaN prefixes; float32 input is read as
float64 (``f64``) and the result rounded once, like the row bodies.

Layout: the user's. Inputs are ``(n_series, T)`` and outputs ``(n_out, rows, T)`` (the
C-contiguous ``(n_out, P, n_series, T)`` result, row ``r = p*n_series + i``), read and
written in place: no transposed or padded copies. Chunk ``c`` of a series is bars
``[c*L, min((c+1)*L, T))`` with ``L = ceil(T / nc)``, so at each step the threads of a warp
(consecutive chunks of a row) touch addresses ``L`` items apart; each such 32-byte sector
serves the next ``32 / itemsize`` steps of its thread from the L1 cache, so the DRAM traffic
stays one pass per read and write (see :func:`gpu_trader.kernels.scan.traffic_bytes`).

Every loop body here is a plain function decorated with ``register_jitable``, so
the same steps compile for CUDA (launched by :mod:`gpu_trader.kernels.indicators`),
for the CPU (:mod:`gpu_trader.cpu_fallback.scan`, the "twin" that tests the scan
without a GPU) and run as plain Python (numba's CUDA simulator). The per-thread entry
points (:data:`PHASE1`, :data:`PHASE3`, the ``pairs_*`` carry-scan steps) take a thread
index ``j``; the path policy (when to scan, the chunk length) and the array glue that
lays the series out in chunks and runs the three phases live in
:mod:`gpu_trader.kernels.scan`. These bodies do their arithmetic with the one-step
primitives of :mod:`gpu_trader._internal.indicator_loops` (``indicator_loops.ema_step``,
``indicator_loops.rsi_step``, ``indicator_loops.bbands_step``, ...), the very functions the
row bodies call (and their window sums, on the series' row ``x[row]``), so a step is
computed exactly as in the row body; only the bookkeeping (chunk bounds, carries, where a
chunk resumes) is written here
(the tests compare both paths with the CPU backend).

Not mirrored: sums that overflow to inf from finite inputs (only non-finite input
bars count as poison for SMA/Bollinger), and a rolling VWAP volume that is exactly
0.0 in one summation order but a rounding residue in the other.
"""
from __future__ import annotations

import math

from numba import float64 as f64
from numba.extending import register_jitable

from . import indicator_loops
from .indicator_specs import ATR, BBANDS, EMA, MACD, OBV, RSI, SMA, SPECS, VWAP, WMA

__all__ = [
    "MACD_SIGNAL", "FIRST_VALID", "FIRST_NONFINITE", "N_STATES", "TINY", "PHASE1", "PHASE3", "SCAN_NAMES",
    "WINDOWED_NAMES", "pairs_reduce", "pairs_expand", "pairs_serial", "compose_after", "FLAG_INVALID",
    "FLAG_AGGREGATE", "FLAG_PREFIX", "lookback_start", "lookback_fold", "lookback_publish",
]

# Internal code of MACD's second pass (the signal EMA over the MACD line).
MACD_SIGNAL = 100
# Internal codes of the per-chunk searches for each series' first valid bar and (SMA,
# Bollinger) its first non-finite bar from there: phase-1 entries writing A[0, series, chunk].
FIRST_VALID = 101
FIRST_NONFINITE = 102

# Number of affine states each phase-1 body carries per row (the leading axis of its A, B, seed).
N_STATES = {EMA: 1, RSI: 2, ATR: 1, OBV: 1, MACD: 2, MACD_SIGNAL: 1}

# Smallest positive normal float64: chunk maps' A are clamped to it so that an
# underflowed product never turns inf * 0 into NaN (TA-Lib keeps an inf Wilder
# average inf forever). Where A would be exactly 0 the clamp changes nothing
# visible: TINY * y is far below B's rounding.
TINY = 2.2250738585072014e-308


@register_jitable
def at(x, row, t):
    """Bar ``t`` of series ``row`` of x (read as float64, like indicator_loops.f64)."""
    return f64(x[row, t])


@register_jitable
def clamp_a(a):
    if a < TINY:
        return TINY
    return a


@register_jitable
def at_least(t, lo):
    """max(t, lo) on bar indices (spelled out: it compiles the same on every target)."""
    return t if t > lo else lo


@register_jitable
def first_output(out, n_out, lo, hi, start, r):
    """NaN the bars of chunk [lo, hi) before ``start`` in each of the ``n_out`` outputs and
    return the chunk's first output bar (>= hi when the chunk has none)."""
    for k in range(n_out):
        nan_prefix(out, k, lo, hi, start, r)
    return at_least(start, lo)


@register_jitable
def resume(lo, start, Ain, Bin, seed, r, cc, out):
    """Where phase 3 of a one-state scan starts in chunk [lo, ...): at the seed, written
    out at ``start``, when the chunk holds it; else at ``lo`` from the carry-in."""
    if lo <= start:
        y = seed[0, r]
        out[0, r, start] = y
        return y, start + 1
    return carry_in(Ain, Bin, seed, 0, r, cc), lo


@register_jitable
def nan_prefix(out, k, lo, hi, start, r):
    """out[k] = NaN for the bars of chunk [lo, hi) before ``start``."""
    e = hi
    if start < e:
        e = start
    for t in range(lo, e):
        out[k, r, t] = math.nan


# ---- EMA (also MACD's three EMAs) ----------------------------------------------------
@register_jitable
def ema_p1(x, row, cc, lo, hi, seed_begin, period, A, B, seed, s, r):
    """Phase 1 of an EMA of ``period`` seeded at ``start = seed_begin + period - 1`` with
    the mean of x[seed_begin : seed_begin + period] (indicator_loops.ema_seed)."""
    start = seed_begin + period - 1
    if lo <= start < hi:
        total = 0.0
        for t in range(seed_begin, seed_begin + period):
            total += at(x, row, t)
        seed[s, r] = total / period
    k = 2.0 / (period + 1)
    aa = 1.0
    bb = 0.0
    t0 = at_least(start + 1, lo)
    for t in range(t0, hi):
        bb = indicator_loops.ema_step(bb, at(x, row, t), k)
        aa = clamp_a(indicator_loops.ema_step(aa, 0.0, k))
    A[s, r, cc] = aa
    B[s, r, cc] = bb


@register_jitable
def carry_in(Ain, Bin, seed, s, r, cc):
    return Ain[s, r, cc] * seed[s, r] + Bin[s, r, cc]


@register_jitable
def ema_p3(x, row, cc, lo, hi, seed_begin, period, Ain, Bin, seed, r, out):
    start = seed_begin + period - 1
    nan_prefix(out, 0, lo, hi, start, r)
    if start >= hi:
        return
    if period == 1:  # TA-Lib >= 0.8: an exact copy
        t0 = at_least(start, lo)
        for t in range(t0, hi):
            out[0, r, t] = x[row, t]
        return
    k = 2.0 / (period + 1)
    y, t0 = resume(lo, start, Ain, Bin, seed, r, cc, out)
    for t in range(t0, hi):
        y = indicator_loops.ema_step(y, at(x, row, t), k)
        out[0, r, t] = y


# ---- RSI (Wilder gain/loss, TA-Lib >= 0.8 branch-free split) -------------------------------
@register_jitable
def rsi_p1(x, row, cc, lo, hi, begin, period, A, B, seed, r):
    start = begin + period
    inv_period = 1.0 / period
    if lo <= start < hi:
        prev = at(x, row, begin)
        gain = 0.0
        loss = 0.0
        for t in range(begin + 1, start + 1):
            v = at(x, row, t)
            gain, loss = indicator_loops.rsi_add(gain, loss, v - prev)
            prev = v
        loss *= inv_period
        gain *= inv_period
        seed[0, r] = gain
        seed[1, r] = loss
    gg = 0.0
    ll = 0.0
    aa = 1.0
    t0 = at_least(start + 1, lo)
    if t0 < hi:
        prev = at(x, row, t0 - 1)
        for t in range(t0, hi):
            v = at(x, row, t)
            gg, ll = indicator_loops.rsi_step(gg, ll, v - prev, period, inv_period)
            prev = v
            aa *= period - 1
            aa *= inv_period
            aa = clamp_a(aa)
    A[0, r, cc] = aa
    A[1, r, cc] = aa
    B[0, r, cc] = gg
    B[1, r, cc] = ll


@register_jitable
def rsi_p3(x, row, cc, lo, hi, begin, period, Ain, Bin, seed, r, out):
    start = begin + period
    nan_prefix(out, 0, lo, hi, start, r)
    if start >= hi:
        return
    inv_period = 1.0 / period
    if lo <= start:
        gain = seed[0, r]
        loss = seed[1, r]
        out[0, r, start] = indicator_loops.rsi_ratio(gain, loss)
        t0 = start + 1
    else:
        gain = carry_in(Ain, Bin, seed, 0, r, cc)
        loss = carry_in(Ain, Bin, seed, 1, r, cc)
        t0 = lo
    if t0 < hi:
        prev = at(x, row, t0 - 1)
        for t in range(t0, hi):
            v = at(x, row, t)
            gain, loss = indicator_loops.rsi_step(gain, loss, v - prev, period, inv_period)
            prev = v
            out[0, r, t] = indicator_loops.rsi_ratio(gain, loss)


# ---- ATR (TA-Lib >= 0.8 Wilder step: prev = alpha*tr + beta*prev) -------------------------
@register_jitable
def atr_p1(h, lw, c, row, cc, lo, hi, begin, period, A, B, seed, r):
    start = begin + period
    aa = 1.0
    bb = 0.0
    alpha, beta = indicator_loops.atr_coefficients(period)
    if lo <= start < hi:
        total = 0.0
        for t in range(begin + 1, start + 1):
            total += indicator_loops.true_range(at(h, row, t), at(lw, row, t), at(c, row, t - 1))
        seed[0, r] = total / period
    t0 = at_least(start + 1, lo)
    if t0 < hi:
        pc = at(c, row, t0 - 1)
        for t in range(t0, hi):
            tr = indicator_loops.true_range(at(h, row, t), at(lw, row, t), pc)
            pc = at(c, row, t)
            bb = indicator_loops.atr_step(bb, tr, alpha, beta)
            aa = clamp_a(beta * aa)
    A[0, r, cc] = aa
    B[0, r, cc] = bb


@register_jitable
def atr_p3(h, lw, c, row, cc, lo, hi, begin, period, Ain, Bin, seed, r, out):
    start = begin + period
    nan_prefix(out, 0, lo, hi, start, r)
    if start >= hi:
        return
    alpha, beta = indicator_loops.atr_coefficients(period)
    prev, t0 = resume(lo, start, Ain, Bin, seed, r, cc, out)
    if t0 < hi:
        pc = at(c, row, t0 - 1)
        for t in range(t0, hi):
            tr = indicator_loops.true_range(at(h, row, t), at(lw, row, t), pc)
            pc = at(c, row, t)
            prev = indicator_loops.atr_step(prev, tr, alpha, beta)
            out[0, r, t] = prev


# ---- OBV (running signed volume; A = 1) ---------------------------------------------------
@register_jitable
def obv_p1(cl, vo, row, cc, lo, hi, begin, A, B, seed, r):
    if lo <= begin < hi:
        seed[0, r] = at(vo, row, begin)
    bb = 0.0
    t0 = at_least(begin + 1, lo)
    if t0 < hi:
        prev = at(cl, row, t0 - 1)
        for t in range(t0, hi):
            cv = at(cl, row, t)
            bb = indicator_loops.obv_step(bb, prev, cv, at(vo, row, t))
            prev = cv
    A[0, r, cc] = 1.0
    B[0, r, cc] = bb


@register_jitable
def obv_p3(cl, vo, row, cc, lo, hi, begin, Ain, Bin, seed, r, out):
    nan_prefix(out, 0, lo, hi, begin, r)
    if begin >= hi:
        return
    obv, t0 = resume(lo, begin, Ain, Bin, seed, r, cc, out)
    if t0 < hi:
        prev = at(cl, row, t0 - 1)
        for t in range(t0, hi):
            cv = at(cl, row, t)
            obv = indicator_loops.obv_step(obv, prev, cv, at(vo, row, t))
            out[0, r, t] = obv
            prev = cv


# ---- MACD: pass 1 (fast and slow EMAs -> line), pass 2 (signal EMA of the line) ---------
@register_jitable
def macd_periods(params, p):
    fast = int(params[p, 0])
    slow = int(params[p, 1])
    signal = int(params[p, 2])
    if slow < fast:
        fast, slow = slow, fast
    return fast, slow, signal


@register_jitable
def macd_line_p3(x, row, cc, lo, hi, begin, fast, slow, Ain, Bin, seed, r, out):
    """Writes the MACD line (float64 buffer) for t >= first_macd, NaN before."""
    first = begin + slow - 1
    nan_prefix(out, 0, lo, hi, first, r)
    if first >= hi:
        return
    k_fast, k_slow, _ = indicator_loops.macd_coefficients(fast, slow, 1)
    if lo <= first:
        ema_fast = seed[0, r]
        ema_slow = seed[1, r]
        out[0, r, first] = ema_fast - ema_slow
        t0 = first + 1
    else:
        ema_fast = carry_in(Ain, Bin, seed, 0, r, cc)
        ema_slow = carry_in(Ain, Bin, seed, 1, r, cc)
        t0 = lo
    for t in range(t0, hi):
        v = at(x, row, t)
        ema_fast = indicator_loops.ema_step(ema_fast, v, k_fast)
        ema_slow = indicator_loops.ema_step(ema_slow, v, k_slow)
        out[0, r, t] = ema_fast - ema_slow


@register_jitable
def macd_signal_p3(line, row, cc, lo, hi, first, signal, Ain, Bin, seed, r, out):
    start = first + signal - 1
    for k in range(3):
        nan_prefix(out, k, lo, hi, start, r)
    if start >= hi:
        return
    k_sig = 2.0 / (signal + 1)
    if lo <= start:
        sig = seed[0, r]  # = line[start] exactly when signal == 1
        v = at(line, row, start)
        out[0, r, start] = v
        out[1, r, start] = sig
        out[2, r, start] = v - sig
        t0 = start + 1
    else:
        sig = carry_in(Ain, Bin, seed, 0, r, cc)
        t0 = lo
    for t in range(t0, hi):
        v = at(line, row, t)
        sig = v if signal == 1 else indicator_loops.ema_step(sig, v, k_sig)
        out[0, r, t] = v
        out[1, r, t] = sig
        out[2, r, t] = v - sig


# ---- windowed: SMA, WMA, Bollinger, VWAP ---------------------------------------------------
@register_jitable
def sma_p3(x, row, cc, lo, hi, begin, ff, period, out, r):
    start = begin + period - 1
    t0 = first_output(out, 1, lo, hi, start, r)
    if t0 >= hi:
        return
    bp = t0 - period + 1
    total = 0.0
    for t in range(bp, t0):
        total += at(x, row, t)
    if ff <= t0 - period:
        total = math.nan
    for t in range(t0, hi):
        total, out[0, r, t] = indicator_loops.sma_step(total, at(x, row, t), at(x, row, bp), period)
        bp += 1


@register_jitable
def wma_p3(x, row, cc, lo, hi, begin, period, out, r):
    """TA_WMA (indicator_loops.wma_row), bit-exact: the running sums are re-anchored on a fixed schedule
    (every 8 * period bars after ``start``), so the chunk rebuilds the exact sequential state
    from the last re-anchor before its first output (or from ``begin``) and replays to it."""
    start = begin + period - 1
    t0 = first_output(out, 1, lo, hi, start, r)
    if t0 >= hi:
        return
    if period == 1:
        for t in range(t0, hi):
            out[0, r, t] = x[row, t]
        return
    divider = indicator_loops.wma_divider(period)
    every = 8 * period
    m = (t0 - start) // every
    if m == 0:
        period_sub, period_sum = indicator_loops.wma_sums(x[row], begin, period - 1)
        trailing_value = 0.0
        trailing = begin
        t1 = start
    else:
        anchor = start + m * every - 1  # state right after processing bar ``anchor``
        period_sub, period_sum = indicator_loops.wma_sums(x[row], anchor - period + 1, period)
        trailing_value = at(x, row, anchor - period + 1)
        trailing = anchor - period + 2
        period_sum -= period_sub
        t1 = anchor + 1
    countdown = every - (t1 - start) % every
    for t in range(t1, hi):
        v = at(x, row, t)
        period_sub, period_sum = indicator_loops.wma_push(period_sub, period_sum, v, trailing_value, period)
        countdown -= 1
        if countdown <= 0:
            countdown = every
            period_sub, period_sum = indicator_loops.wma_sums(x[row], t - period + 1, period)
        trailing_value = at(x, row, trailing)
        trailing += 1
        if t >= t0:
            out[0, r, t] = period_sum / divider
        period_sum -= period_sub


@register_jitable
def bbands_p3(x, row, cc, lo, hi, begin, ff, period, nstd, out, r):
    """indicator_loops.bbands_row from the chunk's first output. The chunk holding ``start`` starts exactly
    like the row body; a later chunk starts as if the variance sums had just been re-seeded at
    the bar before it (TA-Lib re-seeds on a data-dependent schedule, so the variance agrees with
    the sequential one to rounding), and its SMA sum is poisoned like TA-Lib's when a
    non-finite value already passed through the window (``ff``)."""
    start = begin + period - 1
    t0 = first_output(out, 3, lo, hi, start, r)
    if t0 >= hi:
        return
    inv_period = 1.0 / period
    if t0 == start:
        shift = at(x, row, begin)
        ma_total = 0.0
        for t in range(begin, start):
            ma_total += at(x, row, t)
        var1, var2 = indicator_loops.shifted_moments(x[row], begin, start - 1, shift)
    else:
        ws = t0 - period
        shift, var1, var2, _ = indicator_loops.bbands_reseed(x[row], ws, t0 - 1, inv_period)
        ma_total = 0.0
        for t in range(ws + 1, t0):
            ma_total += at(x, row, t)
        if ff <= t0 - period:
            ma_total = math.nan
    countdown = 32 * period
    trailing = t0 - period + 1
    for t in range(t0, hi):
        ma_total, var1, var2, mean, variance, drifted = indicator_loops.bbands_step(
            ma_total, shift, var1, var2, at(x, row, t), at(x, row, trailing), period, inv_period)
        trailing += 1
        countdown -= 1
        if drifted or countdown <= 0:
            countdown = 32 * period
            shift, var1, var2, variance = indicator_loops.bbands_reseed(x[row], t - period + 1, t, inv_period)
        out[0, r, t], out[1, r, t], out[2, r, t] = indicator_loops.bbands_bands(mean, variance, nstd)


@register_jitable
def vwap_p3(h, lw, c, vo, row, cc, lo, hi, begin, period, out, r):
    """indicator_loops.vwap_row from the chunk's first output: window sums of the finite bars and a count
    of the non-finite ones, rebuilt over the bars before it."""
    start = begin + period - 1
    t0 = first_output(out, 1, lo, hi, start, r)
    if t0 >= hi:
        return
    bp = t0 - period + 1
    pv = 0.0
    vol = 0.0
    n_bad = 0
    for t in range(bp, t0):
        v = at(vo, row, t)
        tpv = indicator_loops.typical_pv(at(h, row, t), at(lw, row, t), at(c, row, t), v)
        pv, vol, n_bad = indicator_loops.vwap_add(pv, vol, n_bad, tpv, v)
    for t in range(t0, hi):
        v = at(vo, row, t)
        tpv = indicator_loops.typical_pv(at(h, row, t), at(lw, row, t), at(c, row, t), v)
        pv, vol, n_bad = indicator_loops.vwap_add(pv, vol, n_bad, tpv, v)
        out[0, r, t] = indicator_loops.vwap_value(pv, vol, n_bad)
        v = at(vo, row, bp)
        tpv = indicator_loops.typical_pv(at(h, row, bp), at(lw, row, bp), at(c, row, bp), v)
        pv, vol, n_bad = indicator_loops.vwap_remove(pv, vol, n_bad, tpv, v)
        bp += 1


# ---- per-thread entry points, one per (phase, indicator) --------------------------------
# Uniform signatures, so a driver (CUDA kernel or CPU loop) is made by closing over one
# of them: phase1(j, nc, T, a, b, c, d, params, info, A, B, seed) and
# phase3(j, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out). Thread j is
# (row r = p*n + i, chunk cc) with j = r*nc + cc.
@register_jitable
def decode(j, nc, n, T):
    L = (T + nc - 1) // nc
    r = j // nc
    cc = j - r * nc
    p = r // n
    i = r - p * n
    lo = cc * L
    hi = lo + L
    if hi > T:
        hi = T
    return r, cc, p, i, lo, hi


@register_jitable
def ema_phase1(j, nc, T, a, b, c, d, params, info, A, B, seed):
    r, cc, p, i, lo, hi = decode(j, nc, info.shape[0], T)
    ema_p1(a, i, cc, lo, hi, info[i, 0], int(params[p, 0]), A, B, seed, 0, r)


@register_jitable
def rsi_phase1(j, nc, T, a, b, c, d, params, info, A, B, seed):
    r, cc, p, i, lo, hi = decode(j, nc, info.shape[0], T)
    rsi_p1(a, i, cc, lo, hi, info[i, 0], int(params[p, 0]), A, B, seed, r)


@register_jitable
def atr_phase1(j, nc, T, a, b, c, d, params, info, A, B, seed):
    r, cc, p, i, lo, hi = decode(j, nc, info.shape[0], T)
    atr_p1(a, b, c, i, cc, lo, hi, info[i, 0], int(params[p, 0]), A, B, seed, r)


@register_jitable
def obv_phase1(j, nc, T, a, b, c, d, params, info, A, B, seed):
    r, cc, p, i, lo, hi = decode(j, nc, info.shape[0], T)
    obv_p1(a, b, i, cc, lo, hi, info[i, 0], A, B, seed, r)


@register_jitable
def macd_phase1(j, nc, T, a, b, c, d, params, info, A, B, seed):
    r, cc, p, i, lo, hi = decode(j, nc, info.shape[0], T)
    fast, slow, signal = macd_periods(params, p)
    begin = info[i, 0]
    ema_p1(a, i, cc, lo, hi, begin + slow - fast, fast, A, B, seed, 0, r)
    ema_p1(a, i, cc, lo, hi, begin, slow, A, B, seed, 1, r)


@register_jitable
def macd_signal_phase1(j, nc, T, a, b, c, d, params, info, A, B, seed):
    # ``a`` is the float64 MACD line, one row per (parameter set, series)
    r, cc, p, i, lo, hi = decode(j, nc, info.shape[0], T)
    fast, slow, signal = macd_periods(params, p)
    ema_p1(a, r, cc, lo, hi, info[i, 0] + slow - 1, signal, A, B, seed, 0, r)


@register_jitable
def ema_phase3(j, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out):
    r, cc, p, i, lo, hi = decode(j, nc, info.shape[0], T)
    ema_p3(a, i, cc, lo, hi, info[i, 0], int(params[p, 0]), Ain, Bin, seed, r, out)


@register_jitable
def rsi_phase3(j, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out):
    r, cc, p, i, lo, hi = decode(j, nc, info.shape[0], T)
    rsi_p3(a, i, cc, lo, hi, info[i, 0], int(params[p, 0]), Ain, Bin, seed, r, out)


@register_jitable
def atr_phase3(j, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out):
    r, cc, p, i, lo, hi = decode(j, nc, info.shape[0], T)
    atr_p3(a, b, c, i, cc, lo, hi, info[i, 0], int(params[p, 0]), Ain, Bin, seed, r, out)


@register_jitable
def obv_phase3(j, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out):
    r, cc, p, i, lo, hi = decode(j, nc, info.shape[0], T)
    obv_p3(a, b, i, cc, lo, hi, info[i, 0], Ain, Bin, seed, r, out)


@register_jitable
def macd_phase3(j, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out):
    r, cc, p, i, lo, hi = decode(j, nc, info.shape[0], T)
    fast, slow, signal = macd_periods(params, p)
    macd_line_p3(a, i, cc, lo, hi, info[i, 0], fast, slow, Ain, Bin, seed, r, out)


@register_jitable
def macd_signal_phase3(j, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out):
    r, cc, p, i, lo, hi = decode(j, nc, info.shape[0], T)
    fast, slow, signal = macd_periods(params, p)
    macd_signal_p3(a, r, cc, lo, hi, info[i, 0] + slow - 1, signal, Ain, Bin, seed, r, out)


@register_jitable
def sma_phase3(j, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out):
    r, cc, p, i, lo, hi = decode(j, nc, info.shape[0], T)
    sma_p3(a, i, cc, lo, hi, info[i, 0], info[i, 1], int(params[p, 0]), out, r)


@register_jitable
def wma_phase3(j, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out):
    r, cc, p, i, lo, hi = decode(j, nc, info.shape[0], T)
    wma_p3(a, i, cc, lo, hi, info[i, 0], int(params[p, 0]), out, r)


@register_jitable
def bbands_phase3(j, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out):
    r, cc, p, i, lo, hi = decode(j, nc, info.shape[0], T)
    bbands_p3(a, i, cc, lo, hi, info[i, 0], info[i, 1], int(params[p, 0]), params[p, 1], out,
              r)


@register_jitable
def vwap_phase3(j, nc, T, a, b, c, d, params, info, Ain, Bin, seed, out):
    r, cc, p, i, lo, hi = decode(j, nc, info.shape[0], T)
    vwap_p3(a, b, c, d, i, cc, lo, hi, info[i, 0], int(params[p, 0]), out, r)


@register_jitable
def first_valid_phase1(j, nc, T, a, b, c, d, params, info, A, B, seed):
    """Thread (series i, chunk cc), j = i*nc + cc: A[0, i, cc] = the chunk's first bar where
    a, b, c and d are all non-NaN (inputs an indicator lacks are passed as copies of a), T
    when none. The minimum over chunks is indicator_loops.first_valid*'s index (T - 1 when
    none); a chunk stops at its first valid bar, so this reads about one bar per chunk."""
    r, cc, p, i, lo, hi = decode(j, nc, info.shape[0], T)
    first = T
    for t in range(lo, hi):
        if a[i, t] == a[i, t] and b[i, t] == b[i, t] and c[i, t] == c[i, t] and d[i, t] == d[i, t]:
            first = t
            break
    A[0, i, cc] = first


@register_jitable
def first_nonfinite_phase1(j, nc, T, a, b, c, d, params, info, A, B, seed):
    """Thread (series i, chunk cc): A[0, i, cc] = the chunk's first bar at or after the
    series' begin (info[i, 0]) where a is not finite, T when none."""
    r, cc, p, i, lo, hi = decode(j, nc, info.shape[0], T)
    first = T
    for t in range(at_least(info[i, 0], lo), hi):
        if not math.isfinite(a[i, t]):
            first = t
            break
    A[0, i, cc] = first


PHASE1 = {
    EMA: ema_phase1, RSI: rsi_phase1, ATR: atr_phase1, OBV: obv_phase1,
    MACD: macd_phase1, MACD_SIGNAL: macd_signal_phase1,
    FIRST_VALID: first_valid_phase1, FIRST_NONFINITE: first_nonfinite_phase1,
}
PHASE3 = {
    EMA: ema_phase3, RSI: rsi_phase3, ATR: atr_phase3, OBV: obv_phase3,
    MACD: macd_phase3, MACD_SIGNAL: macd_signal_phase3,
    SMA: sma_phase3, WMA: wma_phase3, BBANDS: bbands_phase3, VWAP: vwap_phase3,
}


# Indicators with a scan path: those with a phase-3 body. STOCH has none (its rolling
# min/max + two SMAs run on the batch path whatever the shape). The windowed ones have no
# affine pass (no phase 1): each chunk rebuilds its window state itself.
SCAN_NAMES = frozenset(name for name, spec in SPECS.items() if spec[0] in PHASE3)
WINDOWED_NAMES = frozenset(name for name in SCAN_NAMES if SPECS[name][0] not in PHASE1)


# ---- carry scan over chunk maps: y -> A*y + B, composed left to right -------------------
@register_jitable
def compose_after(a, b, a_prior, b_prior):
    """The map ``y -> a_prior*y + b_prior`` followed by ``y -> a*y + b``, as ``(A, B)``."""
    return clamp_a(a * a_prior), a * b_prior + b


@register_jitable
def pairs_reduce(j, m, blk, A, B, A2, B2):
    """Thread (q, block): compose the maps of chunks [block*blk, ...) of row q."""
    mb = A2.shape[1]
    q = j // mb
    bi = j - q * mb
    c0 = bi * blk
    c1 = c0 + blk
    if c1 > m:
        c1 = m
    aa = 1.0
    bb = 0.0
    for ci in range(c0, c1):
        aa, bb = compose_after(A[q, ci], B[q, ci], aa, bb)
    A2[q, bi] = aa
    B2[q, bi] = bb


@register_jitable
def pairs_expand(j, m, blk, A, B, A2in, B2in, Ain, Bin):
    """Thread (q, block): exclusive prefix maps of its chunks from the block's carry-in."""
    mb = A2in.shape[1]
    q = j // mb
    bi = j - q * mb
    c0 = bi * blk
    c1 = c0 + blk
    if c1 > m:
        c1 = m
    aa = A2in[q, bi]
    bb = B2in[q, bi]
    for ci in range(c0, c1):
        Ain[q, ci] = aa
        Bin[q, ci] = bb
        aa, bb = compose_after(A[q, ci], B[q, ci], aa, bb)


@register_jitable
def pairs_serial(j, m, A, B, Ain, Bin):
    """Thread q: exclusive prefix maps of all m chunks of row q, sequentially."""
    aa = 1.0
    bb = 0.0
    for ci in range(m):
        Ain[j, ci] = aa
        Bin[j, ci] = bb
        aa, bb = compose_after(A[j, ci], B[j, ci], aa, bb)


# ---- single pass: chained scan with decoupled look-back (Merrill & Garland 2016) ----------
# Each (row, chunk) publishes its chunk map (its *aggregate*, status FLAG_AGGREGATE) and, once
# it knows its exclusive prefix, the map of chunks [0, cc] (its *inclusive prefix*,
# FLAG_PREFIX) in a status word per chunk (FLAG_INVALID before). A chunk forms its exclusive
# prefix by walking back over its predecessors: it folds in aggregates until it meets an
# inclusive prefix. The kernel (:func:`gpu_trader.kernels.scan.single_pass_kernel`) writes a
# status word only after the values it announces (with a fence) and reads values only after
# reading the status word (with a fence); these bodies are the math between.
FLAG_INVALID = 0
FLAG_AGGREGATE = 1
FLAG_PREFIX = 2


@register_jitable
def lookback_start(acc_a, acc_b):
    """Reset the look-back accumulators (one slot per state) to the identity map."""
    for s in range(acc_a.shape[0]):
        acc_a[s] = 1.0
        acc_b[s] = 0.0


@register_jitable
def lookback_fold(S, r, p, flag, A, B, Ainc, Binc, acc_a, acc_b):
    """Fold predecessor chunk ``p`` of row ``r`` (status ``flag``, >= FLAG_AGGREGATE) into the
    accumulated maps of the chunks after it: its inclusive prefix when published, else its
    aggregate. Returns True when the walk is done (an inclusive prefix was folded in)."""
    done = flag == FLAG_PREFIX
    for s in range(S):
        if done:
            acc_a[s], acc_b[s] = compose_after(acc_a[s], acc_b[s], Ainc[s, r, p], Binc[s, r, p])
        else:
            acc_a[s], acc_b[s] = compose_after(acc_a[s], acc_b[s], A[s, r, p], B[s, r, p])
    return done


@register_jitable
def lookback_publish(S, r, cc, A, B, acc_a, acc_b, Ain, Bin, Ainc, Binc):
    """Store chunk ``cc``'s exclusive prefix (the accumulated maps: phase 3's carry-in maps)
    and its inclusive prefix (then its own map)."""
    for s in range(S):
        Ain[s, r, cc] = acc_a[s]
        Bin[s, r, cc] = acc_b[s]
        Ainc[s, r, cc], Binc[s, r, cc] = compose_after(A[s, r, cc], B[s, r, cc], acc_a[s], acc_b[s])
