"""Position sizing and book exposure, written once for any array namespace ``xp``.

The batched forms of :mod:`gpu_trader.sizing` and :func:`gpu_trader.portfolio.batch_exposure`
run these expressions with NumPy (``cpu``) or CuPy (``cuda``); the one-event forms in
:mod:`gpu_trader.sizing` are the same formulas on Python floats. Every argument is float64
(arrays of broadcastable shapes or Python floats); nothing is validated here.

NaN policy: a NaN input gives a NaN size; so does a non-positive price, stop distance or
ATR (a size that cannot be computed), never an error (a batch is not scanned on the host).
Sizes are in instrument units, clipped to ``[-max_size, max_size]`` and rounded toward zero
to a multiple of ``lot_size`` (:func:`clip_and_round`).
"""
from __future__ import annotations

__all__ = ["LOT_TOLERANCE", "clip_and_round", "risk_size", "kelly_fraction", "kelly_size", "weight_size",
           "value_size", "exposure"]

LOT_TOLERANCE = 1e-9
"""A size within this many lots below a whole number of lots counts as that number (so
``0.3 / 0.1``, 2.9999999999999996 in float64, is 3 lots, not 2)."""


def _positive_or_nan(xp, x):
    """``x`` where ``x > 0``, NaN elsewhere (NaN stays NaN)."""
    return xp.where(x > 0, x, xp.nan)


def clip_and_round(xp, size, max_size, lot_size, signed=True):
    """``size`` (a new float64 array, overwritten) clipped to ``[-max_size, max_size]``
    (``max_size`` may be ``inf``), then rounded toward zero to a multiple of ``lot_size``
    (``lot_size`` 0: not rounded); ``signed`` False promises ``size >= 0`` or NaN (one pass
    fewer). In place, one pass per step: returns ``size``."""
    if max_size != float("inf"):
        xp.clip(size, -max_size, max_size, out=size)
    if lot_size:
        xp.divide(size, lot_size, out=size)
        if signed:
            size += xp.copysign(LOT_TOLERANCE, size)
            xp.trunc(size, out=size)
        else:
            size += LOT_TOLERANCE
            xp.floor(size, out=size)
        size *= lot_size
    if signed:
        size += 0.0  # -0.0 -> 0.0
    return size


def risk_size(xp, equity, risk_fraction, distance):
    """Units whose loss over ``distance`` (currency per unit, > 0) is ``equity *
    risk_fraction``: fixed fractional on a stop distance, or a volatility target on
    ``distance = multiple * ATR``. Never negative (a negative equity sizes 0)."""
    return xp.maximum(equity * risk_fraction, 0.0) / _positive_or_nan(xp, distance)


def kelly_fraction(xp, win_rate, payoff_ratio, multiplier, max_fraction):
    """``multiplier * (p - (1 - p) / b)`` clipped to ``[0, max_fraction]``; NaN for
    ``b <= 0``, a win rate outside ``[0, 1]`` (the one-event form refuses both) or a NaN input."""
    p = xp.where((win_rate >= 0.0) & (win_rate <= 1.0), win_rate, xp.nan)
    f = p - (1.0 - p) / _positive_or_nan(xp, payoff_ratio)
    return xp.clip(multiplier * f, 0.0, max_fraction)


def kelly_size(xp, equity, price, fraction):
    """Units worth ``fraction`` of ``equity`` at ``price`` (> 0), never negative."""
    return xp.maximum(equity * fraction, 0.0) / _positive_or_nan(xp, price)


def weight_size(xp, equity, weight, price):
    """Units worth ``weight * equity`` at ``price`` (> 0); signed like ``weight``."""
    return equity * weight / _positive_or_nan(xp, price)


def value_size(xp, notional, price):
    """Units worth ``notional`` (currency, signed) at ``price`` (> 0)."""
    return notional / _positive_or_nan(xp, price)


def exposure(xp, quantities, prices, cash, max_leverage):
    """Exposure of ``B`` books: ``quantities`` ``(B, n)``, ``prices`` ``(n,)`` or ``(B, n)``,
    ``cash`` ``(B,)`` or a float, ``max_leverage`` a float. Returns a dict of arrays:
    ``gross`` ``sum |q p|``, ``net`` ``sum q p``, ``equity`` ``cash + net``, ``leverage``
    ``gross / equity`` (NaN where ``equity <= 0``), ``buying_power`` ``max(max_leverage *
    equity - gross, 0)``, ``weights`` ``q p / equity`` ``(B, n)`` (NaN where ``equity <= 0``),
    float64, and ``positions`` int64, the count of non-zero quantities. A NaN price
    propagates to the sums of every book (``0 * NaN`` is NaN), as in ``batch_pnl``."""
    value = quantities * prices
    net = value.sum(axis=-1)
    equity = cash + net
    live = _positive_or_nan(xp, equity)
    weights = value / live[..., None]
    gross = xp.abs(value, out=value).sum(axis=-1)
    return {
        "gross": gross,
        "net": net,
        "equity": equity,
        "leverage": gross / live,
        "buying_power": xp.maximum(max_leverage * equity - gross, 0.0),
        "weights": weights,
        "positions": xp.count_nonzero(quantities, axis=-1).astype(xp.int64),
    }
