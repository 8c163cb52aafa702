"""The ``end_to_end`` suite: tick in -> bar -> signal -> risk check -> order out (docs/design.md#benchmarks-and-targets).

What one event is and what is timed (CPU only; other backends skip):

* **event** = one tick message (JSON bytes) handed to
  :meth:`gpu_trader.TradingPipeline.on_tick`; its **latency** is the wall time of that
  call: parse + validate, bar update, and, when the tick completes a bar, portfolio
  mark, strategy update (``StrategyRunner([Momentum(5, 20), MeanReversion(20, 2)])``,
  per symbol), pre-trade risk check against the portfolio (every limit active) and
  ``OrderManager.submit_nowait`` of the resulting order. The broker round trip runs
  later as an asyncio task and is not part of the event (the simulated broker answers
  with ``latency_s=0``; the targets exclude the network).
* **throughput** = events / wall time of replaying a recorded stream: one timed call
  is ``pipeline.reset()`` (a new session, so the same recording can be replayed) + the
  whole stream through ``on_tick`` (each call bracketed by ``perf_counter_ns``), an
  ``await asyncio.sleep(0)`` every 64 events (the broker tasks and fills run there)
  and the final drain; so the broker's in-process work and the fills *are* included.
  The table's p50 is that of the whole replay; the per-event percentiles
  (``event_p50_s``, ``event_p95_s``, ``event_p99_s``, and over the events that
  completed a bar or handed out an order) are the ``on_tick`` samples of every call but
  the first, reported as metrics and checked against the targets. The garbage
  collector stays on during the replay, as in a live loop, so its pauses are in the tail.
* The same stream against a broker with 5 ms network latency: the per-event figures do
  not include the round trip (orders are in flight while ticks keep coming; a newer
  signal for a symbol waits for its order, ``deferred``), and the replay's wall time
  includes at most one latency for the final drain.
* The recording: S symbols, 100 ms bars with ~5 ticks per symbol and bar (about one
  event in five completes a bar), random-walk prices, and one message in 200 bad
  (malformed JSON, NaN price, unknown symbol, out-of-order timestamp), which the
  pipeline rejects and counts.
* **cold start** = a fresh ``python`` process: ``import asyncio, gpu_trader`` + building
  broker, manager and pipeline + the events up to and including the first one that
  completes a bar (so the strategy's compiled code is loaded), measured inside the
  process (``cold_start_s``; the interpreter's own start-up and reading the recording
  from stdin excluded; the table's p50 includes them). The compiled kernels come from
  numba's on-disk cache (written by the first process ever, or by the event case above;
  a first run after installing compiles, seconds); ``first_cold_start_s`` is the
  harness's first, untimed process (cold OS file cache).
  The process then replays the recording; ``rss_bytes`` is its own peak resident set,
  which includes NumPy's and numba's footprint: ``VmHWM``, read by the process itself just
  before it exits (:func:`gpu_trader.bench.memory.peak_resident_bytes`; not ``ru_maxrss``,
  which a child inherits from the large bench process that starts it).
* **metrics cost**: the same recording replayed through two pipelines event by event, in
  turns (which one goes first alternates), one with :class:`gpu_trader.metrics.PipelineMetrics`
  bound (every stage timed), one without; ``metrics_cost_p50_s`` is the difference of
  their per-event p50 latencies (``event_p50_metrics_on_s`` - ``event_p50_metrics_off_s``;
  target < 1 us), and ``stage_<stage>_p50_s`` the median time of each stage (parse, bar,
  mark, signal, risk, order) over its latest ``events`` samples (the recorder's window: the
  last replay for parse and bar, several replays for the per-bar stages), from the
  pipeline's own stage recorder.
  The table's p50 is that of one replay through both pipelines.
* ``pipeline_bytes``: Python heap held (``tracemalloc``, after a first pipeline has
  loaded the compiled code) by building a pipeline and replaying the recording once:
  its state plus the order manager's per-order history (kept for idempotency) and the
  per-event samples of that replay.

Thread pools: the one-event path runs no parallel region (one symbol per strategy
stream); nothing to pin.
"""
from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import time
import tracemalloc

import msgspec
import numpy as np

from ..harness import SkipCase, TimingPolicy, Workload

__all__ = ["workloads"]

NS = 10**9
T0 = 1_700_000_000 * NS
TIMEFRAME = "100ms"
TICKS_PER_BAR = 5
BAD_EVERY = 200
YIELD_EVERY = 64
STREAMS = {"quick": (10, 2_000), "standard": (50, 20_000), "full": (50, 20_000)}  # symbols, events per replay
# A fresh process takes most of a second: the standard run starts 1 + 5 of them (the run's policy otherwise).
COLD_START_POLICIES = {"standard": TimingPolicy(warmup_calls=1, warmup_s=0.0, min_samples=5, max_samples=5,
                                                budget_s=0.0)}
