"""Prometheus monitoring of the trading loop: every exported value is checked against what
the test itself counted, through a scrape of the real HTTP endpoint (urllib + the
prometheus_client text parser); stage histograms against a NumPy bucketing oracle."""
from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
import urllib.request

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gpu_trader import TradingPipeline
from gpu_trader.brokers import CircuitBreaker, SimulatedBroker
from gpu_trader.marketdata import MessageRejection, Tick
from gpu_trader.metrics import PipelineMetrics, StageRecorder, serve_metrics
from gpu_trader.order_manager import OrderManager, SymbolRouter
from gpu_trader.orders import OPEN, UNKNOWN, Order, OrderRejection, RiskLimits, limit_order, market_order
from gpu_trader.pipeline import STAGES
from gpu_trader.portfolio import Portfolio
from gpu_trader.strategies import Momentum

NAMES = ("AAA", "BBB", "CCC")
TF = 1_000  # ns per bar
T0 = 1_700_000_000_000_000_000
_enc = msgspec.json.encode


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_ticks(seed: int, n: int, n_sym: int = 3) -> list[tuple[int, int, float, float]]:
    rng = np.random.default_rng(seed)
    sid = rng.integers(0, n_sym, n)
    ts = T0 + np.cumsum(rng.integers(1, 120, n))
    level = np.full(n_sym, 100.0)
    out = []
    for i in range(n):
        level[sid[i]] *= math.exp(rng.normal(0, 0.02))
        out.append((int(sid[i]), int(ts[i]), float(level[sid[i]]), float(rng.integers(1, 50))))
    return out


def encode(tick) -> bytes:
    s, t, p, z = tick
    return _enc({"symbol": NAMES[s], "ts": t, "price": p, "size": z})


def scrape(url: str) -> dict:
    """``{(sample name, frozenset(labels)): value}`` of one scrape of the real endpoint."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


async def scrape_async(url: str) -> dict:
    """Scrape from a worker thread, so the pipeline's loop stays free to answer the read."""
    return await asyncio.get_running_loop().run_in_executor(None, scrape, url)


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


def labelled(samples: dict, name: str, label: str) -> dict:
    """``{label value: sample value}`` of every sample of ``name``."""
    return {dict(k[1])[label]: v for k, v in samples.items() if k[0] == name}


def check_histogram(samples: dict, stage: str, expected_count: int, recorder: StageRecorder) -> None:
    """Cumulative buckets monotone, +Inf == count == expected, and equal to NumPy's
    bucketing of the recorder's raw samples (``le`` = upper bound, inclusive)."""
    name = "gpu_trader_pipeline_stage_seconds"
    buckets = {k: v for k, v in samples.items() if k[0] == f"{name}_bucket" and ("stage", stage) in k[1]}
    by_le = sorted((float(dict(k[1])["le"]), v) for k, v in buckets.items())
    counts = [v for _, v in by_le]
    assert counts == sorted(counts), f"{stage}: buckets not monotone"
    assert by_le[-1][0] == math.inf and by_le[-1][1] == expected_count
    assert value(samples, f"{name}_count", stage=stage) == expected_count
    raw = recorder.recent(stage)  # every sample: the window exceeds the counts here
    assert len(raw) == expected_count
    oracle = [int(np.count_nonzero(raw <= round(le * 1e9))) for le, _ in by_le[:-1]]
    assert counts[:-1] == oracle
    assert value(samples, f"{name}_sum", stage=stage) == pytest.approx(raw.sum() * 1e-9, rel=1e-12)


