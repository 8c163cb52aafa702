"""The asyncio order manager: pre-trade checks with reservations, routing, retries,
circuit breakers, idempotent submission, cancels, booking fills into a portfolio, and
reconciliation with the venues.

Guarantees:

* **No exception escapes** :meth:`OrderManager.submit`, :meth:`~OrderManager.submit_many`,
  :meth:`~OrderManager.cancel`, :meth:`~OrderManager.reconcile`, :meth:`~OrderManager.close`
  or a broker's fill callback: every outcome is an :class:`~gpu_trader.orders.OrderReport`
  (a bug inside is reported with code ``internal``), whatever the request (an object
  whose attributes raise, say). Only the caller's own task cancellation
  (``asyncio.CancelledError``) propagates, as asyncio requires, and ``submit_many``
  checks its arguments (``TypeError``/``ValueError``; at most ``MAX_BATCH`` orders)
  before sending anything.
* **Limits count orders in flight**: the pre-trade check
  (:func:`~gpu_trader.orders.check_order`) sees the :class:`~gpu_trader.orders.Exposure`
  every order not yet final reserves: its unfilled quantity (position limits assume the
  worse of all pending buys or all pending sells filling) and its buying power (see
  :class:`~gpu_trader.orders.RiskLimits`: a buy needs all of it, a sell what it takes
  below zero). The check
  and the reservation happen in one step (no ``await`` between them), so concurrent
  submissions cannot overshoot a limit together. Fills convert the reservation into the
  position; a final outcome (filled, cancelled, rejected) releases the rest; an UNKNOWN
  order keeps its reservation until it is resolved. A buy holds buying power for its
  unfilled units at its reference price plus their share of its commission estimate; the
  pending sells of a symbol hold it for the units that would take the position below
  zero, reallocated after every fill (the sells admitted first close the long first), so
  pending sells filling in any order leave the short part reserved.
* **Every venue fill is booked exactly once, all-or-nothing**: brokers report cumulative
  fills (see :mod:`gpu_trader.brokers`); the manager books only the increment over what it
  has booked for that order (partial fills, late and repeated acks included), through
  the portfolio's atomic :meth:`~gpu_trader.portfolio.Portfolio.apply_fill`. A booking
  that fails (a broken commission model, say) books nothing and leaves the order UNKNOWN
  (code ``internal``); the next answer about the order, a resubmission or
  :meth:`~OrderManager.reconcile` books it then, once. An order refused before it was
  sent never changes a position (pushed acks about it are refused as bad acks).
* **Acks are checked against their order** before anything is booked: the id, the side
  (when the broker reports one), a known status, ``0 <= filled <= quantity`` (cumulative),
  a finite fill price > 0 whenever something filled. A bad ack is refused, counted in
  :attr:`OrderManager.bad_acks` and never booked; in answer to a request it counts as an
  ambiguous failure (code ``bad_ack``; the order may be live).
* **Idempotency**: the client order id is the key. Submitting an order whose id is in
  flight awaits that submission; one with a final or open report returns it; one in doubt
  (UNKNOWN) asks the *same* broker again with the same id, and the broker returns the
  original state. The same id with different fields is rejected (``duplicate_id``). The
  promise covers every order not yet final and the last ``history`` final ones (default
  10,000; memory stays bounded, see the ``orders`` bench suite): older final orders are
  forgotten. An evicted id submitted again is treated as a new order: it is checked and
  sent again, and a venue that remembers the id answers with the old state, whose fill
  would then be booked a second time. Never resubmit an id older than ``history`` final
  orders (orders in doubt, the ones worth resubmitting, are never evicted). A fill pushed
  for a forgotten order is not booked (reconcile long before ``history`` orders pass).
* **Deadlines hold**: a broker call is cancelled after ``timeout_s``, and the manager
  stops waiting then even if the broker ignores the cancellation: such a call is left to
  finish in a task of its own (at most ``MAX_ORPHANS`` at a time; beyond, the oldest is
  given up), and an answer that still comes is checked and booked like any other (once).
  :meth:`~OrderManager.close` gives up on those calls.
* **Unknown outcomes are resolved**: an order left UNKNOWN (a timeout, an unreadable
  answer) is asked about in the background with the broker's ``status`` (exponential
  backoff from ``resolve_backoff_s``, ``resolve_attempts`` times), and
  :meth:`~OrderManager.reconcile` asks the venue about every order not settled (UNKNOWN,
  OPEN, or with a fill not yet booked): afterwards the book holds exactly the venues'
  fills. A broker without ``status`` cannot have its orders resolved this way. A status
  answer "never received" (REJECTED) is taken as final only while no submission of the
  order is still running (it may be on its way), and any later word of the venue about
  the order (a late ack, a push: it was live after all) overrides it.
* **Routing and failover**: the router gives brokers in preference order. A broker
  whose circuit breaker is open is skipped; a :class:`~gpu_trader.brokers.BrokerError`
  (request not received) is retried ``max_retries`` times, then the next broker is
  tried. A timeout, an unexpected exception or an unreadable answer is ambiguous (the
  order may be live), so the order then stays with that broker: it is retried there
  with the same id and never failed over, and reported UNKNOWN until the broker answers.
* **Cancels are honoured, whatever the timing**: :meth:`~OrderManager.cancel` waits for
  a submission in flight, then cancels at the venue if the order rests there or is in
  doubt. A cancel request is sticky: the order is never sent again (resubmitting it asks
  the venue to cancel instead), and whenever the venue later reports it resting (a late
  ack, a status answer) it is cancelled there again, in the background and on
  :meth:`~OrderManager.reconcile`. A cancel that overtakes its submission (the submit
  task has not run yet) waits a few loop iterations for it; if the id is still unknown
  then, it answers ``not_found`` and a submission of that id arriving later (up to
  ``EARLY_CANCELS`` such ids are remembered) is cancelled before it is sent.
"""
from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import math
import sys
import time
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence

import msgspec

from .brokers import BrokerAck, BrokerError, BrokerTimeout, CircuitBreaker
from .orders import (
    BUY, CANCELLED, FILLED, MAX_ID_LENGTH, NO_LIMITS, NO_RESERVATION, OPEN, REJECTED, SELL, UNKNOWN, Exposure, Order,
    OrderReport, OrderRejection, RiskLimits, client_order_id_of, describe_exception, id_text, reserve_order,
)
from ._internal.validation import check_count, positive_number, real_number
from .profiling import annotate_methods

