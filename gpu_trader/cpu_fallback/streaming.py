"""FeatureStream's compiled kernels: every indicator of a spec advanced by one bar (area ``streaming``).

The backend area ``streaming`` exists on the CPU backend only (a stream is a host-side
state machine, one small update per bar); :class:`gpu_trader.streaming.FeatureStream`
reaches this module through ``get_backend("cpu").ops("streaming")``. Importing it imports
numba and compiles :data:`update_kernel` (or loads it from the on-disk cache,
:mod:`gpu_trader._internal.jit`); :data:`warmup_kernel` is compiled on its first call.

Each step function mirrors the ``*_row`` function of :mod:`gpu_trader._internal.indicator_loops`
of the same name, bar by bar, and does its arithmetic with the same one-step primitives
(``indicator_loops.*_step`` and friends), so only the bookkeeping (state slots, ring
buffers, warm-up) is written here: ``j`` is the bar's index counted from the indicator's
first valid bar (``t - begin`` in the row functions), ``f``/``ii`` are the symbol's
float/int state rows, ``o``/``io`` the indicator's offsets into them. Ring buffers hold
the last ``period`` inputs at index ``pos = j % period``; the value leaving the window
(``x[trailing]`` with ``trailing = t - period + 1``) sits at ``_nxt(pos, period)`` once
bar j is stored.

Kernel arguments (C-contiguous but for the bar's rows; state written in place; nothing is allocated):

* ``high``, ``low``, ``close``, ``volume``: one bar's ``(n_symbols,)`` float64 rows, read only
  (any strides; ``hist`` of :data:`warmup_kernel`: ``(T, 4, n_symbols)``, the four rows of each
  bar, bars in time order);
* ``prog``: ``(n_indicators, PROGRAM_WIDTH)`` int64, one row per indicator of the spec:
  indicator code (:mod:`gpu_trader._internal.indicator_specs`), input group
  (:data:`INPUT_GROUPS`), up to three integer parameters ``a, b, c`` (0 when unused;
  MACD's fast/slow ordered so that ``a <= b``), float-state offset, int-state offset,
  first output row, number of outputs; ``fprog``: ``(n_indicators,)`` float64, Bollinger's
  ``nstd`` (0 for the others);
* ``fs``: ``(n_symbols, >= total float slots)`` float64 and ``ist``:
  ``(n_symbols, N_GROUPS + total int slots)`` int64, the per-symbol state (slot counts:
  :func:`state_size`). ``ist[:, g]`` for ``g < N_GROUPS`` counts the bars since input
  group ``g``'s first all-valid bar, -1 before it: start a stream with them at -1 and
  every other slot at 0;
* ``out``: ``(total outputs, n_symbols)`` float64, the latest bar's values (NaN during
  each indicator's lookback).
"""
from __future__ import annotations

import math

from numba import types
from numba.extending import register_jitable

from .._internal import indicator_loops
from .._internal.indicator_specs import ATR, BBANDS, EMA, MACD, OBV, RSI, SMA, STOCH, VWAP, WMA
from .._internal.jit import njit_cached

__all__ = ["update_kernel", "warmup_kernel", "state_size", "INPUT_GROUPS", "N_GROUPS", "PROGRAM_WIDTH"]

# Input groups: an indicator's first valid bar is computed over its own inputs
# (key: the indicator's input fields, gpu_trader._internal.indicator_specs.INPUT_FIELDS).
INPUT_GROUPS = {
    ("close",): 0,
    ("high", "low", "close"): 1,
    ("close", "volume"): 2,
    ("high", "low", "close", "volume"): 3,
}
N_GROUPS = 4
# Columns of a program row (see the module docstring).
PROGRAM_WIDTH = 9

def state_size(code: int, a: int, b: int, c: int) -> tuple[int, int]:
    """(float64 slots, int64 slots) of one indicator's per-symbol state, for indicator ``code``
    with integer parameters ``a, b, c`` as in its program row (see the module docstring)."""
    if code == SMA:
        return 1 + a, 0  # total, ring[a]
    if code == EMA:
        return 2, 0  # seed total, prev
    if code == WMA:
        return 3 + a, 1  # sub, sum, trailing value, ring[a]; countdown
    if code == RSI:
        return 3, 0  # prev value, gain, loss
    if code == MACD:
        return 6, 0  # slow total, fast total, ema slow, ema fast, signal total, signal
    if code == BBANDS:
        return 4 + a, 1  # ma total, shift, var1, var2, ring[a]; countdown
    if code == ATR:
        return 2, 0  # previous close, total / prev
    if code == STOCH:
        # lowest, highest, diff, %K total, %D total, highs[a], lows[a], raw %K[b], slow %K[c]
        return 5 + 2 * a + b + c, 2  # lowest idx, highest idx
    if code == OBV:
        return 2, 0  # obv, prev close
    if code == VWAP:
        return 2 + 2 * a, 1  # pv, vol, ring tpv[a], ring v[a]; bad count
    raise AssertionError(code)


