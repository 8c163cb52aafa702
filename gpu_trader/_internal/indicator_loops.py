"""Per-series indicator loop bodies, written once for every backend.

Each ``*_row`` function computes one indicator for one series (1-D input views,
time along the view) and writes its outputs into ``out`` (a 2-D view of shape
``(n_outputs, T)``). They are plain Python decorated with numba's
``register_jitable``, so the very same source is compiled by ``numba.njit`` for the
CPU backend (``cpu_fallback.indicators``, parallel over series) and by
``numba.cuda.jit`` for the GPU backend (``kernels.indicators``, one thread per
series), and it also runs as ordinary Python (numba's CUDA simulator). The CPU driver
alone also calls ``dispatch4``: four-series forms (``sma_rows4``, ``ema_rows4``, ``rsi_rows4``,
``macd_rows4``) of the row bodies whose recurrences' latency bounds them, built from the same seed
and bar steps, and ``dispatch_rows``: forms over contiguous 1-D output rows whose elementwise passes
vectorize (``bbands_into`` staged, ``stoch_into`` by windows).

Semantics are TA-Lib's Python wrapper, operation for operation, in float64:

* leading NaNs: per series, the computation starts at the first index where every
  input is non-NaN (``first_valid``) exactly as TA-Lib's ``check_begidx`` does;
  the first ``begin + lookback`` outputs are NaN;
* interior NaNs propagate exactly as through TA-Lib 0.8's own arithmetic: a NaN
  poisons every later SMA/EMA/MACD value (running sums and recurrences), WMA
  recovers at its next re-anchor, RSI gives 0 from there on (its ``total > 0``
  test fails), and VWAP (not in TA-Lib) is NaN only for windows holding the NaN;
* float32 input is read as float64 (``f64(x[t])``: numba's ``float()`` would keep
  float32) and all arithmetic is float64; only the stored result is rounded to
  the output dtype (STOCH stages raw %K in its output row, so for float32 input
  that intermediate is rounded too).

``params`` is a float64 1-D view holding the indicator's parameters in the order
listed in :data:`SPECS`.

The arithmetic of each recurrence step (``sma_step``, ``ema_step``, ``rsi_step``,
``atr_step``, ``bbands_step``, ``true_range``, ...) is a small primitive of its own,
defined once here and called by the row bodies, by the chunked scans of
:mod:`gpu_trader._internal.scan_loops` and by the streaming updates of
:mod:`gpu_trader.streaming`, which is what keeps the three bit-identical (a change
to a step's operations changes all three).
"""
from __future__ import annotations

import math

from numba import float64 as f64
from numba.extending import register_jitable

from .indicator_specs import ATR, BBANDS, EMA, MACD, OBV, RSI, SMA, STOCH, VWAP, WMA


@register_jitable
def first_valid1(x):
    """First index with a non-NaN value, else the last index (TA-Lib's check_begidx1)."""
    n = x.shape[0]
    for t in range(n):
        if x[t] == x[t]:
            return t
    return n - 1


@register_jitable
def first_valid2(a, b):
    n = a.shape[0]
    for t in range(n):
        if a[t] == a[t] and b[t] == b[t]:
            return t
    return n - 1


@register_jitable
def first_valid3(a, b, c):
    n = a.shape[0]
    for t in range(n):
        if a[t] == a[t] and b[t] == b[t] and c[t] == c[t]:
            return t
    return n - 1


@register_jitable
def first_valid4(a, b, c, d):
    n = a.shape[0]
    for t in range(n):
        if a[t] == a[t] and b[t] == b[t] and c[t] == c[t] and d[t] == d[t]:
            return t
    return n - 1


@register_jitable
def fill_nan(out, k, stop):
    """out[k, :stop] = NaN, clipped to the series length."""
    fill_nan_row(out[k], stop)


@register_jitable
def fill_nan_row(row, stop):
    """row[:stop] = NaN, clipped to the row's length."""
    for t in range(min(stop, row.shape[0])):
        row[t] = math.nan


# ---------------------------------------------------------------------------------
# One-step primitives: the arithmetic of each recurrence, written once. The row
# bodies below, the chunked scans (gpu_trader._internal.scan_loops) and the streaming updates
# (gpu_trader.streaming) all call these, so the float64 operation sequence of each
# step exists in one place (each mirrors TA-Lib 0.8's C code, operation for
# operation; only where the values come from differs between the three).
# ---------------------------------------------------------------------------------
@register_jitable
def sma_step(total, v, old, period):
    """TA_INT_SMA's step: total += v; the output is total / period, then ``old`` leaves.

    Returns (total, output).
    """
    total += v
    tmp = total
    total -= old
    return total, tmp / period


@register_jitable
def ema_step(prev, v, k):
    """TA_EMA's step: (v - prev) * k + prev."""
    return (v - prev) * k + prev


@register_jitable
def wma_divider(period):
    """TA_WMA's divider, period * (period + 1) / 2."""
    return f64(period) * (period + 1) / 2.0


@register_jitable
def wma_add(total, weighted, v, w):
    """One bar of TA_WMA's window sums: total += v; weighted += v * w."""
    return total + v, weighted + v * w


@register_jitable
def wma_push(period_sub, period_sum, v, trailing_value, period):
    """TA_WMA's running-sum step: bar v enters, the previous trailing value leaves the plain sum."""
    period_sub += v
    period_sub -= trailing_value
    period_sum += v * period
    return period_sub, period_sum


@register_jitable
def rsi_add(gain, loss, d):
    """TA_RSI (TA-Lib >= 0.8) branch-free split of a change d: gain += max(d, 0); loss += that - d."""
    up = d if d > 0.0 else 0.0
    gain += up
    loss += up - d
    return gain, loss


@register_jitable
def rsi_step(gain, loss, d, period, inv_period):
    """TA_RSI's Wilder step: scale by period - 1, add the change d, scale by 1/period."""
    loss *= period - 1
    gain *= period - 1
    gain, loss = rsi_add(gain, loss, d)
    loss *= inv_period
    gain *= inv_period
    return gain, loss


