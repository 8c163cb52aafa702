"""A simulated broker (seeded latency, failures, timeouts) and a circuit breaker.

:class:`SimulatedBroker` stands in for a venue behind a network: every call takes
``latency_s`` (plus uniform jitter), fails with probability ``failure_rate`` (a
:class:`BrokerError`: the request never arrived, safe to retry anywhere), or with
probability ``timeout_rate`` *processes* the request and then never answers (the
caller's timeout fires, and the order is live at the broker: the ambiguous case that
idempotent client order ids exist for). The random draws come from
``random.Random(seed)``, so a run is reproducible.

The broker is idempotent on ``client_order_id``: a resubmitted order gets the state
of the first one (never a second fill); the same id with different fields is rejected.
Fills are all-or-nothing. Matching against the broker's last price per symbol
(:meth:`SimulatedBroker.set_price`): market orders fill at it; limit orders when it is
at or better than the limit (at the market price); stop orders trigger when it reaches
the stop (then behave as market, or as limit for stop-limit). Orders that do not fill
rest (``open``) until a later price fills them (subscribers are told) or they are
cancelled; ``ioc`` orders are cancelled instead of resting.
"""
from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Callable

import msgspec

from .orders import BUY, CANCELLED, FILLED, LIMIT, MARKET, OPEN, REJECTED, STOP, Order
from .profiling import annotate_methods

__all__ = ["BrokerError", "BrokerTimeout", "BrokerAck", "SimulatedBroker", "CircuitBreaker"]


class BrokerError(Exception):
    """The broker could not be reached; the request was not received (safe to retry)."""


class BrokerTimeout(Exception):
    """The broker received the request but did not answer in time: its state is unknown
    (the order may be live). Retry only with the same client order id, at the same broker."""


class BrokerAck(msgspec.Struct, frozen=True):
    """A broker's answer: ``status`` FILLED, OPEN, CANCELLED or REJECTED; the fill
    (unsigned quantity, price; NaN when none); ``reason`` for a rejection."""

    client_order_id: str
    status: str
    filled_quantity: float = 0.0
    fill_price: float = math.nan
    reason: str = ""


def _check_rate(value: float, name: str) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def _check_seconds(value: float, name: str) -> float:
    v = float(value)
    if not (v >= 0.0 and math.isfinite(v)):
        raise ValueError(f"{name} must be finite and >= 0 seconds, got {value!r}")
    return v


