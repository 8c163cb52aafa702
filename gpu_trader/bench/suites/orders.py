"""The ``orders`` suite: creation, validation, placement with a simulated broker (docs/design.md#benchmarks-and-targets).

Cases (CPU only: the one-event path has no device part; other backends skip):

* creation of a market, limit and stop order (validated immutable records, with a
  generated client order id);
* ``validate_order`` against a portfolio of 50 positions with every limit active;
* placement: ``OrderManager.submit`` of one market order through a
  :class:`~gpu_trader.brokers.SimulatedBroker` with 5, 10 and 50 ms latency, driven by
  ``loop.run_until_complete``; the reference ``sleep`` is a bare ``asyncio.sleep`` of
  the same latency on the same kind of loop, so ``ratio:sleep`` = sleep / ours and our
  overhead beyond the latency is ``p50 - sleep p50`` (the target checks
  ``ratio:sleep >= L / (L + overhead budget)`` with the nominal latency L);
* batch placement: 5, 10, 20 orders submitted concurrently at 10 ms latency (same
  reference and check with a 1 ms budget);
* management at zero latency: submit + track (report lookup), cancel of a resting
  order, and the symbol router's decision. Driving the event loop for one order
  (``run_until_complete``) costs about 6-10 us by itself, so a second submit case runs
  10 orders in sequence inside one loop run (per-order cost = p50 / 10), as a trading
  loop that already runs in the event loop would see it.

* memory: the Python heap (``tracemalloc``) a manager and its portfolio hold after
  100,000 orders (one in ten refused by a limit) through a venue that remembers
  nothing, with the default bounded history (``memory_per_100k_orders_bytes``,
  ``orders_tracked``); its timed call is 10 more orders in sequence at that steady
  state, eviction included.

Every timed call uses fresh client order ids (a repeated id would be answered from
the idempotency cache). The cancel case draws resting orders from a pool of 2000,
refilled inside the call that empties it (one sample in 2000 is a refill).
"""
from __future__ import annotations

import asyncio
import itertools
import tracemalloc

from ...brokers import BrokerAck, SimulatedBroker
from ...order_manager import OrderManager, SymbolRouter
from ...orders import FILLED, REJECTED, RiskLimits, limit_order, market_order, stop_order, validate_order
from ...portfolio import Portfolio
from ..harness import Reference, SkipCase, Workload

__all__ = ["workloads"]

PLACE_LATENCIES_MS = (5, 10, 50)
BATCH_SIZES = (5, 10, 20)
BATCH_LATENCY_MS = 10
VALIDATE_POSITIONS = 50
CANCEL_POOL = 2000
SEQUENCE = 10
PRICE = 100.0
MEMORY_ORDERS = 100_000
REFUSED_EVERY = 10  # one order in ten exceeds max_order_quantity


def _cpu_only(be) -> None:
    if be.name != "cpu":
        raise SkipCase("order handling is a host (CPU) path")


def _book(n_positions: int) -> Portfolio:
    pf = Portfolio(10_000_000.0)
    for i in range(n_positions):
        pf.set_position(f"S{i}", 100.0 + i, PRICE)
    return pf


def _creation(kind: str) -> Workload:
    makers = {
        "market": lambda: market_order("AAPL", "buy", 100),
        "limit": lambda: limit_order("AAPL", "buy", 100, 101.25),
        "stop": lambda: stop_order("AAPL", "sell", 100, 95.5),
    }

    def setup(be):
        _cpu_only(be)
        return makers[kind]

    return Workload(name=f"create {kind} order", sizes={"orders": 1}, setup=setup, run=lambda f: f(),
                    items=1, unit="order", target="orders.create")


def _validation() -> Workload:
    def setup(be):
        _cpu_only(be)
        pf = _book(VALIDATE_POSITIONS)
        limits = RiskLimits(max_order_quantity=10_000, max_order_notional=1e6, max_position_quantity=20_000,
                            max_position_notional=2e6, symbols=frozenset(pf.symbols))
        order = market_order("S7", "buy", 50)
        return lambda: validate_order(order, pf, limits, PRICE)

    return Workload(name=f"validate order ({VALIDATE_POSITIONS}-position book)",
                    sizes={"positions": VALIDATE_POSITIONS}, setup=setup, run=lambda f: f(),
                    items=1, unit="order", target="orders.validate")


def _sleep_reference(latency_s: float) -> Reference:
    def setup():
        loop = asyncio.new_event_loop()
        return lambda: loop.run_until_complete(asyncio.sleep(latency_s))

    return Reference("sleep", setup, lambda f: f())


def _manager(latency_s: float, brokers: int = 1, router: bool = False) -> OrderManager:
    names = [f"b{i}" for i in range(brokers)]
    bs = [SimulatedBroker(n, latency_s=latency_s, prices={"AAPL": PRICE, "MSFT": PRICE}) for n in names]
    return OrderManager(bs, portfolio=Portfolio(1e12),
                        router=SymbolRouter({"MSFT": names[-1]}, names) if router else None)


def _placement(latency_ms: int) -> Workload:
    latency = latency_ms / 1000

    def setup(be):
        _cpu_only(be)
        loop = asyncio.new_event_loop()
        m = _manager(latency)
        return lambda: loop.run_until_complete(m.submit(market_order("AAPL", "buy", 1), price=PRICE))

    return Workload(name=f"place 1 order, {latency_ms} ms latency", sizes={"latency_ms": latency_ms, "orders": 1},
                    setup=setup, run=lambda f: f(), items=1, unit="order", target=f"orders.place_{latency_ms}ms",
                    references=(_sleep_reference(latency),))