__all__ = ["OrderManager", "SymbolRouter"]

_FINAL = frozenset((FILLED, CANCELLED, REJECTED))
_VENUE_STATUSES = frozenset((FILLED, OPEN, CANCELLED, REJECTED))
_FILL_TOLERANCE = 1e-9  # relative to the order's quantity: below it, a difference is rounding
DEFAULT_HISTORY = 10_000
MAX_RETRIES = 1_000  # for max_retries and resolve_attempts
MAX_BACKOFF_S = 60.0  # the longest wait between two status queries of one order
MAX_BATCH = 100_000  # the most orders one submit_many call takes
MAX_ORPHANS = 10_000  # broker calls that ignored their cancellation, followed at once
EARLY_CANCELS = 1_024  # ids cancelled before their submission arrived, remembered
_CANCEL_WAIT_STEPS = 4  # loop iterations a cancel of an unknown id waits for its submission

if sys.version_info >= (3, 11):
    async def _with_timeout(awaitable, seconds: float):
        async with asyncio.timeout(seconds):
            return await awaitable
else:  # pragma: no cover - Python 3.10
    async def _with_timeout(awaitable, seconds: float):
        return await asyncio.wait_for(awaitable, seconds)


@annotate_methods
class SymbolRouter:
    """Route by symbol: ``routes`` maps a symbol to its preferred broker name; every other
    broker (in the manager's order) follows as failover. Unlisted symbols use the
    manager's order."""

    def __init__(self, routes: Mapping[str, str], broker_names: Sequence[str]) -> None:
        names = tuple(broker_names)
        unknown = set(routes.values()) - set(names)
        if unknown:
            raise ValueError(f"routes name unknown brokers {sorted(unknown)}; brokers: {list(names)}")
        self._default = names
        self._routes = {s: (b,) + tuple(n for n in names if n != b) for s, b in routes.items()}

    def __call__(self, order: Order) -> Sequence[str]:
        return self._routes.get(order.symbol, self._default)


_replace = msgspec.structs.replace


def _report(cid: str, status: str, code: str = "", reason: str = "", broker: str = "") -> OrderReport:
    return OrderReport(cid, status, broker=broker, code=code, reason=reason)


class _Ack(msgspec.Struct, frozen=True, gc=False):
    """A broker ack that passed the checks: cumulative fill as Python floats."""

    status: str
    filled: float
    price: float
    reason: str


class _CallFailed(NamedTuple):
    """Why a broker call gave no usable answer (``code`` is a report code)."""

    code: str
    reason: str


class _Tracked:
    """The manager's record of one order: the last report, what the venue said it filled
    (cumulative quantity, average price, status) and what has been booked of it."""

    __slots__ = ("order", "report", "venue", "sent_to", "venue_status", "venue_reason", "venue_filled",
                 "venue_price", "booked", "cost", "average", "reserved", "reservation", "submitting", "settled",
                 "resolving", "cancel_requested", "tolerance")

    def __init__(self, order: Order) -> None:
        self.order = order
        self.report: OrderReport | None = None
        self.venue: str | None = None  # the broker that may hold the order (sticky once it may)
        self.sent_to: tuple[str, ...] = ()  # every broker the order was sent to
        self.venue_status: str | None = None  # the venue's last word, None before any
        self.venue_reason = ""
        self.venue_filled = 0.0
        self.venue_price = math.nan
        self.booked = 0.0  # cumulative quantity booked into the portfolio
        self.cost = 0.0  # sum of booked quantity * price
        self.average = math.nan  # average price of what is booked
        self.reserved = 0.0  # unfilled quantity counted in the pending exposure
        self.reservation = NO_RESERVATION  # the buying power it holds, by unfilled quantity
        self.submitting = 0  # submissions of it still running (abandoned ones included): it may be on its way
        self.settled = False  # final and fully booked
        self.resolving = False  # a background task is asking the venue about it
        self.cancel_requested = False  # never send it again; cancel it wherever it rests
        self.tolerance = _FILL_TOLERANCE * order.quantity  # below it, a fill difference is rounding

    @property
    def unbooked(self) -> float:
        """Venue fills not booked yet (0 up to rounding)."""
        gap = self.venue_filled - self.booked
        return gap if gap > self.tolerance else 0.0


_IF_FLAT = object()  # _Reservations.exposure(count_new=_IF_FLAT)


