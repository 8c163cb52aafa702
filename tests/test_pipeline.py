"""The end-to-end pipeline against an independent oracle.

Oracle: the same valid ticks through the *batch* functions -- :func:`aggregate_bars`
(bars), the batch strategy (:func:`momentum` / :meth:`StrategyRunner.run` on each
symbol's series of non-empty bar closes) -- and a plain re-implementation of the
decision (target = unit * signal; order = target - position, refused when it breaks
the order-size or position limit), replayed in the order the bars complete. Fills at
the bar close (the simulated broker is marked there). The pipeline must emit exactly
those orders and end with those positions and that cash.
"""
from __future__ import annotations

import asyncio
import math

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpu_trader import TradingPipeline
from gpu_trader.brokers import SimulatedBroker
from gpu_trader.marketdata import MessageRejection, Quote, Tick, aggregate_bars
from gpu_trader.order_manager import OrderManager
from gpu_trader.orders import FILLED, Order, OrderRejection, RiskLimits
from gpu_trader.portfolio import Portfolio
from gpu_trader.strategies import MeanReversion, Momentum, StrategyRunner, momentum

from conftest import FirstAnswerLost, venue_book

NAMES = ("AAA", "BBB", "CCC")
TF = 1_000  # ns per bar
CASH = 1e7
_enc = msgspec.json.encode


def make_ticks(seed: int, n: int = 1500, n_sym: int = 3):
    """Valid ticks ``(sid, ts, price, size)`` in arrival order; ts strictly increasing."""
    rng = np.random.default_rng(seed)
    sid = rng.integers(0, n_sym, n)
    ts = 1_700_000_000_000_000_000 + np.cumsum(rng.integers(1, 120, n))
    price = np.empty(n)
    level = np.full(n_sym, 100.0)
    for i in range(n):
        level[sid[i]] *= np.exp(rng.normal(0, 0.01))
        price[i] = level[sid[i]]
    size = rng.integers(0, 500, n) / 10.0
    return [(int(s), int(t), float(p), float(z)) for s, t, p, z in zip(sid, ts, price, size)]


def encode(tick, names=NAMES) -> bytes:
    s, t, p, z = tick
    return _enc({"symbol": names[s], "ts": t, "price": p, "size": z})


def batch_signals(strategy, closes: np.ndarray) -> np.ndarray:
    if isinstance(strategy, StrategyRunner):
        return sum(r.signals.astype(np.int64) for r in strategy.run(closes).values())
    if isinstance(strategy, Momentum):
        return momentum(closes, strategy.fast, strategy.slow).signals
    raise AssertionError(strategy)


