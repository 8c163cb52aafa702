"""Orders: validated immutable records, pre-trade checks against a portfolio, reports.

Records are ``msgspec.Struct(frozen=True)`` (construction with validation ~0.3 us;
attribute assignment raises ``AttributeError``; they encode to JSON with
``msgspec.json.encode``). Build them with :func:`market_order`, :func:`limit_order`,
:func:`stop_order` and :func:`stop_limit_order`, which generate a client order id
when none is given; constructing :class:`Order` directly validates the same way.
Bad fields raise ``TypeError``/``ValueError`` naming the field.

:func:`validate_order` checks an order against :class:`RiskLimits` and a
:class:`~gpu_trader.portfolio.Portfolio` and returns a :class:`Rejection` (with a
machine-readable ``code`` and a human ``reason``) or ``None``; it never raises and
never changes the portfolio. :func:`order_for_signal` is the pipeline's one-event
pre-trade hook: strategy signal -> target position -> checked market order.

The broker side lives in :mod:`gpu_trader.brokers`, the async manager in
:mod:`gpu_trader.order_manager`.
"""
from __future__ import annotations

import itertools
import math
import os
from typing import TYPE_CHECKING, Optional

import msgspec

from .profiling import annotate

if TYPE_CHECKING:  # pragma: no cover
    from .portfolio import Portfolio

__all__ = [
    "BUY", "SELL", "MARKET", "LIMIT", "STOP", "STOP_LIMIT",
    "FILLED", "OPEN", "CANCELLED", "REJECTED", "UNKNOWN",
    "Order", "Rejection", "OrderReport", "RiskLimits",
    "market_order", "limit_order", "stop_order", "stop_limit_order", "new_client_order_id",
    "validate_order", "order_for_signal",
]

BUY, SELL = "buy", "sell"
MARKET, LIMIT, STOP, STOP_LIMIT = "market", "limit", "stop", "stop_limit"
SIDES = frozenset((BUY, SELL))
ORDER_TYPES = frozenset((MARKET, LIMIT, STOP, STOP_LIMIT))
TIME_IN_FORCE = frozenset(("day", "gtc", "ioc"))
MAX_ID_LENGTH = 64

# Report statuses. FILLED, CANCELLED and REJECTED are final; OPEN rests at a broker;
# UNKNOWN means the broker timed out, so the order may be live there (resubmitting the
# same order, i.e. the same client order id, asks that broker again and never refills).
FILLED, OPEN, CANCELLED, REJECTED, UNKNOWN = "filled", "open", "cancelled", "rejected", "unknown"

_ID_PREFIX = os.urandom(4).hex()
_ids = itertools.count(1)
_isfinite = math.isfinite
_NUMBER = (int, float)


@annotate
def new_client_order_id() -> str:
    """A process-unique client order id (``<random 8 hex>-<counter>``), ~0.2 us."""
    return f"{_ID_PREFIX}-{next(_ids)}"


def _positive(value, name: str) -> None:
    if type(value) not in _NUMBER:
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not (value > 0 and _isfinite(value)):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")


class Order(msgspec.Struct, frozen=True):
    """One order request (immutable, validated on construction).

    ``quantity`` > 0 in instrument units (direction is ``side``: ``"buy"``/``"sell"``);
    ``order_type`` one of ``"market"``, ``"limit"`` (needs ``limit_price``), ``"stop"``
    (needs ``stop_price``), ``"stop_limit"`` (needs both); a price the type does not use
    must be ``None``. ``time_in_force``: ``"day"``, ``"gtc"`` or ``"ioc"`` (cancel what
    does not fill at once). ``client_order_id``: non-empty, at most 64 characters; the
    idempotency key of the order manager and the brokers.
    """

    client_order_id: str
    symbol: str
    side: str
    quantity: float
    order_type: str = MARKET
    limit_price: Optional[float] = None
    stop_price: Optional[float] = None
    time_in_force: str = "day"

    def __post_init__(self) -> None:
        cid = self.client_order_id
        if type(cid) is not str or not cid or len(cid) > MAX_ID_LENGTH:
            raise ValueError(f"client_order_id must be a non-empty str of at most {MAX_ID_LENGTH} chars, got {cid!r}")
        if type(self.symbol) is not str or not self.symbol:
            raise ValueError(f"symbol must be a non-empty str, got {self.symbol!r}")
        if self.side not in SIDES:
            raise ValueError(f"side must be 'buy' or 'sell', got {self.side!r}")
        _positive(self.quantity, "quantity")
        t = self.order_type
        if t not in ORDER_TYPES:
            raise ValueError(f"order_type must be one of {sorted(ORDER_TYPES)}, got {t!r}")
        if t == LIMIT or t == STOP_LIMIT:
            _positive(self.limit_price, "limit_price")
        elif self.limit_price is not None:
            raise ValueError(f"limit_price must be None for a {t} order")
        if t == STOP or t == STOP_LIMIT:
            _positive(self.stop_price, "stop_price")
        elif self.stop_price is not None:
            raise ValueError(f"stop_price must be None for a {t} order")
        if self.time_in_force not in TIME_IN_FORCE:
            raise ValueError(f"time_in_force must be one of {sorted(TIME_IN_FORCE)}, got {self.time_in_force!r}")

    @property
    def signed_quantity(self) -> float:
        """``+quantity`` for a buy, ``-quantity`` for a sell."""
        return self.quantity if self.side == BUY else -self.quantity

    @property
    def reference_price(self) -> float | None:
        """The price the order itself names (limit, else stop), ``None`` for market orders."""
        return self.limit_price if self.limit_price is not None else self.stop_price


