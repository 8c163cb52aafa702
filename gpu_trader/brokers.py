"""Brokers: the protocol the order manager speaks, a simulated venue, a circuit breaker.

**The broker protocol** (what :class:`~gpu_trader.order_manager.OrderManager` needs from a
venue adapter; :class:`Broker` spells it out): a ``name``; ``async submit(order)``,
``async cancel(client_order_id)`` and ``async status(client_order_id)``, each answering a
:class:`BrokerAck` with the venue's state of that order; optionally ``subscribe(callback)``
to push acks of later fills. Acks report **cumulative** fills: ``filled_quantity`` is all
the venue has filled of the order so far and ``fill_price`` their average price, so a lost
or repeated ack never loses or doubles a fill (the manager books the increment). Raise
:class:`BrokerError` when the request surely did not reach the venue (safe to retry
anywhere); anything else that goes wrong (:class:`BrokerTimeout`, another exception, no
answer) leaves the order in doubt, and the manager asks ``status`` later. ``submit`` must be
idempotent on the client order id (a resubmission returns the order's state, never a
second order). ``status`` of an id the venue never received answers REJECTED. ``cancel``
answers CANCELLED (keeping any partial fill), the order's state when it is no longer open,
or REJECTED when it cannot cancel it (the manager then asks ``status`` about an order in
doubt). Pushed acks must concern orders submitted to that broker; others are refused.

:class:`SimulatedBroker` stands in for a venue behind a network: every call takes
``latency_s`` (plus uniform jitter), fails with probability ``failure_rate`` (a
:class:`BrokerError`: the request never arrived, safe to retry anywhere), or with
probability ``timeout_rate`` *processes* the request and then never answers (the
caller's timeout fires, and the order is live at the broker: the ambiguous case that
idempotent client order ids exist for). The random draws come from
``random.Random(seed)``, so a run is reproducible.

The broker is idempotent on ``client_order_id``: a resubmitted order gets the state
of the first one (never a second fill); the same id with different fields is rejected.
Matching against the broker's last price per symbol (:meth:`SimulatedBroker.set_price`):
market orders fill at it; limit orders when it is at or better than the limit (at the
market price); stop orders trigger when it reaches the stop (then behave as market, or
as limit for stop-limit). Fills are all-or-nothing unless ``partial_rate`` > 0: then each
match fills only half of what remains with that probability, and the rest keeps
resting (a market order too) until a later price. Orders that do not fill (in full) rest
(``open``) until a later price fills them (subscribers are told) or they are cancelled;
``ioc`` orders are cancelled instead of resting (keeping what did fill).
"""
from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Callable, Protocol

import msgspec

from .orders import BUY, CANCELLED, FILLED, LIMIT, MARKET, OPEN, REJECTED, STOP, Order
from ._internal.validation import check_count, nonnegative_number, positive_number, real_number
from .profiling import annotate_methods

__all__ = ["Broker", "BrokerError", "BrokerTimeout", "BrokerAck", "SimulatedBroker", "CircuitBreaker"]


class BrokerError(Exception):
    """The broker could not be reached; the request was not received (safe to retry)."""


class BrokerTimeout(Exception):
    """The broker received the request but did not answer in time: its state is unknown
    (the order may be live). Retry only with the same client order id, at the same broker."""


class BrokerAck(msgspec.Struct, frozen=True):
    """A broker's answer about one order: ``status`` FILLED, OPEN, CANCELLED or REJECTED;
    ``filled_quantity`` the cumulative quantity filled so far (unsigned; partial fills
    leave the order OPEN, or CANCELLED when the rest was cancelled) at the average
    ``fill_price`` (NaN when nothing filled); ``reason`` for a rejection or a
    cancellation; ``side`` the order's side as the venue has it (``""``: not reported).
    The manager checks every ack against its order before booking anything."""

    client_order_id: str
    status: str
    filled_quantity: float = 0.0
    fill_price: float = math.nan
    reason: str = ""
    side: str = ""


@annotate_methods
class Broker(Protocol):
    """A venue adapter as :class:`~gpu_trader.order_manager.OrderManager` uses it (see the
    module doc for the semantics; ``subscribe`` is optional, and a broker without
    ``status`` cannot have its orders in doubt resolved)."""

    name: str

    async def submit(self, order: Order) -> BrokerAck: ...

    async def cancel(self, client_order_id: str) -> BrokerAck: ...

    async def status(self, client_order_id: str) -> BrokerAck: ...


def _check_rate(value: float, name: str) -> float:
    v = real_number(value, name)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


class _Venue:
    """One order's state at the simulated venue: cumulative fill and its average price."""

    __slots__ = ("order", "filled", "cost", "status", "reason", "triggered")

    def __init__(self, order: Order) -> None:
        self.order = order
        self.filled = 0.0
        self.cost = 0.0  # sum of fill quantity * price
        self.status = OPEN
        self.reason = ""
        self.triggered = False  # a stop (or stop-limit) order whose stop was hit

    def ack(self) -> BrokerAck:
        price = self.cost / self.filled if self.filled else math.nan
        return BrokerAck(self.order.client_order_id, self.status, self.filled, price, self.reason, self.order.side)


