"""The asyncio order manager: pre-trade checks, routing, retries, circuit breakers,
idempotent submission, cancels, and booking fills into a portfolio.

Guarantees:

* **No exception escapes** :meth:`OrderManager.submit`, :meth:`~OrderManager.submit_many`
  or :meth:`~OrderManager.cancel`: every outcome is an :class:`~gpu_trader.orders.OrderReport`
  (a bug inside is reported as REJECTED with code ``internal``). Only the caller's own
  task cancellation (``asyncio.CancelledError``) propagates, as asyncio requires, and
  ``submit_many`` checks its arguments' lengths (``ValueError``) before sending anything.
* **A rejected order never changes a position**: the portfolio is touched only when a
  broker reports a fill.
* **Idempotency**: the client order id is the key. Submitting an order whose id is in
  flight awaits that submission; one with a final or open report returns it; one whose
  broker timed out (UNKNOWN) asks the *same* broker again with the same id, and the
  broker returns the original state. A fill is booked at most once per id. The same id
  with different fields is rejected (``duplicate_id``).
* **Routing and failover**: the router gives brokers in preference order. A broker
  whose circuit breaker is open is skipped; a :class:`~gpu_trader.brokers.BrokerError`
  (request not received) is retried ``max_retries`` times, then the next broker is
  tried. A timeout, an unexpected exception or an unreadable answer is ambiguous (the
  order may be live), so the order then stays with that broker: it is retried there
  with the same id and never failed over, and reported UNKNOWN until the broker answers.
"""
from __future__ import annotations

import asyncio
import math
import sys
import time
from typing import Callable, Iterable, Mapping, Sequence

import msgspec

from .brokers import BrokerAck, BrokerError, BrokerTimeout, CircuitBreaker
from .orders import (
    BUY, CANCELLED, FILLED, NO_LIMITS, OPEN, REJECTED, UNKNOWN, Order, OrderReport, RiskLimits, validate_order,
)
from .profiling import annotate_methods

__all__ = ["OrderManager", "SymbolRouter"]

_FINAL = frozenset((FILLED, CANCELLED, REJECTED))

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


