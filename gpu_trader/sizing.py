"""Position sizing: how many units to trade, batched over books and on the one-event path.

Rules (``equity``, ``notional`` in currency; ``price``, ``stop_distance``, ``atr`` in
currency per unit; fractions as plain numbers, 0.01 = 1 %):

* **fixed fractional**: ``equity * risk_fraction / stop_distance`` units lose
  ``risk_fraction`` of the equity if the stop ``stop_distance`` away is hit;
* **Kelly**: the fraction ``multiplier * (p - (1 - p) / b)`` of the equity (win rate
  ``p``, payoff ratio ``b`` = mean win / mean loss, or the fraction
  :func:`gpu_trader.risk.kelly_fraction` estimates from returns), clipped to
  ``[0, max_fraction]``, invested at ``price``;
* **volatility target**: ``equity * target_risk / (atr_multiple * atr)`` units move the
  equity by ``target_risk`` per ``atr_multiple`` ATRs (fixed fractional with the stop
  distance ``atr_multiple * atr``; ATR from :func:`gpu_trader.indicators.atr`);
* **by value**: ``notional / price``; **by weight**: ``equity * weight / price`` (signed
  like ``notional``, ``weight``).

Every rule then clips the size to ``[-max_size, max_size]`` (default: no clip) and rounds
it toward zero to a multiple of ``lot_size`` (default 0: no rounding; a size within
:data:`~gpu_trader._internal.sizing_xp.LOT_TOLERANCE` lots below a whole number of lots
counts as that number). Fixed fractional, Kelly and volatility target sizes are >= 0 (a
negative equity or a negative Kelly edge sizes 0): the direction is the signal's.

Two forms of each rule:

* **one event**: ``fixed_fractional_size(...)`` and so on take real numbers and return a
  Python float (about a microsecond); a NaN or infinite number, or a price, stop
  distance, ATR or payoff ratio <= 0, is a ``ValueError`` (``TypeError`` for a non-number),
  naming the argument. The sizer objects (:class:`FixedFractional`, :class:`Kelly`,
  :class:`VolatilityTarget`, :class:`ByValue`, :class:`ByWeight`) hold a rule's parameters,
  checked once, and are called ``sizer(equity, price) -> units``: what
  :func:`gpu_trader.orders.order_for_signal` takes as ``sizer=``;
* **batched**: ``batch_fixed_fractional_size(...)`` and so on take arrays of
  broadcastable shapes (any of them may be a number; e.g. equity ``(B, 1)`` per book,
  prices ``(n,)`` per symbol) and return float64 of the broadcast shape on the backend
  (:mod:`gpu_trader.backend`; arrays in, the backend of the first array). NaN policy:
  a NaN input, a price, stop distance, ATR or payoff ratio <= 0, or a win rate outside [0, 1], gives NaN at that
  position (no host scan of the batch); inputs are never modified. ``max_size`` and
  ``lot_size`` are numbers. The math is :mod:`gpu_trader._internal.sizing_xp`.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backend import resolve, select_backend
from .profiling import annotate, annotate_methods
from ._internal import sizing_xp
from ._internal.validation import check_allocation, nonnegative_number, positive_number, real_array, real_number

__all__ = [
    "fixed_fractional_size", "kelly_fraction", "kelly_size", "volatility_target_size", "value_size", "weight_size",
    "batch_fixed_fractional_size", "batch_kelly_fraction", "batch_kelly_size", "batch_volatility_target_size",
    "batch_value_size", "batch_weight_size", "kelly_fraction_of_returns",
    "FixedFractional", "Kelly", "VolatilityTarget", "ByValue", "ByWeight",
]

_INF = math.inf


# -- one event ---------------------------------------------------------------------------
def _finite(x, name: str) -> float:
    return x if type(x) is float and -_INF < x < _INF else real_number(x, name)


def _positive(x, name: str) -> float:
    return x if type(x) is float and 0.0 < x < _INF else positive_number(x, name)


def _limits(max_size, lot_size) -> tuple[float, float]:
    """``(max_size, lot_size)`` checked: ``max_size`` > 0 (``inf`` allowed), ``lot_size`` >= 0."""
    if not (type(max_size) is float and max_size > 0.0):
        m = real_number(max_size, "max_size", finite=False)
        if not m > 0.0:
            raise ValueError(f"max_size must be > 0, got {max_size!r}")
        max_size = m
    if not (type(lot_size) is float and 0.0 <= lot_size < _INF):
        lot_size = nonnegative_number(lot_size, "lot_size")
    return max_size, lot_size


def _finish(size: float, max_size: float, lot_size: float) -> float:
    """:func:`gpu_trader._internal.sizing_xp.clip_and_round` on one float."""
    if size > max_size:
        size = max_size
    elif size < -max_size:
        size = -max_size
    if lot_size:
        lots = size / lot_size + math.copysign(sizing_xp.LOT_TOLERANCE, size)
        if -_INF < lots < _INF:  # else beyond 1e308 lots: a float that large is a whole number of them
            size = math.trunc(lots) * lot_size
    if not -_INF < size < _INF:  # finite inputs whose size overflows (math.trunc raised OverflowError)
        raise ValueError(f"the size overflows float64 ({size!r}): pass max_size, or check the inputs' scale")
    return size + 0.0


@annotate
def fixed_fractional_size(equity: float, risk_fraction: float, stop_distance: float, *,
                          max_size: float = _INF, lot_size: float = 0.0) -> float:
    """Units risking ``risk_fraction`` of ``equity`` over ``stop_distance`` (> 0): see the module docstring."""
    e, f = _finite(equity, "equity"), _finite(risk_fraction, "risk_fraction")
    d = _positive(stop_distance, "stop_distance")
    m, lot = _limits(max_size, lot_size)
    risk = e * f
    return _finish(risk / d if risk > 0.0 else 0.0, m, lot)


@annotate
def kelly_fraction(win_rate: float, payoff_ratio: float, *, multiplier: float = 1.0,
                   max_fraction: float = 1.0) -> float:
    """``multiplier * (p - (1 - p) / b)`` clipped to ``[0, max_fraction]``: ``win_rate`` in
    ``[0, 1]``, ``payoff_ratio`` > 0, ``multiplier`` >= 0 (0.5: half Kelly), ``max_fraction`` >= 0."""
    p = _finite(win_rate, "win_rate")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"win_rate must be in [0, 1], got {win_rate!r}")
    b = _positive(payoff_ratio, "payoff_ratio")
    k = multiplier if type(multiplier) is float and 0.0 <= multiplier < _INF else nonnegative_number(
        multiplier, "multiplier")
    cap = max_fraction if type(max_fraction) is float and 0.0 <= max_fraction < _INF else nonnegative_number(
        max_fraction, "max_fraction")
    f = k * (p - (1.0 - p) / b)
    return 0.0 if f < 0.0 else cap if f > cap else f


@annotate
def kelly_size(equity: float, price: float, fraction: float, *, max_size: float = _INF,
               lot_size: float = 0.0) -> float:
    """Units worth ``fraction`` (>= 0, e.g. :func:`kelly_fraction`) of ``equity`` at ``price`` (> 0)."""
    e, px = _finite(equity, "equity"), _positive(price, "price")
    f = fraction if type(fraction) is float and 0.0 <= fraction < _INF else nonnegative_number(fraction, "fraction")
    m, lot = _limits(max_size, lot_size)
    value = e * f
    return _finish(value / px if value > 0.0 else 0.0, m, lot)


@annotate
def volatility_target_size(equity: float, target_risk: float, atr: float, *, atr_multiple: float = 1.0,
                           max_size: float = _INF, lot_size: float = 0.0) -> float:
    """Units moving ``equity`` by ``target_risk`` (a fraction) per ``atr_multiple`` (> 0) ATRs (``atr`` > 0)."""
    a, k = _positive(atr, "atr"), _positive(atr_multiple, "atr_multiple")
    return fixed_fractional_size(equity, target_risk, k * a, max_size=max_size, lot_size=lot_size)


@annotate
def value_size(notional: float, price: float, *, max_size: float = _INF, lot_size: float = 0.0) -> float:
    """Units worth ``notional`` (currency, signed) at ``price`` (> 0)."""
    v, px = _finite(notional, "notional"), _positive(price, "price")
    m, lot = _limits(max_size, lot_size)
    return _finish(v / px, m, lot)


@annotate
def weight_size(equity: float, weight: float, price: float, *, max_size: float = _INF,
                lot_size: float = 0.0) -> float:
    """Units worth ``weight * equity`` (signed like ``weight``) at ``price`` (> 0)."""
    e, w, px = _finite(equity, "equity"), _finite(weight, "weight"), _positive(price, "price")
    m, lot = _limits(max_size, lot_size)
    return _finish(e * w / px, m, lot)


# -- sizer objects (order_for_signal's sizer=) -------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class _Sizer:
    """The clip and lot of every sizer (checked once, at construction)."""

    max_size: float = _INF
    lot_size: float = 0.0

    def __post_init__(self) -> None:
        m, lot = _limits(self.max_size, self.lot_size)
        object.__setattr__(self, "max_size", m)
        object.__setattr__(self, "lot_size", lot)


@annotate_methods
@dataclass(frozen=True, slots=True, kw_only=True)
class FixedFractional(_Sizer):
    """``sizer(equity, price)``: :func:`fixed_fractional_size` with this ``risk_fraction`` and
    ``stop_distance`` (the price is not used). Keyword arguments only."""

    risk_fraction: float = 0.01
    stop_distance: float = 1.0

    def __post_init__(self) -> None:
        _Sizer.__post_init__(self)
        object.__setattr__(self, "risk_fraction", real_number(self.risk_fraction, "risk_fraction"))
        object.__setattr__(self, "stop_distance", positive_number(self.stop_distance, "stop_distance"))

    def __call__(self, equity: float, price: float) -> float:
        return fixed_fractional_size(equity, self.risk_fraction, self.stop_distance, max_size=self.max_size,
                                     lot_size=self.lot_size)


@annotate_methods
@dataclass(frozen=True, slots=True, kw_only=True)
class Kelly(_Sizer):
    """``sizer(equity, price)``: :func:`kelly_size` with this capped ``fraction`` (build it with
    :meth:`from_odds` or :meth:`from_returns`). Keyword arguments only."""

    fraction: float = 0.0

    def __post_init__(self) -> None:
        _Sizer.__post_init__(self)
        object.__setattr__(self, "fraction", nonnegative_number(self.fraction, "fraction"))

    @classmethod
    def from_odds(cls, win_rate: float, payoff_ratio: float, *, multiplier: float = 1.0, max_fraction: float = 1.0,
                  max_size: float = _INF, lot_size: float = 0.0) -> "Kelly":
        """The sizer of :func:`kelly_fraction` ``(win_rate, payoff_ratio, multiplier, max_fraction)``."""
        f = kelly_fraction(win_rate, payoff_ratio, multiplier=multiplier, max_fraction=max_fraction)
        return cls(max_size=max_size, lot_size=lot_size, fraction=f)

    @classmethod
    def from_returns(cls, returns: Any, *, multiplier: float = 1.0, max_fraction: float = 1.0,
                     max_size: float = _INF, lot_size: float = 0.0) -> "Kelly":
        """The sizer of :func:`kelly_fraction_of_returns` of one series ``returns`` ``(T,)``
        (``ValueError`` when it has no win or no loss: the fraction is NaN)."""
        r = real_array(returns, "returns")
        if r.ndim != 1:
            raise ValueError(f"returns must be one series (T,) of per-period returns, got shape {r.shape}")
        f = float(kelly_fraction_of_returns(r, multiplier=multiplier, max_fraction=max_fraction, backend="cpu"))
        if f != f:
            raise ValueError("returns have no win or no loss: the Kelly fraction is undefined")
        return cls(max_size=max_size, lot_size=lot_size, fraction=f)

    def __call__(self, equity: float, price: float) -> float:
        return kelly_size(equity, price, self.fraction, max_size=self.max_size, lot_size=self.lot_size)


@annotate_methods
@dataclass(frozen=True, slots=True, kw_only=True)
class VolatilityTarget(_Sizer):
    """``sizer(equity, price)``: :func:`volatility_target_size` with this ``target_risk``,
    ``atr`` and ``atr_multiple`` (the price is not used). Keyword arguments only."""

    target_risk: float = 0.01
    atr: float = 1.0
    atr_multiple: float = 1.0

    def __post_init__(self) -> None:
        _Sizer.__post_init__(self)
        object.__setattr__(self, "target_risk", real_number(self.target_risk, "target_risk"))
        object.__setattr__(self, "atr", positive_number(self.atr, "atr"))
        object.__setattr__(self, "atr_multiple", positive_number(self.atr_multiple, "atr_multiple"))

    def __call__(self, equity: float, price: float) -> float:
        return fixed_fractional_size(equity, self.target_risk, self.atr_multiple * self.atr, max_size=self.max_size,
                                     lot_size=self.lot_size)


@annotate_methods
@dataclass(frozen=True, slots=True, kw_only=True)
class ByValue(_Sizer):
    """``sizer(equity, price)``: :func:`value_size` of this ``notional`` (the equity is not used)."""

    notional: float = 0.0

    def __post_init__(self) -> None:
        _Sizer.__post_init__(self)
        object.__setattr__(self, "notional", real_number(self.notional, "notional"))

    def __call__(self, equity: float, price: float) -> float:
        return value_size(self.notional, price, max_size=self.max_size, lot_size=self.lot_size)


@annotate_methods
@dataclass(frozen=True, slots=True, kw_only=True)
class ByWeight(_Sizer):
    """``sizer(equity, price)``: :func:`weight_size` of this ``weight`` of the equity."""

    weight: float = 0.0

    def __post_init__(self) -> None:
        _Sizer.__post_init__(self)
        object.__setattr__(self, "weight", real_number(self.weight, "weight"))

    def __call__(self, equity: float, price: float) -> float:
        return weight_size(equity, self.weight, price, max_size=self.max_size, lot_size=self.lot_size)


# -- batched -----------------------------------------------------------------------------
def batch_arrays(args: dict[str, Any], backend, *, broadcast: bool = True) -> tuple[Any, list[Any]]:
    """``(xp, values)``: each argument as a float64 array on the backend (the backend of the
    first array argument, or ``backend=``), or as a Python float when it is a number, and the
    array module of the backend's ``sizing`` ops (``AreaNotImplemented`` for a backend without it);
    with ``broadcast``, ``ValueError`` naming the arguments when the shapes do not broadcast or
    their broadcast result would exceed ``MAX_ELEMENTS`` (checked before anything is computed)."""
    first = next((v for v in args.values() if not _is_number(v)), None)
    be = select_backend(first if first is not None else 0.0, backend)
    xp = be.ops("sizing").xp
    out = []
    for name, v in args.items():
        if _is_number(v):
            out.append(real_number(v.item() if type(v) is np.ndarray else v, name, finite=False))
            continue
        _, (arr,), _ = resolve((v,), (name,), be)
        out.append(arr.astype(xp.float64, copy=False))
    shapes = [getattr(a, "shape", ()) for a in out]
    if not broadcast:
        return xp, out
    try:
        shape = np.broadcast_shapes(*shapes)
    except ValueError:
        raise ValueError("shapes do not broadcast: " + ", ".join(
            f"{n} {s}" for n, s in zip(args, shapes))) from None
    check_allocation(math.prod(shape), "the broadcast result of " + ", ".join(args))
    return xp, out


def _is_number(v) -> bool:
    """A real number or a 0-d NumPy array (read as a number; ``bool`` is refused by the caller)."""
    return isinstance(v, numbers.Real) or (type(v) is np.ndarray and v.ndim == 0)


def _finished(xp, size, max_size, lot_size, signed=True):
    """:func:`~gpu_trader._internal.sizing_xp.clip_and_round` of ``size``, in place: ``size`` is
    the fresh result of a :mod:`~gpu_trader._internal.sizing_xp` formula (never an input), a
    float64 array of the broadcast shape or a scalar when every input was a number."""
    m, lot = _limits(max_size, lot_size)
    return sizing_xp.clip_and_round(xp, xp.asarray(size, dtype=xp.float64), m, lot, signed)


@annotate
def batch_fixed_fractional_size(equity, risk_fraction, stop_distance, *, max_size=_INF, lot_size=0.0, backend=None):
    """:func:`fixed_fractional_size` elementwise over broadcast arrays (NaN where
    ``stop_distance <= 0``): float64 of the broadcast shape."""
    xp, (e, f, d) = batch_arrays({"equity": equity, "risk_fraction": risk_fraction,
                                  "stop_distance": stop_distance}, backend)
    return _finished(xp, sizing_xp.risk_size(xp, e, f, d), max_size, lot_size, signed=False)


@annotate
def batch_volatility_target_size(equity, target_risk, atr, *, atr_multiple=1.0, max_size=_INF, lot_size=0.0,
                                 backend=None):
    """:func:`volatility_target_size` elementwise (NaN where ``atr <= 0``); ``atr_multiple`` a number > 0."""
    k = positive_number(atr_multiple, "atr_multiple")
    xp, (e, f, a) = batch_arrays({"equity": equity, "target_risk": target_risk, "atr": atr}, backend)
    return _finished(xp, sizing_xp.risk_size(xp, e, f, k * a), max_size, lot_size, signed=False)


@annotate
def batch_kelly_fraction(win_rate, payoff_ratio, *, multiplier=1.0, max_fraction=1.0, backend=None):
    """:func:`kelly_fraction` elementwise (NaN where ``payoff_ratio <= 0``, ``win_rate`` is outside
    ``[0, 1]`` or an input is NaN);
    ``multiplier``, ``max_fraction`` numbers >= 0."""
    k = nonnegative_number(multiplier, "multiplier")
    cap = nonnegative_number(max_fraction, "max_fraction")
    xp, (p, b) = batch_arrays({"win_rate": win_rate, "payoff_ratio": payoff_ratio}, backend)
    return xp.asarray(sizing_xp.kelly_fraction(xp, p, b, k, cap), dtype=xp.float64)


@annotate
def kelly_fraction_of_returns(returns, *, multiplier=1.0, max_fraction=1.0, backend=None):
    """The capped Kelly fraction of return series ``returns`` ``(..., T)``:
    ``multiplier * risk.kelly_fraction(returns)`` clipped to ``[0, max_fraction]``, ``(...)``
    (NaN for a series without a win or a loss)."""
    from .risk import kelly_fraction as raw_kelly

    k = nonnegative_number(multiplier, "multiplier")
    cap = nonnegative_number(max_fraction, "max_fraction")
    f = raw_kelly(returns, backend=backend)
    xp = select_backend(f, backend).xp
    return xp.clip(k * xp.asarray(f, dtype=xp.float64), 0.0, cap)


@annotate
def batch_kelly_size(equity, price, fraction, *, max_size=_INF, lot_size=0.0, backend=None):
    """:func:`kelly_size` elementwise (NaN where ``price <= 0``; a negative fraction sizes 0)."""
    xp, (e, p, f) = batch_arrays({"equity": equity, "price": price, "fraction": fraction}, backend)
    return _finished(xp, sizing_xp.kelly_size(xp, e, p, f), max_size, lot_size, signed=False)


@annotate
def batch_value_size(notional, price, *, max_size=_INF, lot_size=0.0, backend=None):
    """:func:`value_size` elementwise (NaN where ``price <= 0``)."""
    xp, (v, p) = batch_arrays({"notional": notional, "price": price}, backend)
    return _finished(xp, sizing_xp.value_size(xp, v, p), max_size, lot_size)


@annotate
def batch_weight_size(equity, weight, price, *, max_size=_INF, lot_size=0.0, backend=None):
    """:func:`weight_size` elementwise (NaN where ``price <= 0``); e.g. equity ``(B, 1)``,
    weights ``(B, n)``, prices ``(n,)`` -> units ``(B, n)``."""
    xp, (e, w, p) = batch_arrays({"equity": equity, "weight": weight, "price": price}, backend)
    return _finished(xp, sizing_xp.weight_size(xp, e, w, p), max_size, lot_size)
