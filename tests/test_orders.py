"""Orders, pre-trade checks, the simulated broker, the circuit breaker and the async manager.

Oracles: pre-trade decisions against a straightforward re-derivation of each rule
(:func:`expected_code`); broker matching against the textbook trigger rules; the
manager's bookkeeping against the broker's own fill counts (each id filled at most
once) and against the portfolio being untouched by anything but reported fills.
No wall-clock assertions: concurrency is checked by counting calls in flight.
"""
from __future__ import annotations

import asyncio
import math

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_trader.brokers import BrokerAck, BrokerError, CircuitBreaker, SimulatedBroker
from gpu_trader.commissions import FixedCommission
from gpu_trader.order_manager import OrderManager, SymbolRouter
from gpu_trader.orders import (
    CANCELLED, FILLED, OPEN, REJECTED, UNKNOWN, Order, Rejection, RiskLimits, limit_order, market_order,
    order_for_signal, stop_limit_order, stop_order, validate_order,
)
from gpu_trader.portfolio import Portfolio


def run(coro):
    return asyncio.run(coro)


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


# -- records -----------------------------------------------------------------------------
def test_constructors_build_valid_immutable_orders():
    orders = [
        market_order("AAPL", "buy", 10),
        limit_order("AAPL", "sell", 5, 101.5),
        stop_order("AAPL", "sell", 5, 95.0),
        stop_limit_order("AAPL", "buy", 1.5, 105.0, 106.0, time_in_force="gtc"),
    ]
    assert [o.order_type for o in orders] == ["market", "limit", "stop", "stop_limit"]
    assert len({o.client_order_id for o in orders}) == 4
    assert orders[1].signed_quantity == -5 and orders[3].reference_price == 106.0
    with pytest.raises(AttributeError):
        orders[0].quantity = 20
    encoded = msgspec.json.encode(orders[3])
    assert msgspec.json.decode(encoded, type=Order) == orders[3]


@pytest.mark.parametrize("kwargs, match", [
    (dict(client_order_id=""), "client_order_id"),
    (dict(client_order_id="x" * 65), "client_order_id"),
    (dict(symbol=""), "symbol"),
    (dict(side="long"), "side"),
    (dict(quantity=0), "quantity"),
    (dict(quantity=-3.0), "quantity"),
    (dict(quantity=float("nan")), "quantity"),
    (dict(quantity="10"), "quantity"),
    (dict(quantity=True), "quantity"),
    (dict(order_type="iceberg"), "order_type"),
    (dict(order_type="limit"), "limit_price"),
    (dict(order_type="limit", limit_price=-1.0), "limit_price"),
    (dict(order_type="stop", stop_price=float("inf")), "stop_price"),
    (dict(order_type="stop_limit", limit_price=10.0), "stop_price"),
    (dict(limit_price=10.0), "limit_price"),
    (dict(time_in_force="forever"), "time_in_force"),
])
def test_bad_order_fields_are_named(kwargs, match):
    base = dict(client_order_id="c1", symbol="AAPL", side="buy", quantity=10.0)
    base.update(kwargs)
    with pytest.raises((TypeError, ValueError), match=match):
        Order(**base)


# -- pre-trade checks --------------------------------------------------------------------
def expected_code(current, cash, side, qty, px, limits, commission):
    """Independent re-derivation of validate_order's decision."""
    after = current + (qty if side == "buy" else -qty)
    if qty > limits.max_order_quantity or qty * px > limits.max_order_notional:
        return "order_size"
    if abs(after) > limits.max_position_quantity or abs(after) * px > limits.max_position_notional:
        return "position_limit"
    # exposure-increasing units: beyond the old position on the same side, all of it after a flip
    if current == 0 or (after > 0) != (current > 0):
        opening = abs(after)
    else:
        opening = max(abs(after) - abs(current), 0)
    if opening and opening * px + commission > limits.leverage * cash:
        return "buying_power"
    return None


@settings(max_examples=150, deadline=None)
@given(current=st.integers(-100, 100), cash=st.integers(0, 20_000), side=st.sampled_from(["buy", "sell"]),
       qty=st.integers(1, 150), px=st.integers(1, 200),
       limits=st.builds(RiskLimits, max_order_quantity=st.sampled_from([math.inf, 100]),
                        max_order_notional=st.sampled_from([math.inf, 10_000.0]),
                        max_position_quantity=st.sampled_from([math.inf, 120]),
                        max_position_notional=st.sampled_from([math.inf, 15_000.0]),
                        leverage=st.sampled_from([1.0, 2.0])))
