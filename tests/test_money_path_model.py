"""The money path as a state machine: OrderManager + Portfolio + a flaky, meddling venue.

Hypothesis drives random sequences of submits (one at a time, concurrent through
``submit_many``, and in the background), resubmits, cancels (also while the submit is in
flight, and before its task has even started), price moves that fill resting orders
later (partial fills included), network failures and timeouts switched on and off, a
meddler that corrupts answers and pushes (another order's id, the wrong side, an
over-fill, a negative or non-finite quantity, an unknown status, stale and repeated
acks), time passing (background status queries and cancels, late answers) and
reconciliations. Every kind of limit is configured at once: position quantity, position
notional, order quantity, buying power (cash) and, in some runs, the number of positions
(``max_positions`` 1 over the two symbols). After every step:

* limits: the booked position plus every pending order on either side stays within the
  position quantity limit and, at the lowest reference price an order may name, the
  notional limit; the venue's own position stays within the quantity limit; and the
  buying power is never spent twice: cash (gross of commissions) covers the buying power
  reserved by orders in flight (every fill is at the order's reference price or better);
  with ``max_positions``, the symbols held or with orders in flight, and the venue's
  non-zero positions, never outnumber it;
* each venue fill is booked exactly once: no order's booked quantity exceeds what the
  venue filled, and each symbol's position is the sum of what the reports say was booked;
* cash equals the initial cash minus the booked fills' notional minus commissions, and
  the commissions are the model's on exactly those fills;
* no exception escapes the manager (every call returns an OrderReport);
* a cancel is honoured: an order the venue did not know when its cancel returned never
  reaches it afterwards (it is never sent again);
* after ``reconcile()`` with the network healed: every booked quantity equals the venue's
  fill, the book equals the venue (positions and cash), nothing is in doubt, and no order
  whose cancel was requested rests at the venue.

The venue (``SimulatedBroker.fills`` / ``state``) is the oracle; it is seeded, and the
manager's timeout (10 ms) is far from both the broker's latency and its hang.
"""
from __future__ import annotations

import asyncio
import math
import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gpu_trader.brokers import BrokerAck, SimulatedBroker
from gpu_trader.commissions import PercentageCommission
from gpu_trader.order_manager import OrderManager
from gpu_trader.orders import OPEN, OrderReport, RiskLimits, limit_order, market_order
from gpu_trader.portfolio import Portfolio

from conftest import venue_book

SYMBOLS = {"A": 10.0, "B": 20.0}
MOVES = (0.97, 0.99, 1.01, 1.03)  # the venue's price stays within these multiples of the reference
RATE = 0.001  # commission: 10 bps of every fill's notional
TOL = 1e-6

order_spec = st.tuples(st.sampled_from(sorted(SYMBOLS)), st.sampled_from(["buy", "sell"]), st.integers(1, 6),
                       st.sampled_from(["market", "limit", "away"]))


async def gather(tasks, return_exceptions=False):
    """``asyncio.gather`` inside the machine's loop (also for no tasks at all)."""
    return await asyncio.gather(*tasks, return_exceptions=return_exceptions)


def _corrupt(ack: BrokerAck, rng: random.Random) -> BrokerAck:
    """``ack`` made wrong in one of the ways a broken venue adapter gets it wrong."""
    cid, qty = ack.client_order_id, ack.filled_quantity
    return rng.choice([
        BrokerAck("not-" + cid, "filled", 1.0, 10.0),  # another order's id
        BrokerAck(cid, "filled", -max(qty, 1.0), 10.0),  # a negative fill
        BrokerAck(cid, "filled", qty + 100.0, 10.0),  # an over-fill
        BrokerAck(cid, "filled", math.inf, 10.0),
        BrokerAck(cid, "partially_done", qty, ack.fill_price),  # an unknown status
        BrokerAck(cid, ack.status, qty, ack.fill_price, side="short"),  # a side no order has
        BrokerAck(cid, "filled", max(qty, 1.0), math.nan),
        "garbage",
    ])


