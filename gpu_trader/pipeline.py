"""The end-to-end trading loop: tick JSON in -> bar -> strategy signal -> risk check -> order out.

One **event** is one tick message (JSON bytes or str, the :mod:`gpu_trader.marketdata`
tick format). :meth:`TradingPipeline.on_tick` handles one event synchronously on the
CPU:

1. parse and validate the message (:func:`~gpu_trader.marketdata.parse_tick`, msgspec);
2. add it to its symbol's bar (:class:`~gpu_trader.marketdata.BarAggregator`, any
   timeframe). Most ticks stop here. A tick in a later bar than its symbol's open bar
   completes that bar, and only then:
3. mark the portfolio (and the optional ``quote_sink``, e.g. a simulated broker's
   ``set_price``) at the bar's close, and update that symbol's strategy state
   (:class:`~gpu_trader.strategies.StrategyStream`, one per symbol) to get its signal;
4. pre-trade risk/position check (:func:`~gpu_trader.orders.order_for_signal`): the
   target position ``unit_quantity * signal`` (summed over the strategies of a
   :class:`~gpu_trader.strategies.StrategyRunner`) minus the current position becomes
   a market order, or an :class:`~gpu_trader.orders.OrderRejection`, or nothing;
5. hand the order to the :class:`~gpu_trader.order_manager.OrderManager`
   (:meth:`~gpu_trader.order_manager.OrderManager.submit_nowait`): the broker round trip
   runs as an asyncio task while the loop goes on; fills update the portfolio.

The event's **latency** is the wall time of ``on_tick``: bytes in until any resulting
order has been handed to the manager (the broker's network latency is not part of it).
**Throughput** is events per second over a recorded stream, driven by :meth:`run`,
which also lets the event loop progress the broker tasks.

Bad input never stops the loop and never changes a position: a malformed message,
missing or invalid field (NaN, negative, zero price; negative size), an unknown symbol
or an out-of-order timestamp (policy: **reject**, per symbol, as in
:mod:`gpu_trader.marketdata`) returns a :class:`~gpu_trader.marketdata.MessageRejection` with
its reason, counted in :attr:`TradingPipeline.stats`; an unexpected exception after a tick
was accepted (a bug) is counted as ``internal`` and the loop goes on. Broker failures and
timeouts come back as reports (the manager never raises), counted by status and code; an
order whose outcome is unknown after a timeout is resubmitted with the same client order
id (``recover_attempts`` times) so a fill the broker made is still booked, once. Until it
is, the portfolio shows only acknowledged fills. The manager also asks the venue about
orders in doubt by itself, and the pipeline has it reconcile with the venues every
``reconcile_every_s`` seconds (checked at bar completions and while :meth:`run` yields),
at the end of :meth:`run` and in :meth:`close`: afterwards the book holds exactly the
venue's fills. The pre-trade check counts the orders still in flight
(:meth:`~gpu_trader.order_manager.OrderManager.exposure`), like the manager's own.

One order per symbol in flight: a signal for a symbol whose previous order has not
been settled yet is remembered (``deferred``) and decided when that order settles, at
the latest bar close, against the position the fill left -- so two orders never race
to the same target. When the broker answers at once (``latency_s=0``) and the caller
awaits :meth:`drain` after every event, the order stream is exactly "one decision per
completed bar"; ``tests/test_pipeline.py`` checks it against batch bars, batch
strategies and a plain re-implementation of the decision.

Use from one event loop (``on_tick``/``flush`` from a coroutine or callback running on
it; :meth:`run`, :meth:`drain`, :meth:`reconcile` and :meth:`close` are coroutines).

**Feeds**: ``on_tick`` also takes a decoded :class:`~gpu_trader.marketdata.Tick` (step 1
is skipped), and :meth:`run` an async iterable of records such as a
:class:`gpu_trader.feeds.WebSocketFeed`: ticks are events, other records (quotes, bars,
control messages) are counted by type in ``stats.skipped`` and skipped.
**Monitoring**: :meth:`record_stages` times each step of every event (:data:`STAGES`);
:class:`gpu_trader.metrics.PipelineMetrics` turns it on and exports those histograms and
the counters to Prometheus. Off (the default) it costs one ``None`` check per event.
"""
from __future__ import annotations

