"""Indicators on JAX: the contract of :mod:`gpu_trader.cpu_fallback.indicators` as jitted array code.

``compute(name, inputs, params, n_out)``: ``inputs`` are 1-4 ``(n_series, T)`` JAX arrays
of one float dtype (float32 or float64) in the indicator's argument order, ``params`` is
``(P, k)`` float64 NumPy (``k`` may be 0, OBV); the result is ``(n_out, P, n_series, T)``
in the inputs' dtype. All arithmetic is float64; only the result is rounded (and, as in
the row bodies, STOCH's staged raw and slow %K). ``compute_many`` runs several names over
one dict of OHLCV fields.

Semantics are TA-Lib's, as :mod:`gpu_trader._internal.indicator_loops` implements them, but the
formulation is parallel in time rather than a loop over bars:

* **ragged starts.** ``begin`` (per series) is the first bar where every input is
  non-NaN (else ``T - 1``). Every series is gathered so that its ``begin`` sits at index
  0, computed with ``begin = 0`` for all, gathered back, and the first
  ``begin + lookback`` outputs set to NaN. Everything is causal, so the bars the gather
  pads past the end never reach an output. When every series starts at bar 0 (the
  common case) no gather runs (:func:`jax.lax.cond`).
* **recurrences** (EMA, RSI's Wilder gain/loss, ATR, MACD's EMAs and signal) are affine
  maps ``y[t] = a * y[t-1] + b[t]`` composed by :func:`jax.lax.associative_scan`
  (``(a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2)``), started at the TA-Lib seed (the mean of
  the first window) with ``a = 0``. A NaN in a later ``b`` poisons every later prefix, as
  TA-Lib's running state does. OBV is a cumulative sum of its signed volumes.
* **window reductions** (SMA, VWAP, STOCH's min/max and its %K/%D SMAs) take XLA's
  ``reduce_window`` up to ``DIRECT_WINDOW_MAX`` (128) bars (a direct sum of each window:
  ``O(T * window)`` work but one vectorized pass, 2-3x faster on XLA's CPU than the
  alternative below for windows of 5-64) and log-depth doublings above: a block of
  ``2k`` bars ending at ``t`` merges the blocks of ``k`` ending at ``t - k`` and ``t``, and
  the bits of the window are merged the same way (``O(T log window)``). Neither takes
  cumulative-sum differences, so long series suffer no cancellation. WMA and Bollinger's
  deviation always double: WMA carries ``(S, W)`` and merges
  ``W = W_old + W_new + len_old * S_new``; Bollinger carries ``(S, M2)`` and merges with
  Chan's update ``M2 = M2_old + M2_new + delta**2 * a b / (a + b)``, a cancellation-free
  population variance (its middle band is the SMA, bit for bit).
* **NaN policy** (TA-Lib 0.8's arithmetic, infinities included): a NaN poisons SMA, the
  Bollinger bands, EMA, MACD and ATR from its bar on (ATR through a NaN high or low; a
  NaN close only drops out of the true range's comparisons); an inf is carried as
  TA-Lib's running state carries it (an SMA window holding it is inf, NaN once it has
  left; EMA is inf at its bar, NaN after; Bollinger's outer bands are NaN from it on;
  ATR stays inf). RSI is 0 from its first NaN change on (its loss sum is NaN,
  ``total > 0`` fails). WMA is NaN (inf at the bar itself) from a non-finite bar until
  its next re-anchor (every ``8 * window`` bars after its start) whose window is clean.
  OBV's comparisons skip a NaN close (two steps) and a NaN volume poisons only when it
  is added. VWAP is NaN only for windows holding a non-finite bar (or no volume). STOCH:
  a NaN close gives a NaN raw %K (0 where the range is flat), which poisons the SMAs
  after it (a period of 1 copies); NaNs inside the highs or lows take TA-Lib's own
  tracked-extreme semantics (``indicator_math.stoch_raw_tracked``: an extreme is only
  replaced when it leaves the window or is beaten, and a rescan that starts on a NaN
  gives NaN for that bar). That state machine is a :func:`jax.lax.scan` over time, run
  (chosen with :func:`jax.lax.cond`) only when some series holds such a NaN.
* **period 1**: EMA, WMA and STOCH's smoothing copy their input exactly (TA-Lib >= 0.8),
  as the row bodies do; SMA with window 1 keeps its running-sum poisoning. ATR with
  window 1 is TA-Lib 0.8's ``1 * tr + 0 * prev``: the true range exactly, but poisoned
  for good by a NaN high or low (``0 * NaN``).
* **MACD**: fast and slow are swapped when slow < fast; the fast EMA is seeded at the
  slow EMA's first output with the mean of the fast window ending there.

Differences from TA-Lib (all within 1e-9 of the series scale in float64): the sums
are taken in another order (window sums by reduce_window or doubling, recurrences by a
parallel scan), and Bollinger's variance is Chan's exact window variance instead of
TA-Lib's re-seeded shifted running sums, so TA-Lib's flooring of a relative 1e-12
variance to 0 is not reproduced: a constant window gives a standard deviation of 0 or
a rounding residue around 1e-16 of the price. STOCH with an infinite high or low:
TA-Lib's C code returns finite values where the shared row bodies (``indicator_math``),
and so this module, give NaN.

Everything is differentiable with respect to the prices (:func:`jax.grad` through the
scans, window reductions and gathers). Divisions and square roots are guarded on both
branches, and Bollinger's moments and VWAP's sums run over the finite bars only, so no
masked-out branch feeds NaN or inf into a gradient: the gradient of a sum of finite
outputs is finite, next to NaN and inf bars too.

Compilation: one :func:`jax.jit` per (indicator, parameter grid, shapes, dtype); the
parameters are static (window lengths fix the shifts and the seeds' positions), so a grid
of ``P`` parameter sets compiles ``P`` bodies into one program (a few tenths of a second
per body on a CPU). A grid of more than :data:`MAX_TRACED_GRID` sets is therefore a
``ValueError`` here (run it on ``cpu``/``cuda``, or in parts), before anything is traced.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._internal.indicator_specs import INPUT_FIELDS, SPECS, lookback

__all__ = ["compute", "compute_many"]

F64 = jnp.float64


# -- building blocks on (n, T) float64 arrays, time on the last axis --------------------------
def _delay(x, k: int, fill):
    """``x`` delayed by ``k`` bars (static ``k >= 0``): ``out[:, t] = x[:, t - k]``, ``fill`` before bar 0."""
    T = x.shape[-1]
    if k == 0:
        return x
    if k >= T:
        return jnp.full_like(x, fill)
    pad = jnp.full(x.shape[:-1] + (k,), fill, x.dtype)
    return jnp.concatenate([pad, x[..., : T - k]], axis=-1)


def _window(bars, w: int, merge, fill):
    """Reduce the window of ``w`` bars ending at every ``t`` (static ``w >= 1``) by doubling.

    ``bars``: a tuple of arrays, the one-bar blocks. ``merge(old, new, a, b)`` merges a block
    of ``a`` bars ending ``b`` bars before ``t`` with a block of ``b`` bars ending at ``t``.
    ``fill``: one value per array for the bars before bar 0 (windows reaching there are
    garbage; callers mask them). ``O(log w)`` passes over the arrays.
    """
    def delay(block, k):
        return tuple(_delay(x, k, f) for x, f in zip(block, fill))

    acc, acc_len = None, 0
    power, length = bars, 1
    while True:
        if w & length:
            acc = power if acc is None else merge(delay(power, acc_len), acc, length, acc_len)
            acc_len += length
        if 2 * length > w:
            return acc
        power = merge(delay(power, length), power, length, length)
        length *= 2


# Windows up to this length take XLA's reduce_window: O(T * w) work but one vectorized pass,
# measured 2-3x faster than the O(T log w) doubling on XLA's CPU for w = 5..64 (2000 x 2520).
DIRECT_WINDOW_MAX = 128
MAX_TRACED_GRID = 1024
"""Most parameter sets one call compiles (one traced body each)."""


def _window_reduce(x, w: int, op, init):
    """``op`` (lax.add, lax.min, lax.max) over the window of ``w`` bars ending at every ``t``."""
    if w <= DIRECT_WINDOW_MAX:
        ones = (1,) * x.ndim
        return lax.reduce_window(x, init, op, ones[:-1] + (w,), ones, ((0, 0),) * (x.ndim - 1) + ((w - 1, 0),))
    return _window((x,), w, lambda old, new, a, b: (op(old[0], new[0]),), (init,))[0]


def _window_sum(x, w: int):
    return _window_reduce(x, w, lax.add, 0.0)


def _bad_before(x, k: int, start: int = 0):
    """Whether a non-finite bar at index ``start`` or later lies ``k`` or more bars before ``t``."""
    t = jnp.arange(x.shape[-1])
    bad = ~jnp.isfinite(x) & (t >= start)
    first = jnp.where(bad.any(axis=-1), jnp.argmax(bad, axis=-1), x.shape[-1])
    return t - k >= first[:, None]


def _running_sum_mean(x, period: int, start: int = 0):
    """TA_INT_SMA over ``x[:, start:]`` (values at ``t >= start + period - 1``; earlier ones garbage):
    the window mean, NaN for good once a non-finite bar has left the window (TA-Lib's
    running sum ``inf - inf``; inside the window the window sum carries it itself)."""
    t = jnp.arange(x.shape[-1])
    total = _window_sum(jnp.where(t >= start, x, 0.0), period)
    return jnp.where(_bad_before(x, period, start), jnp.nan, total / period)


def _ma(x, period: int, start: int = 0):
    """TA_MA with SMA type: an exact copy at period 1, else the running-sum SMA."""
    return x if period == 1 else _running_sum_mean(x, period, start)


def _affine_scans(recurrences, at: int):
    """For each ``(a, b, seed)`` of ``recurrences``: ``y[at] = seed``, ``y[:, t] = a * y[:, t-1] + b[:, t]``
    after it, 0 before (``a`` a Python float, ``b`` ``(n, T)``, ``seed`` ``(n,)``). One parallel
    scan for all of them (separate leaves: cheaper than a stacked array)."""
    T = recurrences[0][1].shape[-1]
    if at >= T:
        return [jnp.zeros_like(b) for _, b, _ in recurrences]
    m = len(recurrences)
    coefs = tuple(jnp.full((1, T - at), a, F64).at[:, 0].set(0.0) for a, _, _ in recurrences)
    offsets = tuple(b[:, at:].at[:, 0].set(seed) for _, b, seed in recurrences)

    def compose(first, second):
        a1, b1, a2, b2 = first[:m], first[m:], second[:m], second[m:]
        return (*(x * y for x, y in zip(a1, a2)), *(y * u + v for y, u, v in zip(a2, b1, b2)))

    ys = lax.associative_scan(compose, coefs + offsets, axis=1)[m:]
    return [jnp.concatenate([jnp.zeros((y.shape[0], at), F64), y], axis=-1) for y in ys]


def _ema_from(x, periods, at: int, seeds):
    """TA-Lib's EMA recurrence ``(v - prev) * k + prev``, k = 2 / (period + 1), from ``seeds`` at
    bar ``at``, one EMA per period of ``periods``. Its state is NaN from the bar after a
    non-finite one on (``inf - inf``)."""
    ks = [2.0 / (p + 1) for p in periods]
    ys = _affine_scans([(1.0 - k, k * x, seed) for k, seed in zip(ks, seeds)], at)
    poisoned = (jnp.arange(x.shape[-1]) > at) & _bad_before(x, 1)
    return [jnp.where(poisoned, jnp.nan, y) for y in ys]


def _safe_div(num, den, ok, otherwise):
    """``num / den`` where ``ok``, else ``otherwise``. Gradients flow only where ``ok`` and ``den``
    is finite: elsewhere the quotient (NaN, inf or 0, as in TA-Lib) is taken through
    :func:`jax.lax.stop_gradient` and the unselected branch divides by 1, so no branch
    feeds NaN or inf into a gradient."""
    live = ok & jnp.isfinite(den)
    quotient = num / jnp.where(live, den, 1.0)
    return jnp.where(live, quotient, jnp.where(ok, lax.stop_gradient(num / den), otherwise))


# -- indicators, on series gathered to start at their first valid bar (begin = 0) ---------------
# Each takes the float64 inputs, the parameter set and the output dtype, and returns its
# outputs; values before the lookback are garbage (masked by the driver).
def _sma(xs, p, dtype):
    return (_running_sum_mean(xs[0], int(p[0])),)


def _ema(xs, p, dtype):
    (x,), period = xs, int(p[0])
    if period == 1:
        return (x,)
    return (_ema_from(x, (period,), period - 1, [jnp.sum(x[:, :period], axis=-1) / period])[0],)


def _wma(xs, p, dtype):
    (x,), period = xs, int(p[0])
    if period == 1:
        return (x,)
    T = x.shape[-1]

    def merge(old, new, a, b):
        return old[0] + new[0], old[1] + new[1] + a * new[0]

    _, weighted = _window((x, x), period, merge, (0.0, 0.0))
    # TA-Lib re-anchors its running sums on the window at t = start + 8 * period * k - 1: after
    # the anchor step, a non-finite bar since the anchor window's first bar poisons (inf - inf).
    start, every = period - 1, 8 * period
    t = np.arange(T)
    k = np.maximum(t - start + 1, 0) // every
    step = np.where(k > 0, start + k * every - 1, start)
    first = np.where(k > 0, step - period + 1, 0)
    counts = jnp.cumsum((~jnp.isfinite(x)).astype(jnp.int32), axis=-1)
    before = jnp.concatenate([jnp.zeros_like(counts[:, :1]), counts], axis=-1)  # bad bars in [0, i)
    poisoned = jnp.asarray(t > step) & (before[:, t] > before[:, first])
    return (jnp.where(poisoned, jnp.nan, weighted / (period * (period + 1) / 2.0)),)


def _rsi(xs, p, dtype):
    (x,), period = xs, int(p[0])
    inv = 1.0 / period
    d = x - _delay(x, 1, 0.0)
    up = jnp.where(d > 0.0, d, 0.0)  # a NaN change adds 0 to the gain and NaN to the loss
    down = up - d
    a = (period - 1) * inv
    gain, loss = _affine_scans([(a, v * inv, jnp.sum(v[:, 1 : period + 1], axis=-1) * inv) for v in (up, down)], period)
    total = gain + loss
    return (_safe_div(100.0 * gain, total, total > 0.0, 0.0),)


def _macd(xs, p, dtype):
    (x,) = xs
    fast, slow, signal = (int(v) for v in p)
    fast, slow = min(fast, slow), max(fast, slow)
    first = slow - 1
    seeds = [jnp.sum(x[:, slow - fast : slow], axis=-1) / fast, jnp.sum(x[:, :slow], axis=-1) / slow]
    fast_ema, slow_ema = _ema_from(x, (fast, slow), first, seeds)
    line = fast_ema - slow_ema
    start = first + signal - 1
    if signal == 1:
        sig = line
    else:
        sig = _ema_from(line, (signal,), start, [jnp.sum(line[:, first : start + 1], axis=-1) / signal])[0]
    return line, sig, line - sig


def _bollinger(xs, p, dtype):
    (x,), period, nstd = xs, int(p[0]), p[1]

    def merge(old, new, a, b):
        delta = new[0] / b - old[0] / a
        return old[0] + new[0], old[1] + new[1] + delta * delta * (a * b / (a + b))

    # the moments of the finite bars; from a non-finite bar on the variance is NaN (TA-Lib's
    # shifted sums: inf - inf), and no NaN enters the merges' gradients
    poisoned = _bad_before(x, 0)
    _, m2 = _window((jnp.where(jnp.isfinite(x), x, 0.0), jnp.zeros_like(x)), period, merge, (0.0, 0.0))
    mean = _running_sum_mean(x, period)  # bit for bit the SMA (features shares it)
    variance = jnp.where(poisoned, jnp.nan, m2 / period)
    positive = variance > 0.0
    std = jnp.where(positive, jnp.sqrt(jnp.where(positive, variance, 1.0)), variance * 0.0)
    band = std * nstd
    return mean + band, mean, mean - band


def _true_range(h, lo, c):
    """TA-Lib's TRANGE (bar 0 garbage): comparisons, so a NaN previous close drops out."""
    prev = _delay(c, 1, 0.0)
    greatest = h - lo
    for v in (jnp.abs(prev - h), jnp.abs(prev - lo)):
        greatest = jnp.where(v > greatest, v, greatest)
    return greatest