@register_jitable
def rsi_ratio(gain, loss):
    """100 * gain / (gain + loss); 0 when the total is not positive (TA-Lib 0.8's exact test)."""
    total = gain + loss
    if total > 0.0:
        return 100.0 * (gain / total)
    return 0.0


@register_jitable
def shifted_add(s1, s2, v, shift):
    """Add v - shift to the shifted moments: s1 += d; s2 += d * d."""
    d = v - shift
    return s1 + d, s2 + d * d


@register_jitable
def shifted_variance(var1, var2, inv_period):
    """Variance from the shifted moments: var2 / period - (var1 / period) ** 2."""
    mean1 = var1 * inv_period
    return var2 * inv_period - mean1 * mean1


@register_jitable
def bbands_window_step(ma_total, shift, var1, var2, v, old, inv_period):
    """TA_BBANDS (TA-Lib >= 0.8) step without the division: bar v enters the SMA sum and the
    shifted moments, the window's sum and variance are taken, then ``old`` (the oldest bar of
    the window) leaves.

    Returns (ma_total, var1, var2, window_sum, variance, drifted); the mean is
    ``window_sum / period``; ``drifted`` is TA-Lib's precision test (the variance lost
    precision or a large value left the window), one of the conditions for a re-seed.
    """
    ma_total += v
    var1, var2 = shifted_add(var1, var2, v, shift)
    variance = shifted_variance(var1, var2, inv_period)
    window_sum = ma_total
    ma_total -= old
    d = old - shift
    var1 -= d
    d2 = d * d
    var2 -= d2
    drifted = variance < 0.000001 * (var2 * inv_period) or d2 > 1000000.0 * var2
    return ma_total, var1, var2, window_sum, variance, drifted


@register_jitable
def bbands_step(ma_total, shift, var1, var2, v, old, period, inv_period):
    """bbands_window_step with the mean: returns (ma_total, var1, var2, mean, variance, drifted)."""
    ma_total, var1, var2, window_sum, variance, drifted = bbands_window_step(
        ma_total, shift, var1, var2, v, old, inv_period)
    return ma_total, var1, var2, window_sum / period, variance, drifted


@register_jitable
def bbands_reseeded(var1, var2, oldest, shift, inv_period):
    """The end of TA_BBANDS's re-seed: var1, var2 are the window's moments shifted by its
    mean ``shift``; the variance (floored to 0 below a relative 1e-12) is taken, then the
    oldest bar leaves. Returns (var1, var2, variance)."""
    variance = shifted_variance(var1, var2, inv_period)
    if variance < 0.000000000001 * (var2 * inv_period):
        variance = 0.0
    d = oldest - shift
    var1 -= d
    var2 -= d * d
    return var1, var2, variance


@register_jitable
def bbands_bands(mean, variance, nstd):
    """TA_BBANDS's outputs (upper, middle, lower) from the mean and the variance. TA-Lib takes
    the square root of a nonzero variance only; ``sqrt(v) + 0.0`` is the same value for every v
    (a zero of either sign gives +0.0, a negative or NaN variance NaN) without a branch, so a
    loop of it vectorizes (bbands_bands_into)."""
    std = math.sqrt(variance) + 0.0
    band = std * nstd
    return mean + band, mean, mean - band


@register_jitable
def true_range(h, lo, prev_close):
    """TA-Lib's TRANGE of a bar (comparisons, so a NaN term is skipped, as in TA-Lib)."""
    greatest = h - lo
    v2 = math.fabs(prev_close - h)
    if v2 > greatest:
        greatest = v2
    v3 = math.fabs(prev_close - lo)
    if v3 > greatest:
        greatest = v3
    return greatest


@register_jitable
def true_range_at(high, low, close, t):
    """true_range of bar t >= 1 of the arrays."""
    return true_range(f64(high[t]), f64(low[t]), f64(close[t - 1]))


@register_jitable
def atr_coefficients(period):
    """TA_ATR's (TA-Lib >= 0.8) Wilder coefficients: beta = (period-1)/period, alpha = 1 - beta."""
    beta = f64(period - 1) / f64(period)
    return 1.0 - beta, beta


@register_jitable
def atr_step(prev, tr, alpha, beta):
    """TA_ATR's (TA-Lib >= 0.8) two-coefficient Wilder step: alpha * tr + beta * prev."""
    return alpha * tr + beta * prev


@register_jitable
def stoch_k(close, lowest, diff):
    """TA_STOCH's raw %K, (close - lowest) / diff with diff = (highest - lowest) / 100; 0 when flat."""
    if diff != 0.0:
        return (close - lowest) / diff
    return 0.0


@register_jitable
def obv_step(obv, prev_close, close, volume):
    """TA_OBV's step: add the volume on an up close, subtract it on a down close.

    Branch-free (an up or down close is a coin flip the CPU cannot predict; this runs
    3x faster): ``volume * (+-1)`` is exact and ``obv + (-volume)`` is ``obv - volume``,
    and an unchanged (or NaN) close returns ``obv`` itself, so the bits are TA-Lib's.
    """
    sign = f64(close > prev_close) - f64(close < prev_close)
    moved = obv + volume * sign
    return moved if sign != 0.0 else obv


@register_jitable
def typical_pv(high, low, close, volume):
    """VWAP's typical price times volume: (H+L+C)/3 * V."""
    return (high + low + close) / 3.0 * volume


@register_jitable
def vwap_add(pv, vol, n_bad, tpv, v):
    """A bar enters the VWAP window: finite bars go into the sums, others are counted."""
    if math.isfinite(tpv) and math.isfinite(v):
        return pv + tpv, vol + v, n_bad
    return pv, vol, n_bad + 1


@register_jitable
def vwap_remove(pv, vol, n_bad, tpv, v):
    """A bar leaves the VWAP window (the inverse of vwap_add)."""
    if math.isfinite(tpv) and math.isfinite(v):
        return pv - tpv, vol - v, n_bad
    return pv, vol, n_bad - 1


@register_jitable
def vwap_value(pv, vol, n_bad):
    """pv / vol; NaN when the window holds a non-finite bar or no volume."""
    return pv / vol if n_bad == 0 and vol != 0.0 else math.nan