def _batch(n: int) -> Workload:
    latency = BATCH_LATENCY_MS / 1000

    def setup(be):
        _cpu_only(be)
        loop = asyncio.new_event_loop()
        m = _manager(latency)
        prices = [PRICE] * n

        def call():
            orders = [market_order("AAPL", "buy", 1) for _ in range(n)]
            return loop.run_until_complete(m.submit_many(orders, prices=prices))

        return call

    return Workload(name=f"place {n} orders concurrently, {BATCH_LATENCY_MS} ms latency",
                    sizes={"latency_ms": BATCH_LATENCY_MS, "orders": n}, setup=setup, run=lambda f: f(),
                    items=n, unit="order", target="orders.batch", references=(_sleep_reference(latency),))


def _submit_track() -> Workload:
    def setup(be):
        _cpu_only(be)
        loop = asyncio.new_event_loop()
        m = _manager(0.0)

        def call():
            order = market_order("AAPL", "buy", 1)
            loop.run_until_complete(m.submit(order, price=PRICE))
            return m.report(order.client_order_id)

        return call

    return Workload(name="manager submit + track, zero latency", sizes={"orders": 1}, setup=setup,
                    run=lambda f: f(), items=1, unit="order", target="orders.manage")


def _submit_sequence() -> Workload:
    def setup(be):
        _cpu_only(be)
        loop = asyncio.new_event_loop()
        m = _manager(0.0)

        async def ten():
            for _ in range(SEQUENCE):
                order = market_order("AAPL", "buy", 1)
                await m.submit(order, price=PRICE)
                m.report(order.client_order_id)

        return lambda: loop.run_until_complete(ten())

    return Workload(name=f"manager submit + track, {SEQUENCE} in sequence in one loop run, zero latency",
                    sizes={"orders": SEQUENCE}, setup=setup, run=lambda f: f(), items=SEQUENCE, unit="order",
                    target="orders.submit_sequence")


def _cancel() -> Workload:
    def setup(be):
        _cpu_only(be)
        loop = asyncio.new_event_loop()
        m = _manager(0.0)
        pool: list[str] = []

        def refill():
            orders = [limit_order("AAPL", "buy", 1, PRICE / 2) for _ in range(CANCEL_POOL)]
            loop.run_until_complete(m.submit_many(orders))
            pool.extend(o.client_order_id for o in orders)

        def call():
            if not pool:
                refill()
            return loop.run_until_complete(m.cancel(pool.pop()))

        refill()
        return call

    return Workload(name="cancel a resting order, zero latency", sizes={"orders": 1}, setup=setup,
                    run=lambda f: f(), items=1, unit="order", target="orders.manage")


def _route() -> Workload:
    def setup(be):
        _cpu_only(be)
        router = SymbolRouter({"MSFT": "b2"}, ["b0", "b1", "b2"])
        orders = itertools.cycle([market_order("MSFT", "buy", 1), market_order("AAPL", "buy", 1)])
        return lambda: router(next(orders))

    return Workload(name="route an order (3 brokers)", sizes={"brokers": 3}, setup=setup, run=lambda f: f(),
                    items=1, unit="order", target="orders.manage")


class _ForgetfulVenue:
    """Fills every order at once and keeps nothing, so only the manager's memory grows."""

    name = "forgetful"

    async def submit(self, order):
        return BrokerAck(order.client_order_id, FILLED, order.quantity, PRICE, side=order.side)

    async def cancel(self, client_order_id):
        return BrokerAck(client_order_id, REJECTED, reason="unknown order")

    async def status(self, client_order_id):
        return BrokerAck(client_order_id, REJECTED, reason="unknown order")


def _memory_manager() -> OrderManager:
    return OrderManager(_ForgetfulVenue(), portfolio=Portfolio(1e15), limits=RiskLimits(max_order_quantity=10))


async def _stream(m: OrderManager, n: int) -> None:
    for i in range(n):
        await m.submit(market_order("AAPL", "buy", 100 if i % REFUSED_EVERY == 0 else 1), price=PRICE)


def _memory_metrics(state, backend=None, policy=None, measured=None) -> dict[str, float]:
    """Heap held by a fresh manager (and its book) after MEMORY_ORDERS orders."""
    loop = state["loop"]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        m = _memory_manager()
        loop.run_until_complete(_stream(m, MEMORY_ORDERS))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return {"memory_per_100k_orders_bytes": held * 100_000 / MEMORY_ORDERS, "orders_tracked": float(len(m))}


def _memory() -> Workload:
    def setup(be):
        _cpu_only(be)
        loop = asyncio.new_event_loop()
        m = _memory_manager()
        loop.run_until_complete(_stream(m, m.history + 1))  # the history is full: every order evicts one
        return {"loop": loop, "manager": m}

    return Workload(name=f"manager memory after {MEMORY_ORDERS:,} orders (bounded history); "
                         f"{SEQUENCE} more in sequence", sizes={"orders": MEMORY_ORDERS}, setup=setup,
                    run=lambda s: s["loop"].run_until_complete(_stream(s["manager"], SEQUENCE)), items=SEQUENCE,
                    unit="order", target="orders.memory", extra_metrics=_memory_metrics)


def workloads(size: str) -> list[Workload]:
    """All cases; the sizes are already small, so ``size`` only drops the 50 ms placement when quick."""
    out = [_creation(k) for k in ("market", "limit", "stop")]
    out.append(_validation())
    out.extend(_placement(ms) for ms in PLACE_LATENCIES_MS if not (size == "quick" and ms > 10))
    out.extend(_batch(n) for n in BATCH_SIZES)
    out += [_submit_track(), _submit_sequence(), _cancel(), _route(), _memory()]
    return out