class Meddler:
    """A venue adapter around a SimulatedBroker that, at ``rate``, holds a request until
    the caller gives up (it never reaches the venue), answers a request (after the venue
    processed it) or pushes a fill with a corrupted ack, or pushes a fill of an order it
    was never given; and pushes stale and repeated acks besides. ``rate = 0`` is an
    honest adapter. ``strangers``: the orders the machine made, to forge acks about."""

    def __init__(self, venue: SimulatedBroker, seed: int, strangers: list) -> None:
        self.venue, self.name = venue, venue.name
        self.rate = 0.0
        self.rng = random.Random(seed)
        self.callbacks = []
        self.given: set[str] = set()  # ids this adapter was asked to submit
        self.strangers = strangers
        self.seen: dict[str, BrokerAck] = {}  # the previous ack per order: replayed as a stale one
        venue.subscribe(self._push)

    def subscribe(self, callback) -> None:
        self.callbacks.append(callback)

    def _push(self, ack: BrokerAck) -> None:
        pushes = [ack]
        if self.rng.random() < self.rate:
            pushes = [_corrupt(ack, self.rng), ack, ack]  # garbage first, then the real one twice
        stale = self.seen.get(ack.client_order_id)
        if stale is not None and self.rng.random() < 0.5:
            pushes.append(stale)  # an older ack (lower cumulative fill) arriving late
        self.seen[ack.client_order_id] = ack
        never_given = [o for o, _ in self.strangers if o.client_order_id not in self.given]
        if never_given and self.rng.random() < self.rate:  # a fill of an order the venue never had
            o = self.rng.choice(never_given)
            pushes.append(BrokerAck(o.client_order_id, "filled", o.quantity, ack.fill_price, side=o.side))
        for push in pushes:
            for callback in self.callbacks:
                callback(push)

    def _answer(self, ack):
        if isinstance(ack, BrokerAck) and self.rng.random() < self.rate:
            return _corrupt(ack, self.rng)
        return ack

    async def _lose(self) -> None:
        if self.rng.random() < self.rate:
            await asyncio.sleep(1.0)  # far beyond the manager's deadline: the request is dropped then

    async def submit(self, order):
        self.given.add(order.client_order_id)
        await self._lose()
        return self._answer(await self.venue.submit(order))

    async def cancel(self, cid):
        await self._lose()
        return self._answer(await self.venue.cancel(cid))

    async def status(self, cid):
        return self._answer(await self.venue.status(cid))