def make_pipeline(*, clock=None, limits=RiskLimits(max_position_quantity=1.5)):
    """Pipeline on broker ``sim``; the manager also routes symbol ZZZ to ``deaf``, a broker
    that never answers (orders there stay in doubt)."""
    sim = SimulatedBroker("sim", latency_s=0.0)
    deaf = SimulatedBroker("deaf", latency_s=0.0, timeout_rate=1.0, hang_s=3600.0)
    manager = OrderManager([sim, deaf], portfolio=Portfolio(1e7), limits=limits, timeout_s=0.05,
                           resolve_attempts=0, router=SymbolRouter({"ZZZ": "deaf"}, ["sim", "deaf"]),
                           **({"clock": clock} if clock else {}))
    pipe = TradingPipeline(NAMES, Momentum(2, 5), manager, timeframe=TF, unit_quantity=1.0,
                           quote_sink=sim.set_price)
    return pipe, sim


def expected_bars(ticks) -> int:
    """Completed bars without a flush: per symbol, distinct bar buckets minus the open one."""
    buckets = {}
    for s, t, _, _ in ticks:
        buckets.setdefault(s, set()).add(t // TF)
    return sum(len(b) - 1 for b in buckets.values())


def test_scrape_of_the_endpoint_matches_what_the_test_counted():
    async def main():
        clock = FakeClock()
        pipe, sim = make_pipeline(clock=clock, limits=RiskLimits(max_position_quantity=1.5, max_order_quantity=1.5))
        metrics = PipelineMetrics(pipe, window=1 << 14)
        ticks = make_ticks(3, 600)
        bad = {  # message -> the reason the test expects
            b'{"symbol": "AAA", "ts": 1, "price": ': "malformed_json",
            b"not json": "malformed_json",
            _enc({"symbol": "AAA", "ts": 5, "price": -1.0, "size": 1}): "invalid_field",
            _enc({"symbol": "ZZZ", "ts": T0, "price": 1.0, "size": 1}): "unknown_symbol",
        }
        parse_level = {"malformed_json", "invalid_field"}
        expect_rejected: dict[str, int] = {}
        n_events = n_parse = n_bar = 0
        orders = 0
        risk: dict[str, int] = {}
        with serve_metrics(metrics) as server:
            for i, tick in enumerate(ticks):
                if i % 50 == 7:
                    for msg, reason in bad.items():
                        out = pipe.on_tick(msg)
                        assert isinstance(out, MessageRejection) and out.reason == reason
                        expect_rejected[reason] = expect_rejected.get(reason, 0) + 1
                        n_events += 1
                        n_parse += 1
                        n_bar += reason not in parse_level
                    # out of order: a tick before the symbol's latest one (decoded record, no parse)
                    late = Tick(NAMES[tick[0]], tick[1] - 1_000_000, 10.0, 1.0) if i else None
                    if late is not None and any(t[0] == tick[0] for t in ticks[:i]):
                        assert pipe.on_tick(late).reason == "out_of_order"
                        expect_rejected["out_of_order"] = expect_rejected.get("out_of_order", 0) + 1
                        n_events += 1
                        n_bar += 1
                if i % 3 == 0:  # every third tick as a decoded record: no parse stage
                    out = pipe.on_tick(Tick(NAMES[tick[0]], *tick[1:]))
                else:
                    out = pipe.on_tick(encode(tick))
                    n_parse += 1
                n_events += 1
                n_bar += 1
                if isinstance(out, Order):
                    orders += 1
                elif isinstance(out, OrderRejection):
                    risk[out.code] = risk.get(out.code, 0) + 1
                await pipe.drain()
            # an order resting at the venue, one in doubt at a venue that never answers
            resting = await pipe.manager.submit(limit_order("AAA", "buy", 0.25, 1e-3), price=1e-3)
            doubt = await pipe.manager.submit(market_order("ZZZ", "buy", 1), price=10.0)
            assert (resting.status, doubt.status) == (OPEN, UNKNOWN)
            breaker = pipe.manager.breakers["sim"]
            for _ in range(breaker.failure_threshold):  # trip it
                breaker.record_failure()
            samples = await scrape_async(server.url)

            stats = pipe.stats
            bars = expected_bars(ticks)
            assert stats.bars == bars and stats.deferred == 0 and orders > 0 and risk
            assert value(samples, "gpu_trader_pipeline_events_total") == stats.events == n_events
            assert value(samples, "gpu_trader_pipeline_accepted_total") == len(ticks)
            assert value(samples, "gpu_trader_pipeline_bars_total") == bars
            assert value(samples, "gpu_trader_pipeline_orders_total") == orders
            assert labelled(samples, "gpu_trader_pipeline_rejections_total", "reason") == expect_rejected
            assert labelled(samples, "gpu_trader_pipeline_risk_rejections_total", "code") == risk
            assert value(samples, "gpu_trader_orders_total", status="filled", code="") == orders
            assert value(samples, "gpu_trader_orders_open") == 1
            assert value(samples, "gpu_trader_orders_in_doubt") == 1
            assert value(samples, "gpu_trader_reconcile_backlog") == 2
            assert value(samples, "gpu_trader_orders_in_flight") == 0
            assert value(samples, "gpu_trader_breaker_state", broker="sim") == 1  # open
            assert value(samples, "gpu_trader_breaker_trips_total", broker="sim") == 1
            assert value(samples, "gpu_trader_breaker_state", broker="deaf") == 0
            rec = metrics.recorder
            for stage, count in zip(STAGES, (n_parse, n_bar, bars, bars, bars, bars, orders)):
                check_histogram(samples, stage, count, rec)
            rss = value(samples, "process_resident_memory_bytes")
            with open("/proc/self/statm") as f:
                resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            assert rss == pytest.approx(resident, rel=0.2)

            clock.now += breaker.cooldown_s  # cool-down over: half-open
            samples = await scrape_async(server.url)
            assert value(samples, "gpu_trader_breaker_state", broker="sim") == 2
            assert breaker.allow()
            breaker.record_failure()  # the trial failed: open again, a second trip
            samples = await scrape_async(server.url)
            assert value(samples, "gpu_trader_breaker_state", broker="sim") == 1
            assert value(samples, "gpu_trader_breaker_trips_total", broker="sim") == 2
            assert value(samples, "gpu_trader_pipeline_events_total") == stats.events  # nothing moved
        await pipe.manager.close()

    asyncio.run(main())


def test_breaker_trips_count_openings_not_failures():
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=2, cooldown_s=1.0, clock=clock)
    b.record_failure()
    assert b.trips == 0
    b.record_failure()
    b.record_failure()  # a late failure while open: no new trip
    assert (b.state, b.trips) == ("open", 1)
    clock.now = 1.0
    assert b.state == "half_open" and b.allow()
    b.record_success()
    b.record_failure()
    assert (b.state, b.trips) == ("closed", 1)
    b.record_failure()
    assert (b.state, b.trips) == ("open", 2)