import asyncio
import collections
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterable, Callable, Iterable, Mapping, Sequence

from .marketdata import BarAggregator, MarketDataError, MessageRejection, Tick, iter_messages, parse_tick
from .order_manager import OrderManager
from .orders import UNKNOWN, Order, OrderRejection, RiskLimits, describe_exception, order_for_signal
from ._internal.stage_latency import DEFAULT_BUCKETS_S, FOLD_EVERY, StageRecorder, check_options
from ._internal.validation import check_count, check_flag, positive_number
from .strategies import MeanReversion, Momentum, StrategyRunner
from .profiling import annotate_methods

__all__ = ["TradingPipeline", "PipelineStats", "STAGES"]

STAGES = ("parse", "bar", "mark", "features", "signal", "risk", "order")
"""The timed stages of one event (see :meth:`TradingPipeline.record_stages`)."""
_PARSE, _BAR, _MARK, _FEATURES, _SIGNAL, _RISK, _ORDER = range(len(STAGES))
_FOLD_MASK = FOLD_EVERY - 1
_EVENT_TYPES = (bytes, bytearray, memoryview, str, Tick)  # what an async feed's record must be to be an event
_clock = time.perf_counter_ns


@dataclass
class PipelineStats:
    """Counters of a :class:`TradingPipeline` (all since construction).

    ``events``: ticks seen; ``accepted``: ticks that passed validation; ``rejected``:
    reason -> count of refused ticks (``malformed_json``, ``too_large``, ``missing_field``,
    ``invalid_field``, ``unknown_symbol``, ``out_of_order``, ``internal``); ``bars``:
    completed bars; ``orders``: orders handed to the manager; ``risk_rejected``: pre-trade
    rejection code -> count; ``deferred``: signals held while their symbol had an order in
    flight; ``resubmitted``: resubmissions of orders whose outcome was unknown (broker
    timeout); ``reports``: final outcome per order by ``status`` (``status:code`` when a
    code is set, e.g. ``rejected:broker_error``, ``unknown:timeout`` when the outcome is
    still unknown after the resubmissions; counted when the order's task settles, so a
    later resolution shows in the manager's report, not here); ``reconciles``:
    reconciliations with the venues started; ``errors``: exceptions after a tick was
    accepted; ``skipped``: records of an async feed that are not ticks (quotes, bars,
    ...), by type name, which :meth:`TradingPipeline.run` skips (they are not events).
    """

    events: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    bars: int = 0
    orders: int = 0
    risk_rejected: dict[str, int] = field(default_factory=dict)
    deferred: int = 0
    resubmitted: int = 0
    reports: dict[str, int] = field(default_factory=dict)
    reconciles: int = 0
    errors: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())