# The steps below are numba-callable from the kernels (register_jitable). They never
# allocate, so they are compiled without reference counting (_nrt=False): no atomic
# incref/decref of the state arrays per call, which also keeps the small steps within
# LLVM's inlining threshold.
@register_jitable(_nrt=False)
def _nxt(pos, p):
    """(pos + 1) % p for 0 <= pos < p, without an integer division."""
    pos += 1
    return pos if pos < p else 0


@register_jitable(_nrt=False)
def _sma_step(f, o, ring, p, j, x):
    """sma_into (indicator_loops.sma_step): the running total in f[o], the window in the ring
    f[ring : ring + p]; NaN until the window is full."""
    if j == 0:
        f[o] = 0.0
    pos = j % p
    f[ring + pos] = x
    if j < p - 1:
        f[o] += x
        return math.nan
    f[o], res = indicator_loops.sma_step(f[o], x, f[ring + _nxt(pos, p)], p)
    return res


@register_jitable(_nrt=False)
def _ma_step(f, o, ring, p, j, x):
    """ma_into: TA_MA(SMA), an exact copy at period 1, else _sma_step."""
    if p == 1:
        return x
    return _sma_step(f, o, ring, p, j, x)


@register_jitable(_nrt=False)
def _ema_step(f, o, p, j, x):
    """ema_row: seed = mean of the first p values; then prev = (x - prev) * k + prev."""
    if p == 1:
        return x
    if j < p:
        if j == 0:
            f[o] = 0.0
        f[o] += x
        if j < p - 1:
            return math.nan
        prev = f[o] / p
    else:
        prev = indicator_loops.ema_step(f[o + 1], x, 2.0 / (p + 1))
    f[o + 1] = prev
    return prev


@register_jitable(_nrt=False)
def _wma_step(f, ii, o, io, p, j, x):
    """wma_row (TA-Lib 0.8): running sums, re-anchored from the window every 8 * p bars."""
    if p == 1:
        return x
    ring = o + 3
    pos = j % p
    f[ring + pos] = x
    if j == 0:
        f[o] = 0.0
        f[o + 1] = 0.0
        f[o + 2] = 0.0  # trailing_value
        ii[io] = 8 * p  # countdown
    if j < p - 1:  # wma_sums(x, begin, p - 1)
        f[o], f[o + 1] = indicator_loops.wma_add(f[o], f[o + 1], x, j + 1)
        return math.nan
    period_sub, period_sum = indicator_loops.wma_push(f[o], f[o + 1], x, f[o + 2], p)
    ii[io] -= 1
    if ii[io] <= 0:
        ii[io] = 8 * p
        period_sub = 0.0  # wma_sums(x, t - p + 1, p)
        period_sum = 0.0
        q = pos
        for w in range(1, p + 1):
            q = _nxt(q, p)  # (j - p + w) % p
            period_sub, period_sum = indicator_loops.wma_add(period_sub, period_sum, f[ring + q], w)
    f[o + 2] = f[ring + _nxt(pos, p)]
    res = period_sum / indicator_loops.wma_divider(p)
    period_sum -= period_sub
    f[o] = period_sub
    f[o + 1] = period_sum
    return res


@register_jitable(_nrt=False)
def _rsi_step(f, o, p, j, x):
    """rsi_row (TA-Lib 0.8): branch-free gain/loss split, Wilder step scaled by 1/p."""
    if j == 0:
        f[o] = x
        f[o + 1] = 0.0
        f[o + 2] = 0.0
        return math.nan
    inv_period = 1.0 / p
    d = x - f[o]
    f[o] = x
    gain = f[o + 1]
    loss = f[o + 2]
    if j <= p:  # the seed: the mean gain and loss of the first p changes
        gain, loss = indicator_loops.rsi_add(gain, loss, d)
        if j < p:
            f[o + 1] = gain
            f[o + 2] = loss
            return math.nan
        loss *= inv_period
        gain *= inv_period
    else:
        gain, loss = indicator_loops.rsi_step(gain, loss, d, p, inv_period)
    f[o + 1] = gain
    f[o + 2] = loss
    return indicator_loops.rsi_ratio(gain, loss)


