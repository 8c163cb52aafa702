"""Orders: validated immutable records, pre-trade checks against a portfolio, reports.

Records are ``msgspec.Struct(frozen=True)`` (construction with validation ~0.3 us;
attribute assignment raises ``AttributeError``; they encode to JSON with
``msgspec.json.encode``). Build them with :func:`market_order`, :func:`limit_order`,
:func:`stop_order` and :func:`stop_limit_order`, which generate a client order id
when none is given; constructing :class:`Order` directly validates the same way.
Bad fields raise ``TypeError``/``ValueError`` naming the field. Quantities, prices and
limits accept real numbers (Python ``int``/``float`` or NumPy scalars, never ``bool``)
and are stored as Python floats.

:func:`validate_order` checks an order against :class:`RiskLimits`, a
:class:`~gpu_trader.portfolio.Portfolio` and the :class:`Exposure` that orders still in
flight have reserved, and returns an :class:`OrderRejection` (with a machine-readable ``code``
and a human ``reason``) or ``None``; :func:`check_order` does the same and also says how
much buying power the order reserves (:func:`reserve_order`: the :class:`Reservation`
itself). None of them raises, for any input, or changes the portfolio.
:func:`order_for_signal` is the pipeline's one-event pre-trade hook: strategy signal ->
target position -> checked market order (it never raises either).

The broker side lives in :mod:`gpu_trader.brokers`, the async manager in
:mod:`gpu_trader.order_manager`.
"""
from __future__ import annotations

import itertools
import math
import os
from typing import TYPE_CHECKING, Callable, Optional

import msgspec
import numpy as np

from .commissions import commission_for
from ._internal.sizing_xp import LOT_TOLERANCE
from ._internal.validation import nonnegative_number, positive_number, real_number
from .profiling import annotate, annotate_methods

if TYPE_CHECKING:  # pragma: no cover
    from .portfolio import Portfolio

__all__ = [
    "BUY", "SELL", "MARKET", "LIMIT", "STOP", "STOP_LIMIT",
    "FILLED", "OPEN", "CANCELLED", "REJECTED", "UNKNOWN",
    "Order", "OrderRejection", "Rejection", "OrderReport", "RiskLimits", "Exposure",
    "market_order", "limit_order", "stop_order", "stop_limit_order", "new_client_order_id",
    "Reservation", "check_order", "reserve_order", "validate_order", "order_for_signal",
]

BUY, SELL = "buy", "sell"
MARKET, LIMIT, STOP, STOP_LIMIT = "market", "limit", "stop", "stop_limit"
SIDES = frozenset((BUY, SELL))
ORDER_TYPES = frozenset((MARKET, LIMIT, STOP, STOP_LIMIT))
TIME_IN_FORCE = frozenset(("day", "gtc", "ioc"))
MAX_ID_LENGTH = 64

# Report statuses. FILLED, CANCELLED and REJECTED are final; OPEN rests at a broker;
# UNKNOWN means the broker's answer is in doubt (a timeout, an unreadable answer), so the
# order may be live there: the manager resolves it by asking the broker (see
# gpu_trader.order_manager), and resubmitting the same client order id never refills.
FILLED, OPEN, CANCELLED, REJECTED, UNKNOWN = "filled", "open", "cancelled", "rejected", "unknown"

_ID_PREFIX = os.urandom(4).hex()
_ids = itertools.count(1)
_force_setattr = msgspec.structs.force_setattr
_EXACT_INT = 2**53  # the largest int range a float holds exactly


@annotate
def new_client_order_id() -> str:
    """A process-unique client order id (``<random 8 hex>-<counter>``), ~0.2 us."""
    return f"{_ID_PREFIX}-{next(_ids)}"


def _text_field(record: msgspec.Struct, name: str) -> str:
    """A str field of a frozen record; a str subclass (``np.str_``, say) is stored as a plain
    str, anything else is a ``ValueError`` naming the field."""
    value = getattr(record, name)
    if type(value) is str:
        return value
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a str, got {_short(value)}")
    text = str.__str__(value)
    _force_setattr(record, name, text)
    return text


def _positive_field(record: msgspec.Struct, name: str) -> None:
    """Check a field of a frozen record with :func:`positive_number` and store it as a float."""
    value = getattr(record, name)
    if type(value) is int and 0 < value <= _EXACT_INT:  # a whole number of units: exact as a float
        checked = float(value)
    else:
        checked = positive_number(value, name)
    if type(value) is not float:
        _force_setattr(record, name, checked)