def oracle(ticks, strategy, *, unit=1.0, limits=RiskLimits(), n_sym=3, history=None):
    """(orders [(symbol, side, qty)], positions {symbol: qty}, cash) from batch functions."""
    sid = np.array([t[0] for t in ticks])
    ts = np.array([t[1] for t in ticks], dtype=np.int64)
    bars = aggregate_bars(ts, [t[2] for t in ticks], [t[3] for t in ticks], sid, timeframe=TF, n_symbols=n_sym)
    events = []  # (completion position, sid, close, signal)
    for s in range(n_sym):
        filled = np.flatnonzero(bars.count[s] > 0)
        closes = bars.close[s, filled]
        hist = np.asarray((history or {}).get(NAMES[s], []), dtype=np.float64)
        sig = batch_signals(strategy, np.concatenate([hist, closes]))[len(hist):]
        bucket_of_tick = ts // TF
        mine = np.flatnonzero(sid == s)
        for j, b in enumerate(filled):
            later = mine[bucket_of_tick[mine] > bars.start[b] // TF]
            pos = int(later[0]) if len(later) else len(ticks) + s  # the last bar completes at flush
            events.append((pos, s, float(closes[j]), float(sig[j])))
    events.sort()
    position = {n: 0.0 for n in NAMES[:n_sym]}
    cash, orders = CASH, []
    for _, s, close, signal in events:
        name = NAMES[s]
        target = signal * unit
        delta = target - position[name]
        if abs(delta) < 1e-12:
            continue
        if abs(delta) > limits.max_order_quantity or abs(target) > limits.max_position_quantity:
            continue
        orders.append((name, "buy" if delta > 0 else "sell", abs(delta)))
        position[name] = target
        cash -= delta * close
    return orders, position, cash


def make_pipeline(strategy, *, latency_s=0.0, limits=RiskLimits(), unit=1.0, n_sym=3):
    broker = SimulatedBroker("sim", latency_s=latency_s)
    manager = OrderManager(broker, portfolio=Portfolio(CASH), limits=limits)
    pipe = TradingPipeline(NAMES[:n_sym], strategy, manager, timeframe=TF, unit_quantity=unit,
                           quote_sink=broker.set_price)
    return pipe, broker


async def replay_settled(pipe, messages):
    """Feed one message at a time and wait for its order to settle; collect the orders."""
    orders, outcomes = [], []
    for m in messages:
        out = pipe.on_tick(m)
        outcomes.append(out)
        await pipe.drain()
    outcomes.extend(pipe.flush())
    await pipe.drain()
    orders = [(o.symbol, o.side, o.quantity) for o in outcomes if isinstance(o, Order)]
    return orders, outcomes


def positions(pipe):
    return {n: pipe.portfolio.quantity(n) for n in pipe.symbols}


STRATEGIES = [
    Momentum(2, 5),
    StrategyRunner([Momentum(3, 8), MeanReversion(4, 1.0), Momentum(2, 5)]),
]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=["momentum", "runner"])
@pytest.mark.parametrize("seed", [0, 1])
def test_orders_and_positions_match_batch_oracle(strategy, seed):
    ticks = make_ticks(seed)
    pipe, broker = make_pipeline(strategy, unit=2.5)
    got, _ = asyncio.run(replay_settled(pipe, [encode(t) for t in ticks]))
    want, want_pos, want_cash = oracle(ticks, strategy, unit=2.5)
    assert len(want) > 20  # the stream exercises the path
    assert got == want
    assert positions(pipe) == pytest.approx(want_pos)
    assert pipe.portfolio.cash == pytest.approx(want_cash, abs=1e-6)
    st_ = pipe.stats
    assert st_.events == st_.accepted == len(ticks) and not st_.rejected and st_.errors == 0
    assert st_.orders == len(want) and st_.reports == {FILLED: len(want)}
    assert max(broker.fill_counts.values()) == 1


def test_risk_limits_refuse_orders_and_never_move_positions():
    ticks = make_ticks(3)
    strategy = StrategyRunner([Momentum(2, 5), Momentum(3, 8), MeanReversion(4, 1.0)])
    limits = RiskLimits(max_order_quantity=2.0, max_position_quantity=2.0)
    pipe, _ = make_pipeline(strategy, limits=limits)
    got, outcomes = asyncio.run(replay_settled(pipe, [encode(t) for t in ticks]))
    want, want_pos, want_cash = oracle(ticks, strategy, limits=limits)
    risk = [o for o in outcomes if isinstance(o, OrderRejection)]
    assert risk and {r.code for r in risk} <= {"order_size", "position_limit"}
    assert got == want
    assert positions(pipe) == pytest.approx(want_pos)
    assert pipe.portfolio.cash == pytest.approx(want_cash, abs=1e-6)
    assert sum(pipe.stats.risk_rejected.values()) == len(risk)


def test_warmup_continues_the_strategy_state():
    ticks = make_ticks(4, n=600)
    strategy = Momentum(3, 8)
    rng = np.random.default_rng(9)
    history = {n: 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 30))) for n in NAMES}
    pipe, _ = make_pipeline(strategy)
    pipe.warmup(history)
    got, _ = asyncio.run(replay_settled(pipe, [encode(t) for t in ticks]))
    want, want_pos, _ = oracle(ticks, strategy, history=history)
    assert got == want and positions(pipe) == pytest.approx(want_pos)
    with pytest.raises(ValueError, match="history"):
        pipe.warmup({"ZZZ": [1.0]})
    with pytest.raises(TypeError, match="history"):
        pipe.warmup(None)