def test_validate_order_matches_rules(current, cash, side, qty, px, limits):
    pf = Portfolio(cash, commission=FixedCommission(1.0))
    if current:
        pf.set_position("X", current, 50.0)
    before = pf.snapshot()
    order = market_order("X", side, qty)
    got = validate_order(order, pf, limits, price=float(px))
    want = expected_code(current, cash, side, qty, px, limits, 1.0)
    assert (got.code if got else None) == want
    after = pf.snapshot()
    assert after.cash == before.cash and after.quantities.tolist() == before.quantities.tolist()


def test_validate_order_price_and_universe_rules():
    pf = Portfolio(1e6)
    o = market_order("X", "buy", 1)
    assert validate_order(o, pf).code == "no_price"
    assert validate_order(o, pf, price=float("nan")).code == "no_price"
    assert validate_order(o, pf, price=10.0) is None
    assert validate_order(limit_order("X", "buy", 1, 10.0), pf) is None  # the limit is the reference
    pf.apply_fill("X", 1, 12.0)
    assert validate_order(o, pf) is None  # the portfolio's last price
    uni = RiskLimits(symbols=frozenset({"Y"}))
    assert validate_order(o, pf, uni, price=10.0).code == "unknown_symbol"
    assert validate_order(object(), pf).code == "invalid"


def test_order_for_signal_targets_a_position():
    pf = Portfolio(1e6)
    o = order_for_signal("X", 1, 10.0, portfolio=pf, unit_quantity=100)
    assert isinstance(o, Order) and (o.side, o.quantity) == ("buy", 100)
    pf.apply_fill("X", 100, 10.0)
    assert order_for_signal("X", 1, 10.0, portfolio=pf, unit_quantity=100) is None
    o = order_for_signal("X", -1, 10.0, portfolio=pf, unit_quantity=100)
    assert (o.side, o.quantity) == ("sell", 200)
    r = order_for_signal("X", -1, 10.0, portfolio=pf, unit_quantity=100,
                         limits=RiskLimits(max_position_quantity=50))
    assert isinstance(r, Rejection) and r.code == "position_limit"
    assert order_for_signal("X", float("nan"), 10.0, portfolio=pf).code == "invalid"


# -- circuit breaker ---------------------------------------------------------------------
def test_circuit_breaker_opens_half_opens_and_closes():
    clock = FakeClock()
    cb = CircuitBreaker(failure_threshold=3, cooldown_s=10.0, clock=clock)
    for _ in range(2):
        assert cb.allow()
        cb.record_failure()
    assert cb.state == "closed"
    cb.record_success()  # resets the consecutive count
    for _ in range(3):
        assert cb.allow()
        cb.record_failure()
    assert cb.state == "open" and not cb.allow()
    clock.t = 9.9
    assert not cb.allow()
    clock.t = 10.0
    assert cb.state == "half_open"
    assert cb.allow() and not cb.allow()  # one trial at a time
    cb.record_failure()  # the trial failed: open for another cool-down
    assert cb.state == "open" and not cb.allow()
    clock.t = 20.0
    assert cb.allow()
    cb.record_success()
    assert cb.state == "closed" and cb.allow() and cb.allow()
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(0)


# -- simulated broker --------------------------------------------------------------------
def _outcomes(seed, n=200):
    async def go():
        b = SimulatedBroker(latency_s=0, failure_rate=0.3, timeout_rate=0.0, seed=seed, prices={"X": 10.0})
        out = []
        for i in range(n):
            try:
                out.append((await b.submit(market_order("X", "buy", 1, client_order_id=f"o{i}"))).status)
            except BrokerError:
                out.append("error")
        return out

    return run(go())


def test_broker_is_seeded_and_fails_at_its_rate():
    a, b, c = _outcomes(1), _outcomes(1), _outcomes(2)
    assert a == b and a != c
    fails = a.count("error")
    assert 30 <= fails <= 90  # 200 draws at p = 0.3: mean 60, sd 6.5