class Order(msgspec.Struct, frozen=True):
    """One order request (immutable, validated on construction).

    ``quantity`` > 0 in instrument units (direction is ``side``: ``"buy"``/``"sell"``);
    ``order_type`` one of ``"market"``, ``"limit"`` (needs ``limit_price``), ``"stop"``
    (needs ``stop_price``), ``"stop_limit"`` (needs both); a price the type does not use
    must be ``None``. ``time_in_force``: ``"day"``, ``"gtc"`` or ``"ioc"`` (cancel what
    does not fill at once). ``client_order_id``: non-empty, at most 64 characters; the
    idempotency key of the order manager and the brokers. Quantity and prices may be
    given as any real number (NumPy scalars included, not ``bool``); they are stored as
    Python floats. Text fields take a ``str`` or a subclass (``np.str_``), stored as a
    plain ``str``.
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
        if type(cid) is not str:
            cid = _text_field(self, "client_order_id")
        if not cid or len(cid) > MAX_ID_LENGTH:
            raise ValueError(f"client_order_id must be a non-empty str of at most {MAX_ID_LENGTH} chars, "
                             f"got {_short(cid)}")
        if not (self.symbol if type(self.symbol) is str else _text_field(self, "symbol")):
            raise ValueError("symbol must be a non-empty str, got ''")
        if (self.side if type(self.side) is str else _text_field(self, "side")) not in SIDES:
            raise ValueError(f"side must be 'buy' or 'sell', got {_short(self.side)}")
        q = self.quantity
        if type(q) is not float or not 0.0 < q < math.inf:  # the common case costs one test
            _positive_field(self, "quantity")
        t = self.order_type
        if type(t) is not str:
            t = _text_field(self, "order_type")
        if t not in ORDER_TYPES:
            raise ValueError(f"order_type must be one of {sorted(ORDER_TYPES)}, got {_short(t)}")
        if t == LIMIT or t == STOP_LIMIT:
            _positive_field(self, "limit_price")
        elif self.limit_price is not None:
            raise ValueError(f"limit_price must be None for a {t} order")
        if t == STOP or t == STOP_LIMIT:
            _positive_field(self, "stop_price")
        elif self.stop_price is not None:
            raise ValueError(f"stop_price must be None for a {t} order")
        tif = self.time_in_force
        if (tif if type(tif) is str else _text_field(self, "time_in_force")) not in TIME_IN_FORCE:
            raise ValueError(f"time_in_force must be one of {sorted(TIME_IN_FORCE)}, "
                             f"got {_short(self.time_in_force)}")

    @property
    def signed_quantity(self) -> float:
        """``+quantity`` for a buy, ``-quantity`` for a sell."""
        return self.quantity if self.side == BUY else -self.quantity

    @property
    def reference_price(self) -> float | None:
        """The price the order itself names (limit, else stop), ``None`` for market orders."""
        return self.limit_price if self.limit_price is not None else self.stop_price


def _short(value, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (a hostile value never floods a message)."""
    try:
        text = repr(value)
    except Exception:  # a value whose repr fails still gets a message
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_exception(exc: BaseException, limit: int = 300) -> str:
    """An exception's message, cut to ``limit`` characters (its type name if it has none)."""
    try:
        text = str(exc) or type(exc).__name__
    except Exception:  # an exception whose str() fails
        text = type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


class OrderRejection(msgspec.Struct, frozen=True):
    """Why a pre-trade check refused an order. ``code``: ``invalid``, ``unknown_symbol``,
    ``no_price``, ``order_size``, ``position_limit``, ``max_positions`` or ``buying_power``."""

    client_order_id: str
    code: str
    reason: str


Rejection = OrderRejection
"""The former name of :class:`OrderRejection` (``gpu_trader.Rejection``), kept for existing code."""