# -- bad input mixed into valid streams -------------------------------------------------
def _bad_message(kind: str, draw_bytes: bytes, last_ts: dict[int, int]) -> tuple[bytes, set[str]]:
    """A message that must be refused, and the reasons acceptable for it."""
    if kind == "binary":  # at most 40 bytes: shorter than any valid tick of a known symbol
        return draw_bytes, {"malformed_json", "missing_field", "invalid_field", "unknown_symbol"}
    if kind == "truncated":
        full = _enc({"symbol": "AAA", "ts": 1, "price": 1.0, "size": 1.0})
        return full[: len(draw_bytes) % (len(full) - 1)], {"malformed_json"}
    if kind == "unknown":
        return _enc({"symbol": "ZZZ", "ts": 2**62, "price": 10.0, "size": 1.0}), {"unknown_symbol"}
    if kind == "out_of_order":
        s = min(last_ts)
        return _enc({"symbol": NAMES[s], "ts": last_ts[s] - 1, "price": 10.0, "size": 1.0}), {"out_of_order"}
    literal = {
        "nan": b'{"symbol":"AAA","ts":%d,"price":NaN,"size":1.0}',
        "nan_str": b'{"symbol":"AAA","ts":%d,"price":"nan","size":1.0}',
        "inf": b'{"symbol":"AAA","ts":%d,"price":1e999,"size":1.0}',
        "negative": b'{"symbol":"AAA","ts":%d,"price":-5.0,"size":1.0}',
        "zero": b'{"symbol":"AAA","ts":%d,"price":0.0,"size":1.0}',
        "neg_size": b'{"symbol":"AAA","ts":%d,"price":5.0,"size":-1.0}',
        "missing": b'{"symbol":"AAA","ts":%d,"size":1.0}',
        "ts_type": b'{"symbol":"AAA","ts":"%d","price":5.0,"size":1.0}',
        "not_object": b'[%d]',
    }[kind]
    return literal % (2**62), {"malformed_json", "missing_field", "invalid_field"}


BAD_KINDS = ["binary", "truncated", "unknown", "out_of_order", "nan", "nan_str", "inf", "negative", "zero",
             "neg_size", "missing", "ts_type", "not_object"]
VALID = make_ticks(5, n=800)
MOMENTUM = Momentum(2, 5)
WANT = oracle(VALID, MOMENTUM)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(30, len(VALID)), st.sampled_from(BAD_KINDS), st.binary(max_size=40)),
                min_size=1, max_size=40))
def test_bad_ticks_are_rejected_and_never_change_orders_or_positions(bad):
    inserts: dict[int, list] = {}
    for pos, kind, raw in bad:
        inserts.setdefault(pos, []).append((kind, raw))
    messages, expected = [], []
    last_ts: dict[int, int] = {}
    for i, tick in enumerate(VALID + [None]):
        for kind, raw in inserts.get(i, []):
            msg, reasons = _bad_message(kind, raw, last_ts)
            expected.append((len(messages), reasons))
            messages.append(msg)
        if tick is not None:
            messages.append(encode(tick))
            last_ts[tick[0]] = tick[1]
    pipe, _ = make_pipeline(MOMENTUM)
    got, outcomes = asyncio.run(replay_settled(pipe, messages))
    want, want_pos, want_cash = WANT
    assert got == want
    assert positions(pipe) == pytest.approx(want_pos)
    assert pipe.portfolio.cash == pytest.approx(want_cash, abs=1e-6)
    rejected = {o.index: o.reason for o in outcomes if isinstance(o, MessageRejection)}
    assert set(rejected) == {i for i, _ in expected}
    for i, reasons in expected:
        assert rejected[i] in reasons, (messages[i], rejected[i])
    assert pipe.stats.n_rejected == len(expected) and pipe.stats.accepted == len(VALID)
    assert list(pipe.recent_rejections) == [o for o in outcomes if isinstance(o, MessageRejection)]


def test_non_bytes_input_is_a_rejection():
    pipe, _ = make_pipeline(MOMENTUM)
    for bad in (None, 42, 3.5, object()):
        out = pipe.on_tick(bad)
        assert isinstance(out, MessageRejection) and out.reason == "malformed_json"
    assert pipe.stats.events == 4 and pipe.stats.accepted == 0