# ---------------------------------------------------------------------------------
# Row bodies
# ---------------------------------------------------------------------------------
@register_jitable
def sma_into(x, begin, period, dst):
    """TA_INT_SMA over x[begin:] into the row ``dst``; first value at begin + period - 1.

    ``x`` must not alias ``dst`` (results are stored time-aligned).
    """
    total = sma_seed(x, begin, period)
    for t in range(begin + period - 1, x.shape[0]):
        total = sma_bar(x, t, total, period, dst)


@register_jitable
def sma_seed(x, begin, period):
    """TA_INT_SMA's running total before its first output: the sum of x[begin .. begin + period - 2]."""
    total = 0.0
    for t in range(begin, begin + period - 1):
        total += f64(x[t])
    return total


@register_jitable
def sma_bar(x, t, total, period, dst):
    """TA_INT_SMA at bar t (the window x[t - period + 1 .. t]) into dst[t]; returns the running
    total."""
    total, dst[t] = sma_step(total, f64(x[t]), f64(x[t - period + 1]), period)
    return total


@register_jitable
def sma_rows4(x, i, params, out):
    """sma_row over series i .. i+3 of ``x`` (n_series, T) into the rows ``out[0, i .. i+3]``,
    the CPU driver's work item, as ema_rows4 does it: the four running sums advance in one loop
    (each addition waits on the previous one of its series). The same operations per series as
    sma_row, so the same bits. (Staging the window sums to divide them in a vectorized pass, as
    BBANDS does, measured no faster.)"""
    period = int(params[0])
    n = x.shape[1]
    x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
    r0, r1, r2, r3 = out[0, i], out[0, i + 1], out[0, i + 2], out[0, i + 3]
    b0, b1, b2, b3 = first_valid1(x0), first_valid1(x1), first_valid1(x2), first_valid1(x3)
    last = max(max(b0, b1), max(b2, b3)) + period - 1
    if last >= n:
        for j in range(4):
            sma_row(x[i + j], params, out[:, i + j])
        return
    t0, t1, t2, t3 = sma_seed(x0, b0, period), sma_seed(x1, b1, period), sma_seed(x2, b2, period), sma_seed(x3, b3, period)
    for t in range(b0 + period - 1, last):
        t0 = sma_bar(x0, t, t0, period, r0)
    for t in range(b1 + period - 1, last):
        t1 = sma_bar(x1, t, t1, period, r1)
    for t in range(b2 + period - 1, last):
        t2 = sma_bar(x2, t, t2, period, r2)
    for t in range(b3 + period - 1, last):
        t3 = sma_bar(x3, t, t3, period, r3)
    for t in range(last, n):
        t0 = sma_bar(x0, t, t0, period, r0)
        t1 = sma_bar(x1, t, t1, period, r1)
        t2 = sma_bar(x2, t, t2, period, r2)
        t3 = sma_bar(x3, t, t3, period, r3)
    fill_nan_row(r0, b0 + period - 1)
    fill_nan_row(r1, b1 + period - 1)
    fill_nan_row(r2, b2 + period - 1)
    fill_nan_row(r3, b3 + period - 1)


@register_jitable
def ma_into(x, begin, period, dst):
    """TA_MA with SMA type into the row ``dst``: an exact copy at period 1 (so a NaN does not
    stick), else TA_INT_SMA."""
    if period == 1:
        for t in range(begin, x.shape[0]):
            dst[t] = x[t]
    else:
        sma_into(x, begin, period, dst)


@register_jitable
def sma_row(x, params, out):
    period = int(params[0])
    begin = first_valid1(x)
    fill_nan(out, 0, begin + period - 1)
    if begin + period - 1 >= x.shape[0]:
        return
    sma_into(x, begin, period, out[0])


@register_jitable
def ema_seed(x, seed_begin, period):
    """TA-Lib's default EMA seed: the plain mean of x[seed_begin : seed_begin + period]."""
    total = 0.0
    for t in range(seed_begin, seed_begin + period):
        total += f64(x[t])
    return total / period


@register_jitable
def ema_bar(x, t, prev, k, out):
    """TA_EMA's step at bar t, stored in out[0, t]; returns the new value."""
    prev = ema_step(prev, f64(x[t]), k)
    out[0, t] = prev
    return prev


@register_jitable
def ema_seeded(x, begin, period, out):
    """ema_row up to its seed (period >= 2, the seed's bar within x): NaN before it, the seed
    stored; returns (seed, its bar)."""
    start = begin + period - 1
    fill_nan(out, 0, start)
    prev = ema_seed(x, begin, period)
    out[0, start] = prev
    return prev, start


@register_jitable
def ema_row(x, params, out):
    period = int(params[0])
    n = x.shape[0]
    begin = first_valid1(x)
    start = begin + period - 1
    if start >= n or period == 1:  # TA-Lib >= 0.8: period 1 is no smoothing, an exact copy
        fill_nan(out, 0, start)
        for t in range(start, n):
            out[0, t] = x[t]
        return
    prev, start = ema_seeded(x, begin, period, out)
    k = 2.0 / (period + 1)
    for t in range(start + 1, n):
        prev = ema_bar(x, t, prev, k, out)