class OrderReport(msgspec.Struct, frozen=True):
    """The manager's answer for one order: ``status`` is one of FILLED, OPEN, CANCELLED,
    REJECTED, UNKNOWN; ``filled_quantity`` (unsigned) is what has been booked into the
    portfolio so far (partial fills included), at the average ``fill_price`` (NaN when
    nothing is filled); ``broker`` the venue's name (``""`` when none was reached);
    ``code`` and ``reason`` explain a rejection, a timeout or a refused cancel: a
    :class:`OrderRejection` code, or one of the manager's: ``duplicate_id``, ``circuit_open``,
    ``broker_error``, ``broker_rejected``, ``bad_ack``, ``timeout``, ``not_found``,
    ``not_cancellable``, ``internal``."""

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


_LIMIT_FIELDS = ("max_order_quantity", "max_order_notional", "max_position_quantity", "max_position_notional",
                 "leverage")


class RiskLimits(msgspec.Struct, frozen=True):
    """Pre-trade limits; ``math.inf`` (the default) disables a check.

    * ``max_order_quantity``, ``max_order_notional``: one order's size;
    * ``max_position_quantity``, ``max_position_notional``: ``|position|`` after the
      order, per symbol, assuming every order still in flight fills when that is worse
      (see :class:`Exposure`);
    * ``leverage``: buying power is ``leverage * cash``; the notional an order needs,
      plus its estimated commission, plus the buying power orders in flight have
      reserved, must not exceed it. A buy needs its whole notional (covering a short
      spends cash as much as buying does); a sell needs the notional of the part that
      opens or extends a short, so selling a long never needs buying power. With
      ``leverage = 1`` and fills at the reference price or better, cash thus never falls
      below what the orders in flight reserve, and never below 0;
    * ``symbols``: the tradable universe, a frozenset of str (``None``: any symbol);
    * ``max_positions``: the most non-zero positions the book may hold (an int >= 1, e.g.
      1000; ``None``, the default: not checked). An order in a symbol that is flat in the
      book, with no order in flight in it, opens a position: it is refused (code
      ``max_positions``) when the book's non-zero positions
      (:meth:`~gpu_trader.portfolio.Portfolio.position_count`), plus the flat symbols that
      orders in flight may open (:attr:`Exposure.new_positions`), plus this one would
      exceed the limit. Orders that add to, reduce or flip a held position are never
      refused by it.

    Numbers: real (NumPy scalars accepted, not ``bool``), > 0, NaN refused; stored as
    Python floats. ``TypeError``/``ValueError`` name the field.
    """

    max_order_quantity: float = math.inf
    max_order_notional: float = math.inf
    max_position_quantity: float = math.inf
    max_position_notional: float = math.inf
    leverage: float = 1.0
    symbols: Optional[frozenset] = None
    max_positions: Optional[int] = None

    def __post_init__(self) -> None:
        m = self.max_positions
        if m is not None:
            if isinstance(m, (bool, np.bool_)) or not isinstance(m, (int, np.integer)):
                raise TypeError(f"max_positions must be an int or None, got {type(m).__name__}")
            if m < 1:
                raise ValueError(f"max_positions must be >= 1, got {m!r}")
            if type(m) is not int:
                _force_setattr(self, "max_positions", int(m))
        for name in _LIMIT_FIELDS:
            value = getattr(self, name)
            v = real_number(value, name, finite=False)
            if not v > 0.0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
            if type(value) is not float:
                _force_setattr(self, name, v)
        if self.symbols is not None:
            if not isinstance(self.symbols, frozenset):
                raise TypeError(f"symbols must be a frozenset of str or None, got {type(self.symbols).__name__}")
            if not all(isinstance(s, str) and s for s in self.symbols):
                raise ValueError("symbols must hold non-empty str only")
            if not all(type(s) is str for s in self.symbols):  # np.str_ and other subclasses: plain str
                _force_setattr(self, "symbols", frozenset(str.__str__(s) for s in self.symbols))


NO_LIMITS = RiskLimits()


class Exposure(msgspec.Struct, frozen=True):
    """What orders still in flight (sent, not yet final) may add to one symbol's position.

    ``buy``, ``sell``: the unfilled quantity of pending buy and sell orders in the
    symbol; ``buying_power``: the buying power all pending orders (every symbol) have
    reserved, in currency; ``new_positions``: how many symbols flat in the book have orders
    in flight, each of which may open a position (an int, read only by the ``max_positions``
    check, and only for an order in a flat symbol with no order in flight: the manager
    counts it in that case only, and answers 0 otherwise). All >= 0 (a check given a negative one refuses the order
    as ``invalid``). The position checks assume the worse of "every
    pending buy fills" and "every pending sell fills"; the buying-power check subtracts
    ``buying_power`` from what the cash allows. The order manager keeps this view
    (:meth:`~gpu_trader.order_manager.OrderManager.exposure`).
    """

    buy: float = 0.0
    sell: float = 0.0
    buying_power: float = 0.0
    new_positions: int = 0