@pytest.mark.parametrize("one", [b'{"s": "A"}', '{"s": "A"}', bytearray(b"{}"), memoryview(b"{}"), 7, None])
def test_run_refuses_one_message_or_a_non_iterable_in_place_of_a_stream(one):
    pipe, _ = make_pipeline(MOMENTUM)
    with pytest.raises(TypeError, match="messages must be an iterable of messages"):
        asyncio.run(pipe.run(one))
    assert pipe.stats.events == 0


def test_oversized_tick_is_counted_as_too_large():
    pipe, _ = make_pipeline(MOMENTUM)
    out = pipe.on_tick(b'{"x": "' + b"a" * (1 << 20) + b'"}')
    assert isinstance(out, MessageRejection) and out.reason == "too_large"
    assert pipe.stats.rejected == {"too_large": 1}


# -- the broker failing or timing out --------------------------------------------------
class ExplodingBroker:
    """A venue whose every call raises an unexpected exception."""

    name = "boom"

    async def submit(self, order):
        raise RuntimeError("venue crashed")

    async def cancel(self, cid):
        raise RuntimeError("venue crashed")


def _booked_and_unresolved(pipe, broker):
    """Positions implied by the venue's fills the manager has booked (its report shows
    the venue's cumulative quantity), and the statuses of the venue fills it has not
    booked (each fill made at most once)."""
    pos = {n: 0.0 for n in pipe.symbols}
    unresolved = []
    for cid, symbol, signed, _ in broker.fills():
        assert broker.fill_counts[cid] == 1
        report = pipe.manager.report(cid)
        if report.filled_quantity:
            assert report.filled_quantity == abs(signed) and report.status == FILLED
            pos[symbol] += signed
        else:
            unresolved.append(report.status)
    return pos, unresolved


@pytest.mark.parametrize("latency_s", [0.0, 0.002])
@pytest.mark.parametrize("recover", [0, 3])
def test_flaky_broker_leaves_the_loop_alive_and_books_only_fills(latency_s, recover):
    ticks = make_ticks(6, n=3000)
    broker = SimulatedBroker("flaky", latency_s=latency_s, failure_rate=0.3, timeout_rate=0.15, seed=3)
    manager = OrderManager(broker, portfolio=Portfolio(CASH), timeout_s=0.005, max_retries=0,
                           failure_threshold=3, cooldown_s=0.01)
    pipe = TradingPipeline(NAMES, MOMENTUM, manager, timeframe=TF, quote_sink=broker.set_price,
                           recover_attempts=recover)

    async def go():
        stats = await pipe.run([encode(t) for t in ticks], yield_every=8)
        during = _booked_and_unresolved(pipe, broker), positions(pipe)
        broker.failure_rate = broker.timeout_rate = 0.0  # the network heals: shutdown reconciles
        for _ in range(5):  # a loaded machine can stall the loop past a timeout: close again
            await asyncio.sleep(0.02)  # past the breaker's cool-down
            await pipe.close()
            if not pipe.manager.unresolved():
                break
        return stats, during

    stats, ((booked, unresolved), held) = asyncio.run(go())
    assert stats.events == stats.accepted == len(ticks) and stats.errors == 0
    assert pipe.in_flight == 0
    assert sum(stats.reports.values()) == stats.orders > 0
    failures = {k for k in stats.reports if k != FILLED}
    assert failures & {"rejected:broker_error", "unknown:timeout", "rejected:circuit_open"}
    assert held == pytest.approx(booked)  # the portfolio held exactly the acknowledged fills
    assert set(unresolved) <= {"unknown"}  # a fill the manager did not know of was marked unknown
    assert stats.resubmitted <= recover * stats.orders and stats.reconciles >= 2
    # after the shutdown reconciliation the book is the venue's, every fill booked once
    want_pos, want_cash = venue_book(broker, CASH, NAMES)
    assert positions(pipe) == pytest.approx(want_pos)
    assert pipe.portfolio.cash == pytest.approx(want_cash, abs=1e-6)
    assert pipe.manager.unresolved() == ()
    assert _booked_and_unresolved(pipe, broker)[1] == []