@register_jitable
def ema_rows4(x, i, params, out):
    """ema_row over series i .. i+3 of ``x`` (n_series, T) into ``out[:, i .. i+3]`` (n_out,
    n_series, T), the CPU driver's work item: each series is seeded and brought up to the
    latest seed on its own, then the four recurrences advance in one loop, so their latencies
    overlap (each step waits on the previous one of its series). The same operations per series
    as ema_row, so the same bits."""
    period = int(params[0])
    n = x.shape[1]
    x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
    o0, o1, o2, o3 = out[:, i], out[:, i + 1], out[:, i + 2], out[:, i + 3]
    b0, b1, b2, b3 = first_valid1(x0), first_valid1(x1), first_valid1(x2), first_valid1(x3)
    last = max(max(b0, b1), max(b2, b3)) + period - 1
    if period == 1 or last >= n:
        ema_row(x0, params, o0)
        ema_row(x1, params, o1)
        ema_row(x2, params, o2)
        ema_row(x3, params, o3)
        return
    k = 2.0 / (period + 1)
    p0, s0 = ema_seeded(x0, b0, period, o0)
    p1, s1 = ema_seeded(x1, b1, period, o1)
    p2, s2 = ema_seeded(x2, b2, period, o2)
    p3, s3 = ema_seeded(x3, b3, period, o3)
    for t in range(s0 + 1, last + 1):
        p0 = ema_bar(x0, t, p0, k, o0)
    for t in range(s1 + 1, last + 1):
        p1 = ema_bar(x1, t, p1, k, o1)
    for t in range(s2 + 1, last + 1):
        p2 = ema_bar(x2, t, p2, k, o2)
    for t in range(s3 + 1, last + 1):
        p3 = ema_bar(x3, t, p3, k, o3)
    for t in range(last + 1, n):
        p0 = ema_bar(x0, t, p0, k, o0)
        p1 = ema_bar(x1, t, p1, k, o1)
        p2 = ema_bar(x2, t, p2, k, o2)
        p3 = ema_bar(x3, t, p3, k, o3)


@register_jitable
def wma_sums(x, first, period):
    """WMA's (sum, weighted sum) over x[first : first+period], oldest first, weights 1..period."""
    total = 0.0
    weighted = 0.0
    for w in range(1, period + 1):
        total, weighted = wma_add(total, weighted, f64(x[first + w - 1]), w)
    return total, weighted


@register_jitable
def wma_row(x, params, out):
    """TA_WMA (TA-Lib >= 0.8): running sums re-anchored from the window every 8 * window bars."""
    period = int(params[0])
    n = x.shape[0]
    begin = first_valid1(x)
    start = begin + period - 1
    fill_nan(out, 0, start)
    if start >= n:
        return
    if period == 1:
        for t in range(start, n):
            out[0, t] = x[t]
        return
    divider = wma_divider(period)
    period_sub, period_sum = wma_sums(x, begin, period - 1)
    countdown = 8 * period
    trailing_value = 0.0
    trailing = begin
    for t in range(start, n):
        period_sub, period_sum = wma_push(period_sub, period_sum, f64(x[t]), trailing_value, period)
        countdown -= 1
        if countdown <= 0:
            countdown = 8 * period
            period_sub, period_sum = wma_sums(x, t - period + 1, period)
        trailing_value = f64(x[trailing])
        trailing += 1
        out[0, t] = period_sum / divider
        period_sum -= period_sub


@register_jitable
def rsi_bar(x, t, gain, loss, prev_value, period, inv_period, out):
    """TA_RSI's step at bar t, its RSI stored in out[0, t]; returns (gain, loss, x[t])."""
    v = f64(x[t])
    gain, loss = rsi_step(gain, loss, v - prev_value, period, inv_period)
    out[0, t] = rsi_ratio(gain, loss)
    return gain, loss, v


@register_jitable
def rsi_seeded(x, begin, period, inv_period, out):
    """rsi_row up to its first value (its bar within x): NaN before it, the averages of the
    first ``period`` changes; returns (gain, loss, value of that bar, that bar)."""
    start = begin + period
    fill_nan(out, 0, start)
    prev_value = f64(x[begin])
    gain = 0.0
    loss = 0.0
    for t in range(begin + 1, start + 1):
        v = f64(x[t])
        gain, loss = rsi_add(gain, loss, v - prev_value)
        prev_value = v
    loss *= inv_period
    gain *= inv_period
    out[0, start] = rsi_ratio(gain, loss)
    return gain, loss, prev_value, start


@register_jitable
def rsi_row(x, params, out):
    """TA_RSI (TA-Lib >= 0.8): branch-free gain/loss split, Wilder step scaled by 1/period."""
    period = int(params[0])
    n = x.shape[0]
    begin = first_valid1(x)
    if begin + period >= n:
        fill_nan(out, 0, n)
        return
    inv_period = 1.0 / period
    gain, loss, prev_value, start = rsi_seeded(x, begin, period, inv_period, out)
    for t in range(start + 1, n):
        gain, loss, prev_value = rsi_bar(x, t, gain, loss, prev_value, period, inv_period, out)


@register_jitable
def rsi_rows4(x, i, params, out):
    """rsi_row over series i .. i+3, as ema_rows4 does it: each brought up to the latest first
    value on its own, then the four recurrences in one loop; the same bits."""
    period = int(params[0])
    n = x.shape[1]
    x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
    o0, o1, o2, o3 = out[:, i], out[:, i + 1], out[:, i + 2], out[:, i + 3]
    b0, b1, b2, b3 = first_valid1(x0), first_valid1(x1), first_valid1(x2), first_valid1(x3)
    last = max(max(b0, b1), max(b2, b3)) + period
    if last >= n:
        rsi_row(x0, params, o0)
        rsi_row(x1, params, o1)
        rsi_row(x2, params, o2)
        rsi_row(x3, params, o3)
        return
    inv_period = 1.0 / period
    g0, l0, v0, s0 = rsi_seeded(x0, b0, period, inv_period, o0)
    g1, l1, v1, s1 = rsi_seeded(x1, b1, period, inv_period, o1)
    g2, l2, v2, s2 = rsi_seeded(x2, b2, period, inv_period, o2)
    g3, l3, v3, s3 = rsi_seeded(x3, b3, period, inv_period, o3)
    for t in range(s0 + 1, last + 1):
        g0, l0, v0 = rsi_bar(x0, t, g0, l0, v0, period, inv_period, o0)
    for t in range(s1 + 1, last + 1):
        g1, l1, v1 = rsi_bar(x1, t, g1, l1, v1, period, inv_period, o1)
    for t in range(s2 + 1, last + 1):
        g2, l2, v2 = rsi_bar(x2, t, g2, l2, v2, period, inv_period, o2)
    for t in range(s3 + 1, last + 1):
        g3, l3, v3 = rsi_bar(x3, t, g3, l3, v3, period, inv_period, o3)
    for t in range(last + 1, n):
        g0, l0, v0 = rsi_bar(x0, t, g0, l0, v0, period, inv_period, o0)
        g1, l1, v1 = rsi_bar(x1, t, g1, l1, v1, period, inv_period, o1)
        g2, l2, v2 = rsi_bar(x2, t, g2, l2, v2, period, inv_period, o2)
        g3, l3, v3 = rsi_bar(x3, t, g3, l3, v3, period, inv_period, o3)