def _atr(xs, p, dtype):
    period = int(p[0])
    tr = _true_range(*xs)
    # period 1 too: TA-Lib 0.8 runs 1 * tr + 0 * prev, an exact copy that 0 * NaN poisons for good
    beta = (period - 1) / period
    seed = jnp.sum(tr[:, 1 : period + 1], axis=-1) / period
    return tuple(_affine_scans([(beta, (1.0 - beta) * tr, seed)], period))


def _extremes_direct(h, lo, fastk):
    """Each window's lowest low and highest high (highs and lows without NaNs)."""
    return _window_reduce(lo, fastk, lax.min, jnp.inf), _window_reduce(h, fastk, lax.max, -jnp.inf)


def _rescan(x, fastk, better):
    """TA_STOCH's rescan of each window from its oldest bar: ``(value, index)`` of the first
    bar that ``better`` than all before it (NaNs never are), or ``(NaN, oldest)`` when the
    oldest bar is NaN. A doubling over blocks ``(first bar NaN, best non-NaN, its index)``."""
    t = jnp.broadcast_to(jnp.arange(x.shape[-1]), x.shape)
    worst = jnp.inf if better(0.0, 1.0) else -jnp.inf
    nan = jnp.isnan(x)

    def merge(old, new, a, b):
        take = better(new[1], old[1])
        return old[0], jnp.where(take, new[1], old[1]), jnp.where(take, new[2], old[2])

    first_nan, best, index = _window((nan, jnp.where(nan, worst, x), t), fastk, merge, (False, worst, -1))
    oldest = t - fastk + 1
    return jnp.where(first_nan, jnp.nan, best), jnp.where(first_nan, oldest, index)