@annotate_methods
class SimulatedBroker:
    """An in-process venue with configurable, seeded network behaviour (see module doc).

    ``prices``: initial last price per symbol (orders for a symbol without a price are
    rejected: no market). ``hang_s``: how long a timed-out call sleeps before giving
    up (far beyond any sane manager timeout). ``latency_s == 0`` answers without
    yielding to the event loop. Use from one event loop.
    """

    def __init__(self, name: str = "sim", *, latency_s: float = 0.005, jitter_s: float = 0.0,
                 failure_rate: float = 0.0, timeout_rate: float = 0.0, hang_s: float = 3600.0,
                 seed: int = 0, prices: dict[str, float] | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        self.name = name
        self.latency_s = _check_seconds(latency_s, "latency_s")
        self.jitter_s = _check_seconds(jitter_s, "jitter_s")
        self.failure_rate = _check_rate(failure_rate, "failure_rate")
        self.timeout_rate = _check_rate(timeout_rate, "timeout_rate")
        self.hang_s = _check_seconds(hang_s, "hang_s")
        self._rng = random.Random(seed)
        self._prices: dict[str, float] = {}
        self._orders: dict[str, Order] = {}
        self._state: dict[str, BrokerAck] = {}
        self._triggered: set[str] = set()  # stop-limit orders whose stop was hit
        self._open: dict[str, Order] = {}
        self._subscribers: list[Callable[[BrokerAck], None]] = []
        self.fill_counts: dict[str, int] = {}  # client_order_id -> fills booked (always <= 1)
        self.calls = 0
        for s, p in (prices or {}).items():
            self.set_price(s, p)

    # -- market ----------------------------------------------------------------------
    def subscribe(self, callback: Callable[[BrokerAck], None]) -> None:
        """Call ``callback(ack)`` for every fill of a resting order (from :meth:`set_price`)."""
        self._subscribers.append(callback)

    def set_price(self, symbol: str, price: float) -> list[BrokerAck]:
        """Set the last price of ``symbol`` and fill the resting orders it triggers;
        returns their acks (also sent to subscribers)."""
        p = float(price)
        if not (p > 0 and math.isfinite(p)):
            raise ValueError(f"price must be finite and > 0, got {price!r}")
        self._prices[symbol] = p
        acks = []
        for cid, order in list(self._open.items()):
            if order.symbol == symbol:
                ack = self._match(order)
                if ack.status == FILLED:
                    acks.append(ack)
        for ack in acks:
            for cb in self._subscribers:
                cb(ack)
        return acks

    def price(self, symbol: str) -> float | None:
        return self._prices.get(symbol)

    def _match(self, order: Order) -> BrokerAck:
        """Fill ``order`` if the market allows, else leave (or cancel, ioc) it; record the state."""
        cid = order.client_order_id
        m = self._prices[order.symbol]
        buy = order.side == BUY
        t = order.order_type
        fill = t == MARKET
        if t == LIMIT:
            fill = m <= order.limit_price if buy else m >= order.limit_price
        elif t != MARKET:  # stop or stop-limit
            if cid not in self._triggered and (m >= order.stop_price if buy else m <= order.stop_price):
                self._triggered.add(cid)
            if cid in self._triggered:
                fill = t == STOP or (m <= order.limit_price if buy else m >= order.limit_price)
        if fill:
            ack = BrokerAck(cid, FILLED, float(order.quantity), m)
            self.fill_counts[cid] = self.fill_counts.get(cid, 0) + 1
            self._open.pop(cid, None)
        elif order.time_in_force == "ioc":
            ack = BrokerAck(cid, CANCELLED, reason="ioc order did not fill at once")
            self._open.pop(cid, None)
        else:
            ack = BrokerAck(cid, OPEN)
            self._open[cid] = order
        self._state[cid] = ack
        return ack

    def _accept(self, order: Order) -> BrokerAck:
        cid = order.client_order_id
        seen = self._orders.get(cid)
        if seen is not None:
            if seen != order:
                return BrokerAck(cid, REJECTED, reason="client_order_id already used for a different order")
            return self._state[cid]
        if order.symbol not in self._prices:
            return BrokerAck(cid, REJECTED, reason=f"no market for {order.symbol!r}")
        self._orders[cid] = order
        return self._match(order)

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
        """Cancel a resting order: CANCELLED; its current state if it is no longer open;
        REJECTED for an id the broker never received."""

        def action() -> BrokerAck:
            if client_order_id in self._open:
                del self._open[client_order_id]
                ack = BrokerAck(client_order_id, CANCELLED)
                self._state[client_order_id] = ack
                return ack
            state = self._state.get(client_order_id)
            return state if state is not None else BrokerAck(client_order_id, REJECTED, reason="unknown order")

        return await self._network(action)

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
    """

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(self, failure_threshold: int = 5, cooldown_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int) or failure_threshold < 1:
            raise ValueError(f"failure_threshold must be an int >= 1, got {failure_threshold!r}")
        self.failure_threshold = failure_threshold
        self.cooldown_s = _check_seconds(cooldown_s, "cooldown_s")
        self._clock = clock
        self._state = self.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial = False  # a half-open trial call is in flight

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
            self._state = self.OPEN
            self._opened_at = self._clock()

    def release(self) -> None:
        """End a call that neither succeeded nor failed (it was cancelled)."""
        self._trial = False

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state!r}, failures={self._failures})"