@pytest.mark.parametrize("make, prices, filled_at", [
    (lambda: limit_order("X", "buy", 1, 10.0), [11.0, 10.5, 9.5], 9.5),
    (lambda: limit_order("X", "sell", 1, 10.0), [9.0, 10.0], 10.0),
    (lambda: stop_order("X", "buy", 1, 12.0), [11.0, 11.9, 12.2], 12.2),
    (lambda: stop_order("X", "sell", 1, 8.0), [9.0, 7.5], 7.5),
    # stop-limit buy: triggers at >= 12, then fills only at <= 12.5
    (lambda: stop_limit_order("X", "buy", 1, 12.0, 12.5), [11.0, 13.0, 12.8, 12.4], 12.4),
])
def test_broker_matching_rules(make, prices, filled_at):
    async def go():
        b = SimulatedBroker(latency_s=0, prices={"X": prices[0]})
        seen = []
        b.subscribe(seen.append)
        order = make()
        ack = await b.submit(order)
        for p in prices[1:]:
            if ack.status == OPEN:
                fills = b.set_price("X", p)
                if fills:
                    ack = fills[0]
        return ack, seen

    ack, seen = run(go())
    assert ack.status == FILLED and ack.fill_price == filled_at
    assert seen == [ack]  # the later fill reached the subscriber


def test_broker_ioc_duplicates_and_cancel():
    async def go():
        b = SimulatedBroker(latency_s=0, prices={"X": 10.0})
        ioc = limit_order("X", "buy", 1, 9.0, time_in_force="ioc")
        assert (await b.submit(ioc)).status == CANCELLED
        m = market_order("X", "buy", 1, client_order_id="m1")
        assert (await b.submit(m)).status == FILLED
        assert (await b.submit(m)).status == FILLED and b.fill_counts["m1"] == 1
        other = market_order("X", "sell", 1, client_order_id="m1")
        assert (await b.submit(other)).status == REJECTED
        rest = limit_order("X", "buy", 1, 5.0)
        assert (await b.submit(rest)).status == OPEN
        assert (await b.cancel(rest.client_order_id)).status == CANCELLED
        assert b.set_price("X", 4.0) == []  # a cancelled order never fills
        assert (await b.cancel("nope")).status == REJECTED
        assert (await b.submit(market_order("Z", "buy", 1))).status == REJECTED  # no market

    run(go())


# -- manager -----------------------------------------------------------------------------
def _manager(broker_kwargs=None, **kwargs):
    pf = Portfolio(1e6)
    b = SimulatedBroker("a", **{"latency_s": 0.0, "prices": {"X": 10.0, "Y": 20.0}, **(broker_kwargs or {})})
    return OrderManager(b, portfolio=pf, **kwargs), b, pf


def test_fill_is_booked_once_and_duplicates_return_the_same_report():
    async def go():
        m, b, pf = _manager()
        o = market_order("X", "buy", 10)
        reports = await asyncio.gather(*[m.submit(o, price=10.0) for _ in range(5)])
        assert all(r == reports[0] for r in reports) and reports[0].status == FILLED
        assert (await m.submit(o, price=10.0)) == reports[0]
        assert b.fill_counts[o.client_order_id] == 1 and pf.quantity("X") == 10
        clash = market_order("X", "sell", 3, client_order_id=o.client_order_id)
        assert (await m.submit(clash, price=10.0)).code == "duplicate_id"
        assert pf.quantity("X") == 10

    run(go())


def test_retries_after_timeouts_never_fill_twice():
    async def go():
        m, b, pf = _manager({"latency_s": 0.001, "timeout_rate": 0.5, "hang_s": 0.05, "seed": 7},
                            timeout_s=0.01, max_retries=4, failure_threshold=10_000)
        orders = [market_order("X", "buy", 1) for _ in range(60)]
        reports = await m.submit_many(orders, prices=[10.0] * 60)
        first = list(reports)
        for _ in range(30):  # resubmit everything until no order is in doubt
            assert pf.quantity("X") == sum(r.status == FILLED for r in reports)  # booked == reported
            if all(r.status == FILLED for r in reports):
                break
            reports = await m.submit_many(orders, prices=[10.0] * 60)
        return first, reports, b, pf

    first, last, b, pf = run(go())
    assert {r.status for r in first} == {FILLED, UNKNOWN}  # the seed gives both outcomes
    assert max(b.fill_counts.values()) == 1
    assert [r.status for r in last] == [FILLED] * 60
    assert sum(b.fill_counts.values()) == pf.quantity("X") == 60