BROKER_LATENCY_MS = 5


def _cpu_only(be) -> None:
    if be.name != "cpu":
        raise SkipCase("the one-event trading path runs on the host (CPU)")


def _names(n_symbols: int) -> list[str]:
    return [f"S{i:03d}" for i in range(n_symbols)]


def recording(n_symbols: int, n_events: int, seed: int = 0) -> list[bytes]:
    """A recorded tick stream (see module doc): valid ticks with one bad message in
    ``BAD_EVERY``, cycling malformed JSON, NaN price, unknown symbol, out-of-order ts."""
    rng = np.random.default_rng(seed)
    names = _names(n_symbols)
    sym = rng.integers(0, n_symbols, n_events)
    gap = 0.1 * NS / (TICKS_PER_BAR * n_symbols)
    ts = T0 + np.cumsum(rng.integers(1, int(2 * gap), n_events))
    logp = rng.normal(0, 5e-4, n_events)
    price = np.empty(n_events)
    for s in range(n_symbols):
        mine = sym == s
        price[mine] = 100 * np.exp(np.cumsum(logp[mine]))
    size = rng.integers(1, 500, n_events)
    enc = msgspec.json.encode
    out, last = [], {}
    for i in range(n_events):
        s = int(sym[i])
        if i % BAD_EVERY == BAD_EVERY - 1:
            kind = (i // BAD_EVERY) % 4
            if kind == 0:
                out.append(b'{"symbol":"S000","ts":1,"price":')
            elif kind == 1:
                out.append(b'{"symbol":"%s","ts":%d,"price":NaN,"size":1}' % (names[s].encode(), int(ts[i])))
            elif kind == 2:
                out.append(enc({"symbol": "ZZZZ", "ts": int(ts[i]), "price": 10.0, "size": 1}))
            else:  # before the latest ts of a symbol already seen
                s = s if s in last else next(iter(last))
                out.append(enc({"symbol": names[s], "ts": last[s] - 1, "price": 10.0, "size": 1}))
            continue
        last[s] = int(ts[i])
        out.append(enc({"symbol": names[s], "ts": int(ts[i]), "price": round(float(price[i]), 4),
                        "size": int(size[i])}))
    return out


def build_pipeline(n_symbols: int, latency_s: float = 0.0):
    """Broker (``latency_s``), manager with every risk limit active, pipeline; the shared setup."""
    from ... import (
        MeanReversion, Momentum, OrderManager, Portfolio, RiskLimits, SimulatedBroker, StrategyRunner,
        TradingPipeline,
    )

    names = _names(n_symbols)
    broker = SimulatedBroker("sim", latency_s=latency_s)
    limits = RiskLimits(max_order_quantity=1_000, max_order_notional=1e6, max_position_quantity=500,
                        max_position_notional=1e6, symbols=frozenset(names))
    manager = OrderManager(broker, portfolio=Portfolio(1e8), limits=limits)
    strategy = StrategyRunner([Momentum(5, 20), MeanReversion(20, 2.0)])
    return TradingPipeline(names, strategy, manager, timeframe=TIMEFRAME, unit_quantity=100.0,
                           quote_sink=broker.set_price)


async def _replay(state) -> None:
    """One replay with the garbage collector on (a live loop has it on; the harness turns
    it off around its samples), per-event samples kept from the second call on."""
    gc_was_enabled = gc.isenabled()
    gc.enable()
    try:
        await _replay_events(state)
    finally:
        if not gc_was_enabled:
            gc.disable()


async def _replay_events(state) -> None:
    from ...orders import Order

    pipe, messages = state["pipe"], state["messages"]
    pipe.reset()
    on_tick, stats, clock = pipe.on_tick, pipe.stats, time.perf_counter_ns
    lat, bar_idx, order_idx = [], [], []
    before = (stats.orders, stats.bars, stats.n_rejected)
    k = 0
    for i, m in enumerate(messages):
        bars = stats.bars
        t0 = clock()
        out = on_tick(m)
        t1 = clock()
        lat.append(t1 - t0)
        if stats.bars != bars:
            bar_idx.append(i)
            if type(out) is Order:
                order_idx.append(i)
        k += 1
        if k == YIELD_EVERY:
            k = 0
            await asyncio.sleep(0)
    await pipe.drain()
    state["calls"] += 1
    if state["calls"] > 1:  # the first replay warms caches and allocators
        state["counts"].append(np.subtract((stats.orders, stats.bars, stats.n_rejected), before))
        state["lat"].append(np.asarray(lat, dtype=np.int64))
        state["bar"].append(np.asarray(bar_idx, dtype=np.int64) + state["offset"])
        state["order"].append(np.asarray(order_idx, dtype=np.int64) + state["offset"])
        state["offset"] += len(lat)


def _pct(ns: np.ndarray, q: float) -> float:
    return float(np.percentile(ns, q)) * 1e-9 if len(ns) else float("nan")


def _event_metrics(state, backend=None, policy=None, measured=None) -> dict[str, float]:
    lat = np.concatenate(state["lat"])
    bars = lat[np.concatenate(state["bar"])]
    orders = lat[np.concatenate(state["order"])]
    orders_, bars_, rejected = np.mean(state["counts"], axis=0)
    return {
        "event_p50_s": _pct(lat, 50), "event_p95_s": _pct(lat, 95), "event_p99_s": _pct(lat, 99),
        "event_max_s": float(lat.max()) * 1e-9,
        "bar_event_p50_s": _pct(bars, 50), "bar_event_p99_s": _pct(bars, 99),
        "order_event_p50_s": _pct(orders, 50), "order_event_p99_s": _pct(orders, 99),
        "orders_per_replay": orders_, "bars_per_replay": bars_, "rejected_per_replay": rejected,
        "pipeline_bytes": state["pipeline_bytes"],
    }


def _event_stream(n_symbols: int, n_events: int, latency_ms: int = 0) -> Workload:
    def setup(be):
        _cpu_only(be)
        messages = recording(n_symbols, n_events)
        loop = asyncio.new_event_loop()
        fresh = {"messages": messages, "calls": 0, "lat": [], "bar": [], "order": [], "counts": [], "offset": 0}
        latency_s = latency_ms / 1000
        loop.run_until_complete(_replay({**fresh, "pipe": build_pipeline(n_symbols, latency_s)}))  # loads the code
        tracemalloc.start()
        state = {**fresh, "pipe": build_pipeline(n_symbols, latency_s)}
        loop.run_until_complete(_replay(state))
        state["pipeline_bytes"] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        state["calls"] = 0
        state["loop"] = loop
        return state

    where = f", broker latency {latency_ms} ms" if latency_ms else ""
    return Workload(name=f"tick stream, {n_symbols} symbols, {n_events} events per replay{where}",
                    sizes={"symbols": n_symbols, "events": n_events, "latency_ms": latency_ms}, setup=setup,
                    run=lambda s: s["loop"].run_until_complete(_replay(s)), items=n_events, unit="event",
                    target="end_to_end.event", extra_metrics=_event_metrics)


_COLD = r"""
import sys
n_symbols, timeframe = int(sys.argv[1]), sys.argv[2]
messages = sys.stdin.buffer.read().split(b"\n")
import time
t0 = time.perf_counter()
import asyncio
import gpu_trader as gt

async def main():
    names = [f"S{i:03d}" for i in range(n_symbols)]
    broker = gt.SimulatedBroker("sim", latency_s=0.0)
    limits = gt.RiskLimits(max_order_quantity=1_000, max_order_notional=1e6, max_position_quantity=500,
                           max_position_notional=1e6, symbols=frozenset(names))
    manager = gt.OrderManager(broker, portfolio=gt.Portfolio(1e8), limits=limits)
    strategy = gt.StrategyRunner([gt.Momentum(5, 20), gt.MeanReversion(20, 2.0)])
    pipe = gt.TradingPipeline(names, strategy, manager, timeframe=timeframe, unit_quantity=100.0,
                              quote_sink=broker.set_price)
    i = 0
    while pipe.stats.bars == 0:
        pipe.on_tick(messages[i])
        i += 1
    cold = time.perf_counter() - t0
    await pipe.run(messages[i:])
    return cold, pipe.stats

cold, stats = asyncio.run(main())
import json
from gpu_trader.bench.memory import peak_resident_bytes
print(json.dumps({"cold_start_s": cold, "rss_bytes": peak_resident_bytes(),
                  "events": stats.events, "orders": stats.orders}))
"""


def _replay_pair(state) -> None:
    """One replay through both pipelines in turns, gc on (see module doc); samples kept
    from the second call on."""
    gc_was_enabled = gc.isenabled()
    gc.enable()
    try:
        state["loop"].run_until_complete(_replay_pair_events(state))
    finally:
        if not gc_was_enabled:
            gc.disable()


async def _replay_pair_events(state) -> None:
    on, off = state["on"], state["off"]
    on.reset()
    off.reset()
    tick_on, tick_off, clock = on.on_tick, off.on_tick, time.perf_counter_ns
    lat_on, lat_off = [], []
    for i, m in enumerate(state["messages"]):
        if i & 1:
            t0 = clock()
            tick_on(m)
            t1 = clock()
            tick_off(m)
            t2 = clock()
            lat_on.append(t1 - t0)
            lat_off.append(t2 - t1)
        else:
            t0 = clock()
            tick_off(m)
            t1 = clock()
            tick_on(m)
            t2 = clock()
            lat_off.append(t1 - t0)
            lat_on.append(t2 - t1)
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)
    await on.drain()
    await off.drain()
    state["calls"] += 1
    if state["calls"] > 1:
        state["lat_on"].append(np.asarray(lat_on, dtype=np.int64))
        state["lat_off"].append(np.asarray(lat_off, dtype=np.int64))