@pytest.mark.parametrize("recover, status", [(0, False), (1, False), (0, True)])
def test_unknown_outcomes_are_recovered_by_resubmitting_or_reconciling(recover, status):
    ticks = make_ticks(11, n=1500)
    inner = SimulatedBroker("sim", latency_s=0.0)
    manager = OrderManager(FirstAnswerLost(inner, status), portfolio=Portfolio(CASH), timeout_s=0.002,
                           max_retries=0, failure_threshold=10**6, resolve_attempts=0)
    pipe = TradingPipeline(NAMES, MOMENTUM, manager, timeframe=TF, quote_sink=inner.set_price,
                           recover_attempts=recover)
    stats = asyncio.run(pipe.run([encode(t) for t in ticks]))
    asyncio.run(_flush_and_drain(pipe))
    assert stats.orders > 0 and pipe.in_flight == 0 and max(inner.fill_counts.values()) == 1
    if recover:  # every fill is booked once, and the book reaches the oracle's final targets
        assert stats.reports == {FILLED: stats.orders} and stats.resubmitted == stats.orders
        assert positions(pipe) == pytest.approx(oracle(ticks, MOMENTUM)[1])
    elif status:  # the manager never heard while trading; reconciling (end of run, then here) books every fill
        assert stats.reports == {"unknown:timeout": stats.orders} and stats.resubmitted == 0
        asyncio.run(pipe.reconcile())  # the orders of the flushed bars
        want_pos, want_cash = venue_book(inner, CASH, NAMES)
        assert any(want_pos.values()) and positions(pipe) == pytest.approx(want_pos)
        assert pipe.portfolio.cash == pytest.approx(want_cash, abs=1e-6)
        assert manager.unresolved() == ()
    else:  # the broker filled, the manager never heard and cannot ask: nothing booked, all unknown
        assert stats.reports == {"unknown:timeout": stats.orders} and stats.resubmitted == 0
        assert all(q == 0.0 for q in positions(pipe).values())
        assert sum(inner.fill_counts.values()) == stats.orders
        assert len(manager.unresolved()) == stats.orders


def test_broker_raising_is_reported_and_positions_stay_flat():
    ticks = make_ticks(7, n=600)
    manager = OrderManager(ExplodingBroker(), portfolio=Portfolio(CASH), max_retries=0)
    pipe = TradingPipeline(NAMES, MOMENTUM, manager, timeframe=TF)
    stats = asyncio.run(pipe.run([encode(t) for t in ticks]))
    assert stats.accepted == len(ticks) and stats.orders > 0 and stats.errors == 0
    assert set(stats.reports) <= {"unknown:broker_error", "unknown:circuit_open", "rejected:circuit_open"}
    assert all(q == 0.0 for q in positions(pipe).values())


def test_signals_during_an_order_in_flight_are_deferred_and_positions_converge():
    ticks = make_ticks(8, n=1500)
    strategy = Momentum(2, 5)
    pipe, _ = make_pipeline(strategy, latency_s=0.001)
    stats = asyncio.run(pipe.run([encode(t) for t in ticks], yield_every=4))
    asyncio.run(_flush_and_drain(pipe))
    _, want_pos, _ = oracle(ticks, strategy)  # final targets do not depend on the timing
    assert stats.deferred > 0 and pipe.in_flight == 0
    assert positions(pipe) == pytest.approx(want_pos)
    assert set(stats.reports) == {FILLED}


async def _flush_and_drain(pipe):
    pipe.flush()
    await pipe.drain()


def test_a_failing_bar_step_is_counted_and_the_loop_goes_on():
    def broken_sink(symbol, price):
        raise RuntimeError("market data feed down")

    manager = OrderManager(SimulatedBroker(), portfolio=Portfolio(CASH))
    pipe = TradingPipeline(NAMES, MOMENTUM, manager, timeframe=TF, quote_sink=broken_sink)
    ticks = make_ticks(10, n=300)
    stats = asyncio.run(pipe.run([encode(t) for t in ticks]))
    assert stats.accepted == len(ticks) and stats.bars > 0
    assert stats.errors == stats.bars and stats.orders == 0
    assert all(q == 0.0 for q in positions(pipe).values())