NO_EXPOSURE = Exposure()


@annotate_methods
class Reservation(msgspec.Struct, frozen=True, gc=False):
    """What an order of ``quantity`` units that passed :func:`check_order` reserves of the
    buying power while it is in flight: ``opening`` of its units need it (every unit of a
    buy, the short-opening units of a sell) at ``price`` each (the reference price,
    currency per unit), plus the commission estimate ``fee`` (currency) for the whole
    order. All >= 0."""

    quantity: float
    opening: float
    price: float
    fee: float

    def power(self, remaining: float) -> float:
        """The buying power (currency) still reserved when ``remaining`` units are
        unfilled: the opening units among them (a sell that flips a long fills its closing
        units first) at ``price``, plus the share ``remaining / quantity`` of ``fee``."""
        if remaining <= 0.0 or not self.opening:
            return 0.0
        if remaining >= self.quantity:
            return self.opening * self.price + self.fee
        return (remaining if remaining < self.opening else self.opening) * self.price + \
            self.fee * (remaining / self.quantity)


NO_RESERVATION = Reservation(0.0, 0.0, 0.0, 0.0)


@annotate
def check_order(order: Order, portfolio: "Portfolio | None" = None, limits: RiskLimits = NO_LIMITS,
                price: float | None = None, pending: Exposure | None = None) -> OrderRejection | float:
    """Pre-trade check of ``order``: an :class:`OrderRejection`, or the buying power (currency,
    >= 0; 0 for a sell that only reduces a long, or without a portfolio) the order
    needs, which the caller reserves while the order is in flight.

    The reference price for notional checks is the order's own limit/stop price, else
    ``price`` (the latest market price; a real number), else the portfolio's last price
    for the symbol; when the one chosen is missing, ``bool``, NaN, infinite or <= 0 the
    order is rejected (``no_price``). ``pending``: the :class:`Exposure` of orders in
    flight (default: none). Checks, in order: universe, order size, position limits
    after the order with every pending order in the symbol counted at its worst, buying
    power (see :class:`RiskLimits`; the commission estimate comes from the portfolio's
    model). Without a portfolio the position and buying-power checks assume a flat book
    with unlimited cash. Never raises, for any input: anything else malformed (an object
    that is not an :class:`Order`, a bad ``pending``, a broken portfolio or commission
    model) is an OrderRejection with code ``invalid``. Reads the portfolio without changing it.
    """
    out = reserve_order(order, portfolio, limits, price, pending)
    return out if type(out) is OrderRejection else out.power(order.quantity)


@annotate
def reserve_order(order: Order, portfolio: "Portfolio | None" = None, limits: RiskLimits = NO_LIMITS,
                  price: float | None = None, pending: Exposure | None = None) -> OrderRejection | Reservation:
    """:func:`check_order`, answering the :class:`Reservation` itself (what the order
    manager holds while the order is in flight) instead of its total. Never raises."""
    try:
        return _check(order, portfolio, limits, price, NO_EXPOSURE if pending is None else pending)
    except Exception as exc:  # a malformed order or a broken portfolio: refuse, never raise
        return OrderRejection(client_order_id_of(order), "invalid", f"cannot validate order: {describe_exception(exc)}")


def client_order_id_of(obj) -> str:
    """``obj.client_order_id`` when it is a str (cut to the id length), else ``""``; never
    raises, whatever ``obj`` is (reports about malformed requests still name an id)."""
    try:
        cid = getattr(obj, "client_order_id", "")
    except Exception:  # a property that raises
        return ""
    return id_text(cid)


def id_text(value) -> str:
    """``value`` as a plain str of at most the id length when it is a str (or a subclass),
    else ``""``; never raises."""
    return str.__str__(value)[:MAX_ID_LENGTH] if isinstance(value, str) else ""