@settings(max_examples=40, deadline=None)
@given(samples=st.lists(st.one_of(st.integers(0, 300_000_000),  # bounds themselves and their neighbours too
                                  st.sampled_from([0, 99, 100, 101, 200, 5_000, 99_999_999, 100_000_000, 100_000_001])),
                        max_size=300),
       folds=st.lists(st.integers(0, 300), max_size=4), window=st.integers(1, 64))
def test_stage_histogram_equals_numpy_bucketing(samples, folds, window):
    rec = StageRecorder(("a", "b"), window=window)
    bounds_ns = np.array([round(b * 1e9) for b in rec.bounds_s])
    cuts = sorted(set(folds) | {len(samples)})
    start = 0
    for cut in cuts:
        rec.pending[1].extend(samples[start:cut])  # what the hot path appends
        rec.fold()
        start = max(start, cut)
    h = rec.histogram("b")
    x = np.array(samples, dtype=np.int64)
    oracle = np.searchsorted(np.sort(x), bounds_ns, side="right")  # samples <= each bound
    assert list(h.cumulative[:-1]) == oracle.tolist()
    assert h.cumulative[-1] == h.count == len(samples)
    assert h.sum_s == pytest.approx(int(x.sum()) * 1e-9, rel=1e-15, abs=0)
    assert rec.recent("b").tolist() == samples[-window:]
    assert rec.histogram("a").count == 0 and len(rec.recent("a")) == 0
    if samples:
        assert rec.quantile("b", 0.5) == pytest.approx(np.quantile(x[-window:], 0.5) * 1e-9)