def test_reset_starts_a_new_session_and_keeps_positions():
    ticks = make_ticks(9, n=500)
    pipe, _ = make_pipeline(MOMENTUM)
    messages = [encode(t) for t in ticks]
    asyncio.run(pipe.run(messages))
    before = positions(pipe)
    assert isinstance(pipe.on_tick(messages[0]), MessageRejection)  # out of order in the old session
    pipe.reset()
    assert positions(pipe) == before
    assert pipe.on_tick(messages[0]) is None


def test_bad_arguments_name_the_argument():
    broker = SimulatedBroker()
    manager = OrderManager(broker, portfolio=Portfolio(1.0))
    with pytest.raises(TypeError, match="strategy"):
        TradingPipeline(NAMES, "momentum", manager)
    with pytest.raises(TypeError, match="manager"):
        TradingPipeline(NAMES, MOMENTUM, broker)
    with pytest.raises(ValueError, match="portfolio"):
        TradingPipeline(NAMES, MOMENTUM, OrderManager(broker))
    with pytest.raises(TypeError, match="symbols"):
        TradingPipeline("AAA", MOMENTUM, manager)
    with pytest.raises(ValueError, match="symbols"):
        TradingPipeline(["A", "A"], MOMENTUM, manager)
    with pytest.raises(ValueError, match="unit_quantity"):
        TradingPipeline(NAMES, MOMENTUM, manager, unit_quantity=float("nan"))
    with pytest.raises(TypeError, match="unit_quantity"):
        TradingPipeline(NAMES, MOMENTUM, manager, unit_quantity=True)
    assert TradingPipeline(NAMES, MOMENTUM, manager, unit_quantity=np.float32(2)).unit_quantity == 2.0
    with pytest.raises(ValueError, match="timeframe"):
        TradingPipeline(NAMES, MOMENTUM, manager, timeframe="soon")
    with pytest.raises(TypeError, match="limits"):
        TradingPipeline(NAMES, MOMENTUM, manager, limits={"max": 1})
    with pytest.raises(TypeError, match="quote_sink"):
        TradingPipeline(NAMES, MOMENTUM, manager, quote_sink=1)
    pipe = TradingPipeline(NAMES, MOMENTUM, manager)
    with pytest.raises(ValueError, match="yield_every"):
        asyncio.run(pipe.run([], yield_every=0))


def test_bench_recording_has_one_rejected_message_in_200():
    """The end_to_end suite's stream: every planted bad message is refused, nothing else is."""
    from gpu_trader.bench.suites.end_to_end import BAD_EVERY, build_pipeline, recording

    messages = recording(5, 2000)
    pipe = build_pipeline(5)
    stats = asyncio.run(pipe.run(messages))
    assert stats.n_rejected == 2000 // BAD_EVERY and stats.accepted == 2000 - stats.n_rejected
    assert set(stats.rejected) == {"malformed_json", "unknown_symbol", "out_of_order"}
    assert stats.orders > 0 and stats.errors == 0 and set(stats.reports) == {FILLED}


def test_the_pipeline_reconciles_periodically_and_on_close():
    """Answers are lost and never resubmitted: only the manager's reconciliation (periodic
    while trading, then at shutdown) books the venue's fills, and then exactly those."""
    ticks = make_ticks(12, n=1500)
    inner = SimulatedBroker("sim", latency_s=0.0)
    manager = OrderManager(FirstAnswerLost(inner), portfolio=Portfolio(CASH), timeout_s=0.002, max_retries=0,
                           failure_threshold=10**6, resolve_attempts=3, resolve_backoff_s=60.0)
    pipe = TradingPipeline(NAMES, MOMENTUM, manager, timeframe=TF, quote_sink=inner.set_price,
                           recover_attempts=0, reconcile_every_s=np.float64(1e-4))

    async def go():
        booked_while_trading = 0.0
        for i, message in enumerate(encode(t) for t in ticks):
            pipe.on_tick(message)
            if i % 8 == 7:
                await asyncio.sleep(0.001)
                booked_while_trading = max(booked_while_trading, sum(map(abs, positions(pipe).values())))
        pipe.flush()
        await pipe.close()
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return booked_while_trading, left

    booked_while_trading, left = asyncio.run(go())
    assert booked_while_trading > 0 and pipe.stats.reconciles >= 3
    want_pos, want_cash = venue_book(inner, CASH, NAMES)
    assert positions(pipe) == pytest.approx(want_pos) and pipe.portfolio.cash == pytest.approx(want_cash, abs=1e-6)
    assert manager.unresolved() == () and pipe.in_flight == 0
    assert left == []  # close() stopped the manager's background status queries
    with pytest.raises(ValueError, match="reconcile_every_s"):
        TradingPipeline(NAMES, MOMENTUM, manager, reconcile_every_s=0.0)
    with pytest.raises(TypeError, match="recover_attempts"):
        TradingPipeline(NAMES, MOMENTUM, manager, recover_attempts=2.0)
    assert TradingPipeline(NAMES, MOMENTUM, manager, recover_attempts=np.int64(2)).recover_attempts == 2