def _tracked(x, fastk: int, better, better_or_tie):
    """TA_STOCH's tracked extreme of ``x`` (``indicator_math.stoch_raw_tracked``): kept until it
    leaves the window (then the window is rescanned, :func:`_rescan`) or a bar ties or beats
    it. A scan over time (values before bar ``fastk - 1`` are 0)."""
    T = x.shape[-1]
    first = fastk - 1
    rescan_val, rescan_idx = _rescan(x, fastk, better)

    def step(state, bar):
        idx, val = state
        t, v, rv, ri = bar
        stale = idx < t - fastk + 1
        beat = better_or_tie(v, val)
        idx = jnp.where(stale, ri, jnp.where(beat, t, idx))
        val = jnp.where(stale, rv, jnp.where(beat, v, val))
        return (idx, val), val

    bars = (jnp.arange(first, T), x[:, first:].T, rescan_val[:, first:].T, rescan_idx[:, first:].T)
    init = (jnp.full(x.shape[:1], -1, rescan_idx.dtype), jnp.zeros(x.shape[:1], F64))
    _, vals = lax.scan(step, init, bars)
    return jnp.concatenate([jnp.zeros((x.shape[0], first), F64), vals.T], axis=-1)


def _extremes_tracked(h, lo, fastk):
    return (_tracked(lo, fastk, lambda a, b: a < b, lambda a, b: a <= b),
            _tracked(h, fastk, lambda a, b: a > b, lambda a, b: a >= b))