def _metrics_cost_metrics(state, backend=None, policy=None, measured=None) -> dict[str, float]:
    from ...pipeline import STAGES

    on = np.concatenate(state["lat_on"])
    off = np.concatenate(state["lat_off"])
    out = {"event_p50_metrics_on_s": _pct(on, 50), "event_p50_metrics_off_s": _pct(off, 50)}
    out["metrics_cost_p50_s"] = out["event_p50_metrics_on_s"] - out["event_p50_metrics_off_s"]
    for stage in STAGES:
        out[f"stage_{stage}_p50_s"] = state["metrics"].stage_quantile(stage, 0.5)
    return out


def _metrics_cost(n_symbols: int, n_events: int) -> Workload:
    def setup(be):
        from ...metrics import PipelineMetrics

        _cpu_only(be)
        loop = asyncio.new_event_loop()
        on = build_pipeline(n_symbols)
        metrics = PipelineMetrics(on, window=n_events, loop=loop, process=False)
        state = {"messages": recording(n_symbols, n_events), "on": on, "off": build_pipeline(n_symbols),
                 "metrics": metrics, "loop": loop, "calls": 0, "lat_on": [], "lat_off": []}
        _replay_pair(state)  # loads the code
        return state

    return Workload(name=f"metrics on vs off, per event and per stage ({n_symbols} symbols, {n_events} events)",
                    sizes={"symbols": n_symbols, "events": n_events}, setup=setup, run=_replay_pair,
                    items=2 * n_events, unit="event", target="end_to_end.metrics",
                    extra_metrics=_metrics_cost_metrics)