@register_jitable(_nrt=False)
def _macd_step(f, o, fast, slow, signal, j, x, out, r, s):
    """macd_row: both EMAs seeded at the slow EMA's start; signal seeded by its SMA."""
    if j == 0:
        for q in range(6):
            f[o + q] = 0.0
    if j < slow:
        f[o] += x  # ema_seed(x, begin, slow)
        if j >= slow - fast:
            f[o + 1] += x  # ema_seed(x, begin + slow - fast, fast)
        if j < slow - 1:
            out[r, s] = math.nan
            out[r + 1, s] = math.nan
            out[r + 2, s] = math.nan
            return
        ema_slow = f[o] / slow
        ema_fast = f[o + 1] / fast
    else:
        ema_fast = indicator_loops.ema_step(f[o + 3], x, 2.0 / (fast + 1))
        ema_slow = indicator_loops.ema_step(f[o + 2], x, 2.0 / (slow + 1))
    f[o + 2] = ema_slow
    f[o + 3] = ema_fast
    line = ema_fast - ema_slow
    m = j - (slow - 1)
    if m < signal - 1:
        f[o + 4] += line
        out[r, s] = math.nan
        out[r + 1, s] = math.nan
        out[r + 2, s] = math.nan
        return
    if m == signal - 1:
        f[o + 4] += line
        sig = f[o + 4] / signal
    else:
        sig = f[o + 5]
        sig = line if signal == 1 else indicator_loops.ema_step(sig, line, 2.0 / (signal + 1))
    f[o + 5] = sig
    out[r, s] = line
    out[r + 1, s] = sig
    out[r + 2, s] = line - sig


@register_jitable(_nrt=False)
def _bbands_step(f, ii, o, io, p, nstd, j, x, out, r, s):
    """bbands_row (TA-Lib 0.8): SMA middle band, shifted running moments, re-seeded."""
    ring = o + 4
    pos = j % p
    oldest = _nxt(pos, p)
    f[ring + pos] = x
    inv_period = 1.0 / p
    if j == 0:
        f[o] = 0.0  # ma_total
        f[o + 1] = x  # shift = x[begin]
        f[o + 2] = 0.0  # var1
        f[o + 3] = 0.0  # var2
        ii[io] = 32 * p  # countdown
    if j < p - 1:
        f[o] += x
        f[o + 2], f[o + 3] = indicator_loops.shifted_add(f[o + 2], f[o + 3], x, f[o + 1])
        out[r, s] = math.nan
        out[r + 1, s] = math.nan
        out[r + 2, s] = math.nan
        return
    shift = f[o + 1]
    ma_total, var1, var2, mean, variance, drifted = indicator_loops.bbands_step(
        f[o], shift, f[o + 2], f[o + 3], x, f[ring + oldest], p, inv_period)
    ii[io] -= 1
    if drifted or ii[io] <= 0:
        ii[io] = 32 * p
        total = 0.0
        q = oldest
        for _ in range(p):  # the window, oldest first
            total += f[ring + q]
            q = _nxt(q, p)
        shift = total * inv_period
        var1 = 0.0  # shifted_moments over the window
        var2 = 0.0
        for _ in range(p):  # q is back at the oldest
            var1, var2 = indicator_loops.shifted_add(var1, var2, f[ring + q], shift)
            q = _nxt(q, p)
        var1, var2, variance = indicator_loops.bbands_reseeded(var1, var2, f[ring + oldest], shift, inv_period)
    f[o] = ma_total
    f[o + 1] = shift
    f[o + 2] = var1
    f[o + 3] = var2
    out[r, s], out[r + 1, s], out[r + 2, s] = indicator_loops.bbands_bands(mean, variance, nstd)


@register_jitable(_nrt=False)
def _atr_step(f, o, p, j, h, lo, c):
    """atr_row (TA-Lib 0.8): mean of the first p true ranges, then alpha * tr + beta * prev."""
    if j == 0:
        f[o] = c
        f[o + 1] = 0.0
        return math.nan
    tr = indicator_loops.true_range(h, lo, f[o])
    f[o] = c
    if j <= p:
        total = f[o + 1] + tr
        f[o + 1] = total
        if j < p:
            return math.nan
        prev = total / p
    else:
        alpha, beta = indicator_loops.atr_coefficients(p)
        prev = indicator_loops.atr_step(f[o + 1], tr, alpha, beta)
    f[o + 1] = prev
    return prev