def _stoch(xs, p, dtype):
    h, lo, c = xs
    fastk, slowk, slowd = (int(v) for v in p)
    T = h.shape[-1]
    if fastk - 1 >= T:
        return jnp.zeros_like(c), jnp.zeros_like(c)
    if fastk == 1:  # both forms are the bar itself
        lowest, highest = lo, h
    else:
        # NaNs inside the highs or lows of a series that has a valid bar (at index 0)
        has_bar = ~(jnp.isnan(h[:, :1]) | jnp.isnan(lo[:, :1]) | jnp.isnan(c[:, :1]))
        inside = jnp.any(has_bar & (jnp.isnan(h[:, 1:]) | jnp.isnan(lo[:, 1:])))
        lowest, highest = lax.cond(inside, functools.partial(_extremes_tracked, fastk=fastk),
                                   functools.partial(_extremes_direct, fastk=fastk), h, lo)
    diff = (highest - lowest) / 100.0
    flat = diff != 0.0
    raw = _safe_div(c - lowest, diff, flat, 0.0)

    def stage(v):  # the row bodies stage raw and slow %K in output rows of the input dtype
        return v.astype(dtype).astype(F64)

    slow_k = stage(_ma(stage(raw), slowk, fastk - 1))
    return slow_k, _ma(slow_k, slowd, fastk - 1 + slowk - 1)