@annotate_methods
class OrderManager:
    """Sends orders to brokers and books their fills.

    ``brokers``: one broker, a sequence of brokers (keyed by their ``name``), or a
    mapping name -> broker; a broker has ``async submit(order) -> BrokerAck`` and
    ``async cancel(client_order_id) -> BrokerAck`` (and optionally ``subscribe(callback)``
    for later fills of resting orders). ``portfolio``: where fills are booked (and what
    pre-trade checks read); ``None`` books nothing. ``limits``: :class:`RiskLimits`.
    ``router``: ``order -> broker names in preference order`` (default: all brokers in
    the given order; see :class:`SymbolRouter`). ``timeout_s``: per broker call;
    ``max_retries``: extra attempts per broker; ``failure_threshold``, ``cooldown_s``,
    ``clock``: each broker's :class:`~gpu_trader.brokers.CircuitBreaker`.

    Use from one event loop (the manager is not thread-safe; the portfolio is).
    """

    def __init__(self, brokers, *, portfolio=None, limits: RiskLimits = NO_LIMITS,
                 router: Callable[[Order], Sequence[str]] | None = None, timeout_s: float = 1.0,
                 max_retries: int = 2, failure_threshold: int = 5, cooldown_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(brokers, Mapping):
            table = dict(brokers)
        elif isinstance(brokers, (list, tuple)):
            table = {b.name: b for b in brokers}
        else:
            table = {brokers.name: brokers}
        if not table:
            raise ValueError("brokers must name at least one broker")
        if not isinstance(limits, RiskLimits):
            raise TypeError(f"limits must be a RiskLimits, got {type(limits).__name__}")
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ValueError(f"timeout_s must be finite and > 0, got {timeout_s!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        self.brokers = table
        self.portfolio = portfolio
        self.limits = limits
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.breakers = {n: CircuitBreaker(failure_threshold, cooldown_s, clock) for n in table}
        names = tuple(table)
        self._router = router or (lambda order: names)
        self._orders: dict[str, Order] = {}
        self._reports: dict[str, OrderReport] = {}
        self._venue: dict[str, str] = {}  # where an order went (sticky once the broker may hold it)
        self._inflight: dict[str, asyncio.Future] = {}
        self._booked: set[str] = set()
        for name, broker in table.items():
            subscribe = getattr(broker, "subscribe", None)
            if subscribe is not None:
                subscribe(lambda ack, name=name: self._on_fill(name, ack))

    # -- tracking ------------------------------------------------------------------------
    def report(self, client_order_id: str) -> OrderReport | None:
        """The latest report of an order, ``None`` if the manager never saw it."""
        return self._reports.get(client_order_id)

    def open_orders(self) -> tuple[str, ...]:
        """Client order ids resting at a broker."""
        return tuple(cid for cid, r in self._reports.items() if r.status == OPEN)

    # -- submit --------------------------------------------------------------------------
    async def submit(self, order: Order, *, price: float | None = None) -> OrderReport:
        """Check, route and send one order; returns its report (never raises).

        ``price``: the reference price for the pre-trade notional checks (see
        :func:`~gpu_trader.orders.validate_order`).
        """
        try:
            return await self._submit(order, price)
        except Exception as exc:  # the loop must survive any bug
            cid = getattr(order, "client_order_id", "")
            return _report(cid if isinstance(cid, str) else "", REJECTED, "internal", f"internal error: {exc!r}")

    async def submit_many(self, orders: Iterable[Order], *, prices: Sequence[float | None] | None = None
                          ) -> list[OrderReport]:
        """Submit orders concurrently (one task each); reports in the same order. With
        broker latency L, n orders take about L, not n * L. ``prices``: one reference
        price (or ``None``) per order; a length mismatch raises ``ValueError`` before
        anything is sent (the only exception this method raises)."""
        orders = list(orders)
        if prices is not None and len(prices) != len(orders):
            raise ValueError(f"prices must have one entry per order ({len(orders)}), got {len(prices)}")
        if prices is None:
            return list(await asyncio.gather(*[self.submit(o) for o in orders]))
        return list(await asyncio.gather(*[self.submit(o, price=p) for o, p in zip(orders, prices)]))

    def submit_nowait(self, order: Order, *, price: float | None = None) -> "asyncio.Task[OrderReport]":
        """The pipeline's fast submit path: schedule :meth:`submit` on the running loop and
        return its task at once (a few microseconds); the caller goes on with the next
        event and may await the task, or read :meth:`report` later. Call it from a
        coroutine or callback running on the event loop."""
        return asyncio.get_running_loop().create_task(self.submit(order, price=price))

    async def _submit(self, order: Order, price: float | None) -> OrderReport:
        if not isinstance(order, Order):
            return _report(getattr(order, "client_order_id", "") or "", REJECTED, "invalid",
                           f"expected an Order, got {type(order).__name__}")
        cid = order.client_order_id
        seen = self._orders.get(cid)
        if seen is not None and seen != order:
            return _report(cid, REJECTED, "duplicate_id", "client_order_id already used for a different order")
        pending = self._inflight.get(cid)
        if pending is not None:
            return await asyncio.shield(pending)
        previous = self._reports.get(cid)
        if previous is not None and previous.status != UNKNOWN:
            return previous
        if previous is None:
            self._orders[cid] = order
            rejection = validate_order(order, self.portfolio, self.limits, price)
            if rejection is not None:
                return self._store(_report(cid, REJECTED, rejection.code, rejection.reason))
        fut = asyncio.get_running_loop().create_future()
        self._inflight[cid] = fut
        report = None
        try:
            report = await self._place(order)
        except Exception as exc:  # a bug below (a broken portfolio, ...): report it, keep the loop alive
            report = self._store(_report(cid, UNKNOWN if cid in self._venue else REJECTED, "internal",
                                         f"internal error: {exc!r}", self._venue.get(cid, "")))
        finally:
            del self._inflight[cid]
            if report is None:  # the caller's task was cancelled: settle the waiters anyway
                status = UNKNOWN if cid in self._venue else REJECTED
                report = self._store(_report(cid, status, "internal", "submission was cancelled"))
            fut.set_result(report)
        return report

    async def _place(self, order: Order) -> OrderReport:
        cid = order.client_order_id
        sticky = self._venue.get(cid)
        names = (sticky,) if sticky is not None else self._router(order)
        code, reason = "broker_error", "no broker available"
        for name in names:
            broker = self.brokers.get(name)
            if broker is None:
                code, reason = "broker_error", f"router named unknown broker {name!r}"
                continue
            outcome = await self._call(name, lambda b=broker: b.submit(order), cid)
            if isinstance(outcome, BrokerAck):
                self._venue[cid] = name
                return self._apply(order, name, outcome)
            code, reason = outcome
            if cid in self._venue:  # the broker may hold the order: never fail over
                break
        status = UNKNOWN if cid in self._venue else REJECTED
        return self._store(_report(cid, status, code, reason, self._venue.get(cid, "")))

    async def _call(self, name: str, request, sticky_id: str | None = None) -> BrokerAck | tuple[str, str]:
        """Call a broker through its breaker with timeout and retries; an ack, or
        ``(code, reason)`` of the last failure. A timeout pins ``sticky_id`` to the broker."""
        breaker = self.breakers[name]
        code, reason = "broker_error", ""
        for attempt in range(self.max_retries + 1):
            if not breaker.allow():
                return "circuit_open", f"circuit breaker open for broker {name!r}"
            try:
                ack = await _with_timeout(request(), self.timeout_s)
            except (TimeoutError, asyncio.TimeoutError, BrokerTimeout) as exc:
                breaker.record_failure()
                if sticky_id is not None:
                    self._venue.setdefault(sticky_id, name)
                code, reason = "timeout", f"broker {name!r} did not answer within {self.timeout_s} s ({exc!r})"
                continue
            except BrokerError as exc:
                breaker.record_failure()
                code, reason = "broker_error", str(exc)
                continue
            except asyncio.CancelledError:
                breaker.release()
                raise
            except Exception as exc:  # a broken broker: a failure, and it may hold the order
                breaker.record_failure()
                if sticky_id is not None:
                    self._venue.setdefault(sticky_id, name)
                code, reason = "broker_error", f"broker {name!r} raised {exc!r}"
                continue
            if not isinstance(ack, BrokerAck):  # an answer we cannot read: as ambiguous as a timeout
                breaker.record_failure()
                if sticky_id is not None:
                    self._venue.setdefault(sticky_id, name)
                code, reason = "broker_error", f"broker {name!r} answered {type(ack).__name__}, not a BrokerAck"
                continue
            breaker.record_success()
            return ack
        return code, f"{reason} (after {self.max_retries + 1} attempts)"

    def _apply(self, order: Order, name: str, ack: BrokerAck) -> OrderReport:
        """Turn a broker's ack into the stored report, booking a fill once."""
        cid = order.client_order_id
        status = ack.status
        current = self._reports.get(cid)
        if current is not None and current.status in _FINAL and status not in _FINAL:
            return current  # a stale OPEN ack arriving after a later fill or cancel
        if status == FILLED:
            self._book(order, ack)
            report = OrderReport(cid, FILLED, ack.filled_quantity, ack.fill_price, name)
        elif status == REJECTED:
            report = _report(cid, REJECTED, "broker_rejected", ack.reason, name)
        else:  # OPEN or CANCELLED
            report = _report(cid, status, reason=ack.reason, broker=name)
        return self._store(report)

    def _book(self, order: Order, ack: BrokerAck) -> None:
        cid = order.client_order_id
        if cid in self._booked:
            return
        if self.portfolio is not None:
            qty = ack.filled_quantity if order.side == BUY else -ack.filled_quantity
            self.portfolio.apply_fill(order.symbol, qty, ack.fill_price)
        self._booked.add(cid)  # only once booked: a failed booking is retried on resubmission

    def _store(self, report: OrderReport) -> OrderReport:
        self._reports[report.client_order_id] = report
        return report

    def _on_fill(self, name: str, ack: BrokerAck) -> None:
        """A resting order filled later at broker ``name`` (broker callback; never raises)."""
        try:
            order = self._orders.get(ack.client_order_id)
            if order is not None and ack.status == FILLED:
                self._apply(order, name, ack)
        except Exception:  # pragma: no cover - a callback must not break the broker
            pass

    # -- cancel --------------------------------------------------------------------------
    async def cancel(self, client_order_id: str) -> OrderReport:
        """Cancel a resting order; returns the order's report after the attempt (never raises).

        CANCELLED on success; the order's report with code ``not_cancellable`` when it is
        already final; REJECTED ``not_found`` for an id the manager never sent; a broker
        failure leaves the report as it was, with the failure's code and reason.
        """
        try:
            current = self._reports.get(client_order_id)
            order = self._orders.get(client_order_id)
            if current is None or order is None:
                return _report(str(client_order_id), REJECTED, "not_found", "unknown client_order_id")
            if current.status in _FINAL:
                return _replace(current, code="not_cancellable", reason=f"order is already {current.status}")
            name = self._venue.get(client_order_id)
            if name is None:
                return _replace(current, code="not_cancellable", reason="order never reached a broker")
            broker = self.brokers[name]
            outcome = await self._call(name, lambda: broker.cancel(client_order_id))
            if isinstance(outcome, BrokerAck):
                if outcome.status == REJECTED:
                    return _replace(current, code="broker_rejected", reason=outcome.reason)
                return self._apply(order, name, outcome)
            return _replace(current, code=outcome[0], reason=outcome[1])
        except Exception as exc:
            return _report(str(client_order_id), REJECTED, "internal", f"internal error: {exc!r}")