@register_jitable
def macd_periods(params):
    """MACD's (fast, slow, signal) periods; fast and slow swapped when slow < fast (as TA_MACD)."""
    fast = int(params[0])
    slow = int(params[1])
    if slow < fast:
        fast, slow = slow, fast
    return fast, slow, int(params[2])


@register_jitable
def macd_coefficients(fast, slow, signal):
    """The smoothing factors 2 / (period + 1) of MACD's fast EMA, slow EMA and signal EMA."""
    return 2.0 / (fast + 1), 2.0 / (slow + 1), 2.0 / (signal + 1)


@register_jitable
def macd_bar(v, ema_fast, ema_slow, sig, k_fast, k_slow, k_sig, signal, out, t):
    """TA_MACD's step at a bar of value v past the signal's seed: both EMAs and the signal
    advance, (line, signal, histogram) stored in out[:, t]; returns (ema_fast, ema_slow, sig)."""
    ema_fast = ema_step(ema_fast, v, k_fast)
    ema_slow = ema_step(ema_slow, v, k_slow)
    line = ema_fast - ema_slow
    sig = line if signal == 1 else ema_step(sig, line, k_sig)  # TA-Lib >= 0.8: period 1 copies
    out[0, t] = line
    out[1, t] = sig
    out[2, t] = line - sig
    return ema_fast, ema_slow, sig


@register_jitable
def macd_seeded(x, begin, fast, slow, signal, out):
    """macd_row up to the signal's seed (its bar within x): NaN before it, both EMAs started at
    the slow EMA's first output (TA-Lib's quirk), the signal seeded with the SMA of the first
    ``signal`` lines and stored; returns (ema_fast, ema_slow, sig, that bar)."""
    first_macd = begin + slow - 1
    start = first_macd + signal - 1
    for k in range(3):
        fill_nan(out, k, start)
    k_fast, k_slow, _ = macd_coefficients(fast, slow, signal)
    ema_slow = ema_seed(x, begin, slow)
    ema_fast = ema_seed(x, begin + slow - fast, fast)
    sig_total = 0.0
    sig_total += ema_fast - ema_slow
    for t in range(first_macd + 1, start + 1):
        v = f64(x[t])
        ema_fast = ema_step(ema_fast, v, k_fast)
        ema_slow = ema_step(ema_slow, v, k_slow)
        sig_total += ema_fast - ema_slow
    line = ema_fast - ema_slow
    sig = sig_total / signal
    out[0, start] = line
    out[1, start] = sig
    out[2, start] = line - sig
    return ema_fast, ema_slow, sig, start


@register_jitable
def macd_row(x, params, out):
    """TA_MACD: both EMAs start at the slow EMA's first output (TA-Lib's quirk)."""
    fast, slow, signal = macd_periods(params)
    n = x.shape[0]
    begin = first_valid1(x)
    if begin + slow + signal - 2 >= n:
        for k in range(3):
            fill_nan(out, k, n)
        return
    k_fast, k_slow, k_sig = macd_coefficients(fast, slow, signal)
    ema_fast, ema_slow, sig, start = macd_seeded(x, begin, fast, slow, signal, out)
    for t in range(start + 1, n):
        ema_fast, ema_slow, sig = macd_bar(f64(x[t]), ema_fast, ema_slow, sig, k_fast, k_slow, k_sig, signal, out, t)


@register_jitable
def macd_rows4(x, i, params, out):
    """macd_row over series i .. i+3, as ema_rows4 does it: each brought up to the latest
    signal seed on its own, then the four series' recurrences in one loop; the same bits."""
    fast, slow, signal = macd_periods(params)
    n = x.shape[1]
    x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
    o0, o1, o2, o3 = out[:, i], out[:, i + 1], out[:, i + 2], out[:, i + 3]
    b0, b1, b2, b3 = first_valid1(x0), first_valid1(x1), first_valid1(x2), first_valid1(x3)
    last = max(max(b0, b1), max(b2, b3)) + slow + signal - 2
    if last >= n:
        macd_row(x0, params, o0)
        macd_row(x1, params, o1)
        macd_row(x2, params, o2)
        macd_row(x3, params, o3)
        return
    kf, ks, kg = macd_coefficients(fast, slow, signal)
    f0, s0, g0, t0 = macd_seeded(x0, b0, fast, slow, signal, o0)
    f1, s1, g1, t1 = macd_seeded(x1, b1, fast, slow, signal, o1)
    f2, s2, g2, t2 = macd_seeded(x2, b2, fast, slow, signal, o2)
    f3, s3, g3, t3 = macd_seeded(x3, b3, fast, slow, signal, o3)
    for t in range(t0 + 1, last + 1):
        f0, s0, g0 = macd_bar(f64(x0[t]), f0, s0, g0, kf, ks, kg, signal, o0, t)
    for t in range(t1 + 1, last + 1):
        f1, s1, g1 = macd_bar(f64(x1[t]), f1, s1, g1, kf, ks, kg, signal, o1, t)
    for t in range(t2 + 1, last + 1):
        f2, s2, g2 = macd_bar(f64(x2[t]), f2, s2, g2, kf, ks, kg, signal, o2, t)
    for t in range(t3 + 1, last + 1):
        f3, s3, g3 = macd_bar(f64(x3[t]), f3, s3, g3, kf, ks, kg, signal, o3, t)
    for t in range(last + 1, n):
        f0, s0, g0 = macd_bar(f64(x0[t]), f0, s0, g0, kf, ks, kg, signal, o0, t)
        f1, s1, g1 = macd_bar(f64(x1[t]), f1, s1, g1, kf, ks, kg, signal, o1, t)
        f2, s2, g2 = macd_bar(f64(x2[t]), f2, s2, g2, kf, ks, kg, signal, o2, t)
        f3, s3, g3 = macd_bar(f64(x3[t]), f3, s3, g3, kf, ks, kg, signal, o3, t)