def _check(order: Order, portfolio, limits: RiskLimits, price, pending: Exposure) -> OrderRejection | Reservation:
    if not isinstance(order, Order):
        raise TypeError(f"order must be an Order, got {type(order).__name__}")
    if not isinstance(limits, RiskLimits):
        raise TypeError(f"limits must be a RiskLimits, got {type(limits).__name__}")
    pending_buy, pending_sell, reserved = _pending(pending)
    cid = order.client_order_id
    symbol = order.symbol
    if limits.symbols is not None and symbol not in limits.symbols:
        return OrderRejection(cid, "unknown_symbol", f"{symbol!r} is not in the tradable universe")
    px = _reference_price(order, portfolio, price)
    if px is None:
        return OrderRejection(cid, "no_price", f"no valid reference price for {symbol!r} (got {_short(price)})")
    qty = order.quantity
    if qty > limits.max_order_quantity:
        return OrderRejection(cid, "order_size",
                              f"quantity {qty:g} exceeds max_order_quantity {limits.max_order_quantity:g}")
    notional = qty * px
    if not notional <= limits.max_order_notional or notional == math.inf:  # so is an overflow to inf
        return OrderRejection(cid, "order_size",
                              f"notional {notional:.2f} exceeds max_order_notional {limits.max_order_notional:g}")
    current = _finite(portfolio.quantity(symbol), "portfolio quantity") if portfolio is not None else 0.0
    buy = order.side == BUY
    # the worst position the book can reach before this order: every pending order on its side fills
    if buy:
        before = current + pending_buy
        after = before + qty
    else:
        before = current - pending_sell
        after = before - qty
    if abs(after) > limits.max_position_quantity:
        return OrderRejection(cid, "position_limit", f"position {after:g} in {symbol!r} (orders in flight included) "
                              f"would exceed max_position_quantity {limits.max_position_quantity:g}")
    if not abs(after) * px <= limits.max_position_notional:
        return OrderRejection(cid, "position_limit", f"position notional {abs(after) * px:.2f} in {symbol!r} "
                              f"(orders in flight included) would exceed max_position_notional "
                              f"{limits.max_position_notional:g}")
    if limits.max_positions is not None and current == 0.0 and not (pending_buy or pending_sell):
        held = 0 if portfolio is None else portfolio.position_count()
        opening = _count(pending.new_positions, "pending.new_positions")
        if held + opening + 1 > limits.max_positions:
            return OrderRejection(cid, "max_positions", f"{symbol!r} would be position {held + opening + 1} "
                                  f"({held} held, {opening} that orders in flight may open), more than "
                                  f"max_positions {limits.max_positions}")
    if portfolio is None:
        return NO_RESERVATION
    # the units that need buying power: all of a buy; the part of a sell beyond what it closes of a long
    opening = qty if buy else max(-after, 0.0) - max(-before, 0.0)
    if not opening:  # a sell that only closes a long: what it might open later is priced at px
        return Reservation(qty, 0.0, px, 0.0)
    fee = commission_for(portfolio.commission_model, qty, px)
    need = opening * px + fee
    power = limits.leverage * _finite(portfolio.cash, "portfolio cash") - reserved
    if not need <= power:
        return OrderRejection(cid, "buying_power", f"needs {need:.2f} of buying power, has {power:.2f}"
                              + (f" ({reserved:.2f} reserved by orders in flight)" if reserved else ""))
    return Reservation(qty, opening, px, fee)


def _pending(pending: Exposure) -> tuple[float, float, float]:
    """``pending``'s (buy, sell, buying_power), each checked to be a finite real >= 0."""
    if pending is NO_EXPOSURE:  # the common case of a lone check
        return 0.0, 0.0, 0.0
    if not isinstance(pending, Exposure):
        raise TypeError(f"pending must be an Exposure, got {type(pending).__name__}")
    b, s, r = pending.buy, pending.sell, pending.buying_power
    if type(b) is float and type(s) is float and type(r) is float and b >= 0.0 and s >= 0.0 and r >= 0.0 \
            and b + s + r < math.inf:  # plain finite floats >= 0 (NaN fails every comparison)
        return b, s, r
    return (nonnegative_number(b, "pending.buy"), nonnegative_number(s, "pending.sell"),
            nonnegative_number(r, "pending.buying_power"))


def _count(value, name: str) -> int:
    """``value`` when it is an int >= 0 (NumPy integers too, not ``bool``), else ``TypeError``/``ValueError``."""
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return int(value)