def test_unknown_after_timeout_then_resubmit_books_once():
    async def go():
        m, b, pf = _manager({"latency_s": 0.0, "timeout_rate": 1.0, "hang_s": 0.05},
                            timeout_s=0.005, max_retries=0)
        o = market_order("X", "buy", 3)
        first = await m.submit(o, price=10.0)
        assert first.status == UNKNOWN and first.code == "timeout" and pf.quantity("X") == 0
        assert b.fill_counts[o.client_order_id] == 1  # it did fill at the broker
        b.timeout_rate = 0.0
        second = await m.submit(o, price=10.0)
        assert second.status == FILLED and pf.quantity("X") == 3 and b.fill_counts[o.client_order_id] == 1

    run(go())


def test_failover_breaker_and_no_failover_after_timeout():
    async def go():
        clock = FakeClock()
        bad = SimulatedBroker("bad", latency_s=0, failure_rate=1.0, prices={"X": 10.0})
        good = SimulatedBroker("good", latency_s=0, prices={"X": 10.0})
        pf = Portfolio(1e6)
        m = OrderManager([bad, good], portfolio=pf, max_retries=1, failure_threshold=3, cooldown_s=5.0, clock=clock)
        r1 = await m.submit(market_order("X", "buy", 1), price=10.0)
        assert r1.status == FILLED and r1.broker == "good" and bad.calls == 2
        await m.submit(market_order("X", "buy", 1), price=10.0)  # 3rd consecutive failure opens 'bad'
        assert m.breakers["bad"].state == "open"
        calls = bad.calls
        r3 = await m.submit(market_order("X", "buy", 1), price=10.0)
        assert r3.broker == "good" and bad.calls == calls  # skipped while open
        clock.t = 5.0
        bad.failure_rate = 0.0
        r4 = await m.submit(market_order("X", "buy", 1), price=10.0)  # half-open trial succeeds
        assert r4.broker == "bad" and m.breakers["bad"].state == "closed"
        assert pf.quantity("X") == 4

        slow = SimulatedBroker("slow", latency_s=0, timeout_rate=1.0, hang_s=0.05, prices={"X": 10.0})
        spare = SimulatedBroker("spare", latency_s=0, prices={"X": 10.0})
        m2 = OrderManager([slow, spare], portfolio=Portfolio(1e6), timeout_s=0.005, max_retries=1)
        r = await m2.submit(market_order("X", "buy", 1), price=10.0)
        assert r.status == UNKNOWN and r.broker == "slow" and spare.calls == 0

        dead = OrderManager(SimulatedBroker("d", latency_s=0, failure_rate=1.0, prices={"X": 1.0}),
                            failure_threshold=1, max_retries=0, cooldown_s=60.0)
        assert (await dead.submit(market_order("X", "buy", 1), price=1.0)).code == "broker_error"
        assert (await dead.submit(market_order("X", "buy", 1), price=1.0)).code == "circuit_open"

    run(go())


class ExplodingBroker:
    name = "boom"

    def __init__(self, result=None):
        self.result = result

    async def submit(self, order):
        if self.result is None:
            raise RuntimeError("kaboom")
        return self.result

    async def cancel(self, cid):
        raise RuntimeError("kaboom")


class ExplodingPortfolio(Portfolio):
    def apply_fill(self, *args, **kwargs):
        raise RuntimeError("disk full")