@register_jitable
def shifted_moments(x, first, last, shift):
    """Sums of (x - shift) and (x - shift)**2 over x[first..last] inclusive."""
    s1 = 0.0
    s2 = 0.0
    for t in range(first, last + 1):
        s1, s2 = shifted_add(s1, s2, f64(x[t]), shift)
    return s1, s2


@register_jitable
def bbands_reseed(x, first, last, inv_period):
    """TA_BBANDS's re-seed over the window x[first..last]: the shift becomes the window's
    mean, the moments are recomputed around it, then x[first] leaves (bbands_reseeded).

    Returns (shift, var1, var2, variance).
    """
    total = 0.0
    for t in range(first, last + 1):
        total += f64(x[t])
    shift = total * inv_period
    var1, var2 = shifted_moments(x, first, last, shift)
    var1, var2, variance = bbands_reseeded(var1, var2, f64(x[first]), shift, inv_period)
    return shift, var1, var2, variance


@register_jitable
def bbands_row(x, params, out):
    """TA_BBANDS (SMA middle band, equal up/down deviations), TA-Lib >= 0.8, into the rows of
    ``out`` (bbands_into, one pass)."""
    bbands_into(x, params, out[0], out[1], out[2], False)


@register_jitable
def bbands_bands_into(upper, middle, lower, period, nstd):
    """bbands_bands of each bar from the window sum staged in ``middle`` and the variance
    staged in ``lower`` (float64 rows of one length): elementwise, so with contiguous rows the
    divisions and square roots vectorize."""
    for t in range(upper.shape[0]):
        upper[t], middle[t], lower[t] = bbands_bands(middle[t] / period, lower[t], nstd)


@register_jitable
def bbands_into(x, params, upper, middle, lower, staged):
    """TA_BBANDS (SMA middle band, equal up/down deviations), TA-Lib >= 0.8, into the three
    rows.

    The middle band is TA-Lib's SMA running sum; the deviation is TA-Lib's
    cancellation-free variance: running sums of the data shifted by a reference
    value, re-seeded from the window mean (with a relative floor) whenever the
    shifted variance loses precision, a large value leaves the window, or every
    32 * window bars. ``staged`` (float64 rows only: the staged values must keep every bit)
    runs the recurrence first, storing each bar's window sum and variance, then the bands in
    a second, elementwise pass (bbands_bands_into) that vectorizes on the CPU; else each bar's
    bands are stored as the recurrence goes (one pass: the GPU, and float32 rows). Same bits
    either way.
    """
    period = int(params[0])
    nstd = params[1]
    n = x.shape[0]
    begin = first_valid1(x)
    start = begin + period - 1
    fill_nan_row(upper, start)
    fill_nan_row(middle, start)
    fill_nan_row(lower, start)
    if start >= n:
        return
    inv_period = 1.0 / period
    ma_total, shift, var1, var2, countdown = bbands_seed(x, begin, period)
    for t in range(start, n):
        ma_total, var1, var2, countdown, window_sum, variance, stale = bbands_bar(
            x, t, ma_total, shift, var1, var2, countdown, period, inv_period)
        if stale:
            countdown, shift, var1, var2, variance = bbands_reseed_at(x, t, period, inv_period)
        if staged:
            middle[t] = window_sum
            lower[t] = variance
        else:
            upper[t], middle[t], lower[t] = bbands_bands(window_sum / period, variance, nstd)
    if staged:
        bbands_bands_into(upper[start:], middle[start:], lower[start:], f64(period), nstd)


@register_jitable
def bbands_seed(x, begin, period):
    """TA_BBANDS's state before its first output (bar ``begin + period - 1``): the SMA sum of
    the window's first ``period - 1`` bars and their moments shifted by x[begin]; returns
    (ma_total, shift, var1, var2, countdown to the periodic re-seed)."""
    shift = f64(x[begin])
    ma_total = 0.0
    for t in range(begin, begin + period - 1):
        ma_total += f64(x[t])
    var1, var2 = shifted_moments(x, begin, begin + period - 2, shift)
    return ma_total, shift, var1, var2, 32 * period


@register_jitable
def bbands_bar(x, t, ma_total, shift, var1, var2, countdown, period, inv_period):
    """TA_BBANDS at bar t of x (the window x[t - period + 1 .. t], ``countdown`` bars before
    the periodic re-seed): bbands_window_step; returns (ma_total, var1, var2, countdown, window
    sum, variance, stale), where ``stale`` says that the caller must re-seed now
    (bbands_reseed_at: the variance drifted or the countdown ran out). The re-seed stays in the
    caller's loop: folded in here it makes this step too large to be inlined (3x slower)."""
    ma_total, var1, var2, window_sum, variance, drifted = bbands_window_step(
        ma_total, shift, var1, var2, f64(x[t]), f64(x[t - period + 1]), inv_period)
    countdown -= 1
    return ma_total, var1, var2, countdown, window_sum, variance, drifted or countdown <= 0


@register_jitable
def bbands_reseed_at(x, t, period, inv_period):
    """bbands_reseed of the window ending at bar t, the countdown restarted: returns
    (countdown, shift, var1, var2, variance)."""
    shift, var1, var2, variance = bbands_reseed(x, t - period + 1, t, inv_period)
    return 32 * period, shift, var1, var2, variance


@register_jitable
def atr_row(high, low, close, params, out):
    period = int(params[0])
    n = high.shape[0]
    begin = first_valid3(high, low, close)
    start = begin + period
    fill_nan(out, 0, start)
    if start >= n:
        return
    # period 1 takes the same path (alpha 1, beta 0), as TA-Lib 0.8 does: it is the true
    # range, except that a NaN true range poisons every later value (0 * NaN)
    alpha, beta = atr_coefficients(period)
    total = 0.0
    for t in range(begin + 1, start + 1):
        total += true_range_at(high, low, close, t)
    prev = total / period
    out[0, start] = prev
    for t in range(start + 1, n):
        prev = atr_step(prev, true_range_at(high, low, close, t), alpha, beta)
        out[0, t] = prev


