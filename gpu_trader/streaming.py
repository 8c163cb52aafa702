"""Streaming indicators: one bar at a time, for every symbol at once.

:class:`FeatureStream` keeps O(1)-per-bar state (running sums, Wilder/EMA state,
ring buffers one window long; STOCH rescans its window when the extreme leaves
it, as TA-Lib does) for every indicator of a feature spec, and advances all
symbols by one bar per :meth:`FeatureStream.update` call.

Exactness contract
------------------
The outputs are the batch functions' last values, bit for bit: after the bars
``H[..., :t+1]`` have been fed (by :meth:`~FeatureStream.warmup` and/or
:meth:`~FeatureStream.update`, in any split), the values returned for bar ``t``
equal ``features(H[..., :t+1], spec)[key][..., -1]`` (``np.array_equal`` with
``equal_nan=True``), computed in float64. Each update kernel below replays the
float64 operations of :mod:`gpu_trader.indicator_math` in the same order: it calls
the same one-step primitives as the batch row bodies (``im.ema_step``,
``im.rsi_step``, ``im.bbands_step``, ...) and keeps only the per-bar state and ring
buffers itself (``tests/test_streaming.py`` compares every bar with the batch).

Consequences worth knowing:

* Leading NaNs are per symbol *and per indicator*, as in the batch: an indicator
  starts at the symbol's first bar where all of *its own* inputs are non-NaN
  (close for SMA/EMA/WMA/RSI/MACD/Bollinger; high, low, close for ATR/STOCH;
  close, volume for OBV; all four for VWAP). An interior NaN after that start
  propagates exactly as in the batch (it poisons running sums).
* Because the batch is causal once a series has started, this also means the
  value for bar ``t`` equals ``features(H)[key][..., t]`` for any longer history
  ``H``, with one documented exception inherited from TA-Lib's ``check_begidx``:
  on a bar before the indicator's first all-valid bar the stream returns what the
  batch returns for a history that has *no* valid bar yet, which is NaN except for
  OBV (the bar's volume, when only the close is missing) and STOCH(1, 1, 1)
  (0 when high == low and only the close is missing). With NaN in every field
  before a listing date (the usual case) both readings agree.
* dtype: state and outputs are float64 whatever the input dtype (float32,
  integers and bools are converted exactly on the way in). The outputs equal the
  batch run on the input cast to float64 exactly; against the batch's float32
  outputs they agree to float32 precision only (the batch rounds its results, and
  some of its intermediates, to float32).

Rows
----
``update`` takes one bar for all symbols, either

* a close-only array of shape ``(n_symbols,)`` (a scalar when ``n_symbols == 1``),
  allowed only when every indicator of the spec reads close alone, or
* an OHLCV row: a mapping with ``high``, ``low``, ``close``, ``volume`` (keys
  case-insensitive; the fields the spec does not read may be left out), each of
  shape ``(n_symbols,)``, or an array of shape ``(5, n_symbols)`` in OHLCV order
  (``(5,)`` when ``n_symbols == 1``). ``open`` is accepted and ignored.

It returns ``{key: float64 array (n_symbols,)}`` with the keys of
:func:`gpu_trader.indicators.feature_keys` (a fresh dict of fresh arrays each
call; the caller may keep or modify them).

Inputs (rows and histories) may be read-only, of any real dtype or byte order, and
are never written; masked arrays and non-real dtypes are a ``TypeError`` (as
everywhere, see :mod:`gpu_trader.backend`). A mapping's keys match
case-insensitively (a vendor's ``Open/High/Low/Close/Volume`` DataFrame columns
work; ``Adj Close`` and other keys are ignored). ``n_symbols`` times the spec's
per-symbol state may hold at most :data:`gpu_trader.validation.MAX_ELEMENTS` values.

numba is imported (and the kernels compiled, or loaded from the on-disk cache)
when the first stream is constructed, never at ``import gpu_trader``.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import numpy as np

from .backend import _is_pandas, check_same_labels, host_input, to_numpy
from .indicator_specs import ATR, BBANDS, EMA, MACD, OBV, RSI, SMA, SPECS, STOCH, VWAP, WMA
from .indicators import _INPUTS, _validated_params, feature_keys, field_keys, is_mapping, normalize_spec
from .profiling import annotate_methods
from .validation import check_allocation, check_count

__all__ = ["FeatureStream"]

_FIELDS = ("high", "low", "close", "volume")  # rows of the (4, n_symbols) input buffer
# Input groups: an indicator's first valid bar is computed over its own inputs.
_GROUPS = {
    ("close",): 0,
    ("high", "low", "close"): 1,
    ("close", "volume"): 2,
    ("high", "low", "close", "volume"): 3,
}
_N_GROUPS = 4
# One program row per indicator of the spec: code, input group, up to three integer
# parameters (a, b, c), float-state offset, int-state offset, first output row, n outputs.
_P_WIDTH = 9
# warmup converts the history to float64 in chunks of at most this many values
_WARMUP_CHUNK_ELEMENTS = 1 << 20


def _state_size(code: int, a: int, b: int, c: int) -> tuple[int, int]:
    """(float64 slots, int64 slots) of one indicator's per-symbol state."""
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


