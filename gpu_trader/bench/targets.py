"""The benchmark cases' performance targets as data, and their evaluation.

Each :class:`Target` carries the published plan's target and our own, each as a
human-readable text plus machine-checkable :class:`Check` s on a case's metrics.
Metric names (all floats; see :meth:`gpu_trader.bench.harness.CaseResult.metrics`):

* ``p50_s``       median latency of one call, seconds (``p95_s``, ``p99_s`` likewise);
* ``throughput_per_s`` workload items per second at the p50 latency;
* ``ratio:NAME``  reference NAME's p50 / our p50 (> 1: we are faster);
* ``x_copy``      our p50 / p50 of copying the case's inputs (to fresh arrays) on the
  same device;
* ``bw_fraction`` our bytes moved (inputs read + outputs written) per second /
  the device's copy bandwidth measured in the same run (1.0 = at the roofline);
* ``gemm_fraction`` the case's flops per second / the device's matmul rate measured
  in the same run (``gemm_rate_flops``, FLOP/s);
* ``x_roofline``  (Monte Carlo) our p50 / the time to draw the scenarios' normals at
  the backend's measured generation rate plus the loss GEMM at the measured matmul rate;
* any name a workload's own ``extra_metrics`` returns (e.g. the end-to-end suite's
  per-event ``event_p50_s``).

Peer targets: ``ratio:NAME >= 1`` on the cpu backend asks our CPU code to be at least as
fast as the call a user would otherwise make (TA-Lib, empyrical, NumPy, the jax backend),
timed interleaved with ours in the same run; a peer that cannot run here (module missing,
too old) leaves the ratio missing, so the verdict is n/a, not FAIL. A peer measured at one
size of a family of cases gets its own key (``features.sma_100``, ``risk.corr_50``).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

__all__ = ["Check", "Target", "Verdict", "TARGETS", "evaluate"]

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class Check:
    """``metric op limit``, optionally only on some backends (empty: every backend)."""

    metric: str
    op: str
    limit: float
    backends: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"op must be one of {sorted(_OPS)}, got {self.op!r}")

    def applies_to(self, backend: str) -> bool:
        return not self.backends or backend in self.backends

    def describe(self) -> str:
        return f"{self.metric} {self.op} {self.limit:g}"


@dataclass(frozen=True)
class Target:
    """One case's targets: what the plan asks and what we ask of ourselves
    (docs/design.md#benchmarks-and-targets)."""

    key: str
    case: str
    plan_text: str
    ours_text: str
    plan: tuple[Check, ...] = ()
    ours: tuple[Check, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """``status`` is PASS, FAIL, n/a (a needed metric is missing) or - (no target here)."""

    status: str
    failures: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"status": self.status, "failures": list(self.failures), "missing": list(self.missing)}


NO_TARGET = Verdict("-")


def evaluate(checks: tuple[Check, ...], metrics: dict[str, float | None], backend: str) -> Verdict:
    """Apply the checks that concern ``backend`` to ``metrics``.

    FAIL when any check fails; otherwise n/a when a metric is missing (None or
    absent, e.g. TA-Lib not installed); otherwise PASS; ``-`` when no check applies.
    """
    active = [c for c in checks if c.applies_to(backend)]
    if not active:
        return NO_TARGET
    failures, missing = [], []
    for c in active:
        value = metrics.get(c.metric)
        if value is None:
            missing.append(c.metric)
        elif not _OPS[c.op](value, c.limit):
            failures.append(f"{c.metric} = {value:.4g}, needs {c.op} {c.limit:g}")
    status = "FAIL" if failures else "n/a" if missing else "PASS"
    return Verdict(status, tuple(failures), tuple(missing))


def _p50_below(seconds: float) -> tuple[Check, ...]:
    return (Check("p50_s", "<", seconds),)


_US = 1e-6
_BATCH_COPY = (
    Check("x_copy", "<=", 2.5, ("cpu",)),
    Check("bw_fraction", ">=", 0.5, ("cuda",)),
)


def _cpu_peer(reference: str, at_least: float = 1.0) -> tuple[Check, ...]:
    """The CPU backend at least ``at_least`` times as fast as ``reference`` timed in the same
    run (``ratio:<reference> >= at_least``; n/a, not FAIL, when the reference could not run)."""
    return (Check(f"ratio:{reference}", ">=", at_least, ("cpu",)),)


_BATCH_TALIB = _cpu_peer("talib", 3.0)
_BATCH_TEXT = "CPU >= 3x TA-Lib looped, <= 2.5x copy time; GPU >= 50% copy bandwidth"


def _with_peer(base: Target, key: str, case: str, reference: str, peer_text: str) -> Target:
    """``base`` plus :func:`_cpu_peer` of ``reference``, under a new ``key`` (for one size of
    ``base``'s cases: the size the peer comparison is published for)."""
    return Target(key, case, base.plan_text, f"{base.ours_text}; CPU >= {peer_text}", base.plan,
                  base.ours + _cpu_peer(reference))


def _overhead_within(latency_s: float, budget_s: float) -> tuple[Check, ...]:
    """``ours <= sleep + budget`` as a ratio check: ``sleep / ours >= L / (L + budget)``
    with the nominal latency L (the measured sleep is slightly longer, so this allows a
    few percent more than ``budget``)."""
    return (Check("ratio:sleep", ">=", latency_s / (latency_s + budget_s)),)


def orders_targets() -> tuple[Target, ...]:
    """The ``orders`` suite's targets."""
    out = [
        Target("orders.create", "order creation (market, limit, stop)", "< 1 ms", "< 5 us",
               _p50_below(1000 * _US), _p50_below(5 * _US)),
        Target("orders.validate", "validation (request + portfolio checks)", "< 2 ms", "< 20 us",
               _p50_below(2000 * _US), _p50_below(20 * _US)),
    ]
    for ms in (5, 10, 50):
        out.append(Target(f"orders.place_{ms}ms", f"placement, {ms} ms simulated latency",
                          "< 10 ms internal overhead", "< 200 us overhead beyond the latency",
                          _overhead_within(ms * 1e-3, 10e-3), _overhead_within(ms * 1e-3, 200 * _US)))
    out += [
        Target("orders.batch", "batch placement (concurrent), 10 ms latency", "10 in < 100 ms",
               "20 in ~ one latency + < 1 ms", _p50_below(100e-3), _overhead_within(10e-3, 1e-3)),
        Target("orders.manage", "cancellation, routing, manager submit/track", "(none)", "< 20 us",
               (), _p50_below(20 * _US)),
        Target("orders.submit_sequence", "manager submit/track, 10 in sequence in one loop run", "(none)",
               "< 20 us each", (), _p50_below(200 * _US)),
        Target("orders.memory", "manager memory per 100K orders (bounded history)", "(none)", "< 20 MB",
               (), (Check("memory_per_100k_orders_bytes", "<", 20e6),)),
    ]
    return tuple(out)


def sizing_targets() -> tuple[Target, ...]:
    """Issue 17's sizing, stops and exposure cases (in the ``portfolio`` suite), and the realized
    P&L and drawdown cases the plan lists. Batched: the CPU at least as fast as a NumPy
    expression computing the same result (the chandelier: pandas' rolling max alone)."""
    return (
        Target("sizing.one_event", "position size, one event (five rules)", "(none)", "< 2 us",
               (), _p50_below(2 * _US)),
        Target("sizing.batch", "fixed fractional sizing, 1000 books x 500 symbols", "(none)",
               "CPU >= 0.8x the NumPy expression", (), _cpu_peer("numpy", 0.8)),
        Target("sizing.realized", "realized P&L, 50 positions", "< 1 ms", "< 20 us",
               _p50_below(1000 * _US), _p50_below(20 * _US)),
        Target("sizing.exposure_one", "exposure metrics, 100 positions", "(none)", "< 100 us",
               (), _p50_below(100 * _US)),
        Target("sizing.exposure_batch", "exposure metrics, 1000 books x 500 assets", "(none)",
               "CPU >= 0.6x the NumPy expression", (), _cpu_peer("numpy", 0.6)),
        Target("sizing.stop_stream", "trailing stop stream step, 500 symbols", "(none)", "< 100 us",
               (), _p50_below(100 * _US)),
        Target("sizing.stops_batch", "trailing stop, 500 symbols x 2520 bars", "(none)",
               "CPU >= np.fmax.accumulate of the candidates", (), _cpu_peer("numpy")),
        Target("sizing.chandelier", "chandelier exit, 500 symbols x 2520 bars", "(none)",
               "CPU >= pandas rolling max alone", (), _cpu_peer("pandas")),
        Target("sizing.drawdown", "max drawdown, 1000 books x 252 days", "(none)", "< 20 ms",
               (), _p50_below(20e-3)),
    )


def market_data_targets() -> tuple[Target, ...]:
    """The ``market_data`` suite's targets (memory per connection is checked by the tests, not timed)."""
    out = [
        Target(f"market_data.ingest_{n}", f"tick ingestion (parse + validate + append), {n} ticks",
               "< 100 us / tick", "< 2 us / tick", _p50_below(n * 100 * _US), _p50_below(n * 2 * _US))
        for n in (100, 1_000, 10_000)
    ]
    out += [
        Target("market_data.single_parse", "single tick JSON parse", "< 50 us", "< 5 us",
               _p50_below(50 * _US), _p50_below(5 * _US)),
        Target("market_data.batch_parse", "batch JSON parse, 10..1000 messages", "< 5 ms", "1000 msgs < 1 ms",
               _p50_below(5e-3), _p50_below(1e-3)),
        Target("market_data.quote_one", "quote processing, one quote", "< 50 us each", "(batched row)",
               _p50_below(50 * _US), ()),
    ]
    out += [
        Target(f"market_data.quotes_{n}", f"quote processing batched, {n} quotes", "> 10,000 quotes/s",
               "> 1,000,000 quotes/s batched", _p50_below(n / 1e4), _p50_below(n / 1e6))
        for n in (100_000, 1_000_000)
    ]
    out += [
        Target(f"market_data.bars_{b}", f"bar aggregation ticks -> OHLCV, {b} bars", f"< {ms} ms",
               "1440 bars < 0.5 ms", _p50_below(ms * 1e-3), _p50_below(0.5e-3))
        for b, ms in ((60, 0.5), (300, 2), (1440, 5))
    ]
    out.append(Target("market_data.read_parquet", "OHLCV panel from long Parquet, 500 symbols x 2520 bars",
                      "(none)", "CPU >= pyarrow + pandas pivot", (), _cpu_peer("pandas_pivot")))
    return tuple(out)


def feeds_targets() -> tuple[Target, ...]:
    """The ``feeds`` suite's targets (our own: the plan names none): decode < 2 us per message and
    no slower than orjson plus the same conversion by hand; > 10,000 one-trade frames/s through a
    local WebSocket (server and client on one core). Memory per connection is checked by the tests."""
    decode = [
        Target(f"feeds.decode_{fmt}", f"feed decode, {fmt} trades, 100 messages", "(none)",
               "< 2 us / message; CPU >= orjson + hand conversion", (), _p50_below(100 * 2 * _US) + _cpu_peer("orjson"))
        for fmt in ("alpaca", "polygon", "binance")
    ]
    return (*decode, Target("feeds.websocket", "frames through a WebSocketFeed, local server", "(none)",
                            "> 10,000 frames/s", (), (Check("throughput_per_s", ">", 1e4),)))


def strategies_targets() -> tuple[Target, ...]:
    """The ``strategies`` suite's targets."""
    return (
        Target("strategies.signal", "momentum / mean-reversion, 100 bars", "< 5 ms (signal)", "< 100 us",
               _p50_below(5e-3), _p50_below(100 * _US)),
        Target("strategies.multi", "multi-strategy, 2..10 strategies, 100 bars", "10 in < 50 ms", "10 in < 1 ms",
               _p50_below(50e-3), _p50_below(1e-3)),
        Target("strategies.update", "state update (one bar)", "< 500 us", "< 20 us",
               _p50_below(500 * _US), _p50_below(20 * _US)),
        Target("strategies.init", "initialization", "< 1 ms", "< 100 us", _p50_below(1e-3), _p50_below(100 * _US)),
        Target("strategies.sweep", "batched sweep, parameter sets x symbols x bars", "(none)", "GPU >= 20x CPU",
               (), (Check("ratio:cpu", ">=", 20.0, ("cuda",)),)),
    )


def end_to_end_targets() -> tuple[Target, ...]:
    """The ``end_to_end`` suite's targets: per-event latency (tick bytes in -> order handed to the
    manager) from the ``event_*`` metrics the suite records inside each replay, events/s,
    and a fresh process's cold start and resident memory."""
    return (
        Target("end_to_end.event", "tick -> bar -> signal -> risk check -> order, per event",
               "p50 < 50 ms, p95 < 200 ms, p99 < 500 ms", "p50 < 200 us, p99 < 1 ms, > 100,000 events/s",
               (Check("event_p50_s", "<", 50e-3), Check("event_p95_s", "<", 200e-3), Check("event_p99_s", "<", 0.5)),
               (Check("event_p50_s", "<", 200 * _US), Check("event_p99_s", "<", 1e-3),
                Check("throughput_per_s", ">", 100_000))),
        Target("end_to_end.metrics", "Prometheus metrics on vs off, per event (and p50 per stage)", "(none)",
               "< 1 us added per event at p50", (), (Check("metrics_cost_p50_s", "<", 1e-6),)),
        Target("end_to_end.cold_start", "fresh process: import + first event; resident memory", "(none)",
               "cold start < 500 ms, RSS < 1 GB",
               (), (Check("cold_start_s", "<", 0.5), Check("rss_bytes", "<", 1e9))),
    )


# One indicator on one series: key, label, plan text and p50 limit in us (None: no plan target),
# our p50 limit in us at 1000 bars.
_SINGLE = (
    ("sma", "SMA (10, 20, 50)", "SMA(20) < 200 us", 200, 10),
    ("ema", "EMA(20)", "(none)", None, 20),
    ("rsi", "RSI(14)", "< 300 us", 300, 20),
    ("macd", "MACD(12,26,9)", "< 500 us", 500, 20),
    ("bollinger", "Bollinger(20,2)", "(none)", None, 20),
    ("atr", "ATR(14)", "(none)", None, 20),
)


def single_indicator_targets() -> tuple[Target, ...]:
    """One indicator on one series: ``features.<name>``, a latency target for 20..1000 bars,
    and ``features.<name>_100`` for the 100-bar series: the same plus TA-Lib's call on that
    series as the CPU's peer."""
    out = []
    for name, label, plan_text, plan_us, ours_us in _SINGLE:
        base = Target(f"features.{name}", f"{label}, 20..1000 bars", plan_text, f"< {ours_us} us at 1000 bars",
                      () if plan_us is None else _p50_below(plan_us * _US), _p50_below(ours_us * _US))
        out += [base, _with_peer(base, f"features.{name}_100", f"{label}, one 100-bar series", "talib",
                                 "TA-Lib's call on the same series")]
    return tuple(out)


def _batched_below_full() -> tuple[Target, ...]:
    """``features.batched_small``, ``features.batched_sma_small``: the batched targets for the quick
    and standard sizes (200 and 500 x 2520), without the CPU's copy multiple (see the entries'
    comment; VWAP, one output for four inputs, keeps its copy multiple at every size)."""
    gpu = tuple(c for c in _BATCH_COPY if c.metric != "x_copy")
    bottleneck = (Check("ratio:bottleneck", ">=", 1 / 1.5, ("cpu",)),)
    return (
        Target("features.batched_small", "batched 200-500 x 2520, one indicator", "(none)",
               "CPU >= 3x TA-Lib looped; GPU >= 50% copy bandwidth", (), _BATCH_TALIB + gpu),
        Target("features.batched_sma_small", "batched 200-500 x 2520, SMA(20)", "(none)",
               "CPU >= 3x TA-Lib looped, within 1.5x of bottleneck.move_mean; GPU >= 50% copy bandwidth",
               (), _BATCH_TALIB + gpu + bottleneck),
    )


def risk_stream_targets() -> tuple[Target, ...]:
    """``RiskStream`` (streaming risk, every book per bar): far faster than recomputing the batch
    functions on the window each bar (peer ``batch``), and a warmup no slower than its updates."""
    far = _cpu_peer("batch", 10.0)
    return (
        Target("risk_stream.update", "streaming risk update (one new bar), 100 books x 50 assets", "(none)",
               "< 50 us; CPU >= 10x the batch functions on the window", (), _p50_below(50 * _US) + far),
        Target("risk_stream.update_1000", "streaming risk update (one new bar), 1000 books x 500 assets",
               "(none)", "CPU >= 10x the batch functions on the window", (), far),
        Target("risk_stream.warmup", "streaming risk warmup, 100 books x 50 assets x 2520 bars", "(none)",
               "CPU >= the same bars fed by update calls", (), _cpu_peer("updates")),
    )


_RISK_CORR = Target("risk.corr", "correlation matrix, 5..50 assets x 252 days", "20 assets < 20 ms",
                    "50 assets < 100 us", _p50_below(20_000 * _US), _p50_below(100 * _US))

_ALL = (
    # -- section 2: features ----------------------------------------------------------
    *single_indicator_targets(),
    Target("features.full", "full feature extraction (default set), 100 bars", "< 1 ms (single)",
           "< 50 us; CPU >= TA-Lib computing the same set", _p50_below(1000 * _US),
           _p50_below(50 * _US) + _cpu_peer("talib")),
    Target("features.stream", "streaming update (one new bar), one symbol, default set", "< 100 us",
           "< 10 us; CPU >= TA-Lib 0.8's stream handles for the same set", _p50_below(100 * _US),
           _p50_below(10 * _US) + _cpu_peer("talib_stream")),
    Target("features.batched", "batched 2000 x 2520, one indicator", "(none)", _BATCH_TEXT,
           (), _BATCH_TALIB + _BATCH_COPY),
    Target("features.batched_sma", "batched 2000 x 2520, SMA(20)", "(none)",
           _BATCH_TEXT + "; within 1.5x of bottleneck.move_mean",
           (), _BATCH_TALIB + _BATCH_COPY + (Check("ratio:bottleneck", ">=", 1 / 1.5, ("cpu",)),)),
    Target("features.batched_vwap", "batched 2000 x 2520, VWAP (not in TA-Lib)", "(none)",
           "CPU <= 2.5x copy time; GPU >= 50% copy bandwidth", (), _BATCH_COPY),
    # The same below the full size (``<key>_small``): no CPU copy multiple, as inputs of <= 10 MB copy
    # from cache while the outputs are fresh memory; the GPU's bandwidth check and the peers stay.
    *_batched_below_full(),
    # -- section 5: risk ----------------------------------------------------------------
    Target("risk.var_historical", "historical VaR, 252 days", "< 2 ms", "< 20 us",
           _p50_below(2000 * _US), _p50_below(20 * _US)),
    Target("risk.var_parametric", "parametric VaR, 252 days", "< 1 ms", "< 20 us",
           _p50_below(1000 * _US), _p50_below(20 * _US)),
    Target("risk.cvar", "CVaR, 252 days", "< 3 ms", "< 20 us; CPU >= empyrical",
           _p50_below(3000 * _US), _p50_below(20 * _US) + _cpu_peer("empyrical")),
    Target("risk.sharpe", "Sharpe, 252 days", "< 1 ms", "< 10 us; CPU >= empyrical",
           _p50_below(1000 * _US), _p50_below(10 * _US) + _cpu_peer("empyrical")),
    _RISK_CORR,
    _with_peer(_RISK_CORR, "risk.corr_50", "correlation matrix, 50 assets x 252 days", "numpy", "np.corrcoef"),
    Target("risk.var_historical_batch", "historical VaR, 2000 series x 2520 days in one call", "(none)",
           "CPU >= np.quantile(axis=1)", (), _cpu_peer("numpy")),
    Target("risk.rolling_corr", "rolling correlation matrices, 20 assets x 1260 days, window 63", "(none)",
           "CPU >= the jax backend (n/a without jax)", (), _cpu_peer("jax")),
    Target("risk.full", "full risk metrics, 50-position portfolio", "< 10 ms", "< 200 us",
           _p50_below(10_000 * _US), _p50_below(200 * _US)),
    *risk_stream_targets(),
    # -- sections 1 and 3: market data, strategies ----------------------------------
    *market_data_targets(),
    *feeds_targets(),
    *strategies_targets(),
    # -- section 4: orders (placement: overhead beyond the latency, via ratio:sleep; see orders_targets) --
    *orders_targets(),
    # -- section 6: portfolio (+ section 5's position limit check) --------------------
    Target("portfolio.position", "position update", "< 100 us", "< 5 us",
           _p50_below(100 * _US), _p50_below(5 * _US)),
    Target("portfolio.position_pair", "position add + remove (2 ops)", "< 100 us each", "< 5 us each",
           _p50_below(200 * _US), _p50_below(10 * _US)),
    Target("portfolio.unrealized", "unrealized P&L, one position", "< 50 us", "< 2 us",
           _p50_below(50 * _US), _p50_below(2 * _US)),
    Target("portfolio.total_pnl", "total P&L, 50 positions", "< 1 ms", "< 20 us",
           _p50_below(1000 * _US), _p50_below(20 * _US)),
    Target("portfolio.trade", "trade processing, single", "< 200 us", "< 5 us (100 in < 500 us)",
           _p50_below(200 * _US), _p50_below(5 * _US)),
    Target("portfolio.trade_batch", "trade processing, batch 10..100", "100 in < 10 ms", "100 in < 500 us",
           _p50_below(10_000 * _US), _p50_below(500 * _US)),
    Target("portfolio.snapshot", "snapshot, 10..100 positions", "50 in < 500 us", "< 50 us",
           _p50_below(500 * _US), _p50_below(50 * _US)),
    Target("portfolio.concurrent", "concurrent access, 2..8 threads", "8 threads < 5 ms", "no lost update, < 5 ms",
           _p50_below(5000 * _US), _p50_below(5000 * _US)),
    Target("portfolio.commission", "commission model (fixed, percentage, tiered)", "(none)", "< 5 us",
           (), _p50_below(5 * _US)),
    Target("portfolio.limit_check", "position limit check, 100 positions", "< 500 us", "< 10 us",
           _p50_below(500 * _US), _p50_below(10 * _US)),
    *sizing_targets(),
    # -- end to end -----------------------------------------------------------------------
    *end_to_end_targets(),
)

_FAISS_PARITY = (Check("ratio:faiss", ">=", 1 / 1.5, ("cpu",)),)
_MS = 1e-3

_ALL += (
    # -- section 7: vectors -----------------------------------------------------------
    Target("vectors.normalize", "normalize one vector, dim 128..1536", "< 10 us", "(ours: < 2 us at 384)",
           _p50_below(10 * _US), ()),
    Target("vectors.normalize_384", "normalize one vector, dim 384", "< 10 us", "< 2 us",
           _p50_below(10 * _US), _p50_below(2 * _US)),
    Target("vectors.cosine", "cosine of one pair, dim 128..1536", "< 5 us", "(ours: < 2 us at 384)",
           _p50_below(5 * _US), ()),
    Target("vectors.cosine_384", "cosine of one pair, dim 384", "< 5 us", "< 2 us",
           _p50_below(5 * _US), _p50_below(2 * _US)),
    Target("vectors.insert_one", "insert one vector, dim 384", "< 500 us", "< 20 us",
           _p50_below(500 * _US), _p50_below(20 * _US)),
    Target("vectors.insert_batch", "insert a batch of 100, dim 384", "< 5 ms", "< 500 us",
           _p50_below(5 * _MS), _p50_below(500 * _US)),
    Target("vectors.exact", "exact k-NN (k = 1, 5, 10, 20), 10K x 384, one query", "< 1 ms",
           "< 300 us single query (CPU)", _p50_below(1 * _MS), (Check("p50_s", "<", 300 * _US, ("cpu",)),)),
    Target("vectors.batched_exact_cpu", "batched exact k-NN, 1000 queries x 10K x 384 (CPU)", "(none)",
           "within 1.5x of FAISS IndexFlatIP", (), _FAISS_PARITY),
    Target("vectors.batched_exact", "batched exact k-NN, 1000 queries x 1M x 384", "(none)",
           "GPU >= 50% of matmul rate", (), (Check("ratio:gemm", ">=", 0.5, ("cuda",)),)),
    Target("vectors.l1_exact", "batched exact L1 k-NN, 100 queries x 10K x 128", "(none)",
           "within 1.5x of FAISS IndexFlat(METRIC_L1)", (), _FAISS_PARITY),
    Target("vectors.pairwise", "pairwise distances (l1, squared l2), 100 x 10K x 128", "(none)",
           "within 1.5x of faiss.pairwise_distances", (), _FAISS_PARITY),
    Target("vectors.compressed", "exact k-NN over compressed storage (int8, pq16, binary, pq32), 10K x 128",
           "(none)", "recall@10 and size reported per level (docs/ann_comparison.md)", (), ()),
    Target("vectors.approx", "approximate k-NN, 100K x 384", "< 1 ms", "< 200 us at recall@10 >= 0.95 (CPU)",
           _p50_below(1 * _MS), (Check("p50_s", "<", 200 * _US, ("cpu",)),)),
    Target("vectors.filtered", "pattern retrieval with metadata filter, 10K patterns", "< 500 us", "< 300 us",
           _p50_below(500 * _US), _p50_below(300 * _US)),
    Target("vectors.distill", "distillation (cluster into centroids), 100 patterns", "< 10 ms", "< 2 ms",
           _p50_below(10 * _MS), _p50_below(2 * _MS)),
    Target("vectors.embed_cache", "a rolling query's embedding of an unchanged window, LRU cache", "(none)",
           "CPU >= 5x the uncached embed", (), _cpu_peer("uncached", 5.0)),
    # -- trajectory store (issue 18) ----------------------------------------------------
    Target("trajectories.record", "record one trajectory of 50 steps, dim 64", "(none)", "< 300 us",
           (), _p50_below(300 * _US)),
    Target("trajectories.query", "10 most similar steps to one state, 10K steps x 64", "(none)",
           "< 300 us (CPU)", (), (Check("p50_s", "<", 300 * _US, ("cpu",)),)),
    Target("trajectories.verdict", "verdict (weighted mean, t-interval) over 10 neighbours, 10K steps x 64",
           "(none)", "< 400 us (CPU)", (), (Check("p50_s", "<", 400 * _US, ("cpu",)),)),
    # -- section 5: risk (Monte Carlo row) --------------------------------------------
    Target("risk.monte_carlo", "Monte Carlo VaR, 1000 assets x 1,000,000 scenarios, 1..1000 portfolios", "(none)",
           "GPU < 100 ms; CPU within 2x of GEMM+RNG roofline",
           (), (Check("p50_s", "<", 0.1, ("cuda",)), Check("x_roofline", "<=", 2.0, ("cpu",)))),
)

TARGETS: dict[str, Target] = {t.key: t for t in _ALL}