@annotate
def market_order(symbol: str, side: str, quantity: float, *, client_order_id: str | None = None,
                 time_in_force: str = "day") -> Order:
    return Order(client_order_id or new_client_order_id(), symbol, side, quantity, MARKET, None, None, time_in_force)


@annotate
def limit_order(symbol: str, side: str, quantity: float, limit_price: float, *,
                client_order_id: str | None = None, time_in_force: str = "day") -> Order:
    return Order(client_order_id or new_client_order_id(), symbol, side, quantity, LIMIT, limit_price, None,
                 time_in_force)


@annotate
def stop_order(symbol: str, side: str, quantity: float, stop_price: float, *,
               client_order_id: str | None = None, time_in_force: str = "day") -> Order:
    return Order(client_order_id or new_client_order_id(), symbol, side, quantity, STOP, None, stop_price,
                 time_in_force)


@annotate
def stop_limit_order(symbol: str, side: str, quantity: float, stop_price: float, limit_price: float, *,
                     client_order_id: str | None = None, time_in_force: str = "day") -> Order:
    return Order(client_order_id or new_client_order_id(), symbol, side, quantity, STOP_LIMIT, limit_price,
                 stop_price, time_in_force)


class Rejection(msgspec.Struct, frozen=True):
    """Why a pre-trade check refused an order. ``code``: ``invalid``, ``unknown_symbol``,
    ``no_price``, ``order_size``, ``position_limit`` or ``buying_power``."""

    client_order_id: str
    code: str
    reason: str


class OrderReport(msgspec.Struct, frozen=True):
    """The manager's answer for one order: ``status`` is one of FILLED, OPEN, CANCELLED,
    REJECTED, UNKNOWN; ``filled_quantity`` (unsigned) at ``fill_price`` (NaN when not
    filled); ``broker`` the venue's name (``""`` when none was reached); ``code`` and
    ``reason`` explain a rejection, a timeout or a refused cancel: a :class:`Rejection`
    code, or one of the manager's: ``duplicate_id``, ``circuit_open``, ``broker_error``,
    ``broker_rejected``, ``timeout``, ``not_found``, ``not_cancellable``, ``internal``."""

    client_order_id: str
    status: str
    filled_quantity: float = 0.0
    fill_price: float = math.nan
    broker: str = ""
    code: str = ""
    reason: str = ""

    @property
    def ok(self) -> bool:
        """True for FILLED and OPEN."""
        return self.status == FILLED or self.status == OPEN


class RiskLimits(msgspec.Struct, frozen=True):
    """Pre-trade limits; ``math.inf`` (the default) disables a check.

    * ``max_order_quantity``, ``max_order_notional``: one order's size;
    * ``max_position_quantity``, ``max_position_notional``: ``|position|`` after the
      order, per symbol;
    * ``leverage``: buying power is ``leverage * cash``; the notional of the part of an
      order that increases exposure (long or short), plus its estimated commission,
      must not exceed it (reducing a position never needs buying power);
    * ``symbols``: the tradable universe (``None``: any symbol).
    """

    max_order_quantity: float = math.inf
    max_order_notional: float = math.inf
    max_position_quantity: float = math.inf
    max_position_notional: float = math.inf
    leverage: float = 1.0
    symbols: Optional[frozenset] = None

    def __post_init__(self) -> None:
        for name in ("max_order_quantity", "max_order_notional", "max_position_quantity", "max_position_notional",
                     "leverage"):
            v = getattr(self, name)
            if type(v) not in _NUMBER or not v > 0:
                raise ValueError(f"{name} must be a number > 0, got {v!r}")
        if self.symbols is not None and not isinstance(self.symbols, frozenset):
            raise TypeError("symbols must be a frozenset of str or None")