# ---------------------------------------------------------------------------------
# Update kernels. Plain Python here; made numba-callable (register_jitable) and
# compiled (njit, cached on disk) by _kernels() on first use, so importing this
# module does not import numba. Each mirrors the *_row function of
# gpu_trader.indicator_math of the same name, bar by bar, and does its arithmetic
# with the same one-step primitives (``im.*_step`` and friends), so only the
# bookkeeping (state slots, ring buffers, warm-up) is written here: ``j`` is the bar's index
# counted from the indicator's first valid bar (``t - begin`` in the row
# functions), ``f``/``ii`` are the symbol's float/int state rows, ``o``/``io`` the
# indicator's offsets into them. Ring buffers hold the last ``period`` inputs at
# index ``pos = j % period``; the value leaving the window (``x[trailing]`` with
# ``trailing = t - period + 1``) sits at ``_nxt(pos, period)`` once bar j is stored.
# ---------------------------------------------------------------------------------


# gpu_trader.indicator_math, bound by _kernels(): importing it imports numba, which
# importing this module must not do. The kernels below only run once it is bound.
im = None


def _nxt(pos, p):
    """(pos + 1) % p for 0 <= pos < p, without an integer division."""
    pos += 1
    return pos if pos < p else 0


def _sma_step(f, o, ring, p, j, x):
    """sma_into (im.sma_step): the running total in f[o], the window in the ring
    f[ring : ring + p]; NaN until the window is full."""
    if j == 0:
        f[o] = 0.0
    pos = j % p
    f[ring + pos] = x
    if j < p - 1:
        f[o] += x
        return math.nan
    f[o], res = im.sma_step(f[o], x, f[ring + _nxt(pos, p)], p)
    return res