def test_lap_records_elapsed_time_and_folds_lose_nothing_under_a_concurrent_reader():
    import threading

    rec = StageRecorder(("x",), window=8)
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            rec.fold()

    t = threading.Thread(target=reader)
    t.start()
    try:
        start = time.perf_counter_ns()
        for _ in range(20_000):
            start = rec.lap(0, start)
    finally:
        stop.set()
        t.join()
    assert rec.histogram("x").count == 20_000


def ticks_and_records(seed: int):
    ticks = make_ticks(seed, 300)
    return [encode(t) for t in ticks], [Tick(NAMES[t[0]], *t[1:]) for t in ticks]


def test_metrics_off_records_nothing_and_close_detaches():
    async def main():
        pipe, _ = make_pipeline()
        messages, _ = ticks_and_records(2)
        assert pipe.stage_recorder is None
        await pipe.run(messages[:50])
        registry = CollectorRegistry()
        metrics = PipelineMetrics(pipe, registry=registry, process=False)
        assert pipe.stage_recorder is metrics.recorder
        await pipe.run(messages[50:100])
        assert metrics.recorder.histogram("parse").count == 50
        assert metrics.snapshot().events == 100
        with pytest.raises(ValueError, match="Duplicated"):
            PipelineMetrics(pipe, registry=registry, process=False)
        assert pipe.stage_recorder is metrics.recorder  # the failed second binding left it alone
        metrics.close()
        metrics.close()
        assert pipe.stage_recorder is None and list(registry.collect()) == []
        await pipe.run(messages[100:150])
        assert metrics.recorder.histogram("parse").count == 50
        await pipe.manager.close()

    asyncio.run(main())


def test_a_scrape_while_the_loop_is_blocked_reads_directly_and_unreadable_counts_are_nan(monkeypatch):
    import gpu_trader.metrics as metrics_module

    monkeypatch.setattr(metrics_module, "READ_TIMEOUT_S", 0.05)

    async def main():
        pipe, _ = make_pipeline()
        messages, _ = ticks_and_records(4)
        metrics = PipelineMetrics(pipe, process=False)  # bound to this loop
        with serve_metrics(metrics) as server:
            for m in messages[:40]:
                pipe.on_tick(m)
            samples = scrape(server.url)  # blocks the loop: the read on it times out, then reads directly
            assert value(samples, "gpu_trader_pipeline_events_total") == 40
            assert value(samples, "gpu_trader_pipeline_stage_seconds_count", stage="parse") == 40

            def racing():
                raise RuntimeError("dictionary changed size during iteration")

            monkeypatch.setattr(pipe.manager, "open_orders", racing)
            samples = await scrape_async(server.url)
            assert math.isnan(value(samples, "gpu_trader_orders_open"))
            assert math.isnan(value(samples, "gpu_trader_reconcile_backlog"))
            assert value(samples, "gpu_trader_orders_in_doubt") == 0
        await pipe.manager.close()

    asyncio.run(main())