def _cold_run(state) -> dict:
    proc = subprocess.run([sys.executable, "-c", _COLD, str(state["symbols"]), TIMEFRAME], input=state["stdin"],
                          capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"cold-start process failed: {proc.stderr.decode(errors='replace').strip()[-500:]}")
    out = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    state["runs"].append(out)
    return out


def _cold_metrics(state, backend=None, policy=None, measured=None) -> dict[str, float | None]:
    """Median cold start (the first process aside), the first one, and the largest child peak
    resident set (None where the children could not read theirs)."""
    runs = state["runs"]
    peaks = [r["rss_bytes"] for r in runs]
    return {
        "cold_start_s": float(np.median([r["cold_start_s"] for r in runs[1:]])),
        "first_cold_start_s": runs[0]["cold_start_s"],
        "rss_bytes": None if None in peaks else max(peaks),
    }


def _cold_start(n_symbols: int, n_events: int, policy: TimingPolicy | None = None) -> Workload:
    def setup(be):
        _cpu_only(be)
        return {"stdin": b"\n".join(recording(n_symbols, n_events)), "symbols": n_symbols, "runs": []}

    return Workload(name=f"cold start + RSS (fresh process, {n_symbols} symbols, {n_events} events)",
                    sizes={"symbols": n_symbols, "events": n_events}, setup=setup, run=_cold_run, items=1,
                    unit="process", target="end_to_end.cold_start", extra_metrics=_cold_metrics, policy=policy)


def workloads(size: str) -> list[Workload]:
    """The event, event-with-latency, metrics-cost and cold-start cases at ``size`` (``STREAMS``)."""
    n_symbols, n_events = STREAMS[size]
    return [_event_stream(n_symbols, n_events), _event_stream(n_symbols, n_events, BROKER_LATENCY_MS),
            _metrics_cost(n_symbols, n_events), _cold_start(n_symbols, n_events, COLD_START_POLICIES.get(size))]