class _Reservations:
    """Exposure reserved by orders in flight: unfilled quantity per (symbol, side) and
    buying power in total. A buy holds buying power for each of its unfilled units; the
    pending sells of a symbol hold it for the units that would take the position below
    zero, reallocated in admission order after every change (the sells admitted first
    close the long first), so fills in any order leave the short part reserved.
    ``position(symbol)`` reads the booked position. Each sum is dropped when its last
    order leaves, so rounding never accumulates."""

    def __init__(self, position: Callable[[str], float]) -> None:
        self._position = position
        self._quantity: dict[tuple[str, str], list] = {}  # (symbol, side) -> [quantity, orders]
        self._power = [0.0, 0]  # buys: [currency, orders]
        self._sells: dict[str, dict[str, _Tracked]] = {}  # symbol -> pending sells, in admission order
        self._sell_power: dict[str, float] = {}  # symbol -> currency its pending sells hold
        self._sell_total = 0.0

    def exposure(self, symbol: str, count_new: object = False) -> Exposure:
        """The :class:`Exposure` of ``symbol`` (rounding never makes a sum negative);
        ``count_new``: also count the flat symbols with orders in flight (``new_positions``,
        one pass over them; an unreadable position counts as flat); :data:`_IF_FLAT`: only
        when ``symbol`` itself is flat with no order in flight (the one case the
        ``max_positions`` check reads the count: the pre-trade check skips the pass otherwise)."""
        buy = self._quantity.get((symbol, BUY))
        sell = self._quantity.get((symbol, SELL))
        buy = max(buy[0], 0.0) if buy else 0.0
        sell = max(sell[0], 0.0) if sell else 0.0
        power = self._power[0] + self._sell_total
        new = 0
        if count_new and (count_new is not _IF_FLAT or not (buy or sell or self._held(symbol))):  # the check's test
            for s in {s for s, _ in self._quantity}:
                try:
                    new += not self._position(s)
                except Exception:  # a broken book: assume it may open (the safe side)
                    new += 1
        return Exposure(buy, sell, max(power, 0.0), new)

    def _held(self, symbol: str) -> bool:
        """Whether the book holds ``symbol`` (an unreadable position: not held, so counted)."""
        try:
            return bool(self._position(symbol))
        except Exception:
            return False

    def update(self, tr: _Tracked, remaining: float) -> None:
        """Set ``tr``'s reserved quantity to ``remaining`` (0 releases it)."""
        old = tr.reserved
        if remaining == old:
            return
        tr.reserved = remaining
        order = tr.order
        symbol = order.symbol
        key = (symbol, order.side)
        total = self._quantity.get(key)
        if total is None:
            total = self._quantity[key] = [0.0, 0]
        if _shift(total, old, remaining) == 0:
            del self._quantity[key]
        reservation = tr.reservation
        if reservation is NO_RESERVATION:
            return
        if order.side == BUY:
            if _shift(self._power, reservation.power(old), reservation.power(remaining)) == 0:
                self._power[0] = 0.0
        elif remaining > 0.0:
            self._sells.setdefault(symbol, {})[order.client_order_id] = tr
        else:
            self._sells.get(symbol, {}).pop(order.client_order_id, None)
        if symbol in self._sells:  # a fill or a release in the symbol moves its sells' short part
            self._reprice_sells(symbol)

    def _reprice_sells(self, symbol: str) -> None:
        """Reallocate the buying power of ``symbol``'s pending sells to the booked position."""
        sells = self._sells[symbol]
        power = 0.0
        if sells:
            try:
                long = max(real_number(self._position(symbol), "position"), 0.0)
            except Exception:  # an unreadable book: assume no long to close (the safe side)
                long = 0.0
            for tr in sells.values():
                closing = min(tr.reserved, long)
                long -= closing
                if tr.reserved > closing:
                    r = tr.reservation
                    power += (tr.reserved - closing) * r.price + r.fee * (tr.reserved / r.quantity)
        else:
            del self._sells[symbol]
        self._sell_total += power - self._sell_power.pop(symbol, 0.0)
        if power:
            self._sell_power[symbol] = power
        elif not self._sell_power:
            self._sell_total = 0.0


def _shift(total: list, old: float, new: float) -> int:
    """Move one member of ``total = [sum, members]`` from ``old`` to ``new`` (0: not a
    member); returns the members left."""
    total[0] += new - old
    total[1] += (new > 0) - (old > 0)
    return total[1]