def _finite(value, name: str) -> float:
    """:func:`real_number` (finite), with the plain finite float answered at once."""
    return value if type(value) is float and -math.inf < value < math.inf else real_number(value, name)


def _reference_price(order: Order, portfolio, price) -> float | None:
    """The order's own price, else ``price``, else the portfolio's last price; ``None``
    when the chosen one is missing or not a finite real > 0."""
    px = order.reference_price
    if px is None:
        px = price
    if px is None and portfolio is not None:
        px = portfolio.last_price(order.symbol)
    if type(px) is float and 0.0 < px < math.inf:  # the common case
        return px
    try:
        px = real_number(px, "price")
    except (TypeError, ValueError):
        return None
    return px if px > 0.0 else None


@annotate
def validate_order(order: Order, portfolio: "Portfolio | None" = None, limits: RiskLimits = NO_LIMITS,
                   price: float | None = None, pending: Exposure | None = None) -> OrderRejection | None:
    """Pre-trade check of ``order``; ``None`` when it may go out, else an :class:`OrderRejection`.

    The same check as :func:`check_order` (``price``, ``pending`` and the rules are
    described there), without the buying-power figure. Never raises; reads the
    portfolio without changing it.
    """
    out = reserve_order(order, portfolio, limits, price, pending)
    return out if type(out) is OrderRejection else None


@annotate
def order_for_signal(symbol: str, signal: float, price: float, *, portfolio: "Portfolio | None" = None,
                     limits: RiskLimits = NO_LIMITS, unit_quantity: float = 1.0,
                     client_order_id: str | None = None, pending: Exposure | None = None,
                     sizer: "Callable[[float, float], float] | None" = None, equity: float | None = None
                     ) -> Order | OrderRejection | None:
    """The pipeline's pre-trade risk/position check for one strategy signal (~3 us).

    ``signal`` (e.g. -1 short, 0 flat, +1 long; any real scales, NumPy scalars
    included) times ``unit_quantity`` is the target position in ``symbol``; with a
    ``sizer`` (a :mod:`gpu_trader.sizing` object such as ``FixedFractional(risk_fraction=0.01,
    stop_distance=2.0)``, or any callable ``(equity, price) -> units``) the unit is
    ``sizer(equity, price)`` instead (a target from a scaled signal is rounded toward zero to
    the sizer's ``lot_size``, if it has one), ``equity`` defaulting to the portfolio's
    (:meth:`~gpu_trader.portfolio.Portfolio.equity`; one of the two is needed); the
    difference to the portfolio's current position (a flat book when ``portfolio`` is
    ``None``) becomes a market order checked by :func:`validate_order` at ``price``,
    with ``pending`` the :class:`Exposure` of orders in flight. Returns the
    :class:`Order` to send, an :class:`OrderRejection`, or ``None`` when the book is already
    at target. Never raises: a missing, ``bool``, NaN or non-finite signal, price or
    unit quantity, a bad symbol or id, a broken portfolio, or a sizer that raises or
    answers anything but a finite real gives an OrderRejection (code ``invalid``,
    unless a limit refused the order).
    """
    cid = ""
    try:
        cid = client_order_id or new_client_order_id()
        s = real_number(signal, "signal")
        px = positive_number(price, "price")
        if sizer is None:
            unit = positive_number(unit_quantity, "unit_quantity")
        else:
            if equity is None and portfolio is None:
                raise ValueError("sizing needs the equity: pass equity= or a portfolio")
            eq = real_number(portfolio.equity() if equity is None else equity, "equity")
            unit = real_number(sizer(eq, px), "the sizer's answer")
        target = s * unit
        lot = getattr(sizer, "lot_size", 0.0)
        if lot and s not in (-1.0, 0.0, 1.0):  # a scaled signal keeps the sizer's lots: toward zero
            target = math.trunc(target / lot + math.copysign(LOT_TOLERANCE, target)) * lot
        current = 0.0 if portfolio is None else real_number(portfolio.quantity(symbol), "portfolio quantity")
        delta = target - current
        if abs(delta) < 1e-12:
            return None
        order = Order(cid, symbol, BUY if delta > 0 else SELL, abs(delta))
    except Exception as exc:  # bad arguments or a broken portfolio: refuse, never raise
        return OrderRejection(cid if type(cid) is str else "", "invalid", describe_exception(exc))
    return validate_order(order, portfolio, limits, px, pending) or order