def test_bad_arguments_name_the_argument():
    pipe, _ = make_pipeline()
    with pytest.raises(TypeError, match="pipeline"):
        PipelineMetrics(None)
    with pytest.raises(TypeError, match="registry"):
        PipelineMetrics(pipe, registry={})
    with pytest.raises(ValueError, match="namespace"):
        PipelineMetrics(pipe, namespace="bad name")
    with pytest.raises(ValueError, match="window"):
        PipelineMetrics(pipe, window=0)
    with pytest.raises(TypeError, match="enabled"):
        pipe.record_stages("yes")
    assert pipe.stage_recorder is None
    metrics = PipelineMetrics(pipe, process=False)
    with pytest.raises(TypeError, match="metrics"):
        serve_metrics(pipe)
    with pytest.raises(ValueError, match="port"):
        serve_metrics(metrics, port=70_000)
    with pytest.raises(TypeError, match="addr"):
        serve_metrics(metrics, addr=None)
    for bad, exc in [((), ValueError), ((2e-7, 1e-7), ValueError), ((math.nan,), ValueError), ("1", TypeError),
                     ((True,), TypeError), ((0.0,), ValueError)]:
        with pytest.raises(exc, match="buckets"):
            StageRecorder(("a",), buckets=bad)
    with pytest.raises(ValueError, match="stages"):
        StageRecorder(("a", "a"))
    with pytest.raises(ValueError, match="stage must be one of"):
        metrics.stage_quantile("nope", 0.5)
    with pytest.raises(ValueError, match="q must be"):
        metrics.stage_quantile("parse", 1.5)


def test_cli_serve_metrics_replays_and_serves_what_it_replayed(tmp_path):
    ticks = make_ticks(11, 400)
    lines = [encode(t) for t in ticks]
    lines.insert(10, b'{"symbol": "AAA", "ts": 1, "price": ')
    lines.insert(20, _enc({"symbol": "QQQ", "ts": T0, "price": 5.0, "size": 1}))
    lines.insert(30, b"x" * 70_000)  # longer than a tick message may be
    path = tmp_path / "ticks.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gpu_trader.cli", "serve-metrics", "--replay", str(path),
                             "--port", "0", "--duration", "60", "--symbols", ",".join(NAMES),
                             "--timeframe", f"{TF}ns"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        first = proc.stdout.readline().decode()
        assert first.startswith("serving metrics at http://127.0.0.1:"), first + proc.stderr.read().decode()
        url = first.split()[-1]
        summary = proc.stdout.readline().decode()
        assert summary.startswith(f"replayed {len(lines)} events"), summary
        samples = scrape(url)
    finally:
        proc.terminate()
        proc.wait(30)
    assert value(samples, "gpu_trader_pipeline_events_total") == len(lines)
    assert value(samples, "gpu_trader_pipeline_accepted_total") == len(ticks)
    assert value(samples, "gpu_trader_pipeline_bars_total") == expected_bars(ticks)
    assert labelled(samples, "gpu_trader_pipeline_rejections_total", "reason") == {
        "malformed_json": 1, "unknown_symbol": 1, "too_large": 1}
    assert value(samples, "gpu_trader_pipeline_stage_seconds_count", stage="parse") == len(lines)


def test_cli_serve_metrics_refuses_a_missing_file(tmp_path, capsys):
    from gpu_trader.cli import main

    with pytest.raises(SystemExit) as err:
        main(["serve-metrics", "--replay", str(tmp_path / "missing.jsonl"), "--port", "0", "--duration", "0"])
    assert err.value.code == 2 and "--replay" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"not a tick\n")
    with pytest.raises(SystemExit):
        main(["serve-metrics", "--replay", str(empty), "--port", "0"])
    assert "no valid tick" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve-metrics", "--replay", str(empty), "--port", "70000"])
    assert "TCP port" in capsys.readouterr().err


def test_cli_serve_metrics_finds_the_symbols_and_stops_after_the_duration(tmp_path, capsys):
    from gpu_trader.cli import main

    ticks = make_ticks(12, 60, n_sym=2)
    path = tmp_path / "ticks.jsonl"
    path.write_bytes(b"\r\n".join(encode(t) for t in ticks))  # CRLF, no final line break
    assert main(["serve-metrics", "--replay", str(path), "--port", "0", "--duration", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("serving metrics at http://127.0.0.1:")
    assert out[1].startswith(f"replayed {len(ticks)} events: {len(ticks)} accepted, 0 rejected")