class MoneyPath(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.orders = []
        self.cancelled = set()  # ids whose cancel was requested
        self.never_sent = set()  # cancelled ids the venue did not know when the cancel returned
        self.tasks = []

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    @initialize(seed=st.integers(0, 2**16), partial=st.sampled_from([0.0, 0.5]), limit=st.sampled_from([6, 10, 15]),
                notional=st.sampled_from([90.0, 200.0, math.inf]), cash=st.sampled_from([150.0, 400.0, 1e6]),
                resolve=st.sampled_from([0, 3]), max_positions=st.sampled_from([None, 1]))
    def start(self, seed, partial, limit, notional, cash, resolve, max_positions):
        self.limit, self.notional, self.cash, self.max_positions = limit, notional, cash, max_positions
        self.venue = SimulatedBroker("venue", latency_s=0.0005, hang_s=0.05, seed=seed, partial_rate=partial,
                                     prices=dict(SYMBOLS))
        self.broker = Meddler(self.venue, seed, self.orders)
        self.pf = Portfolio(cash, commission=PercentageCommission(RATE))
        limits = RiskLimits(max_position_quantity=limit, max_position_notional=notional, max_order_quantity=5,
                            max_positions=max_positions)
        self.m = OrderManager(self.broker, portfolio=self.pf, limits=limits, timeout_s=0.01, max_retries=1,
                              failure_threshold=10**6, resolve_backoff_s=0.002,
                              resolve_attempts=resolve)  # 0: only resubmits and reconcile() resolve

    # -- helpers ---------------------------------------------------------------------
    def make(self, spec):
        """A new order and its reference price: a market order checked at the worst price
        the venue can reach, a limit order at the symbol's reference price, or one "away"
        from it (resting until the price moves to the edge of its range). A limit order
        fills at its limit or better."""
        symbol, side, qty, kind = spec
        ref = SYMBOLS[symbol]
        worst = ref * (max(MOVES) if side == "buy" else min(MOVES))
        if kind == "market":
            order, price = market_order(symbol, side, qty), worst
        else:
            price = ref if kind == "limit" else ref * (min(MOVES) if side == "buy" else max(MOVES))
            order = limit_order(symbol, side, qty, price)
        self.orders.append((order, price))
        return order, price

    def check_report(self, report):
        assert isinstance(report, OrderReport)

    def cancel_order(self, cid):
        self.cancelled.add(cid)
        self.check_report(self.run(self.m.cancel(cid)))
        if self.venue.state(cid) is None:
            self.never_sent.add(cid)

    def settle_tasks(self):
        for report in self.run(gather(self.tasks)):
            self.check_report(report)
        self.tasks = []

    # -- rules -----------------------------------------------------------------------
    @rule(failure=st.sampled_from([0.0, 0.2, 0.5]), timeout=st.sampled_from([0.0, 0.1, 0.3]),
          meddle=st.sampled_from([0.0, 0.2]))
    def network(self, failure, timeout, meddle):
        self.venue.failure_rate, self.venue.timeout_rate, self.broker.rate = failure, timeout, meddle

    @rule(spec=order_spec)
    def submit(self, spec):
        order, price = self.make(spec)
        self.check_report(self.run(self.m.submit(order, price=price)))

    @rule(specs=st.lists(order_spec, min_size=2, max_size=6))
    def submit_concurrently(self, specs):
        made = [self.make(s) for s in specs]
        reports = self.run(self.m.submit_many([o for o, _ in made], prices=[p for _, p in made]))
        for r in reports:
            self.check_report(r)

    @rule(spec=order_spec)
    def submit_in_background(self, spec):
        order, price = self.make(spec)
        self.tasks.append(self.loop.create_task(self.m.submit(order, price=price)))

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def resubmit(self, data):
        order, price = data.draw(st.sampled_from(self.orders))
        self.check_report(self.run(self.m.submit(order, price=price)))

    @precondition(lambda self: self.cancelled)
    @rule(data=st.data())
    def resubmit_a_cancelled_order(self, data):
        """As a recovery loop would (resubmitting what is in doubt), never minding the cancel."""
        cid = data.draw(st.sampled_from(sorted(self.cancelled)))
        order, price = next((o, p) for o, p in self.orders if o.client_order_id == cid)
        self.check_report(self.run(self.m.submit(order, price=price)))

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def cancel(self, data):
        order, _ = data.draw(st.sampled_from(self.orders))
        self.cancel_order(order.client_order_id)

    @rule(spec=order_spec, started=st.booleans())
    def cancel_while_in_flight(self, spec, started):
        """A cancel right behind its submit: the submit task has started (it is waiting
        for the venue) or has not even started (a batch scheduled just before)."""
        order, price = self.make(spec)
        if started:
            task = self.loop.create_task(self.m.submit(order, price=price))
        else:
            task = self.loop.create_task(self.m.submit_many([order], prices=[price]))
        self.cancel_order(order.client_order_id)
        reports = self.run(task)
        for r in reports if isinstance(reports, list) else [reports]:
            self.check_report(r)

    @rule(symbol=st.sampled_from(sorted(SYMBOLS)), move=st.sampled_from(MOVES))
    def move_price(self, symbol, move):
        self.venue.set_price(symbol, SYMBOLS[symbol] * move)  # resting orders fill (pushed acks)

    @rule()
    def time_passes(self):
        self.run(asyncio.sleep(0.012))  # background status queries and cancels, answers arriving late
        self.settle_tasks()

    @rule()
    def heal_and_reconcile(self):
        self.venue.failure_rate = self.venue.timeout_rate = self.broker.rate = 0.0
        self.settle_tasks()
        for _ in range(5):  # a loaded machine can stall a status query past its deadline: ask again
            for report in self.run(self.m.reconcile()):
                self.check_report(report)
            if not self.m.unresolved():
                break
        assert self.m.unresolved() == ()
        for order, _ in self.orders:
            venue = self.venue.state(order.client_order_id)
            report = self.m.report(order.client_order_id)
            filled = venue.filled_quantity if venue else 0.0
            assert (report.filled_quantity if report else 0.0) == pytest.approx(filled, abs=TOL)
            if order.client_order_id in self.cancelled:
                assert venue is None or venue.status != OPEN  # every cancel was honoured
        venue_pos, venue_cash = venue_book(self.venue, self.cash, SYMBOLS)
        for s in SYMBOLS:
            assert self.pf.quantity(s) == pytest.approx(venue_pos[s], abs=TOL)
        assert self.pf.cash + self.pf.commissions == pytest.approx(venue_cash, abs=TOL)

    # -- invariants ------------------------------------------------------------------
    def booked(self):
        """Per symbol, the signed quantity the reports say was booked; and the booked
        fills' signed and absolute notional."""
        pos, flow, gross = dict.fromkeys(SYMBOLS, 0.0), 0.0, 0.0
        for order, _ in self.orders:
            report = self.m.report(order.client_order_id)
            if report is None or not report.filled_quantity:
                continue
            signed = report.filled_quantity if order.side == "buy" else -report.filled_quantity
            pos[order.symbol] += signed
            flow += signed * report.fill_price
            gross += report.filled_quantity * report.fill_price
        return pos, flow, gross

    @invariant()
    def limits_hold_with_pending_orders(self):
        if not hasattr(self, "m"):
            return
        venue_pos, _ = venue_book(self.venue, self.cash, SYMBOLS)
        for s in SYMBOLS:
            q, pending = self.pf.quantity(s), self.m.exposure(s)
            worst = max(abs(q + pending.buy), abs(q - pending.sell))
            assert worst <= self.limit + TOL
            assert worst * SYMBOLS[s] * min(MOVES) <= self.notional + TOL
            assert abs(venue_pos[s]) <= self.limit + TOL  # what the venue really holds
        reserved = self.m.exposure("A").buying_power
        assert self.pf.cash + self.pf.commissions - reserved >= -TOL  # buying power never spent twice
        if self.max_positions is not None:  # positions held or that orders in flight may open
            exposures = {s: self.m.exposure(s) for s in SYMBOLS}
            may_hold = [s for s, e in exposures.items() if self.pf.quantity(s) or e.buy or e.sell]
            assert len(may_hold) <= self.max_positions
            assert sum(1 for s in SYMBOLS if abs(venue_pos[s]) > TOL) <= self.max_positions

    @invariant()
    def a_cancelled_order_is_never_sent_again(self):
        for cid in self.never_sent:
            assert self.venue.state(cid) is None

    @invariant()
    def every_fill_is_booked_once_and_paid_for(self):
        if not hasattr(self, "m"):
            return
        for order, _ in self.orders:
            report = self.m.report(order.client_order_id)
            venue = self.venue.state(order.client_order_id)
            if report is not None:
                assert report.filled_quantity <= (venue.filled_quantity if venue else 0.0) + TOL
        pos, flow, gross = self.booked()
        for s in SYMBOLS:
            assert self.pf.quantity(s) == pytest.approx(pos[s], abs=TOL)
        assert self.pf.commissions == pytest.approx(RATE * gross, abs=TOL)
        assert self.pf.cash == pytest.approx(self.cash - flow - RATE * gross, abs=TOL)

    def teardown(self):
        if hasattr(self, "m"):
            self.run(self.m.close())
        while pending := asyncio.all_tasks(self.loop):  # a cancelled submit may start a status query
            for task in pending:
                task.cancel()
            self.run(gather(pending, return_exceptions=True))
        self.loop.close()


MoneyPath.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])
TestMoneyPath = MoneyPath.TestCase