def _ma_step(f, o, ring, p, j, x):
    """ma_into: TA_MA(SMA), an exact copy at period 1, else _sma_step."""
    if p == 1:
        return x
    return _sma_step(f, o, ring, p, j, x)


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
        prev = im.ema_step(f[o + 1], x, 2.0 / (p + 1))
    f[o + 1] = prev
    return prev


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
        f[o], f[o + 1] = im.wma_add(f[o], f[o + 1], x, j + 1)
        return math.nan
    period_sub, period_sum = im.wma_push(f[o], f[o + 1], x, f[o + 2], p)
    ii[io] -= 1
    if ii[io] <= 0:
        ii[io] = 8 * p
        period_sub = 0.0  # wma_sums(x, t - p + 1, p)
        period_sum = 0.0
        q = pos
        for w in range(1, p + 1):
            q = _nxt(q, p)  # (j - p + w) % p
            period_sub, period_sum = im.wma_add(period_sub, period_sum, f[ring + q], w)
    f[o + 2] = f[ring + _nxt(pos, p)]
    res = period_sum / im.wma_divider(p)
    period_sum -= period_sub
    f[o] = period_sub
    f[o + 1] = period_sum
    return res


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
        gain, loss = im.rsi_add(gain, loss, d)
        if j < p:
            f[o + 1] = gain
            f[o + 2] = loss
            return math.nan
        loss *= inv_period
        gain *= inv_period
    else:
        gain, loss = im.rsi_step(gain, loss, d, p, inv_period)
    f[o + 1] = gain
    f[o + 2] = loss
    return im.rsi_ratio(gain, loss)


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
        ema_fast = im.ema_step(f[o + 3], x, 2.0 / (fast + 1))
        ema_slow = im.ema_step(f[o + 2], x, 2.0 / (slow + 1))
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
        sig = line if signal == 1 else im.ema_step(sig, line, 2.0 / (signal + 1))
    f[o + 5] = sig
    out[r, s] = line
    out[r + 1, s] = sig
    out[r + 2, s] = line - sig


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
        f[o + 2], f[o + 3] = im.shifted_add(f[o + 2], f[o + 3], x, f[o + 1])
        out[r, s] = math.nan
        out[r + 1, s] = math.nan
        out[r + 2, s] = math.nan
        return
    shift = f[o + 1]
    ma_total, var1, var2, mean, variance, drifted = im.bbands_step(
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
            var1, var2 = im.shifted_add(var1, var2, f[ring + q], shift)
            q = _nxt(q, p)
        var1, var2, variance = im.bbands_reseeded(var1, var2, f[ring + oldest], shift, inv_period)
    f[o] = ma_total
    f[o + 1] = shift
    f[o + 2] = var1
    f[o + 3] = var2
    out[r, s], out[r + 1, s], out[r + 2, s] = im.bbands_bands(mean, variance, nstd)


def _atr_step(f, o, p, j, h, lo, c):
    """atr_row (TA-Lib 0.8): mean of the first p true ranges, then alpha * tr + beta * prev."""
    if j == 0:
        f[o] = c
        f[o + 1] = 0.0
        return math.nan
    tr = im.true_range(h, lo, f[o])
    f[o] = c
    if j <= p:
        total = f[o + 1] + tr
        f[o + 1] = total
        if j < p:
            return math.nan
        prev = total / p
    else:
        alpha, beta = im.atr_coefficients(p)
        prev = im.atr_step(f[o + 1], tr, alpha, beta)
    f[o + 1] = prev
    return prev


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
    raw = im.stoch_k(c, lowest, diff)
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


def _obv_step(f, o, j, c, v):
    """obv_row: starts from the first valid bar's volume."""
    if j == 0:
        f[o] = v
        f[o + 1] = c
    obv = im.obv_step(f[o], f[o + 1], c, v)
    f[o] = obv
    f[o + 1] = c
    return obv


def _vwap_step(f, ii, o, io, p, j, h, lo, c, v):
    """vwap_row: running sums over finite bars; a window holding a non-finite bar is NaN."""
    tpvs = o + 2
    vols = tpvs + p
    if j == 0:
        f[o] = 0.0
        f[o + 1] = 0.0
        ii[io] = 0
    tpv = im.typical_pv(h, lo, c, v)
    pos = j % p
    f[tpvs + pos] = tpv
    f[vols + pos] = v
    f[o], f[o + 1], ii[io] = im.vwap_add(f[o], f[o + 1], ii[io], tpv, v)
    if j < p - 1:
        return math.nan
    res = im.vwap_value(f[o], f[o + 1], ii[io])
    q = _nxt(pos, p)
    f[o], f[o + 1], ii[io] = im.vwap_remove(f[o], f[o + 1], ii[io], f[tpvs + q], f[vols + q])
    return res


def _not_started(code, a, b, c, n_out, h, lo, cl, v, out, r, s):
    """A bar before the indicator's first valid bar: the batch's value for a series
    with no valid bar yet (TA-Lib starts such a series at its last bar)."""
    if code == OBV:
        out[r, s] = v  # obv_row with begin = t: obv = volume[t], and close[t] == prev (or NaN)
    elif code == STOCH and a == 1 and b == 1 and c == 1:
        # stoch_row with begin = t and every period 1: raw %K of bar t, copied twice
        raw = im.stoch_k(cl, lo, (h - lo) / 100.0)
        out[r, s] = raw
        out[r + 1, s] = raw
    else:
        for q in range(n_out):
            out[r + q, s] = math.nan


def _advance(inp, prog, fprog, fs, ist, out):
    """Feed one bar (inp: (4, n_symbols) high/low/close/volume) through every indicator."""
    n = inp.shape[1]
    m = prog.shape[0]
    for s in range(n):
        h = inp[0, s]
        lo = inp[1, s]
        c = inp[2, s]
        v = inp[3, s]
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


def _update_kernel(inp, prog, fprog, fs, ist, out):
    _advance(inp, prog, fprog, fs, ist, out)


def _warmup_kernel(hist, prog, fprog, fs, ist, out):
    """hist: (T, 4, n_symbols); leaves ``out`` holding the last bar's values."""
    for t in range(hist.shape[0]):
        _advance(hist[t], prog, fprog, fs, ist, out)


_JITABLE = (
    _nxt, _sma_step, _ma_step, _ema_step, _wma_step, _rsi_step, _macd_step, _bbands_step, _atr_step,
    _stoch_step, _obv_step, _vwap_step, _not_started, _advance,
)


@functools.lru_cache(maxsize=1)
def _kernels():
    """Compile (or load from the on-disk cache) the update and warm-up kernels."""
    global im
    from numba.extending import register_jitable

    from . import indicator_math as im
    from .jit import njit_cached

    for fn in _JITABLE:
        # numba-callable from jitted code. The kernels never allocate, so they are compiled
        # without reference counting (_nrt=False): no atomic incref/decref of the state arrays
        # per call, which also keeps the small steps within LLVM's inlining threshold.
        register_jitable(_nrt=False)(fn)
    return njit_cached(nogil=True)(_update_kernel), njit_cached(nogil=True)(_warmup_kernel)


# ---------------------------------------------------------------------------------
# The public class
# ---------------------------------------------------------------------------------


@annotate_methods
class FeatureStream:
    """Incremental feature pipeline: the :func:`gpu_trader.features` spec, one bar at a time.

    ``FeatureStream(n_symbols, spec=None)``: ``spec`` has the format of
    :func:`gpu_trader.features` (default :data:`gpu_trader.indicators.DEFAULT_FEATURES`)
    with one value per parameter (parameter grids are batch-only).

    * :meth:`update` ``(row) -> {key: (n_symbols,) float64}`` advances every symbol by
      one bar (see the module docstring for the row formats);
    * :meth:`warmup` ``(history)`` feeds many bars at once, leaving the state exactly
      as if each had been passed to :meth:`update`;
    * :meth:`reset` forgets every bar seen.

    Values equal the batch functions' last values exactly (see the module docstring).
    Each update costs O(number of indicators) per symbol (a window rescan for STOCH's
    extremes and periodic re-anchoring for WMA/Bollinger, amortized O(1)).
    """

    def __init__(self, n_symbols: int, spec: Mapping[str, Any] | None = None) -> None:
        n = check_count(n_symbols, "n_symbols", 1)
        spec = normalize_spec(spec)
        self.n_symbols = n
        self.spec = spec
        self.keys: tuple[str, ...] = tuple(feature_keys(spec))

        rows, fparams = [], []
        needed: set[str] = set()
        f_size, i_size, out_row = 0, _N_GROUPS, 0
        for key, (fn_name, params) in spec.items():
            values = _validated_params(fn_name, params)
            for pname, (vals, is_grid) in zip(SPECS[fn_name][3], values):
                if is_grid:
                    raise ValueError(
                        f"spec[{key!r}]: parameter {pname!r} of {fn_name} is a sequence {list(vals)}; "
                        "FeatureStream takes one value per parameter (parameter grids are batch-only)"
                    )
            scalars = [v[0][0] for v in values]
            code, _, n_out, pnames = SPECS[fn_name]
            ints = [int(v) for v, pn in zip(scalars, pnames) if pn != "nstd"] + [0, 0, 0]
            a, b, c = ints[:3]
            if code == MACD and b < a:  # macd_row swaps them
                a, b = b, a
            nf, ni = _state_size(code, a, b, c)
            inputs = _INPUTS[fn_name]
            needed.update(inputs)
            rows.append([code, _GROUPS[tuple(inputs)], a, b, c, f_size, i_size, out_row, n_out])
            fparams.append(float(scalars[1]) if code == BBANDS else 0.0)
            f_size += nf
            i_size += ni
            out_row += n_out
        check_allocation(n * (f_size + i_size + out_row), f"FeatureStream(n_symbols={n})'s state")
        self._prog = np.array(rows, dtype=np.int64).reshape(-1, _P_WIDTH)
        self._fprog = np.array(fparams, dtype=np.float64)
        self._f_size, self._i_size = f_size, i_size
        self._needed = tuple(i for i, name in enumerate(_FIELDS) if name in needed)
        self._close_only = needed == {"close"}
        self._out = np.empty((out_row, n), dtype=np.float64)
        self._row = np.empty((4, n), dtype=np.float64)
        self._shape1 = (n,)
        self._shape5 = (5, n)
        self._update_kernel, self._warmup_kernel = _kernels()
        self.reset()

    # -- state ----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every bar seen: the next bar is the first of every symbol's history."""
        self._fs = np.zeros((self.n_symbols, max(self._f_size, 1)), dtype=np.float64)
        self._is = np.zeros((self.n_symbols, self._i_size), dtype=np.int64)
        self._is[:, :_N_GROUPS] = -1
        self._out.fill(np.nan)
        self._row.fill(np.nan)
        self.n_bars = 0

    def values(self) -> dict[str, np.ndarray]:
        """The values of the latest bar (all NaN before the first), as fresh arrays."""
        return dict(zip(self.keys, self._out.copy()))

    @property
    def needs_ohlcv(self) -> bool:
        """True when some indicator reads more than the close (so rows must be OHLCV)."""
        return not self._close_only

    def __repr__(self) -> str:
        return f"FeatureStream(n_symbols={self.n_symbols}, keys={list(self.keys)}, n_bars={self.n_bars})"

    # -- one bar ----------------------------------------------------------------------
    def update(self, row) -> dict[str, np.ndarray]:
        """Advance every symbol by one bar; returns ``{key: float64 array (n_symbols,)}``."""
        buf = self._row
        if type(row) is not np.ndarray or row.dtype.kind not in "fiub":  # the plain case stays cheap
            if is_mapping(row):
                self._fill_from_mapping(row)
                return self._step(buf)
            row = host_input(row, "row")
        shape = row.shape
        if shape == self._shape5:
            buf[...] = row[1:]
        elif shape == self._shape1 or (self.n_symbols == 1 and shape == ()):
            if not self._close_only:
                raise ValueError(self._close_only_error("row", "(5, n_symbols)"))
            buf[2] = row
        elif self.n_symbols == 1 and shape == (5,):
            buf[:, 0] = row[1:]
        else:
            raise ValueError(
                f"row must have shape ({self.n_symbols},) (close only) or (5, {self.n_symbols}) "
                f"(OHLCV), or be a mapping of ({self.n_symbols},) arrays; got shape {shape}"
            )
        return self._step(buf)

    def _step(self, buf: np.ndarray) -> dict[str, np.ndarray]:
        self._update_kernel(buf, self._prog, self._fprog, self._fs, self._is, self._out)
        self.n_bars += 1
        return dict(zip(self.keys, self._out.copy()))

    def _close_only_error(self, arg: str, shape: str) -> str:
        others = sorted({fn for fn, _ in self.spec.values() if _INPUTS[fn] != ("close",)})
        return (
            f"{arg}: a close-only {arg} needs a spec of close-only indicators; {others} also read "
            f"high/low/volume, so pass an OHLCV {arg} (a mapping or a {shape} array)"
        )

    def _fill_from_mapping(self, row) -> None:
        buf = self._row
        n = self.n_symbols
        for i in self._needed:
            name = _FIELDS[i]
            try:
                value = row[name]
            except (KeyError, IndexError, TypeError):
                value = self._lookup_ci(row, name)
            arr = value if type(value) is np.ndarray and value.dtype.kind in "fiub" else host_input(
                value, f"row[{name!r}]")
            if arr.shape != self._shape1 and not (n == 1 and arr.shape == ()):
                raise ValueError(f"row[{name!r}] must have shape ({n},), got {arr.shape}")
            buf[i] = arr

    def _lookup_ci(self, row, name: str):
        """``row``'s field ``name`` under any case (``Close``); ``ValueError`` listing the fields needed."""
        needed = tuple(_FIELDS[i] for i in self._needed)
        return row[field_keys(row, needed, "row")[name]]

    # -- many bars ---------------------------------------------------------------------
    def warmup(self, history) -> dict[str, np.ndarray]:
        """Feed a history of bars, as if each had been passed to :meth:`update` in order.

        history: the format of :func:`gpu_trader.features`: a mapping with ``high``,
        ``low``, ``close``, ``volume`` arrays of shape ``(n_symbols, T)`` (``(T,)`` when
        ``n_symbols == 1``; pandas DataFrames with time along the index and one column
        per symbol are accepted), or an array of shape ``(5, n_symbols, T)`` in OHLCV
        order; or, for a close-only spec, a close array of shape ``(n_symbols, T)``.
        ``T`` may be 0. The stream continues from its current state (call :meth:`reset`
        first to start over). Returns the values of the last bar (as :meth:`values`).
        """
        fields, T = self._history_fields(history)
        n = self.n_symbols
        chunk = max(1, min(T, _WARMUP_CHUNK_ELEMENTS // (4 * n)))
        hist = np.full((chunk, 4, n), np.nan, dtype=np.float64)  # fields not read stay NaN
        for a in range(0, T, chunk):
            b = min(T, a + chunk)
            part = hist[: b - a]
            for i, arr in fields.items():
                part[:, i, :] = arr[:, a:b].T
            self._warmup_kernel(part, self._prog, self._fprog, self._fs, self._is, self._out)
            self.n_bars += b - a
        return self.values()

    def _history_fields(self, history) -> tuple[dict[int, np.ndarray], int]:
        """-> ({row of the input buffer: (n_symbols, T) array}, T), validated."""
        n = self.n_symbols
        fields: dict[int, np.ndarray] = {}
        if is_mapping(history):
            keys = field_keys(history, tuple(_FIELDS[i] for i in self._needed), "history")
            check_same_labels(tuple(history[keys[_FIELDS[i]]] for i in self._needed),
                              tuple(f"history[{_FIELDS[i]!r}]" for i in self._needed))
            for i in self._needed:
                name = _FIELDS[i]
                fields[i] = self._history_field(history[keys[name]], f"history[{name!r}]")
        else:
            arr = _to_host(history, "history")
            if arr.ndim == 3 and arr.shape[:2] == (5, n):
                fields = {i: arr[i + 1] for i in range(4)}
            elif n == 1 and arr.ndim == 2 and arr.shape[0] == 5:
                fields = {i: arr[i + 1][None] for i in range(4)}
            elif (arr.ndim == 2 and arr.shape[0] == n) or (n == 1 and arr.ndim == 1):
                if not self._close_only:
                    raise ValueError(self._close_only_error("history", "(5, n_symbols, T)"))
                fields = {2: arr.reshape(n, -1)}
            else:
                raise ValueError(
                    f"history must be a mapping of (n_symbols={n}, T) arrays or an array of shape "
                    f"(5, {n}, T) in OHLCV order (or ({n}, T) close only); got shape {arr.shape}"
                )
        lengths = {a.shape[-1] for a in fields.values()}
        if len(lengths) != 1:
            found = {f"history[{_FIELDS[i]!r}]": a.shape[-1] for i, a in fields.items()}
            raise ValueError(f"history fields differ in length (T): {found}")
        return fields, lengths.pop()

    def _history_field(self, value, name: str) -> np.ndarray:
        n = self.n_symbols
        arr = _to_host(value, name)
        if arr.ndim == 1 and n == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[0] != n:
            raise ValueError(f"{name} must have shape (n_symbols={n}, T), got {arr.shape}")
        return arr


def _to_host(x, name: str) -> np.ndarray:
    """NumPy view/copy of an array-like of real numbers (:func:`gpu_trader.backend.host_input`);
    a pandas DataFrame (time x symbols) is transposed."""
    if hasattr(x, "columns") and hasattr(x, "to_numpy"):  # pandas / cuDF DataFrame
        return host_input(_backend_to_numpy(x), name).T
    return host_input(_backend_to_numpy(x), name)


def _backend_to_numpy(x):
    """Host values: pandas (nullable columns as float64 with NaN) and arrays through
    :func:`gpu_trader.to_numpy`, other frames (cuDF) through their own ``to_numpy``."""
    if hasattr(x, "to_numpy") and not hasattr(x, "__cuda_array_interface__") and not _is_pandas(x):
        return x.to_numpy()
    return to_numpy(x)