def test_no_exception_escapes_and_rejections_change_nothing():
    async def go():
        pf = Portfolio(1000.0)
        spare = SimulatedBroker("spare", latency_s=0, prices={"X": 10.0})
        m = OrderManager([ExplodingBroker(), spare], portfolio=pf, max_retries=0)
        r = await m.submit(market_order("X", "buy", 1), price=10.0)
        # an exception may come after the order left: ambiguous, so no failover
        assert (r.status, r.code, r.broker) == (UNKNOWN, "broker_error", "boom") and "kaboom" in r.reason
        assert spare.calls == 0
        assert (await m.submit("not an order")).code == "invalid"
        assert (await m.submit(market_order("X", "buy", 1000), price=10.0)).code == "buying_power"
        garbage = OrderManager(ExplodingBroker(result="garbage"), portfolio=pf)
        r = await garbage.submit(market_order("X", "buy", 1), price=10.0)
        assert (r.status, r.code) == (UNKNOWN, "broker_error") and "not a BrokerAck" in r.reason
        assert pf.snapshot().symbols == () and pf.cash == 1000.0
        book = ExplodingPortfolio(1e3)
        broker = SimulatedBroker(latency_s=0, prices={"X": 1.0})
        broken = OrderManager(broker, portfolio=book)
        o = market_order("X", "buy", 1)
        r = await broken.submit(o, price=1.0)
        assert (r.status, r.code) == (UNKNOWN, "internal") and "disk full" in r.reason
        book.apply_fill = Portfolio.apply_fill.__get__(book)  # the disk has space again
        assert (await broken.submit(o, price=1.0)).status == FILLED  # booking retried, once
        assert book.quantity("X") == 1 and broker.fill_counts[o.client_order_id] == 1
        assert (await broken.submit(o, price=1.0)).status == FILLED and book.quantity("X") == 1
        assert (await m.cancel("nope")).code == "not_found"

    run(go())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["X", "Y", "Q"]), st.sampled_from(["buy", "sell"]),
                          st.integers(1, 400)), min_size=1, max_size=12))
def test_rejected_orders_never_move_positions(specs):
    async def go():
        m, b, pf = _manager(limits=RiskLimits(max_position_quantity=300, max_order_notional=3000.0,
                                              symbols=frozenset({"X", "Y"})))
        for sym, side, qty in specs:
            before = (pf.quantity("X"), pf.quantity("Y"), pf.cash)
            r = await m.submit(market_order(sym, side, qty), price=10.0 if sym == "X" else 20.0)
            after = (pf.quantity("X"), pf.quantity("Y"), pf.cash)
            if r.status == REJECTED:
                assert after == before
            else:
                assert r.status == FILLED and after != before
            assert abs(pf.quantity("X")) <= 300 and abs(pf.quantity("Y")) <= 300

    run(go())


def test_cancel_and_resting_fills():
    async def go():
        m, b, pf = _manager()
        rest = limit_order("X", "buy", 2, 9.0)
        assert (await m.submit(rest)).status == OPEN and m.open_orders() == (rest.client_order_id,)
        later = limit_order("X", "sell", 1, 11.0)
        await m.submit(later)
        b.set_price("X", 8.5)  # fills `rest` at the broker; the manager books it
        assert m.report(rest.client_order_id).status == FILLED and pf.quantity("X") == 2
        assert (await m.cancel(rest.client_order_id)).code == "not_cancellable"
        c = await m.cancel(later.client_order_id)
        assert c.status == CANCELLED and m.open_orders() == ()
        b.set_price("X", 12.0)
        assert pf.quantity("X") == 2

    run(go())


