"""Commission models: fixed per order, percentage of notional, tiered by notional.

Every model is an immutable callable ``model(quantity, price) -> float``: the
commission in currency for one fill of ``|quantity|`` units at ``price`` (the sign of
the quantity does not matter; a zero quantity costs nothing). Construction validates
the parameters: real numbers (Python or NumPy scalars, not ``bool``), finite and >= 0
(``TypeError``/``ValueError`` naming the argument); calls assume a validated fill.

The portfolio and the pre-trade check accept any callable as a model, so they read its
answer through :func:`commission_for`, which refuses anything but a finite real >= 0
(a ``Decimal``, ``None``, NaN, inf or a negative fee) before anything is booked.
"""
from __future__ import annotations

import bisect
import math
from typing import Callable, Sequence

from ._internal.validation import nonnegative_number, real_number
from .profiling import annotate, annotate_methods

__all__ = ["CommissionModel", "FixedCommission", "PercentageCommission", "TieredCommission", "NO_COMMISSION",
           "commission_for"]


@annotate
def commission_for(model: Callable[[float, float], float], quantity: float, price: float) -> float:
    """``model(quantity, price)`` checked: the commission as a Python float, finite and >= 0.

    Raises ``TypeError`` (the model answered something that is not a real number, e.g.
    ``Decimal`` or ``None``) or ``ValueError`` (NaN, infinite or negative), naming the
    model; an exception raised by the model itself propagates.
    """
    fee = model(quantity, price)
    if type(fee) is float and 0.0 <= fee < math.inf:  # the common case: no further checks needed
        return fee
    return nonnegative_number(fee, f"commission (the answer of {type(model).__name__})")


@annotate_methods
class CommissionModel:
    """Base class: ``__call__(quantity, price) -> commission`` (currency, >= 0)."""

    __slots__ = ()

    def __call__(self, quantity: float, price: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _init(self, **fields) -> None:
        for k, v in fields.items():
            object.__setattr__(self, k, v)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"{type(self).__name__}({args})"


@annotate_methods
class FixedCommission(CommissionModel):
    """A flat ``per_order`` amount for every non-empty fill."""

    __slots__ = ("per_order",)

    def __init__(self, per_order: float) -> None:
        self._init(per_order=nonnegative_number(per_order, "per_order"))

    def __call__(self, quantity: float, price: float) -> float:
        return self.per_order if quantity else 0.0


@annotate_methods
class PercentageCommission(CommissionModel):
    """``rate * |quantity| * price`` (``rate`` a fraction: 0.001 = 10 bps), at least
    ``minimum`` per non-empty fill."""

    __slots__ = ("rate", "minimum")

    def __init__(self, rate: float, minimum: float = 0.0) -> None:
        self._init(rate=nonnegative_number(rate, "rate"), minimum=nonnegative_number(minimum, "minimum"))

    def __call__(self, quantity: float, price: float) -> float:
        if not quantity:
            return 0.0
        fee = self.rate * abs(quantity) * price
        return fee if fee > self.minimum else self.minimum


@annotate_methods
class TieredCommission(CommissionModel):
    """Marginal rates by notional bracket, like a tax schedule.

    ``tiers``: ``[(upper_bound_0, rate_0), (upper_bound_1, rate_1), ..., (inf, rate_n)]``
    with strictly increasing upper bounds (currency of notional) and the last bound
    ``math.inf``: the part of a fill's notional ``|quantity| * price`` inside bracket i
    pays ``rate_i``. ``minimum`` applies per non-empty fill. Example: 10 bps up to
    10,000, 5 bps up to 100,000, 2 bps beyond: ``[(1e4, 1e-3), (1e5, 5e-4), (inf, 2e-4)]``.
    """

    __slots__ = ("tiers", "minimum", "_bounds", "_base")

    def __init__(self, tiers: Sequence[tuple[float, float]], minimum: float = 0.0) -> None:
        try:
            pairs = [(real_number(b, "tiers upper bound", finite=False), nonnegative_number(r, "tiers rate"))
                     for b, r in tiers]
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"tiers must be (upper_bound, rate) pairs: {exc}") from None
        if not pairs:
            raise ValueError("tiers must not be empty")
        bounds = [b for b, _ in pairs]
        if any(not b > 0 for b in bounds) or any(b2 <= b1 for b1, b2 in zip(bounds, bounds[1:])):
            raise ValueError(f"tiers upper bounds must be positive and strictly increasing, got {bounds}")
        if bounds[-1] != math.inf:
            raise ValueError("the last tier's upper bound must be math.inf")
        base, lower, acc = [], 0.0, 0.0  # commission due on the brackets below each one
        for b, r in pairs:
            base.append(acc)
            if b != math.inf:
                acc += (b - lower) * r
            lower = b
        self._init(tiers=tuple(pairs), minimum=nonnegative_number(minimum, "minimum"), _bounds=tuple(bounds),
                   _base=tuple(base))

    def __call__(self, quantity: float, price: float) -> float:
        if not quantity:
            return 0.0
        notional = abs(quantity) * price
        i = bisect.bisect_left(self._bounds, notional)
        lower = self._bounds[i - 1] if i else 0.0
        fee = self._base[i] + (notional - lower) * self.tiers[i][1]
        return fee if fee > self.minimum else self.minimum

    def __repr__(self) -> str:
        return f"TieredCommission(tiers={list(self.tiers)!r}, minimum={self.minimum!r})"


NO_COMMISSION = FixedCommission(0.0)