def _bump(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1


def _tick_record(tick: Tick) -> Tick:
    """A decoded tick handed to ``on_tick``: its symbol must be a name (a record built in
    Python is not validated by msgspec; the bar step checks ts, price and size)."""
    if not isinstance(tick.symbol, str):
        raise MarketDataError("invalid_field", f"symbol must be a str, got {type(tick.symbol).__name__}")
    return tick


def _check_strategy(strategy) -> StrategyRunner | Momentum | MeanReversion:
    if not isinstance(strategy, (Momentum, MeanReversion, StrategyRunner)):
        raise TypeError(f"strategy must be a Momentum, MeanReversion or StrategyRunner, got {type(strategy).__name__}")
    return strategy


@annotate_methods
class TradingPipeline:
    """Tick JSON in -> bars -> strategy signal -> risk check -> order to the manager (see module doc).

    ``symbols``: the tradable universe (names; ticks of other symbols are rejected).
    ``strategy``: a :class:`~gpu_trader.strategies.Momentum`,
    :class:`~gpu_trader.strategies.MeanReversion` or
    :class:`~gpu_trader.strategies.StrategyRunner` (signals summed). ``manager``: an
    :class:`~gpu_trader.order_manager.OrderManager` with a portfolio (fills are booked
    there; the risk check reads it). ``timeframe``: bar length (see
    :func:`~gpu_trader.marketdata.parse_timeframe`). ``limits``: the pre-trade
    :class:`~gpu_trader.orders.RiskLimits` (default: the manager's, so both checks agree).
    ``unit_quantity`` (> 0): position per unit of signal. ``quote_sink``: optional
    ``callable(symbol, close)`` called at every completed bar before the decision (pass
    ``SimulatedBroker.set_price`` so a simulated venue fills market orders at the close).
    ``recover_attempts``: how many times an order whose outcome is unknown (the broker
    timed out; it may have filled) is resubmitted with the same client order id, which
    asks the same broker for its state and never fills twice. ``max_log``: how many
    recent rejections :attr:`recent_rejections` keeps. ``reconcile_every_s``: seconds
    between reconciliations of the manager with the venues (``None``: only at the end
    of :meth:`run` and in :meth:`close`). Counts accept NumPy integers, numbers NumPy
    scalars (never ``bool``).

    * ``on_tick(data) -> Order | MessageRejection | OrderRejection | None`` -- one event
      (sync): a tick message or a decoded :class:`~gpu_trader.marketdata.Tick`;
    * ``flush(now=None) -> list`` -- complete open bars (all, or those ending by ``now``
      ns) and run them through the strategy and risk path;
    * ``await run(messages, yield_every=64) -> PipelineStats`` -- a stream (an iterable
      of messages, or an async feed of records), then reconcile;
    * ``record_stages(enabled=True) -> StageRecorder | None`` -- time every stage of
      every event (:data:`STAGES`; what :class:`gpu_trader.metrics.PipelineMetrics` exports);
    * ``await drain()`` -- wait until no order is in flight;
    * ``await reconcile()`` -- drain, then have the manager reconcile with the venues;
    * ``await close()`` -- shutdown: reconcile, then stop the manager's background queries;
    * ``reset()`` -- a new session: forget bars, strategy state and timestamps (positions stay).
    """

    def __init__(self, symbols: Sequence[str], strategy, manager: OrderManager, *, timeframe="1min",
                 limits: RiskLimits | None = None, unit_quantity: float = 1.0,
                 quote_sink: Callable[[str, float], Any] | None = None, recover_attempts: int = 3,
                 max_log: int = 1000, reconcile_every_s: float | None = 5.0) -> None:
        if isinstance(symbols, (str, bytes)) or not isinstance(symbols, Iterable):
            raise TypeError("symbols must be a sequence of symbol names (str)")
        self._strategy = _check_strategy(strategy)
        if not isinstance(manager, OrderManager):
            raise TypeError(f"manager must be an OrderManager, got {type(manager).__name__}")
        if manager.portfolio is None:
            raise ValueError("manager must have a portfolio (fills are booked and risk-checked there)")
        if limits is not None and not isinstance(limits, RiskLimits):
            raise TypeError(f"limits must be a RiskLimits or None, got {type(limits).__name__}")
        unit = positive_number(unit_quantity, "unit_quantity")
        if quote_sink is not None and not callable(quote_sink):
            raise TypeError("quote_sink must be callable(symbol, price) or None")
        self.recover_attempts = check_count(recover_attempts, "recover_attempts", 0)
        max_log = check_count(max_log, "max_log", 0)
        self.reconcile_every_s = (None if reconcile_every_s is None
                                  else positive_number(reconcile_every_s, "reconcile_every_s"))
        self._agg = BarAggregator(timeframe, list(symbols))  # validates the names
        self.symbols: tuple[str, ...] = self._agg.symbols
        self.timeframe: int = self._agg.timeframe
        self.manager = manager
        self.portfolio = manager.portfolio
        self.limits = manager.limits if limits is None else limits
        self.unit_quantity = unit
        self._sink = quote_sink
        self._streams = [self._strategy.stream(1) for _ in self.symbols]
        self._inflight: dict[int, asyncio.Task] = {}
        self._deferred: dict[int, tuple[float, float]] = {}  # sid -> (signal, close) held while in flight
        self.stats = PipelineStats()
        self.recent_rejections: collections.deque[MessageRejection] = collections.deque(maxlen=max_log)
        self._next_reconcile = (math.inf if self.reconcile_every_s is None
                                else time.monotonic() + self.reconcile_every_s)
        self._reconciling: asyncio.Task | None = None
        self._recorder: StageRecorder | None = None

    # -- one event -------------------------------------------------------------------
    def on_tick(self, data: bytes | str | Tick):
        """Process one tick: a message (parsed and validated) or a decoded
        :class:`~gpu_trader.marketdata.Tick` record (not parsed again; its fields are
        validated by the bar step, a symbol that is not a ``str`` is ``invalid_field``).
        Returns the :class:`~gpu_trader.orders.Order` handed to the manager, a
        :class:`~gpu_trader.marketdata.MessageRejection` (bad tick; ``index`` is the event
        number), an :class:`~gpu_trader.orders.OrderRejection` (the risk check refused the
        order) or ``None``. Never raises."""
        stats = self.stats
        index = stats.events
        stats.events = index + 1
        try:
            rec = self._recorder
            if rec is None:
                tick = _tick_record(data) if type(data) is Tick else parse_tick(data)
                bar = self._agg.update(tick.symbol, tick.ts, tick.price, tick.size)
            else:
                bar = self._timed_bar_update(data, rec, index)
        except MarketDataError as exc:
            return self._reject(index, exc.reason, str(exc))
        except Exception as exc:  # anything else a message can provoke: refuse it, keep going
            return self._reject(index, "internal", f"{type(exc).__name__}: {describe_exception(exc)}")
        stats.accepted += 1
        if bar is None:
            return None
        return self._on_bar(bar.symbol, bar.close)

    def _timed_bar_update(self, data, rec: StageRecorder, index: int):
        """``on_tick``'s parse and bar steps, each timed (a refusal too; see :meth:`record_stages`)."""
        pending = rec.pending  # StageRecorder.lap, inlined: this runs for every tick
        t = _clock()
        try:
            if type(data) is Tick:
                tick = _tick_record(data)
            else:
                try:
                    tick = parse_tick(data)
                finally:
                    t1 = _clock()
                    pending[_PARSE].append(t1 - t)
                    t = t1
            try:
                return self._agg.update(tick.symbol, tick.ts, tick.price, tick.size)
            finally:
                pending[_BAR].append(_clock() - t)
        finally:  # every event, a refused one too: a stream of bad messages must not grow the lists
            if not index & _FOLD_MASK:
                rec.fold()

    def _reject(self, index: int, reason: str, message: str) -> MessageRejection:
        _bump(self.stats.rejected, reason)
        rej = MessageRejection(index, reason, message)
        self.recent_rejections.append(rej)
        return rej

    def _on_bar(self, sid: int, close: float):
        """A completed bar of symbol ``sid``: mark, signal, decide (never raises)."""
        try:
            self.stats.bars += 1
            rec = self._recorder
            if rec is not None:
                t = _clock()
            name = self.symbols[sid]
            self.portfolio.mark(name, close)
            if self._sink is not None:
                self._sink(name, close)
            if rec is not None:
                t = rec.lap(_MARK, t)
            stream = self._streams[sid]
            values = stream.features(close)
            if rec is not None:
                t = rec.lap(_FEATURES, t)
            signal = float(stream.signals(values).sum())
            if rec is not None:
                rec.lap(_SIGNAL, t)
            self._maybe_reconcile()
            if sid in self._inflight:
                self._deferred[sid] = (signal, close)
                self.stats.deferred += 1
                return None
            return self._decide(sid, signal, close)
        except Exception:  # a bug past validation: count it, keep the loop alive
            self.stats.errors += 1
            return None

    def _decide(self, sid: int, signal: float, close: float):
        rec = self._recorder
        if rec is not None:
            t = _clock()
        name = self.symbols[sid]
        out = order_for_signal(name, signal, close, portfolio=self.portfolio, limits=self.limits,
                               unit_quantity=self.unit_quantity, pending=self.manager.exposure(name))
        if rec is not None:
            t = rec.lap(_RISK, t)
        if out is None:
            return None
        if isinstance(out, OrderRejection):
            _bump(self.stats.risk_rejected, out.code)
            return out
        self._send(sid, out, close, 0)
        if rec is not None:
            rec.lap(_ORDER, t)
        self.stats.orders += 1
        return out

    def _send(self, sid: int, order: Order, price: float, attempt: int) -> None:
        task = self.manager.submit_nowait(order, price=price)
        self._inflight[sid] = task
        task.add_done_callback(functools.partial(self._settled, sid, order, price, attempt))

    def _settled(self, sid: int, order: Order, price: float, attempt: int, task: asyncio.Task) -> None:
        """Done callback of an order task: resubmit an UNKNOWN order (same id), count the
        final report, decide a deferred signal."""
        try:
            if self._inflight.get(sid) is task:
                del self._inflight[sid]
            if task.cancelled():
                _bump(self.stats.reports, "cancelled_task")
            else:
                report = task.result()
                if report.status == UNKNOWN and attempt < self.recover_attempts:
                    self.stats.resubmitted += 1
                    self._send(sid, order, price, attempt + 1)
                    return
                _bump(self.stats.reports, f"{report.status}:{report.code}" if report.code else report.status)
            held = self._deferred.pop(sid, None)
            if held is not None:
                self._decide(sid, *held)
        except Exception:  # a callback must never break the event loop
            self.stats.errors += 1

    # -- streams and sessions ----------------------------------------------------------
    def flush(self, now: int | None = None) -> list:
        """Complete the open bars (every one, or those ending at or before ``now`` ns) and
        run each through the strategy and risk path; returns their outcomes (see
        :meth:`on_tick`), in symbol order. A ``now`` that is not an integer time in ns
        (>= 0) raises :class:`~gpu_trader.marketdata.MarketDataError` (``invalid_field``)."""
        return [self._on_bar(bar.symbol, bar.close) for bar in self._agg.flush(now)]

    async def run(self, messages: Iterable[bytes | str | Tick] | AsyncIterable, *,
                  yield_every: int = 64) -> PipelineStats:
        """Process a stream of ticks, yielding to the event loop after every
        ``yield_every`` events (so broker tasks progress; an int >= 1), then
        :meth:`reconcile` (which drains first). Returns :attr:`stats`.

        ``messages`` is either an iterable of tick messages or
        :class:`~gpu_trader.marketdata.Tick` records, each an event (:meth:`on_tick`; one
        ``bytes``/``str`` message is a ``TypeError``: its iteration would yield ints or
        characters), or an **async iterable** of records (``async for``, e.g. a live
        feed): tick messages and ``Tick`` records are events; any other record (a quote,
        a bar, ...) is counted by type name in ``stats.skipped`` and skipped (the
        pipeline trades on bars of trades; a quote does not move them). The feed ending
        ends the run; an exception it raises propagates after nothing more is read."""
        yield_every = check_count(yield_every, "yield_every", 1)
        if hasattr(type(messages), "__aiter__"):
            await self._run_feed(messages, yield_every)
        else:
            on_tick = self.on_tick
            k = 0
            for data in iter_messages(messages):
                on_tick(data)
                k += 1
                if k == yield_every:
                    k = 0
                    self._maybe_reconcile()
                    await asyncio.sleep(0)
        await self.reconcile()
        return self.stats

    async def _run_feed(self, feed: AsyncIterable, yield_every: int) -> None:
        """:meth:`run`'s loop over an async feed of records."""
        on_tick, skipped = self.on_tick, self.stats.skipped
        k = 0
        async for record in feed:
            if not isinstance(record, _EVENT_TYPES):
                _bump(skipped, type(record).__name__)
                continue
            on_tick(record)
            k += 1
            if k == yield_every:
                k = 0
                self._maybe_reconcile()
                await asyncio.sleep(0)

    def record_stages(self, enabled: bool = True, *, buckets: Sequence[float] = DEFAULT_BUCKETS_S,
                      window: int = FOLD_EVERY) -> StageRecorder | None:
        """Time each stage of every later event into a
        :class:`~gpu_trader.metrics.StageRecorder` (returned; the one
        already recording is returned as is, its ``buckets``/``window`` unchanged), or
        stop (``enabled=False``; returns ``None``). The stages (:data:`STAGES`):
        ``parse`` (JSON decode + validation: every message, refused or not; not run for
        a ``Tick`` record), ``bar`` (bar aggregation: every parsed tick, refused or not),
        ``mark`` (portfolio mark and ``quote_sink`` at a completed bar), ``features``
        (the strategy's streaming features advanced by the bar), ``signal`` (the signal
        rules on those features), ``risk`` (the pre-trade check of a decision, deferred ones included) and
        ``order`` (the hand-off of an order to the manager). A later stage cut short by
        an exception (a bug, counted in ``errors``) records nothing. Cost: three clock
        reads and two list appends per tick (about 0.5 us at p50 on a 2-core CPU: the
        end-to-end bench's ``metrics_cost_p50_s``); none when off. ``TypeError`` for an
        ``enabled`` that is not a bool, ``TypeError``/``ValueError`` for bad ``buckets`` or
        ``window`` (checked even when a recorder is kept)."""
        if not check_flag(enabled, "enabled"):
            self._recorder = None
            return None
        if self._recorder is None:
            self._recorder = StageRecorder(STAGES, buckets=buckets, window=window)
        else:  # kept as it is, but a bad argument is still an error, never silently ignored
            check_options(buckets, window)
        return self._recorder

    @property
    def stage_recorder(self) -> StageRecorder | None:
        """The recorder of :meth:`record_stages`, or ``None`` when stages are not timed."""
        return self._recorder

    async def drain(self) -> None:
        """Wait until every order handed to the manager (deferred ones included) has settled."""
        while self._inflight:
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)
            await asyncio.sleep(0)  # let the done callbacks (and deferred decisions) run

    def _maybe_reconcile(self) -> None:
        """Start a reconciliation in the background when one is due, none is running and an
        event loop runs (a bar completed from plain synchronous code leaves it for later)."""
        now = time.monotonic()
        if now < self._next_reconcile or (self._reconciling is not None and not self._reconciling.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._next_reconcile = now + self.reconcile_every_s
        self.stats.reconciles += 1
        self._reconciling = loop.create_task(self.manager.reconcile())

    async def reconcile(self) -> list:
        """Drain, wait for a background reconciliation, then have the manager reconcile with
        the venues (and drain again: a held signal may have been decided meanwhile).
        Returns the reports of the orders the manager asked about (see
        :meth:`~gpu_trader.order_manager.OrderManager.reconcile`)."""
        await self.drain()
        background = self._reconciling
        if background is not None and not background.done() and background.get_loop() is asyncio.get_running_loop():
            await asyncio.gather(background, return_exceptions=True)
        self.stats.reconciles += 1
        reports = await self.manager.reconcile()
        await self.drain()
        return reports

    async def close(self) -> None:
        """Shutdown: :meth:`reconcile`, then stop the manager's background status queries."""
        await self.reconcile()
        await self.manager.close()

    @property
    def in_flight(self) -> int:
        """Orders handed to the manager and not settled yet."""
        return len(self._inflight)

    def reset(self) -> None:
        """Start a new session: open bars, strategy state and per-symbol timestamps are
        forgotten (positions, orders in flight and counters stay)."""
        self._agg = BarAggregator(self.timeframe, list(self.symbols))
        for stream in self._streams:
            stream.reset()
        self._deferred.clear()

    def warmup(self, history: Mapping[str, Sequence[float]]) -> None:
        """Feed past bar closes per symbol (``{name: closes}``, oldest first) to the
        strategy state without trading, e.g. the previous session's bars."""
        if not isinstance(history, Mapping):
            raise TypeError(f"history must be a mapping symbol -> closes, got {type(history).__name__}")
        for name, closes in history.items():
            sid = self.symbols.index(name) if name in self.symbols else -1
            if sid < 0:
                raise ValueError(f"history names {name!r}, which is not one of the pipeline's symbols")
            if len(closes):
                self._streams[sid].warmup(closes)