class CountingBroker(SimulatedBroker):
    """Records the most submit calls in flight at once."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.active = self.peak = 0

    async def submit(self, order):
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            return await super().submit(order)
        finally:
            self.active -= 1


def test_batch_submission_is_concurrent_and_nowait_path():
    async def go():
        b = CountingBroker("c", latency_s=0.002, prices={"X": 10.0})
        m = OrderManager(b, portfolio=Portfolio(1e6))
        reports = await m.submit_many([market_order("X", "buy", 1) for _ in range(20)], prices=[10.0] * 20)
        assert [r.status for r in reports] == [FILLED] * 20 and b.peak == 20
        task = m.submit_nowait(market_order("X", "buy", 1), price=10.0)
        assert isinstance(task, asyncio.Task)
        assert (await task).status == FILLED
        assert m.portfolio.quantity("X") == 21

    run(go())


def test_symbol_router():
    async def go():
        a = SimulatedBroker("a", latency_s=0, prices={"X": 1.0, "Y": 1.0})
        b = SimulatedBroker("b", latency_s=0, prices={"X": 1.0, "Y": 1.0})
        m = OrderManager([a, b], router=SymbolRouter({"Y": "b"}, ["a", "b"]))
        assert (await m.submit(market_order("Y", "buy", 1), price=1.0)).broker == "b"
        assert (await m.submit(market_order("X", "buy", 1), price=1.0)).broker == "a"
        with pytest.raises(ValueError, match="unknown brokers"):
            SymbolRouter({"Y": "c"}, ["a", "b"])

    run(go())


def test_manager_and_broker_parameter_errors():
    with pytest.raises(ValueError, match="failure_rate"):
        SimulatedBroker(failure_rate=1.5)
    with pytest.raises(ValueError, match="latency_s"):
        SimulatedBroker(latency_s=-1)
    with pytest.raises(ValueError, match="timeout_s"):
        OrderManager(SimulatedBroker(), timeout_s=0)
    with pytest.raises(ValueError, match="max_retries"):
        OrderManager(SimulatedBroker(), max_retries=-1)
    with pytest.raises(TypeError, match="limits"):
        OrderManager(SimulatedBroker(), limits={"max": 1})
    assert isinstance(BrokerAck("x", FILLED), BrokerAck)


def test_late_open_ack_does_not_undo_an_earlier_fill():
    """A resting order fills (price callback) while its OPEN ack is still on the wire."""
    async def go():
        b = SimulatedBroker("a", latency_s=0.01, prices={"X": 10.0})
        pf = Portfolio(1e6)
        m = OrderManager(b, portfolio=pf)
        o = limit_order("X", "buy", 2, 9.0)
        task = asyncio.ensure_future(m.submit(o))
        await asyncio.sleep(0)  # the broker has the order; the ack is travelling
        b.set_price("X", 8.0)
        report = await task
        assert report.status == FILLED and m.report(o.client_order_id).status == FILLED
        assert pf.quantity("X") == 2 and b.fill_counts[o.client_order_id] == 1
        with pytest.raises(ValueError, match="prices"):
            await m.submit_many([market_order("X", "buy", 1)], prices=[1.0, 2.0])

    run(go())


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), rates=st.tuples(st.sampled_from([0.0, 0.3, 1.0]), st.sampled_from([0.0, 0.3]),
                                                   st.sampled_from([0.0, 0.3]), st.sampled_from([0.0, 0.3])),
       sides=st.lists(st.sampled_from(["buy", "sell"]), min_size=1, max_size=25))
def test_failover_and_timeouts_never_fill_an_order_twice(seed, rates, sides):
    """Two flaky venues (failures fail over, timeouts pin): after the network heals and
    every order in doubt is resubmitted, each id filled at exactly one venue, once, and
    the book holds exactly the reported fills."""
    async def go():
        fa, ta, fb, tb = rates
        a = SimulatedBroker("a", latency_s=0.0005, failure_rate=fa, timeout_rate=ta, hang_s=0.2, seed=seed,
                            prices={"X": 10.0})
        b = SimulatedBroker("b", latency_s=0.0005, failure_rate=fb, timeout_rate=tb, hang_s=0.2, seed=seed + 1,
                            prices={"X": 10.0})
        pf = Portfolio(1e9)
        m = OrderManager([a, b], portfolio=pf, timeout_s=0.02, max_retries=1, failure_threshold=3,
                         cooldown_s=0.0)
        orders = [market_order("X", side, 1) for side in sides]
        reports = await m.submit_many(orders, prices=[10.0] * len(orders))
        assert {r.status for r in reports} <= {FILLED, UNKNOWN, REJECTED}
        for broker in (a, b):
            broker.failure_rate = broker.timeout_rate = 0.0
        final = dict(zip([o.client_order_id for o in orders], reports))
        for _ in range(5):  # a loaded machine can stall the loop past a timeout: ask again
            retry = [o for o in orders if final[o.client_order_id].status == UNKNOWN]
            if not retry:
                break
            for r in await m.submit_many(retry, prices=[10.0] * len(retry)):
                final[r.client_order_id] = r
        assert UNKNOWN not in {r.status for r in final.values()}
        for o in orders:
            venues = [x.name for x in (a, b) if x.fill_counts.get(o.client_order_id)]
            if final[o.client_order_id].status == FILLED:
                assert venues == [final[o.client_order_id].broker]
                assert sum(x.fill_counts.get(o.client_order_id, 0) for x in (a, b)) == 1
            else:
                assert venues == []
        signed = sum(o.signed_quantity for o in orders if final[o.client_order_id].status == FILLED)
        assert pf.quantity("X") == signed

    run(go())