@annotate_methods
class OrderManager:
    """Sends orders to brokers, books their fills, and reconciles with the venues.

    ``brokers``: one broker, a sequence of brokers (keyed by their ``name``), or a
    mapping name -> broker; a broker follows :class:`~gpu_trader.brokers.Broker`:
    ``async submit(order)``, ``async cancel(client_order_id)`` and ``async
    status(client_order_id)`` answering a :class:`~gpu_trader.brokers.BrokerAck`, and
    optionally ``subscribe(callback)`` for later fills of resting orders. ``portfolio``:
    where fills are booked (and what pre-trade checks read); ``None`` books nothing.
    ``limits``: :class:`RiskLimits`. ``router``: ``order -> broker names in preference
    order`` (default: all brokers in the given order; see :class:`SymbolRouter`).
    ``timeout_s``: per broker call (held even by brokers that ignore cancellation);
    ``max_retries``: extra attempts per broker; ``failure_threshold``, ``cooldown_s``,
    ``clock``: each broker's :class:`~gpu_trader.brokers.CircuitBreaker`. ``history``:
    how many final orders (reports and idempotency) are kept, oldest evicted first
    (orders not final are always kept). ``resolve_attempts``, ``resolve_backoff_s``
    (default ``timeout_s``): the background ``status`` queries of an order in doubt,
    waiting ``resolve_backoff_s * 2**k`` (at most 60 s) before the k-th. Numbers accept
    NumPy scalars (not ``bool``); bad ones raise ``TypeError``/``ValueError`` naming
    the argument.

    Use from one event loop (the manager is not thread-safe; the portfolio is). Call
    :meth:`close` at shutdown to stop the background queries (a closed manager still
    answers calls, but no longer asks venues anything in the background).
    """

    def __init__(self, brokers, *, portfolio=None, limits: RiskLimits = NO_LIMITS,
                 router: Callable[[Order], Sequence[str]] | None = None, timeout_s: float = 1.0,
                 max_retries: int = 2, failure_threshold: int = 5, cooldown_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, history: int = DEFAULT_HISTORY,
                 resolve_attempts: int = 5, resolve_backoff_s: float | None = None) -> None:
        table = _broker_table(brokers)
        if not isinstance(limits, RiskLimits):
            raise TypeError(f"limits must be a RiskLimits, got {type(limits).__name__}")
        if router is not None and not callable(router):
            raise TypeError("router must be callable(order) -> broker names, or None")
        self.timeout_s = positive_number(timeout_s, "timeout_s")
        self.max_retries = check_count(max_retries, "max_retries", 0, MAX_RETRIES)
        self.history = check_count(history, "history", 0)
        self.resolve_attempts = check_count(resolve_attempts, "resolve_attempts", 0, MAX_RETRIES)
        self.resolve_backoff_s = (self.timeout_s if resolve_backoff_s is None
                                  else positive_number(resolve_backoff_s, "resolve_backoff_s"))
        self.brokers = table
        self.portfolio = portfolio
        self.limits = limits
        self.breakers = {n: CircuitBreaker(failure_threshold, cooldown_s, clock) for n in table}
        names = tuple(table)
        self._router = router or (lambda order: names)
        self._orders: dict[str, _Tracked] = {}
        self._settled: collections.OrderedDict[str, None] = collections.OrderedDict()  # oldest first
        self._inflight: dict[str, asyncio.Future | None] = {}  # submissions in flight -> their waiters' future
        self._reservations = _Reservations(self._position)
        self._orphans: dict[asyncio.Task, None] = {}  # broker calls that ignored their cancellation, oldest first
        self._tasks: set[asyncio.Task] = set()  # background status queries and cancels
        self._early_cancels: collections.OrderedDict[str, None] = collections.OrderedDict()  # oldest first
        self._closed = False
        self.bad_acks = 0
        for name, broker in table.items():
            subscribe = getattr(broker, "subscribe", None)
            if subscribe is not None:
                subscribe(functools.partial(self._on_ack, name))

    # -- tracking ------------------------------------------------------------------------
    def _position(self, symbol: str) -> float:
        """The booked position in ``symbol`` (0 without a portfolio)."""
        return 0.0 if self.portfolio is None else self.portfolio.quantity(symbol)

    def report(self, client_order_id: str) -> OrderReport | None:
        """The latest report of an order; ``None`` if the manager has none (never seen,
        its first submission still in flight, or evicted from the history)."""
        tr = self._orders.get(client_order_id) if isinstance(client_order_id, str) else None
        return None if tr is None else tr.report

    def open_orders(self) -> tuple[str, ...]:
        """Client order ids resting at a broker."""
        return tuple(cid for cid, tr in self._orders.items() if tr.report is not None and tr.report.status == OPEN)

    def unresolved(self) -> tuple[str, ...]:
        """Client order ids whose outcome is in doubt (UNKNOWN)."""
        return tuple(cid for cid, tr in self._orders.items()
                     if tr.report is not None and tr.report.status == UNKNOWN)

    def exposure(self, symbol: str) -> Exposure:
        """What orders in flight reserve: unfilled buy and sell quantity in ``symbol`` and
        the buying power reserved across all symbols (see :class:`~gpu_trader.orders.Exposure`),
        and, under a ``max_positions`` limit, the flat symbols orders in flight may open
        (``new_positions``; counted, one pass over the symbols in flight, only when ``symbol``
        is flat with no order in flight, the one case the check reads it; 0 otherwise), so that
        a check given this view (the pipeline's :func:`~gpu_trader.orders.order_for_signal`)
        counts them as the manager does.
        ``TypeError`` when ``symbol`` is not a str."""
        if not isinstance(symbol, str):
            raise TypeError(f"symbol must be a str, got {type(symbol).__name__}")
        return self._reservations.exposure(symbol, _IF_FLAT if self.limits.max_positions is not None else False)

    def __len__(self) -> int:
        """Orders tracked (every order not final, plus at most ``history`` final ones)."""
        return len(self._orders)

    # -- submit --------------------------------------------------------------------------
    async def submit(self, order: Order, *, price: float | None = None) -> OrderReport:
        """Check, reserve, route and send one order; returns its report (never raises).

        ``price``: the reference price for the pre-trade notional checks (see
        :func:`~gpu_trader.orders.check_order`).
        """
        try:
            return await self._submit(order, price)
        except Exception as exc:  # the loop must survive any bug
            return _report(client_order_id_of(order), REJECTED, "internal",
                           f"internal error: {describe_exception(exc)}")

    async def submit_many(self, orders: Iterable[Order], *, prices: Sequence[float | None] | None = None
                          ) -> list[OrderReport]:
        """Submit orders concurrently (one task each); reports in the same order. With
        broker latency L, n orders take about L, not n * L; the limits hold for the batch
        as a whole. ``prices``: one reference price (or ``None``) per order. A non-iterable
        ``orders`` (``TypeError``), more than ``MAX_BATCH`` orders or a length mismatch
        (``ValueError``) raises before anything is sent (the only exceptions this method
        raises; an endless ``orders`` is refused after ``MAX_BATCH + 1`` items, an endless
        ``prices`` after one more than there are orders)."""
        if isinstance(orders, (str, bytes)) or not isinstance(orders, Iterable):
            raise TypeError(f"orders must be an iterable of Order, got {type(orders).__name__}")
        orders = list(itertools.islice(orders, MAX_BATCH + 1))
        if len(orders) > MAX_BATCH:
            raise ValueError(f"orders holds more than MAX_BATCH={MAX_BATCH} orders; split the batch")
        if prices is None:
            return list(await asyncio.gather(*[self.submit(o) for o in orders]))
        if isinstance(prices, (str, bytes)) or not isinstance(prices, Iterable):
            raise TypeError(f"prices must be a sequence of prices (or None), got {type(prices).__name__}")
        prices = list(itertools.islice(prices, len(orders) + 1))
        if len(prices) != len(orders):
            raise ValueError(f"prices must have one entry per order ({len(orders)}), got "
                             f"{'more' if len(prices) > len(orders) else len(prices)}")
        return list(await asyncio.gather(*[self.submit(o, price=p) for o, p in zip(orders, prices)]))

    def submit_nowait(self, order: Order, *, price: float | None = None) -> "asyncio.Task[OrderReport]":
        """The pipeline's fast submit path: schedule :meth:`submit` on the running loop and
        return its task at once (a few microseconds); the caller goes on with the next
        event and may await the task, or read :meth:`report` later. Call it from a
        coroutine or callback running on the event loop."""
        return asyncio.get_running_loop().create_task(self.submit(order, price=price))

    async def _submit(self, order: Order, price) -> OrderReport:
        if not isinstance(order, Order):
            return _report(client_order_id_of(order), REJECTED, "invalid",
                           f"expected an Order, got {type(order).__name__}")
        cid = order.client_order_id
        tr = self._orders.get(cid)
        if tr is not None and tr.order != order:
            return _report(cid, REJECTED, "duplicate_id", "client_order_id already used for a different order")
        pending = self._waiter(cid)
        if pending is not None:
            return await asyncio.shield(pending)
        if tr is None:
            tr = self._admit(order, price)
            if tr.settled:
                return tr.report
        elif tr.report.status != UNKNOWN:
            return tr.report
        elif tr.cancel_requested:  # in doubt, and cancelled: never send it again
            return await self._settle_with_venue(tr)
        return await self._send(tr)

    def _admit(self, order: Order, price) -> _Tracked:
        """Pre-trade check and reservation in one synchronous step; the new record (final
        at once when the check refuses the order or a cancel of its id came first)."""
        cid = order.client_order_id
        tr = _Tracked(order)
        self._orders[cid] = tr
        if self._early_cancels and self._early_cancels.pop(cid, False) is None:
            tr.cancel_requested = True
            self._set(tr, _report(cid, CANCELLED, reason="cancelled before it was sent"))
            return tr
        out = reserve_order(order, self.portfolio, self.limits, price, self._reservations.exposure(
            order.symbol, _IF_FLAT if self.limits.max_positions is not None else False))
        if type(out) is OrderRejection:
            self._set(tr, _report(cid, REJECTED, out.code, out.reason))
        else:
            tr.reservation = out
            self._reservations.update(tr, order.quantity)
        return tr

    def _waiter(self, cid: str) -> asyncio.Future | None:
        """A future that gets the report of ``cid``'s submission in flight (``None``: no
        submission in flight). Created on demand: most submissions have no waiter."""
        if cid not in self._inflight:
            return None
        fut = self._inflight[cid]
        if fut is None:
            fut = self._inflight[cid] = asyncio.get_running_loop().create_future()
        return fut

    async def _send(self, tr: _Tracked) -> OrderReport:
        """One submission of a tracked order (first or repeated), settling its waiters."""
        cid = tr.order.client_order_id
        self._inflight[cid] = None
        report = None
        try:
            report = await self._place(tr)
        except Exception as exc:  # a bug below (a broken router, ...): report it, keep the loop alive
            report = self._failed(tr, "internal", f"internal error: {describe_exception(exc)}")
        finally:
            fut = self._inflight.pop(cid)
            if report is None:  # the caller's task was cancelled (shutdown?): settle the waiters anyway
                report = self._failed(tr, "internal", "submission was cancelled", watch=False)
            if tr.settled and cid not in self._settled and self._orders.get(cid) is tr:
                self._settled[cid] = None  # it settled while in flight, when it could not be evicted
                self._evict()
            if fut is not None:
                fut.set_result(report)
        return report

    async def _place(self, tr: _Tracked) -> OrderReport:
        order = tr.order
        names = (tr.venue,) if tr.venue is not None else tuple(self._router(order))
        code, reason = "broker_error", "no broker available"
        for name in names:
            broker = self.brokers.get(name)
            if broker is None:
                code, reason = "broker_error", f"router named unknown broker {name!r}"
                continue
            if name not in tr.sent_to:
                tr.sent_to += (name,)
            outcome = await self._call(name, tr, lambda b=broker: b.submit(order), submission=True)
            if type(outcome) is _Ack:
                return self._absorb(tr, name, outcome)
            code, reason = outcome
            if tr.venue is not None:  # the broker may hold the order: never fail over
                break
        return self._failed(tr, code, reason)

    def _failed(self, tr: _Tracked, code: str, reason: str, *, watch: bool = True) -> OrderReport:
        """A submission without a usable answer: UNKNOWN where a broker may hold the order
        (its status is then asked in the background unless ``watch`` is false), else
        REJECTED. An answer that came in meanwhile (a late ack, a fill callback) wins."""
        if tr.venue_status is not None:
            return tr.report
        if tr.venue is None:
            return self._set(tr, _report(tr.order.client_order_id, REJECTED, code, reason))
        return self._set(tr, _report(tr.order.client_order_id, UNKNOWN, code, reason, tr.venue), watch=watch)

    # -- broker calls --------------------------------------------------------------------
    async def _call(self, name: str, tr: _Tracked, request: Callable[[], object], *,
                    submission: bool = False) -> _Ack | _CallFailed:
        """Call a broker about ``tr`` through its breaker, with the deadline and retries; a
        checked ack, or the last failure. An ambiguous failure pins the order to the broker.
        ``submission``: the request carries the order to the venue (a submit)."""
        breaker = self.breakers[name]
        code, reason = "broker_error", ""
        for _ in range(self.max_retries + 1):
            if not breaker.allow():
                return _CallFailed("circuit_open", f"circuit breaker open for broker {name!r}")
            try:
                answer = await self._ask(tr, request, submission)
            except asyncio.CancelledError:
                breaker.release()
                self._pin(tr, name)  # the request may have reached the broker
                raise
            except BrokerError as exc:
                breaker.record_failure()
                code, reason = "broker_error", describe_exception(exc)
                continue
            except (BrokerTimeout, TimeoutError, asyncio.TimeoutError) as exc:
                code = "timeout"
                reason = f"broker {name!r} did not answer within {self.timeout_s} s ({describe_exception(exc)})"
            except Exception as exc:  # a broken broker: a failure, and it may hold the order
                code, reason = "broker_error", f"broker {name!r} raised {type(exc).__name__}: {describe_exception(exc)}"
            else:
                ack = self._check_ack(tr, name, answer)
                if type(ack) is _Ack:
                    breaker.record_success()
                    return ack
                code, reason = ack
            breaker.record_failure()
            self._pin(tr, name)
        return _CallFailed(code, f"{reason} (after {self.max_retries + 1} attempts)")

    async def _ask(self, tr: _Tracked, request: Callable[[], object], submission: bool):
        """Run one broker request in this task (no extra task, as ``await`` would) for at
        most ``timeout_s`` once it first suspends. At the deadline the request is
        cancelled; a broker that ignores
        the cancellation and keeps going is left running in a task of its own (its answer,
        if one still comes, is checked and absorbed) and the deadline holds. Raises what
        the broker raised, or ``TimeoutError``. A ``submission`` counts in
        ``tr.submitting`` while it runs."""
        call = request()
        if not asyncio.iscoroutine(call):
            call = _awaited(call)  # another kind of awaitable (TypeError when awaited, if it is none)
        try:  # the first step in line: a broker that answers without suspending needs no timer
            suspended_on = call.send(None)
        except StopIteration as answered:
            return answered.value
        tr.submitting += submission
        try:
            relay = _Relay(call, functools.partial(self._orphan, tr, submission), suspended_on)
            return await _with_timeout(relay, self.timeout_s)
        finally:
            tr.submitting -= submission

    def _orphan(self, tr: _Tracked, submission: bool, call, suspended_on) -> None:
        """Take over a broker call that ignored its cancellation: finish it in a task of
        its own and absorb its answer then. Beyond ``MAX_ORPHANS`` such calls, the oldest
        is given up (cancelled once more, then dropped if it ignores that too)."""
        if len(self._orphans) >= MAX_ORPHANS:
            next(iter(self._orphans)).cancel()
        tr.submitting += submission
        task = asyncio.get_running_loop().create_task(_finish(call, suspended_on))
        self._orphans[task] = None
        task.add_done_callback(functools.partial(self._orphan_done, tr, submission))

    def _orphan_done(self, tr: _Tracked, submission: bool, task: asyncio.Task) -> None:
        """An orphaned broker call finished: absorb its answer (never raises)."""
        tr.submitting -= submission
        self._orphans.pop(task, None)
        if task.cancelled() or task.exception() is not None:
            return
        try:
            ack = self._check_ack(tr, tr.venue, task.result())
            if type(ack) is _Ack:
                self._absorb(tr, tr.venue, ack)
        except Exception:  # pragma: no cover - a callback must never break the loop
            pass

    @staticmethod
    def _pin(tr: _Tracked, name: str) -> None:
        if tr.venue is None:
            tr.venue = name

    def _check_ack(self, tr: _Tracked, name: str, answer) -> _Ack | _CallFailed:
        """``answer`` checked against ``tr``'s order; a refused one is counted in :attr:`bad_acks`."""
        ack = _read_ack(tr, answer)
        if type(ack) is _Ack:
            return ack
        self.bad_acks += 1
        if not isinstance(answer, BrokerAck):
            return _CallFailed("broker_error", f"broker {name!r} answered {type(answer).__name__}, not a BrokerAck")
        return _CallFailed("bad_ack", f"broker {name!r} sent a bad ack: {ack}")

    # -- booking -------------------------------------------------------------------------
    def _absorb(self, tr: _Tracked, name: str, ack: _Ack, *, query: bool = False) -> OrderReport:
        """Merge a checked ack from broker ``name`` into ``tr``, book any new fill, and
        store the report. ``query``: the ack answers a status query (a REJECTED answer
        then means "never received", which is not conclusive while a submission of the
        order is still running: it may be on its way)."""
        tr.venue = name
        if ack.filled > tr.venue_filled:
            tr.venue_filled, tr.venue_price = ack.filled, ack.price
        status = _next_status(tr.venue_status, ack.status)
        if query and status == REJECTED and tr.venue_status is None and tr.submitting:
            return tr.report  # the order may still be on its way to the venue
        if status != tr.venue_status:
            tr.venue_status, tr.venue_reason = status, ack.reason
        return self._book_and_report(tr)

    def _book_and_report(self, tr: _Tracked) -> OrderReport:
        """Book what the venue filled beyond what is booked, then store the report the
        venue's word gives (UNKNOWN ``internal`` while a booking fails)."""
        error = self._book_increment(tr)
        order = tr.order
        name = tr.venue or ""
        if error is not None:
            return self._set(tr, OrderReport(order.client_order_id, UNKNOWN, tr.booked, tr.average, name,
                                             "internal", f"booking the fill failed: {error}"))
        status = tr.venue_status
        code = "broker_rejected" if status == REJECTED else ""
        reason = "" if status == FILLED else tr.venue_reason
        return self._set(tr, OrderReport(order.client_order_id, status, tr.booked, tr.average, name, code, reason))

    def _book_increment(self, tr: _Tracked) -> str | None:
        """Book the venue's fills not booked yet, all or nothing; the error text if the
        portfolio refused them (nothing booked then)."""
        increment = tr.unbooked
        if not increment:
            return None
        price = tr.venue_price if not tr.booked else (tr.venue_filled * tr.venue_price - tr.cost) / increment
        if self.portfolio is not None:
            try:
                self.portfolio.apply_fill(tr.order.symbol, increment if tr.order.side == BUY else -increment, price)
            except Exception as exc:  # a broken commission model or portfolio: nothing was booked
                return f"{type(exc).__name__}: {describe_exception(exc)}"
        tr.average = price if not tr.booked else (tr.cost + increment * price) / tr.venue_filled
        tr.booked = tr.venue_filled
        tr.cost += increment * price
        return None

    def _set(self, tr: _Tracked, report: OrderReport, *, watch: bool = True) -> OrderReport:
        """Store ``report``; settle the order (release its reservation, make it evictable)
        once it is final and fully booked; have the venue asked about it while UNKNOWN,
        and cancelled there while it rests after a cancel request (unless ``watch`` is
        false)."""
        tr.report = report
        if watch and (report.status == UNKNOWN or (tr.cancel_requested and report.status == OPEN)):
            self._watch(tr)
        settled = report.status in _FINAL and not tr.unbooked
        self._reservations.update(tr, 0.0 if settled else max(tr.order.quantity - tr.booked, 0.0))
        if settled != tr.settled:
            tr.settled = settled
            cid = tr.order.client_order_id
            if settled:
                self._settled[cid] = None
                self._evict()
            else:
                self._settled.pop(cid, None)
        return report

    def _evict(self) -> None:
        """Forget the oldest final orders beyond ``history``."""
        while len(self._settled) > self.history:
            cid, _ = self._settled.popitem(last=False)
            tr = self._orders.get(cid)
            if tr is not None and tr.settled and cid not in self._inflight:
                del self._orders[cid]

    def _on_ack(self, name: str, ack) -> None:
        """Broker callback: an ack pushed by broker ``name`` (a later fill; never raises)."""
        try:
            if not isinstance(ack, BrokerAck) or type(ack.client_order_id) is not str:
                self.bad_acks += 1
                return
            tr = self._orders.get(ack.client_order_id)
            if tr is None:
                return  # not ours (or long settled and forgotten)
            if name != tr.venue and (tr.venue is not None or name not in tr.sent_to):
                self.bad_acks += 1  # the order was sent elsewhere, or never sent at all
                return
            checked = self._check_ack(tr, name, ack)
            if type(checked) is _Ack:
                self._absorb(tr, name, checked)
        except Exception:  # pragma: no cover - a callback must not break the broker
            pass

    # -- resolving orders in doubt ---------------------------------------------------------
    @staticmethod
    def _needs_venue(tr: _Tracked) -> bool:
        """Is the venue's word still needed: the order is in doubt, or rests although its
        cancel was requested?"""
        status = tr.report.status if tr.report is not None else None
        return status == UNKNOWN or (tr.cancel_requested and status == OPEN)

    def _watch(self, tr: _Tracked) -> None:
        """Have the venue asked about ``tr`` in the background (once per order at a time):
        its state while it is in doubt, a cancel while it rests after a cancel request."""
        if tr.resolving or not self.resolve_attempts or self._closed:
            return
        if not tr.cancel_requested and not hasattr(self.brokers.get(tr.venue), "status"):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a broker callback outside the loop: reconcile() will ask
            return
        tr.resolving = True
        task = loop.create_task(self._resolve(tr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, tr: _Tracked) -> None:
        """Up to ``resolve_attempts`` rounds, with exponential backoff, of asking the venue
        about ``tr`` while :meth:`_needs_venue` says so (never raises)."""
        cid = tr.order.client_order_id
        delay = min(self.resolve_backoff_s, MAX_BACKOFF_S)
        try:
            for _ in range(self.resolve_attempts):
                await asyncio.sleep(delay)
                delay = min(2 * delay, MAX_BACKOFF_S)
                if self._orders.get(cid) is not tr or not self._needs_venue(tr):
                    return
                if cid not in self._inflight:
                    await self._settle_with_venue(tr)
        except Exception:  # pragma: no cover - a background task must never raise
            pass
        finally:
            tr.resolving = False

    async def _settle_with_venue(self, tr: _Tracked) -> OrderReport:
        """One round with ``tr``'s venue: cancel it there when its cancel was requested and
        it may rest (a venue that does not know it is then asked its status), else ask
        its state; returns the report after the answer."""
        if tr.cancel_requested and tr.report.status in (OPEN, UNKNOWN):
            return await self._cancel_at_venue(tr)
        return await self._query(tr)

    async def _query(self, tr: _Tracked) -> OrderReport:
        """Ask ``tr``'s venue for the order's state and absorb the answer; without a
        ``status`` method, only retry a booking that failed."""
        name = tr.venue
        status = getattr(self.brokers[name], "status", None)
        if status is None:
            return self._book_and_report(tr) if tr.venue_status is not None else tr.report
        cid = tr.order.client_order_id
        outcome = await self._call(name, tr, lambda: status(cid))
        if type(outcome) is _Ack:
            return self._absorb(tr, name, outcome, query=True)
        return tr.report

    async def reconcile(self) -> list[OrderReport]:
        """Ask the venues about every order not settled (UNKNOWN, OPEN, or with a venue
        fill not booked yet; orders whose submission is in flight are left to it), book
        what they report (each fill once), cancel there the resting orders whose cancel
        was requested, and return those orders' reports. When every venue answers, the
        book then holds exactly the venues' fills. Never raises."""
        try:
            due: dict[str, list[_Tracked]] = {}
            for cid, tr in self._orders.items():
                if not tr.settled and tr.venue is not None and cid not in self._inflight:
                    due.setdefault(tr.venue, []).append(tr)
            await asyncio.gather(*(self._reconcile_venue(name, trs) for name, trs in due.items()),
                                 return_exceptions=True)
            return [tr.report for trs in due.values() for tr in trs]
        except Exception:  # never raise out of the manager
            return []

    async def _reconcile_venue(self, name: str, trs: list[_Tracked]) -> None:
        """Query one venue about ``trs``: one at a time while its circuit breaker is not
        closed (a half-open breaker lets one trial through), then the rest concurrently."""
        pending = list(trs)
        breaker = self.breakers[name]
        while pending and breaker.state != CircuitBreaker.CLOSED:
            await self._settle_with_venue(pending.pop())
        await asyncio.gather(*(self._settle_with_venue(tr) for tr in pending), return_exceptions=True)

    async def close(self) -> None:
        """Stop the background queries and cancels for good and give up on broker calls
        that ignored their cancellation (at shutdown; call :meth:`reconcile` first to
        settle what can be settled). Never raises."""
        self._closed = True
        tasks = [*self._tasks, *self._orphans]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- cancel --------------------------------------------------------------------------
    async def cancel(self, client_order_id: str) -> OrderReport:
        """Cancel an order; returns its report after the attempt (never raises).

        A cancel issued while the order's submission is in flight waits for its outcome,
        then cancels at the venue if the order rests there or is in doubt; the request
        stays in force (see the module doc). CANCELLED on success (keeping any partial
        fill); the order's report with code ``not_cancellable`` when it is already final;
        REJECTED ``not_found`` for an id the manager does not know (a submission of it
        that arrives later is cancelled before it is sent); a broker failure leaves the
        report as it was, with the failure's code and reason (the manager then keeps
        trying in the background and on :meth:`reconcile`).
        """
        try:
            cid = str.__str__(client_order_id) if isinstance(client_order_id, str) else None
            tr = await self._find(cid)
            if tr is None:
                if cid and len(cid) <= MAX_ID_LENGTH:
                    self._remember_early_cancel(cid)
                return _report(id_text(cid), REJECTED, "not_found", "unknown client_order_id")
            tr.cancel_requested = True
            pending = self._waiter(cid)
            if pending is not None:
                await asyncio.shield(pending)
            return await self._cancel_at_venue(tr)
        except Exception as exc:
            return _report(id_text(client_order_id), REJECTED, "internal", f"internal error: {describe_exception(exc)}")

    async def _find(self, cid: str | None) -> _Tracked | None:
        """The record of ``cid``, waiting a few loop iterations for a submission scheduled
        before the cancel (a task not started yet) to register it."""
        if not cid or len(cid) > MAX_ID_LENGTH:
            return None
        tr = self._orders.get(cid)
        for _ in range(_CANCEL_WAIT_STEPS):
            if tr is not None:
                break
            await asyncio.sleep(0)
            tr = self._orders.get(cid)
        return tr

    def _remember_early_cancel(self, cid: str) -> None:
        """Cancel ``cid``'s submission should it arrive later (the ``EARLY_CANCELS`` latest
        such ids are remembered)."""
        self._early_cancels[cid] = None
        self._early_cancels.move_to_end(cid)
        while len(self._early_cancels) > EARLY_CANCELS:
            self._early_cancels.popitem(last=False)

    async def _cancel_at_venue(self, tr: _Tracked) -> OrderReport:
        """Ask ``tr``'s venue to cancel the order (which is not in flight); the report
        after the answer. A venue answering REJECTED about an order in doubt may never
        have received it: its status is asked then. An order still in need of the venue
        afterwards (the call failed, or it still rests) is left to the background."""
        current = tr.report
        if current.status in _FINAL:
            return _replace(current, code="not_cancellable", reason=f"order is already {current.status}")
        if tr.venue is None:
            return _replace(current, code="not_cancellable", reason="order never reached a broker")
        cid = tr.order.client_order_id
        broker = self.brokers[tr.venue]
        outcome = await self._call(tr.venue, tr, lambda: broker.cancel(cid))
        if type(outcome) is not _Ack:
            report = _replace(tr.report, code=outcome.code, reason=outcome.reason)
        elif outcome.status != REJECTED:
            return self._absorb(tr, tr.venue, outcome)
        elif tr.report.status == UNKNOWN:
            return await self._query(tr)
        else:
            report = _replace(tr.report, code="broker_rejected", reason=outcome.reason)
        self._watch(tr)
        return report


async def _awaited(awaitable):
    return await awaitable


async def _finish(call, suspended_on):
    """Finish an orphaned broker call (a coroutine suspended on ``suspended_on``); if this
    task is cancelled (shutdown), the call gets the cancellation once more and is dropped
    if it ignores it again."""
    return await _Relay(call, None, suspended_on)


_NOT_STARTED = object()


class _Relay:
    """Awaitable that runs coroutine ``call`` step by step inside the awaiting task, as
    ``await call`` would, relaying every resumption (value or exception) to it. If the
    task is cancelled and ``call`` suspends again instead of ending (it ignored the
    cancellation), the cancellation propagates at once all the same: ``orphan(call,
    suspended_on)`` takes ``call`` over, or, without ``orphan``, it is dropped.
    ``suspended_on``: what an already started ``call`` is waiting for."""

    __slots__ = ("call", "orphan", "suspended_on")

    def __init__(self, call, orphan=None, suspended_on=_NOT_STARTED) -> None:
        self.call, self.orphan, self.suspended_on = call, orphan, suspended_on

    def __await__(self):
        call = self.call
        try:
            pending = call.send(None) if self.suspended_on is _NOT_STARTED else self.suspended_on
            while True:
                try:
                    sent = yield pending
                except BaseException as exc:  # cancellation (the deadline, the caller) or close
                    pending = call.throw(exc)
                    if self.orphan is not None:  # it ignored the cancellation: do not wait for it
                        self.orphan(call, pending)
                    raise
                else:
                    pending = call.send(sent)
        except StopIteration as done:
            return done.value


def _read_ack(tr: _Tracked, ack) -> _Ack | str:
    """``ack`` as an answer about ``tr``'s order: the checked :class:`_Ack` (cumulative
    fill as Python floats, capped at the order's quantity), or what is wrong with it."""
    if not isinstance(ack, BrokerAck):
        return f"not a BrokerAck but {type(ack).__name__}"
    order = tr.order
    cid = ack.client_order_id
    if type(cid) is not str or cid != order.client_order_id:
        return f"ack for another order ({_text(cid, 64)})"
    status = ack.status
    if type(status) is not str or status not in _VENUE_STATUSES:
        return f"unknown status {_text(status, 32)}"
    side = ack.side
    if type(side) is not str or (side and side != order.side):
        return f"side {_text(side, 16)} on a {order.side} order"
    filled = ack.filled_quantity
    if type(filled) is not float or not -math.inf < filled < math.inf:
        try:
            filled = real_number(filled, "filled_quantity")
        except (TypeError, ValueError) as exc:
            return str(exc)
    quantity = order.quantity
    if filled < 0.0 or filled > quantity + tr.tolerance:
        return f"filled_quantity {filled:g} outside [0, {quantity:g}]"
    if status == FILLED and not filled > 0.0:
        return "filled with filled_quantity 0"
    if status == REJECTED and filled > 0.0:
        return f"rejected with filled_quantity {filled:g}"
    if status == OPEN and filled >= quantity - tr.tolerance:
        return "open with nothing left to fill"
    price = math.nan
    if filled > 0.0:
        filled = min(filled, quantity)
        price = ack.fill_price
        if type(price) is not float or not 0.0 < price < math.inf:
            try:
                price = real_number(price, "fill_price")
            except (TypeError, ValueError) as exc:
                return str(exc)
            if not price > 0.0:
                return f"fill_price {price:g} is not > 0"
        increment = filled - tr.booked
        if increment > tr.tolerance and tr.booked:
            step = (filled * price - tr.cost) / increment
            if not (step > 0.0 and math.isfinite(step)):
                return f"average price {price:g} implies a fill at {step:g}"
    reason = ack.reason
    return _Ack(status, filled, price, reason if type(reason) is str else "")


def _text(value, limit: int) -> str:
    """A str value cut to ``limit`` characters and quoted, else its type's name (a hostile
    object is never converted: its ``str``/``repr`` may raise or be huge)."""
    return repr(value[:limit]) if type(value) is str else f"a {type(value).__name__}"


def _next_status(current: str | None, venue: str) -> str:
    """The venue status after ``current`` (``None``: no word yet) and a new answer: FILLED
    is never undone; a cancelled order never goes back to OPEN, and becomes FILLED when
    its fill shows up after all; a rejected one takes any later word (REJECTED may only
    mean "not received yet": an order that shows up after all is live)."""
    if current is None or current == OPEN or current == REJECTED:
        return venue
    if current == FILLED:
        return FILLED
    return FILLED if venue == FILLED else current


def _broker_table(brokers) -> dict:
    """``{name: broker}`` from one broker, a sequence or a mapping (``TypeError``/``ValueError``)."""
    if isinstance(brokers, Mapping):
        table = dict(brokers)
    elif isinstance(brokers, (list, tuple)):
        table = {getattr(b, "name", None): b for b in brokers}
        if len(table) != len(brokers):
            raise ValueError(f"brokers: two brokers share a name ({[getattr(b, 'name', None) for b in brokers]!r})")
    else:
        table = {getattr(brokers, "name", None): brokers}
    if not table:
        raise ValueError("brokers must name at least one broker")
    for name, broker in table.items():
        if type(name) is not str or not name:
            raise TypeError(f"brokers: every broker needs a non-empty str name, got {name!r}")
        if not (callable(getattr(broker, "submit", None)) and callable(getattr(broker, "cancel", None))):
            raise TypeError(f"brokers: {name!r} lacks submit/cancel coroutines")
    return table