@register_jitable(_nrt=False)
def _stoch_step(f, ii, o, io, fastk, slowk, slowd, j, h, lo, c, out, r, s):
    """stoch_row: raw %K with TA-Lib's highest/lowest tracking, then two TA_MA(SMA)s."""
    highs = o + 5
    lows = highs + fastk
    raws = lows + fastk
    slows = raws + slowk
    pos = j % fastk
    tpos = _nxt(pos, fastk)  # trailing % fastk
    f[highs + pos] = h
    f[lows + pos] = lo
    if j == 0:
        for q in range(5):
            f[o + q] = 0.0  # lowest, highest, diff, %K total, %D total
        ii[io] = -1  # lowest_idx
        ii[io + 1] = -1  # highest_idx
    if j < fastk - 1:
        out[r, s] = math.nan
        out[r + 1, s] = math.nan
        return
    today = j
    trailing = j - fastk + 1
    lowest = f[o]
    highest = f[o + 1]
    diff = f[o + 2]
    tmp = lo
    if ii[io] < trailing:
        ii[io] = trailing
        lowest = f[lows + tpos]
        q = tpos
        for i in range(trailing + 1, today + 1):
            q = _nxt(q, fastk)
            tmp = f[lows + q]
            if tmp < lowest:
                ii[io] = i
                lowest = tmp
        diff = (highest - lowest) / 100.0
    elif tmp <= lowest:
        ii[io] = today
        lowest = tmp
        diff = (highest - lowest) / 100.0
    tmp = h
    if ii[io + 1] < trailing:
        ii[io + 1] = trailing
        highest = f[highs + tpos]
        q = tpos
        for i in range(trailing + 1, today + 1):
            q = _nxt(q, fastk)
            tmp = f[highs + q]
            if tmp > highest:
                ii[io + 1] = i
                highest = tmp
        diff = (highest - lowest) / 100.0
    elif tmp >= highest:
        ii[io + 1] = today
        highest = tmp
        diff = (highest - lowest) / 100.0
    f[o] = lowest
    f[o + 1] = highest
    f[o + 2] = diff
    raw = indicator_loops.stoch_k(c, lowest, diff)
    jk = j - (fastk - 1)
    slow_k = _ma_step(f, o + 3, raws, slowk, jk, raw)  # ma_into(raw %K, first_k, slowk)
    jd = jk - (slowk - 1)
    if jd >= 0:
        d = _ma_step(f, o + 4, slows, slowd, jd, slow_k)  # ma_into(slow %K, first_k + slowk - 1, slowd)
    else:
        d = math.nan
    if jd < slowd - 1:
        out[r, s] = math.nan
        out[r + 1, s] = math.nan
        return
    out[r, s] = slow_k
    out[r + 1, s] = d


@register_jitable(_nrt=False)
def _obv_step(f, o, j, c, v):
    """obv_row: starts from the first valid bar's volume."""
    if j == 0:
        f[o] = v
        f[o + 1] = c
    obv = indicator_loops.obv_step(f[o], f[o + 1], c, v)
    f[o] = obv
    f[o + 1] = c
    return obv


@register_jitable(_nrt=False)
def _vwap_step(f, ii, o, io, p, j, h, lo, c, v):
    """vwap_row: running sums over finite bars; a window holding a non-finite bar is NaN."""
    tpvs = o + 2
    vols = tpvs + p
    if j == 0:
        f[o] = 0.0
        f[o + 1] = 0.0
        ii[io] = 0
    tpv = indicator_loops.typical_pv(h, lo, c, v)
    pos = j % p
    f[tpvs + pos] = tpv
    f[vols + pos] = v
    f[o], f[o + 1], ii[io] = indicator_loops.vwap_add(f[o], f[o + 1], ii[io], tpv, v)
    if j < p - 1:
        return math.nan
    res = indicator_loops.vwap_value(f[o], f[o + 1], ii[io])
    q = _nxt(pos, p)
    f[o], f[o + 1], ii[io] = indicator_loops.vwap_remove(f[o], f[o + 1], ii[io], f[tpvs + q], f[vols + q])
    return res


@register_jitable(_nrt=False)
def _not_started(code, a, b, c, n_out, h, lo, cl, v, out, r, s):
    """A bar before the indicator's first valid bar: the batch's value for a series
    with no valid bar yet (TA-Lib starts such a series at its last bar)."""
    if code == OBV:
        out[r, s] = v  # obv_row with begin = t: obv = volume[t], and close[t] == prev (or NaN)
    elif code == STOCH and a == 1 and b == 1 and c == 1:
        # stoch_row with begin = t and every period 1: raw %K of bar t, copied twice
        raw = indicator_loops.stoch_k(cl, lo, (h - lo) / 100.0)
        out[r, s] = raw
        out[r + 1, s] = raw
    else:
        for q in range(n_out):
            out[r + q, s] = math.nan