class SlowAndDeaf:
    """A venue adapter that fills at once, but answers only after ``delay_s``, and
    ignores cancellations while it waits (``deaf``): calls outlive the manager's deadline."""

    name = "slow"

    def __init__(self, inner: SimulatedBroker, delay_s: float, deaf: bool) -> None:
        self.inner, self.delay_s, self.deaf = inner, delay_s, deaf
        self.status = inner.status

    async def _wait(self) -> None:
        deadline = asyncio.get_running_loop().time() + self.delay_s
        while True:
            try:
                await asyncio.sleep(max(deadline - asyncio.get_running_loop().time(), 0.0))
                return
            except asyncio.CancelledError:
                if not self.deaf:
                    raise

    async def submit(self, order):
        ack = await self.inner.submit(order)
        await self._wait()
        return ack

    async def cancel(self, cid):
        return await self.inner.cancel(cid)


@pytest.mark.parametrize("delay_s, deaf", [(0.003, False), (0.05, True)])
def test_close_with_orders_in_flight_settles_them_and_leaves_nothing_running(delay_s, deaf):
    """Ticks handed in without ever yielding, then close(): every order in flight is
    waited for (a deaf venue's calls are abandoned at the deadline), the book ends equal
    to the venue's fills, and no task is left behind."""
    ticks = make_ticks(13, n=1200)
    inner = SimulatedBroker("slow", latency_s=0.0)
    manager = OrderManager(SlowAndDeaf(inner, delay_s, deaf), portfolio=Portfolio(CASH), timeout_s=0.01,
                           max_retries=0, failure_threshold=10**6, resolve_backoff_s=0.005)
    pipe = TradingPipeline(NAMES, MOMENTUM, manager, timeframe=TF, quote_sink=inner.set_price, recover_attempts=1)

    async def go():
        for message in (encode(t) for t in ticks):
            pipe.on_tick(message)
        pipe.flush()
        in_flight = pipe.in_flight
        await asyncio.wait_for(pipe.close(), 30.0)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return in_flight, left

    in_flight, left = asyncio.run(go())
    assert in_flight > 0 and pipe.in_flight == 0 and left == []
    assert pipe.stats.errors == 0 and manager.unresolved() == ()
    want_pos, want_cash = venue_book(inner, CASH, NAMES)
    assert any(want_pos.values()) and positions(pipe) == pytest.approx(want_pos)
    assert pipe.portfolio.cash == pytest.approx(want_cash, abs=1e-6)


# -- decoded Tick records and async feeds ---------------------------------------------
T0_NS = 1_700_000_000_000_000_000


def ticks_and_records(seed: int):
    """The same ticks as messages and as decoded :class:`Tick` records."""
    ticks = make_ticks(seed, n=300)
    return [encode(t) for t in ticks], [Tick(NAMES[t[0]], *t[1:]) for t in ticks]


def test_tick_records_trade_exactly_like_their_messages():
    async def drive(events):
        pipe, _ = make_pipeline(MOMENTUM)
        outs = []
        for e in events:
            out = pipe.on_tick(e)
            outs.append((out.symbol, out.side, out.quantity) if isinstance(out, Order) else type(out).__name__)
            await pipe.drain()
        return outs, {n: pipe.portfolio.quantity(n) for n in NAMES}, pipe.stats

    messages, records = ticks_and_records(5)
    a = asyncio.run(drive(messages))
    b = asyncio.run(drive(records))
    assert a[0] == b[0] and a[1] == b[1]
    assert (a[2].events, a[2].accepted, a[2].bars, a[2].orders) == (b[2].events, b[2].accepted, b[2].bars,
                                                                    b[2].orders)