def _obv(xs, p, dtype):
    c, v = xs
    prev = _delay(c, 1, 0.0)
    sign = (c > prev).astype(F64) - (c < prev).astype(F64)
    t = jnp.arange(c.shape[-1])
    steps = jnp.where(t == 0, v, jnp.where(sign != 0.0, v * sign, 0.0))
    return (jnp.cumsum(steps, axis=-1),)


def _vwap(xs, p, dtype):
    h, lo, c, v = xs
    period = int(p[0])
    def typical_pv(h, lo, c, v):  # indicator_math.typical_pv
        return (h + lo + c) / 3.0 * v

    ok = jnp.isfinite(typical_pv(h, lo, c, v)) & jnp.isfinite(v)
    h, lo, c, v = (jnp.where(ok, a, 0.0) for a in (h, lo, c, v))  # no NaN in a gradient either
    pv = _window_sum(typical_pv(h, lo, c, v), period)
    vol = _window_sum(v, period)
    n_bad = _window_sum((~ok).astype(F64), period)  # small integers: exact
    good = (n_bad == 0.0) & (vol != 0.0)
    return (_safe_div(pv, vol, good, jnp.nan),)


_BODIES = {
    "sma": _sma, "ema": _ema, "wma": _wma, "rsi": _rsi, "macd": _macd, "bollinger": _bollinger,
    "atr": _atr, "stoch": _stoch, "obv": _obv, "vwap": _vwap,
}