@register_jitable(_nrt=False)
def _advance(high, low, close, volume, prog, fprog, fs, ist, out):
    """Feed one bar (``(n_symbols,)`` high, low, close, volume) through every indicator."""
    n = close.shape[0]
    m = prog.shape[0]
    for s in range(n):
        h = high[s]
        lo = low[s]
        c = close[s]
        v = volume[s]
        f = fs[s]
        ii = ist[s]
        # per input group: bar index since its first all-valid bar, -1 before
        c_ok = c == c
        hlc_ok = c_ok and h == h and lo == lo
        v_ok = v == v
        if ii[0] >= 0:
            ii[0] += 1
        elif c_ok:
            ii[0] = 0
        if ii[1] >= 0:
            ii[1] += 1
        elif hlc_ok:
            ii[1] = 0
        if ii[2] >= 0:
            ii[2] += 1
        elif c_ok and v_ok:
            ii[2] = 0
        if ii[3] >= 0:
            ii[3] += 1
        elif hlc_ok and v_ok:
            ii[3] = 0
        for k in range(m):
            code = prog[k, 0]
            j = ii[prog[k, 1]]
            a = prog[k, 2]
            b = prog[k, 3]
            cc = prog[k, 4]
            o = prog[k, 5]
            io = prog[k, 6]
            r = prog[k, 7]
            if j < 0:
                _not_started(code, a, b, cc, prog[k, 8], h, lo, c, v, out, r, s)
            elif code == SMA:
                out[r, s] = _sma_step(f, o, o + 1, a, j, c)
            elif code == EMA:
                out[r, s] = _ema_step(f, o, a, j, c)
            elif code == WMA:
                out[r, s] = _wma_step(f, ii, o, io, a, j, c)
            elif code == RSI:
                out[r, s] = _rsi_step(f, o, a, j, c)
            elif code == MACD:
                _macd_step(f, o, a, b, cc, j, c, out, r, s)
            elif code == BBANDS:
                _bbands_step(f, ii, o, io, a, fprog[k], j, c, out, r, s)
            elif code == ATR:
                out[r, s] = _atr_step(f, o, a, j, h, lo, c)
            elif code == STOCH:
                _stoch_step(f, ii, o, io, a, b, cc, j, h, lo, c, out, r, s)
            elif code == OBV:
                out[r, s] = _obv_step(f, o, j, c, v)
            elif code == VWAP:
                out[r, s] = _vwap_step(f, ii, o, io, a, j, h, lo, c, v)


def _update(high, low, close, volume, prog, fprog, fs, ist, out):
    _advance(high, low, close, volume, prog, fprog, fs, ist, out)


def _warmup(hist, prog, fprog, fs, ist, out):
    for t in range(hist.shape[0]):
        _advance(hist[t, 0], hist[t, 1], hist[t, 2], hist[t, 3], prog, fprog, fs, ist, out)


# The bar's rows as update_kernel takes them: any 1-D float64 array (strided, read-only, unaligned).
_ROW = types.Array(types.float64, 1, "A", readonly=True, aligned=False)

# Compiled without NRT (nothing here allocates): a call then wraps its array arguments without
# allocating a reference-counted handle for each. update_kernel is the compiled entry point
# itself, so numba's typing of each call is skipped too: on one symbol, these two are a good
# part of an update's cost.
update_kernel = njit_cached(nogil=True, _nrt=False)(_update).compile((
    _ROW, _ROW, _ROW, _ROW, types.int64[:, ::1], types.float64[::1], types.float64[:, ::1], types.int64[:, ::1],
    types.float64[:, ::1]))
"""``update_kernel(high, low, close, volume, prog, fprog, fs, ist, out)``: feed one bar through
every indicator. Its arguments are not checked: exactly the types and shapes of the module
docstring, the state arrays those of one stream (the rows may be any ``(n_symbols,)`` float64
arrays)."""
warmup_kernel = njit_cached(nogil=True, _nrt=False)(_warmup)
"""``warmup_kernel(hist, prog, fprog, fs, ist, out)``: feed ``hist``'s bars in order, as many
:data:`update_kernel` calls would; ``out`` is left holding the last bar's values."""