@annotate_methods
class SimulatedBroker:
    """An in-process venue with configurable, seeded network behaviour (see module doc).

    ``prices``: initial last price per symbol (orders for a symbol without a price are
    rejected: no market). ``hang_s``: how long a timed-out call sleeps before giving
    up (far beyond any sane manager timeout). ``latency_s == 0`` answers without
    yielding to the event loop. ``partial_rate``: probability that a match fills only
    half of what remains. Numbers are real numbers (NumPy scalars accepted, not
    ``bool``). Use from one event loop.

    :attr:`fill_counts` counts fill events per client order id (one per order when
    fills are all-or-nothing); :meth:`state` and :meth:`fills` read the venue's records
    without a network round trip (the tests' view of the truth).
    """

    def __init__(self, name: str = "sim", *, latency_s: float = 0.005, jitter_s: float = 0.0,
                 failure_rate: float = 0.0, timeout_rate: float = 0.0, hang_s: float = 3600.0,
                 seed: int = 0, prices: dict[str, float] | None = None, partial_rate: float = 0.0) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        self.name = name
        self.latency_s = nonnegative_number(latency_s, "latency_s")
        self.jitter_s = nonnegative_number(jitter_s, "jitter_s")
        self.failure_rate = _check_rate(failure_rate, "failure_rate")
        self.timeout_rate = _check_rate(timeout_rate, "timeout_rate")
        self.partial_rate = _check_rate(partial_rate, "partial_rate")
        self.hang_s = nonnegative_number(hang_s, "hang_s")
        self._rng = random.Random(check_count(seed, "seed", 0))
        self._prices: dict[str, float] = {}
        self._venue: dict[str, _Venue] = {}
        self._open: dict[str, _Venue] = {}
        self._subscribers: list[Callable[[BrokerAck], None]] = []
        self.fill_counts: dict[str, int] = {}  # client_order_id -> fill events
        self.calls = 0
        for s, p in (prices or {}).items():
            self.set_price(s, p)

    # -- market ----------------------------------------------------------------------
    def subscribe(self, callback: Callable[[BrokerAck], None]) -> None:
        """Call ``callback(ack)`` for every fill of a resting order (from :meth:`set_price`)."""
        self._subscribers.append(callback)

    def set_price(self, symbol: str, price: float) -> list[BrokerAck]:
        """Set the last price of ``symbol`` (a finite real > 0) and fill the resting
        orders it triggers; returns their acks (also sent to subscribers)."""
        if not isinstance(symbol, str) or not symbol:
            raise ValueError(f"symbol must be a non-empty str, got {type(symbol).__name__}")
        self._prices[str.__str__(symbol)] = positive_number(price, "price")
        acks = []
        for v in list(self._open.values()):
            if v.order.symbol == symbol:
                before = v.filled
                ack = self._match(v)
                if ack.filled_quantity > before:
                    acks.append(ack)
        for ack in acks:
            for cb in self._subscribers:
                cb(ack)
        return acks

    def price(self, symbol: str) -> float | None:
        return self._prices.get(symbol)

    def state(self, client_order_id: str) -> BrokerAck | None:
        """The venue's current record of an order (``None``: never received); no network."""
        v = self._venue.get(client_order_id)
        return None if v is None else v.ack()

    def fills(self) -> list[tuple[str, str, float, float]]:
        """Every order the venue has filled (in part): ``(client_order_id, symbol, signed
        cumulative quantity, average price)``, in the order received; no network."""
        return [(cid, v.order.symbol, v.filled if v.order.side == BUY else -v.filled, v.cost / v.filled)
                for cid, v in self._venue.items() if v.filled]

    def _marketable(self, v: _Venue, m: float) -> bool:
        """May ``v``'s order trade at market price ``m`` now (triggering a stop as a side effect)?"""
        order = v.order
        buy = order.side == BUY
        t = order.order_type
        if t == MARKET:
            return True
        if t == LIMIT:
            return m <= order.limit_price if buy else m >= order.limit_price
        if not v.triggered and (m >= order.stop_price if buy else m <= order.stop_price):
            v.triggered = True
        return v.triggered and (t == STOP or (m <= order.limit_price if buy else m >= order.limit_price))

    def _match(self, v: _Venue) -> BrokerAck:
        """Fill what the market allows of ``v``'s order, then rest it (or cancel the rest,
        ioc); returns its ack."""
        order = v.order
        m = self._prices[order.symbol]
        if self._marketable(v, m):
            remaining = order.quantity - v.filled
            qty = remaining / 2 if self.partial_rate and self._rng.random() < self.partial_rate else remaining
            v.filled = order.quantity if qty == remaining else v.filled + qty
            v.cost += qty * m
            self.fill_counts[order.client_order_id] = self.fill_counts.get(order.client_order_id, 0) + 1
            if qty == remaining:
                v.status = FILLED
        if v.status == OPEN and order.time_in_force == "ioc":
            v.status, v.reason = CANCELLED, "ioc order did not fill at once"
        if v.status == OPEN:
            self._open[order.client_order_id] = v
        else:
            self._open.pop(order.client_order_id, None)
        return v.ack()

    def _accept(self, order: Order) -> BrokerAck:
        cid = order.client_order_id
        seen = self._venue.get(cid)
        if seen is not None:
            if seen.order != order:
                return BrokerAck(cid, REJECTED, reason="client_order_id already used for a different order")
            return seen.ack()
        if order.symbol not in self._prices:
            return BrokerAck(cid, REJECTED, reason=f"no market for {order.symbol!r}", side=order.side)
        v = self._venue[cid] = _Venue(order)
        return self._match(v)

    def _cancel(self, client_order_id: str) -> BrokerAck:
        v = self._open.pop(client_order_id, None)
        if v is not None:
            v.status = CANCELLED
            return v.ack()
        return self._status(client_order_id)

    def _status(self, client_order_id: str) -> BrokerAck:
        v = self._venue.get(client_order_id)
        return v.ack() if v is not None else BrokerAck(client_order_id, REJECTED, reason="unknown order")

    # -- network ---------------------------------------------------------------------
    async def _network(self, action: Callable[[], BrokerAck]) -> BrokerAck:
        """One round trip: draw the outcome, run ``action`` at the broker unless the
        request is lost, and answer after the latency (or never, on a timeout)."""
        self.calls += 1
        r = self._rng.random()
        delay = self.latency_s + (self._rng.random() * self.jitter_s if self.jitter_s else 0.0)
        if r < self.failure_rate:
            if delay:
                await asyncio.sleep(delay)
            raise BrokerError(f"broker {self.name!r}: connection failed")
        ack = action()
        if r < self.failure_rate + self.timeout_rate:
            await asyncio.sleep(self.hang_s)
            raise BrokerTimeout(f"broker {self.name!r}: no answer after {self.hang_s} s")
        if delay:
            await asyncio.sleep(delay)
        return ack

    async def submit(self, order: Order) -> BrokerAck:
        """Send ``order``; idempotent on its client order id."""
        return await self._network(lambda: self._accept(order))

    async def cancel(self, client_order_id: str) -> BrokerAck:
        """Cancel a resting order: CANCELLED (keeping any partial fill); its current state
        if it is no longer open; REJECTED for an id the broker never received."""
        return await self._network(lambda: self._cancel(client_order_id))

    async def status(self, client_order_id: str) -> BrokerAck:
        """The order's current state (cumulative fill); REJECTED ``unknown order`` for an id
        the broker never received."""
        return await self._network(lambda: self._status(client_order_id))

    def __repr__(self) -> str:
        return (f"SimulatedBroker({self.name!r}, latency_s={self.latency_s}, failure_rate={self.failure_rate}, "
                f"timeout_rate={self.timeout_rate})")