@pytest.mark.parametrize("record, reason", [
    (Tick(0, T0_NS, 10.0, 1.0), "invalid_field"),  # a symbol id, not a name
    (Tick("AAA", T0_NS, math.nan, 1.0), "invalid_field"),
    (Tick("AAA", T0_NS, 10.0, -1.0), "invalid_field"),
    (Tick("AAA", -5, 10.0, 1.0), "invalid_field"),
    (Tick("ZZZ", T0_NS, 10.0, 1.0), "unknown_symbol"),
])
def test_bad_tick_records_are_rejections_with_or_without_timing(record, reason):
    for timed in (False, True):
        pipe, _ = make_pipeline(MOMENTUM)
        pipe.record_stages(timed)
        out = pipe.on_tick(record)
        assert isinstance(out, MessageRejection) and out.reason == reason
        assert pipe.stats.rejected == {reason: 1} and pipe.stats.accepted == 0


def test_run_from_an_async_feed_skips_other_records_by_type():
    messages, records = ticks_and_records(7)
    quote = Quote("AAA", T0_NS, 99.0, 101.0, 1.0, 1.0)

    async def feed():
        for i, (m, r) in enumerate(zip(messages, records)):
            if i % 4 == 0:
                yield quote
            if i % 7 == 0:
                yield {"not": "a tick"}
            yield r if i % 2 else m

    async def main():
        pipe, _ = make_pipeline(MOMENTUM)
        stats = await pipe.run(feed(), yield_every=16)
        ref, _ = make_pipeline(MOMENTUM)
        ref_stats = await ref.run(messages, yield_every=16)  # the same events, the same yields
        return pipe, stats, ref, ref_stats

    pipe, stats, ref, ref_stats = asyncio.run(main())
    assert stats.skipped == {"Quote": 75, "dict": 43}
    assert (stats.events, stats.accepted, stats.bars, stats.orders) == (
        ref_stats.events, ref_stats.accepted, ref_stats.bars, ref_stats.orders)
    assert {n: pipe.portfolio.quantity(n) for n in NAMES} == {n: ref.portfolio.quantity(n) for n in NAMES}


def test_a_failing_feed_propagates_its_error():
    async def feed():
        yield Tick("AAA", T0_NS, 10.0, 1.0)
        raise ConnectionError("feed lost")

    pipe, _ = make_pipeline(MOMENTUM)
    with pytest.raises(ConnectionError, match="feed lost"):
        asyncio.run(pipe.run(feed()))
    assert pipe.stats.events == 1


def test_timed_stages_stay_bounded_on_a_stream_of_malformed_messages():
    """Every event folds on its turn, a refused one too: before the fix the fold ran only after the bar
    step, so a stream of unparsable messages grew the parse stage's pending list without bound."""
    from gpu_trader._internal.stage_latency import FOLD_EVERY

    pipe, _ = make_pipeline(MOMENTUM)
    rec = pipe.record_stages()
    n = FOLD_EVERY + 5  # the old code left all of them pending
    for _ in range(n):
        pipe.on_tick(b"not json")
    assert pipe.stats.rejected == {"malformed_json": n}
    assert len(rec.pending[0]) < FOLD_EVERY  # parse samples waiting since the last fold (here 4)
    assert rec.histogram("parse").count == n and rec.histogram("bar").count == 0


def test_record_stages_checks_its_arguments_even_when_a_recorder_is_kept():
    pipe, _ = make_pipeline(MOMENTUM)
    rec = pipe.record_stages()
    with pytest.raises(TypeError, match="buckets"):
        pipe.record_stages(buckets="1e-6")  # was silently ignored: the kept recorder was returned
    with pytest.raises(ValueError, match="window"):
        pipe.record_stages(window=0)
    assert pipe.record_stages() is rec and pipe.stage_recorder is rec