# Windows up to this length take a branch-free min/max (stoch_raw_direct, stoch_raw_windows)
# when the highs and lows hold no NaN (same values as TA-Lib's tracking, far fewer
# unpredictable branches).
STOCH_DIRECT_MAX = 16


@register_jitable
def has_nan2(a, b, begin):
    """Whether a[begin:] or b[begin:] holds a NaN (a full pass counting them, no early exit,
    indexed from 0 on views: it vectorizes)."""
    a = a[begin:]
    b = b[begin:]
    bad = 0
    for t in range(a.shape[0]):
        bad += (a[t] != a[t]) | (b[t] != b[t])
    return bad != 0


@register_jitable
def stoch_raw_direct(high, low, close, first_k, fastk, raw):
    """Raw %K into the row ``raw`` from each window's min and max taken directly (bar by bar:
    the GPU's form). Without NaNs the window extremes TA-Lib tracks are exactly these values,
    so every bit of the result agrees."""
    for today in range(first_k, high.shape[0]):
        lowest = f64(low[today])
        highest = f64(high[today])
        for i in range(today - fastk + 1, today):
            v = f64(low[i])
            lowest = v if v < lowest else lowest
            v = f64(high[i])
            highest = v if v > highest else highest
        raw[today] = stoch_k(f64(close[today]), lowest, (highest - lowest) / 100.0)


@register_jitable
def stoch_raw_windows(high, low, close, first_k, fastk, lowest, raw):
    """stoch_raw_direct in elementwise passes over the rows (the CPU's form: with contiguous
    rows of the inputs' dtype every pass vectorizes): the window minima of the lows go to the
    scratch row ``lowest``, the maxima of the highs to ``raw``, which then becomes raw %K.
    Extremes of input values are input values, so storing them in the input's dtype loses
    nothing; each window is scanned in stoch_raw_direct's order (today's bar, then the oldest
    to the newest), so even the sign of a zero extreme agrees."""
    n = high.shape[0]
    m = n - first_k
    lows = lowest[first_k:]
    highs = raw[first_k:]
    low_today = low[first_k:]
    high_today = high[first_k:]
    for t in range(m):
        lows[t] = low_today[t]
        highs[t] = high_today[t]
    for lag in range(fastk - 1, 0, -1):
        low_lag = low[first_k - lag : n - lag]
        high_lag = high[first_k - lag : n - lag]
        for t in range(m):
            v = low_lag[t]
            lows[t] = v if v < lows[t] else lows[t]
            v = high_lag[t]
            highs[t] = v if v > highs[t] else highs[t]
    close_today = close[first_k:]
    for t in range(m):
        low_t = f64(lows[t])
        highs[t] = stoch_k(f64(close_today[t]), low_t, (f64(highs[t]) - low_t) / 100.0)


@register_jitable
def stoch_raw_tracked(high, low, close, begin, first_k, raw):
    """Raw %K into the row ``raw`` with TA_STOCH's own tracking of the window's extremes (rescanning
    when one leaves the window), which also fixes how NaNs in highs and lows propagate."""
    lowest_idx = -1
    highest_idx = -1
    lowest = 0.0
    highest = 0.0
    diff = 0.0
    trailing = begin
    for today in range(first_k, high.shape[0]):
        tmp = f64(low[today])
        if lowest_idx < trailing:
            lowest_idx = trailing
            lowest = f64(low[lowest_idx])
            for i in range(lowest_idx + 1, today + 1):
                tmp = f64(low[i])
                if tmp < lowest:
                    lowest_idx = i
                    lowest = tmp
            diff = (highest - lowest) / 100.0
        elif tmp <= lowest:
            lowest_idx = today
            lowest = tmp
            diff = (highest - lowest) / 100.0
        tmp = f64(high[today])
        if highest_idx < trailing:
            highest_idx = trailing
            highest = f64(high[highest_idx])
            for i in range(highest_idx + 1, today + 1):
                tmp = f64(high[i])
                if tmp > highest:
                    highest_idx = i
                    highest = tmp
            diff = (highest - lowest) / 100.0
        elif tmp >= highest:
            highest_idx = today
            highest = tmp
            diff = (highest - lowest) / 100.0
        raw[today] = stoch_k(f64(close[today]), lowest, diff)
        trailing += 1


@register_jitable
def stoch_smooth(slow_k, slow_d, first_k, slowk, slowd):
    """TA_STOCH's two SMA smoothings (periods >= 2) of the raw %K staged in the row ``slow_d``
    from bar ``first_k``: slow %K into ``slow_k``, %D of it into ``slow_d``, both from bar
    ``first_k + slowk + slowd - 2`` (earlier bars hold intermediates). The two running sums
    advance in one loop (their latencies overlap), %D ``slowk - 1`` bars behind slow %K, so it
    overwrites only raw %K values already out of slow %K's window. The operations of two
    sma_into passes over the stored (output-dtype) values, so the same bits."""
    n = slow_k.shape[0]
    begin_d = first_k + slowk - 1
    start = begin_d + slowd - 1
    lag = slowk - 1
    total_k = 0.0
    for t in range(first_k, begin_d):
        total_k += f64(slow_d[t])
    total_d = 0.0
    for i in range(begin_d, n):
        total_k, slow_k[i] = sma_step(total_k, f64(slow_d[i]), f64(slow_d[i - lag]), slowk)
        if i < start:
            total_d += f64(slow_k[i])
        j = i - lag
        if j >= start:
            total_d, slow_d[j] = sma_step(total_d, f64(slow_k[j]), f64(slow_k[j - slowd + 1]), slowd)
    for j in range(max(n - lag, start), n):
        total_d, slow_d[j] = sma_step(total_d, f64(slow_k[j]), f64(slow_k[j - slowd + 1]), slowd)


@register_jitable
def stoch_row(high, low, close, params, out):
    """TA_STOCH with SMA smoothing for slow %K and %D into the rows of ``out`` (stoch_into,
    the raw %K bar by bar)."""
    stoch_into(high, low, close, params, out[0], out[1], False)