# -- driver -------------------------------------------------------------------------------------
def _first_valid(xs):
    """Per series, the first bar where every input is non-NaN, else the last bar (TA-Lib's check_begidx)."""
    valid = functools.reduce(jnp.logical_and, [~jnp.isnan(x) for x in xs])
    return jnp.where(valid.any(axis=-1), jnp.argmax(valid, axis=-1), xs[0].shape[-1] - 1)


def _gather(arrays, index):
    return [jnp.take_along_axis(a, index, axis=-1) for a in arrays]


@functools.partial(jax.jit, static_argnames=("name", "grid"))
def _run(inputs, name: str, grid: tuple):
    dtype = inputs[0].dtype
    xs = [x.astype(F64) for x in inputs]
    T = xs[0].shape[-1]
    t = jnp.arange(T)
    begin = _first_valid(xs)[:, None]
    aligned = jnp.all(begin == 0)  # the common case needs no gathers
    # past the end: repeats of the last bar, never read (everything is causal)
    xs = lax.cond(aligned, lambda: xs, lambda: _gather(xs, jnp.minimum(t + begin, T - 1)))
    outs = []
    for params in grid:
        ys = _BODIES[name](xs, params, dtype)
        ys = lax.cond(aligned, lambda: list(ys), lambda: _gather(ys, jnp.maximum(t - begin, 0)))
        valid = t >= begin + lookback(name, params)
        outs.append(jnp.stack([jnp.where(valid, y, jnp.nan) for y in ys]))
    return jnp.stack(outs, axis=1).astype(dtype)


def compute(name: str, inputs, params, n_out: int):
    """Run indicator ``name`` over a batch on JAX.

    inputs: sequence of 1-4 ``(n_series, T)`` JAX arrays of one float dtype, in the
    indicator's argument order. params: ``(n_param_sets, n_params)`` float64 NumPy.
    Returns ``(n_out, n_param_sets, n_series, T)`` in the inputs' dtype.
    """
    if params.shape[0] > MAX_TRACED_GRID:
        raise ValueError(
            f"{name}: the jax backend compiles one body per parameter set; {params.shape[0]} sets exceed "
            f"its {MAX_TRACED_GRID}: use backend='cpu' or 'cuda', or split the grid"
        )
    grid = tuple(tuple(float(v) for v in row) for row in np.asarray(params, dtype=np.float64))
    return _run(tuple(jnp.asarray(x) for x in inputs), name, grid)


def compute_many(names, params_list, fields):
    """Several indicators over the same inputs. names: indicator names; params_list: one
    ``(P, k)`` float64 array per name; fields: OHLCV field name -> ``(n_series, T)`` JAX array.
    Returns one ``(n_out, P, n_series, T)`` array per name."""
    return [compute(name, [fields[f] for f in INPUT_FIELDS[name]], params, SPECS[name][2])
            for name, params in zip(names, params_list)]