NO_LIMITS = RiskLimits()


@annotate
def validate_order(order: Order, portfolio: "Portfolio | None" = None, limits: RiskLimits = NO_LIMITS,
                   price: float | None = None) -> Rejection | None:
    """Pre-trade check of ``order``; ``None`` when it may go out, else a :class:`Rejection`.

    ``price`` is the reference price for notional checks (the latest market price);
    it defaults to the order's own limit/stop price, then to the portfolio's last
    price for the symbol; with none of them the order is rejected (``no_price``).
    Checks, in order: universe, order size, position limits after the order, buying
    power (see :class:`RiskLimits`). Without a portfolio the position and buying-power
    checks assume a flat book with unlimited cash. Never raises; reads the portfolio
    without changing it.
    """
    try:
        cid = order.client_order_id
        symbol = order.symbol
        if limits.symbols is not None and symbol not in limits.symbols:
            return Rejection(cid, "unknown_symbol", f"{symbol!r} is not in the tradable universe")
        px = order.reference_price if order.reference_price is not None else price
        if px is None and portfolio is not None:
            px = portfolio.last_price(symbol)
        if px is None or not (px > 0 and _isfinite(px)):
            return Rejection(cid, "no_price", f"no valid reference price for {symbol!r} (got {px!r})")
        qty = order.quantity
        if qty > limits.max_order_quantity:
            return Rejection(cid, "order_size",
                             f"quantity {qty:g} exceeds max_order_quantity {limits.max_order_quantity:g}")
        if qty * px > limits.max_order_notional:
            return Rejection(cid, "order_size",
                             f"notional {qty * px:.2f} exceeds max_order_notional {limits.max_order_notional:g}")
        current = portfolio.quantity(symbol) if portfolio is not None else 0.0
        after = current + (qty if order.side == BUY else -qty)
        if abs(after) > limits.max_position_quantity:
            return Rejection(cid, "position_limit", f"position {after:g} in {symbol!r} would exceed "
                             f"max_position_quantity {limits.max_position_quantity:g}")
        if abs(after) * px > limits.max_position_notional:
            return Rejection(cid, "position_limit", f"position notional {abs(after) * px:.2f} in {symbol!r} would "
                             f"exceed max_position_notional {limits.max_position_notional:g}")
        if portfolio is not None:
            opening = abs(after) if (after > 0) != (current > 0) else max(abs(after) - abs(current), 0.0)
            if opening:
                need = opening * px + portfolio.commission_model(qty, px)
                power = limits.leverage * portfolio.cash
                if need > power:
                    return Rejection(cid, "buying_power", f"needs {need:.2f} of buying power, has {power:.2f}")
        return None
    except Exception as exc:  # a malformed order or a broken portfolio: refuse, never raise
        cid = getattr(order, "client_order_id", "")
        return Rejection(cid if isinstance(cid, str) else "", "invalid", f"cannot validate order: {exc!r}")


@annotate
def order_for_signal(symbol: str, signal: float, price: float, *, portfolio: "Portfolio",
                     limits: RiskLimits = NO_LIMITS, unit_quantity: float = 1.0,
                     client_order_id: str | None = None) -> Order | Rejection | None:
    """The pipeline's pre-trade risk/position check for one strategy signal (~2 us).

    ``signal`` (e.g. -1 short, 0 flat, +1 long; any real scales) times
    ``unit_quantity`` is the target position in ``symbol``; the difference to the
    portfolio's current position becomes a market order checked by
    :func:`validate_order` at ``price``. Returns the :class:`Order` to send, a
    :class:`Rejection`, or ``None`` when the book is already at target. Never raises
    (a NaN or non-finite signal or price gives a Rejection).
    """
    cid = client_order_id or new_client_order_id()
    if not (_isfinite(signal) and _isfinite(price) and price > 0):
        return Rejection(cid, "invalid", f"signal and price must be finite (price > 0), got {signal!r}, {price!r}")
    delta = signal * unit_quantity - portfolio.quantity(symbol)
    if abs(delta) < 1e-12:
        return None
    try:
        order = Order(cid, symbol, BUY if delta > 0 else SELL, abs(delta))
    except (TypeError, ValueError) as exc:
        return Rejection(cid, "invalid", str(exc))
    return validate_order(order, portfolio, limits, price) or order