@register_jitable
def stoch_into(high, low, close, params, slow_k, slow_d, by_windows):
    """TA_STOCH with SMA smoothing for slow %K and %D into the rows ``slow_k`` and ``slow_d``.

    Raw %K is staged in ``slow_d``, slow %K = SMA(raw %K) goes to ``slow_k``, then
    %D = SMA(slow %K) overwrites ``slow_d`` (through TA_MA, so period 1 copies; with both
    periods >= 2 the two SMAs run in one loop, stoch_smooth). ``by_windows`` takes the raw %K
    of NaN-free windows in elementwise passes (stoch_raw_windows: the CPU's contiguous rows),
    else bar by bar (stoch_raw_direct); same bits.
    """
    fastk = int(params[0])
    slowk = int(params[1])
    slowd = int(params[2])
    n = high.shape[0]
    begin = first_valid3(high, low, close)
    first_k = begin + fastk - 1
    start = first_k + slowk - 1 + slowd - 1
    if start >= n:
        fill_nan_row(slow_k, n)
        fill_nan_row(slow_d, n)
        return
    if fastk <= STOCH_DIRECT_MAX and not has_nan2(high, low, begin):
        if by_windows:
            stoch_raw_windows(high, low, close, first_k, fastk, slow_k, slow_d)
        else:
            stoch_raw_direct(high, low, close, first_k, fastk, slow_d)
    else:
        stoch_raw_tracked(high, low, close, begin, first_k, slow_d)
    if slowk > 1 and slowd > 1:
        stoch_smooth(slow_k, slow_d, first_k, slowk, slowd)
    else:
        ma_into(slow_d, first_k, slowk, slow_k)
        ma_into(slow_k, first_k + slowk - 1, slowd, slow_d)
    fill_nan_row(slow_k, start)
    fill_nan_row(slow_d, start)


@register_jitable
def obv_row(close, volume, params, out):
    n = close.shape[0]
    begin = first_valid2(close, volume)
    fill_nan(out, 0, begin)
    obv = f64(volume[begin])
    prev = f64(close[begin])
    for t in range(begin, n):
        c = f64(close[t])
        obv = obv_step(obv, prev, c, f64(volume[t]))
        out[0, t] = obv
        prev = c


@register_jitable
def typical_pv_at(high, low, close, volume, t):
    """typical_pv of bar t of the arrays, and its volume."""
    v = f64(volume[t])
    return typical_pv(f64(high[t]), f64(low[t]), f64(close[t]), v), v


@register_jitable
def vwap_row(high, low, close, volume, params, out):
    """Rolling VWAP of the typical price (H+L+C)/3 over ``window`` bars.

    Not a TA-Lib function; it follows the same conventions for leading NaNs
    (skipped per series, lookback window-1). An interior NaN makes every window
    that contains it NaN and no other (the running sums skip non-finite bars and
    count them). A window whose total volume is zero gives NaN.
    """
    period = int(params[0])
    n = high.shape[0]
    begin = first_valid4(high, low, close, volume)
    start = begin + period - 1
    fill_nan(out, 0, start)
    if start >= n:
        return
    pv = 0.0
    vol = 0.0
    n_bad = 0
    trailing = begin
    for t in range(begin, n):
        tpv, v = typical_pv_at(high, low, close, volume, t)
        pv, vol, n_bad = vwap_add(pv, vol, n_bad, tpv, v)
        if t >= start:
            out[0, t] = vwap_value(pv, vol, n_bad)
            tpv, v = typical_pv_at(high, low, close, volume, trailing)
            pv, vol, n_bad = vwap_remove(pv, vol, n_bad, tpv, v)
            trailing += 1


@register_jitable
def dispatch_rows(code, a, b, c, params, out, o, s, float64_rows):
    """Run indicator ``code`` on series ``s`` into rows ``out[o + k, s]`` of the CPU driver's
    C-contiguous ``(rows, n_series, T)`` buffer if it has a form whose elementwise passes
    vectorize over contiguous rows (BBANDS when ``float64_rows``: its divisions and square
    roots, bbands_into; STOCH: its window extremes and divisions, stoch_into); returns whether
    it had one."""
    if code == BBANDS and float64_rows:
        bbands_into(a, params, out[o, s], out[o + 1, s], out[o + 2, s], True)
    elif code == STOCH:
        stoch_into(a, b, c, params, out[o, s], out[o + 1, s], True)
    else:
        return False
    return True


@register_jitable
def dispatch4(code, x, i, params, out):
    """Run indicator ``code`` on series i .. i+3 of its one input ``x`` ``(n_series, T)`` into
    ``out`` ``(n_out, n_series, T)`` if it has a four-series body (the CPU driver's work item;
    SMA, EMA, RSI and MACD, whose recurrences' latency bounds one series; interleaved ATR (memory
    bound) and BBANDS (throughput bound once its divisions and square roots run apart,
    bbands_into) measured no faster); returns whether it had one."""
    if code == SMA:
        sma_rows4(x, i, params, out)
    elif code == EMA:
        ema_rows4(x, i, params, out)
    elif code == RSI:
        rsi_rows4(x, i, params, out)
    elif code == MACD:
        macd_rows4(x, i, params, out)
    else:
        return False
    return True


@register_jitable
def dispatch(code, a, b, c, d, params, out):
    """Run indicator ``code`` on one series. Unused inputs (b, c, d) are ignored."""
    if code == SMA:
        sma_row(a, params, out)
    elif code == EMA:
        ema_row(a, params, out)
    elif code == WMA:
        wma_row(a, params, out)
    elif code == RSI:
        rsi_row(a, params, out)
    elif code == MACD:
        macd_row(a, params, out)
    elif code == BBANDS:
        bbands_row(a, params, out)
    elif code == ATR:
        atr_row(a, b, c, params, out)
    elif code == STOCH:
        stoch_row(a, b, c, params, out)
    elif code == OBV:
        obv_row(a, b, params, out)
    elif code == VWAP:
        vwap_row(a, b, c, d, params, out)
