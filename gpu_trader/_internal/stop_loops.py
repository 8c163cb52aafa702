"""Stop-level recurrences over time, written once for every backend.

:func:`trailing_row` and :func:`extreme_row` are the per-series loop bodies of
:mod:`gpu_trader.stops`: plain Python with scalar arithmetic only, compiled by
``numba.njit`` (:mod:`gpu_trader.cpu_fallback.sizing`, rows over ``prange``) and by
``numba.cuda.jit`` (:mod:`gpu_trader.kernels.sizing`, one thread per row) from this
source (:func:`jitable`), so the two backends cannot drift apart. :func:`trailing_step`
is the one-bar update :class:`gpu_trader.stops.TrailingStopStream` runs (as NumPy over
symbols), the same rule as the row body.

Sides: ``short`` 0 is a long position (the stop is below the price and only rises), 1 a
short position (above the price, only falls).
"""
from __future__ import annotations

import functools
import math

__all__ = ["trailing_candidate", "ratchet", "trailing_row", "extreme_row", "jitable"]


def trailing_candidate(price, atr, fraction, multiple, short):
    """The stop one bar proposes: ``price * (1 - fraction) - multiple * atr`` for a long,
    ``price * (1 + fraction) + multiple * atr`` for a short (NaN when an input is NaN)."""
    if short:
        return price * (1.0 + fraction) + multiple * atr
    return price * (1.0 - fraction) - multiple * atr


def ratchet(level, candidate, short):
    """The stop after one bar: ``candidate`` when it tightens ``level`` (higher for a long,
    lower for a short) or ``level`` is NaN (no stop yet); else ``level``. A NaN candidate
    keeps ``level``: a stop never loosens and a missing bar never moves it."""
    if candidate != candidate:
        return level
    if level != level:
        return candidate
    if short:
        return candidate if candidate < level else level
    return candidate if candidate > level else level


def trailing_row(r, price, atr, start, fraction, multiple, short, use_atr, out):
    """Trailing stop of row ``r``: ``price``, ``atr``, ``out`` ``(R, T)`` float64, ``start``
    ``(R,)`` int64 (the entry bar; ``out`` is NaN before it). From ``start[r]`` on,
    ``out[r, t]`` is the tightest :func:`trailing_candidate` of bars ``start[r] .. t``
    (NaN until the first valid one). ``use_atr`` 0: ``atr`` is not read."""
    level = math.nan
    first = start[r]
    for t in range(price.shape[1]):
        if t < first:
            out[r, t] = math.nan
            continue
        a = atr[r, t] if use_atr else 0.0
        level = ratchet(level, trailing_candidate(price[r, t], a, fraction, multiple, short), short)
        out[r, t] = level


def extreme_row(r, x, window, lowest, out):
    """Rolling maximum (``lowest`` 0) or minimum (1) of ``x[r]`` over the trailing ``window``
    bars into ``out[r]`` (both ``(R, T)`` float64): NaN for the first ``window - 1`` bars and
    for any window holding a NaN (pandas ``rolling(window).max()``). The extreme of the valid
    values in the window is kept with its bar and rescanned only when that bar leaves the
    window: amortized O(1) per bar on a random walk, O(window) at worst."""
    last_nan = -window  # the latest NaN bar
    best = math.nan
    best_at = -window  # the bar of best (the latest bar holding that value)
    for t in range(x.shape[1]):
        v = x[r, t]
        first = t - window + 1
        if v != v:
            last_nan = t
        elif best_at >= first and ((v <= best) if lowest else (v >= best)):
            best = v
            best_at = t
        if best_at < first:  # the extreme left the window (or there was none): rescan it
            best = math.nan
            best_at = first - 1
            for s in range(first if first > 0 else 0, t + 1):
                u = x[r, s]
                if u == u and (best != best or ((u <= best) if lowest else (u >= best))):
                    best = u
                    best_at = s
        out[r, t] = math.nan if first < 0 or last_nan >= first else best


@functools.lru_cache(maxsize=1)
def jitable():
    """``(trailing_row, extreme_row)`` marked ``register_jitable`` (the helpers they call too),
    for ``numba.njit`` and ``numba.cuda.jit`` callers alike."""
    from numba.extending import register_jitable

    register_jitable(trailing_candidate)
    register_jitable(ratchet)
    return register_jitable(trailing_row), register_jitable(extreme_row)