@annotate_methods
class CircuitBreaker:
    """Stops calls to a failing broker, then probes it again after a cool-down.

    ``closed`` (normal) -> ``open`` after ``failure_threshold`` consecutive failures:
    :meth:`allow` refuses every call for ``cooldown_s`` seconds -> ``half_open``: one
    trial call is allowed; its success closes the breaker, its failure opens it for
    another cool-down. ``clock`` (seconds, monotonic) is injectable for tests.
    :attr:`trips` counts the times it opened (closed or half-open -> open).
    """

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(self, failure_threshold: int = 5, cooldown_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failure_threshold = check_count(failure_threshold, "failure_threshold", 1)
        self.cooldown_s = nonnegative_number(cooldown_s, "cooldown_s")
        self._clock = clock
        self._state = self.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial = False  # a half-open trial call is in flight
        self.trips = 0

    @property
    def state(self) -> str:
        if self._state == self.OPEN and self._clock() - self._opened_at >= self.cooldown_s:
            return self.HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow(self) -> bool:
        """May a call go out now? In half-open state only one trial at a time."""
        if self._state == self.CLOSED:
            return True
        if self._state == self.OPEN:
            if self._clock() - self._opened_at < self.cooldown_s:
                return False
            self._state = self.HALF_OPEN
        if self._trial:
            return False
        self._trial = True
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._trial = False
        self._state = self.CLOSED

    def record_failure(self) -> None:
        self._failures += 1
        self._trial = False
        if self._state == self.HALF_OPEN or self._failures >= self.failure_threshold:
            if self._state != self.OPEN:
                self.trips += 1
            self._state = self.OPEN
            self._opened_at = self._clock()

    def release(self) -> None:
        """End a call that neither succeeded nor failed (it was cancelled)."""
        self._trial = False

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state!r}, failures={self._failures})"
