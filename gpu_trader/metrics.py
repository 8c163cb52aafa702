"""Prometheus monitoring of the trading loop (:class:`~gpu_trader.pipeline.TradingPipeline`).

:class:`PipelineMetrics` binds a pipeline (and through it its
:class:`~gpu_trader.order_manager.OrderManager`, the manager's brokers and their circuit
breakers) to a ``prometheus_client`` :class:`~prometheus_client.CollectorRegistry` (its
own by default; never the global one unless it is passed in), and
:func:`serve_metrics` exposes that registry over HTTP in one call. Nothing is updated
per event but the stage timings: every value is read from the pipeline's counters when
a scrape asks (a custom collector), and the stage latencies come from the pipeline's
:class:`StageRecorder` (three clock reads and two list appends per tick, folded into
bucket counts every 4096 events; see
:meth:`~gpu_trader.pipeline.TradingPipeline.record_stages`), so the loop pays about
0.5 us per event at p50 with metrics on and nothing with them off (the end-to-end
bench's ``metrics_cost_p50_s``).

Exported families (``gpu_trader`` is the default ``namespace``; counters end in ``_total``):

* ``gpu_trader_pipeline_stage_seconds{stage}`` -- histogram of each stage's wall time
  (stages ``parse``, ``bar``, ``mark``, ``signal``, ``risk``, ``order``; buckets from
  100 ns to 100 ms, 1-2-5 steps);
* ``gpu_trader_pipeline_events_total`` (ticks handed to the pipeline; events/s is its
  ``rate()``), ``gpu_trader_pipeline_events_per_second`` (the rate between the two
  latest scrapes of this collector, or since it was made), ``..._accepted_total``,
  ``..._bars_total``, ``..._orders_total`` (orders handed to the manager),
  ``..._deferred_total``, ``..._resubmitted_total``, ``..._reconciles_total``,
  ``..._errors_total``;
* ``gpu_trader_pipeline_rejections_total{reason}`` (refused ticks,
  :attr:`PipelineStats.rejected <gpu_trader.pipeline.PipelineStats>`),
  ``gpu_trader_pipeline_risk_rejections_total{code}`` (pre-trade refusals),
  ``gpu_trader_pipeline_skipped_records_total{type}`` (non-tick records of a feed);
* ``gpu_trader_orders_total{status,code}`` -- the final report of each order the
  pipeline sent, by status and code (``code=""`` when none; ``PipelineStats.reports``);
* ``gpu_trader_orders_in_flight`` (handed to the manager, not settled),
  ``gpu_trader_orders_open`` (resting at a venue), ``gpu_trader_orders_in_doubt``
  (outcome unknown), ``gpu_trader_reconcile_backlog`` (open + in doubt: what the next
  reconciliation asks the venues about, fills not yet booked aside),
  ``gpu_trader_bad_acks_total`` (acks the manager refused);
* ``gpu_trader_breaker_state{broker}`` (0 closed, 1 open, 2 half-open: :data:`BREAKER_STATES`)
  and ``gpu_trader_breaker_trips_total{broker}`` (times it opened);
* with ``process=True``, ``prometheus_client``'s process metrics (Linux):
  ``process_resident_memory_bytes`` (resident memory), CPU seconds, open files.

**Threads**: the HTTP server answers on its own thread, while the pipeline runs on its
event loop. A scrape therefore reads the state *on that loop* (scheduled with
``call_soon_threadsafe``; ``loop``: the loop running when :class:`PipelineMetrics` was
made, or the one given), so it sees a consistent state between two events; when that
loop is not running, or does not answer within :data:`READ_TIMEOUT_S`, it reads
directly (a count it cannot read then is NaN).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import math
import threading
import time
from typing import NamedTuple, Sequence

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

from .pipeline import TradingPipeline
from ._internal.stage_latency import DEFAULT_BUCKETS_S, FOLD_EVERY, StageHistogram, StageRecorder
from ._internal.validation import check_count
from .profiling import annotate, annotate_methods

__all__ = ["PipelineMetrics", "MetricsSnapshot", "MetricsServer", "serve_metrics", "BREAKER_STATES",
           "READ_TIMEOUT_S"]
# StageRecorder and StageHistogram (internal types, named here for readers of the pipeline's
# record_stages and of MetricsSnapshot) are importable from this module but not part of __all__.

BREAKER_STATES = {"closed": 0, "open": 1, "half_open": 2}
"""A circuit breaker's state as the value of ``gpu_trader_breaker_state``."""
READ_TIMEOUT_S = 1.0
"""How long a scrape waits for the pipeline's event loop to read the state before reading directly."""
_READ_RETRIES = 3


class MetricsSnapshot(NamedTuple):
    """Every exported value, read at one moment (see :meth:`PipelineMetrics.snapshot`).

    ``stages``: one :class:`StageHistogram` per stage; ``events`` .. ``bad_acks``: the
    counters and gauges of the module doc (``in_flight``, ``open_orders``, ``in_doubt``
    are NaN when they could not be read); ``rejected``, ``risk_rejected``, ``reports``,
    ``skipped``: copies of the pipeline's dicts; ``breakers``: ``{broker: (state, trips)}``.
    """

    stages: tuple[StageHistogram, ...]
    events: int
    accepted: int
    bars: int
    orders: int
    deferred: int
    resubmitted: int
    reconciles: int
    errors: int
    rejected: dict[str, int]
    risk_rejected: dict[str, int]
    reports: dict[str, int]
    skipped: dict[str, int]
    in_flight: float
    open_orders: float
    in_doubt: float
    bad_acks: int
    breakers: dict[str, tuple[str, int]]

    @property
    def reconcile_backlog(self) -> float:
        """Orders open at a venue plus orders in doubt."""
        return self.open_orders + self.in_doubt


def _count(read) -> float:
    """``len(read())``, retried when a concurrent change of the manager's books interrupts
    it (a direct read from another thread); NaN when it keeps failing."""
    for _ in range(_READ_RETRIES):
        try:
            return float(len(read()))
        except RuntimeError:  # "dictionary changed size during iteration"
            continue
    return math.nan


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@annotate_methods
class PipelineMetrics:
    """Prometheus metrics of one :class:`~gpu_trader.pipeline.TradingPipeline` (see module doc).

    ``PipelineMetrics(pipeline, *, registry=None, namespace="gpu_trader", process=True,
    buckets=DEFAULT_BUCKETS_S, window=4096, loop=None)``: turns on the pipeline's stage
    timing (:meth:`~gpu_trader.pipeline.TradingPipeline.record_stages` with ``buckets``
    in seconds and ``window`` recent samples per stage) and registers a collector in
    ``registry`` (a new :class:`~prometheus_client.CollectorRegistry` when None), plus,
    with ``process``, a ``ProcessCollector`` (resident memory). ``loop``: the event loop
    the pipeline runs on (default: the running loop, if any). Names already registered
    in ``registry`` raise ``ValueError`` (prometheus_client's ``Duplicated timeseries``).

    * ``registry``: the registry to serve (:func:`serve_metrics`);
    * ``recorder``: the pipeline's :class:`StageRecorder`;
    * ``snapshot() -> MetricsSnapshot``: every value now (call it on the pipeline's loop
      or while it is idle);
    * ``stage_quantile(stage, q) -> s``: a quantile of the stage's recent samples;
    * ``close()``: unregister and stop the pipeline's stage timing.
    """

    def __init__(self, pipeline: TradingPipeline, *, registry: CollectorRegistry | None = None,
                 namespace: str = "gpu_trader", process: bool = True,
                 buckets: Sequence[float] = DEFAULT_BUCKETS_S, window: int = FOLD_EVERY,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not isinstance(pipeline, TradingPipeline):
            raise TypeError(f"pipeline must be a TradingPipeline, got {type(pipeline).__name__}")
        if registry is not None and not isinstance(registry, CollectorRegistry):
            raise TypeError(f"registry must be a prometheus_client CollectorRegistry or None, "
                            f"got {type(registry).__name__}")
        if type(namespace) is not str or not namespace.isidentifier() or not namespace.isascii():
            raise ValueError(f"namespace must be an ASCII identifier such as 'gpu_trader', got {namespace!r}")
        if type(process) is not bool:
            raise TypeError(f"process must be a bool, got {type(process).__name__}")
        if loop is not None and not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(f"loop must be an asyncio event loop or None, got {type(loop).__name__}")
        check_count(window, "window", 1)
        self.pipeline = pipeline
        self.namespace = namespace
        self.registry = CollectorRegistry() if registry is None else registry
        self.loop = loop if loop is not None else _running_loop()
        already = pipeline.stage_recorder
        self.recorder: StageRecorder = pipeline.record_stages(buckets=buckets, window=window)
        self._exporter = _Exporter(self)
        self._collectors = [self._exporter]
        if process:
            self._collectors.append(ProcessCollector(registry=None))
        registered = []
        try:
            for collector in self._collectors:
                self.registry.register(collector)
                registered.append(collector)
        except ValueError:
            for collector in registered:
                self.registry.unregister(collector)
            if already is None:
                pipeline.record_stages(False)
            raise

    def snapshot(self) -> MetricsSnapshot:
        """Every exported value, read now from the pipeline, its manager and breakers."""
        pipe = self.pipeline
        stats = pipe.stats
        manager = pipe.manager
        breakers = {name: (b.state, b.trips) for name, b in list(manager.breakers.items())}
        return MetricsSnapshot(
            stages=tuple(self.recorder.histograms()),
            events=stats.events, accepted=stats.accepted, bars=stats.bars, orders=stats.orders,
            deferred=stats.deferred, resubmitted=stats.resubmitted, reconciles=stats.reconciles,
            errors=stats.errors, rejected=dict(stats.rejected), risk_rejected=dict(stats.risk_rejected),
            reports=dict(stats.reports), skipped=dict(stats.skipped), in_flight=float(pipe.in_flight),
            open_orders=_count(manager.open_orders), in_doubt=_count(manager.unresolved),
            bad_acks=manager.bad_acks, breakers=breakers)

    def _scrape_snapshot(self) -> MetricsSnapshot:
        """:meth:`snapshot` taken on the pipeline's loop when it runs on another thread (see module doc)."""
        loop = self.loop
        if loop is not None and loop.is_running() and _running_loop() is not loop:
            done: concurrent.futures.Future = concurrent.futures.Future()

            def read() -> None:
                if done.set_running_or_notify_cancel():
                    try:
                        done.set_result(self.snapshot())
                    except BaseException as exc:  # handed to the scraping thread
                        done.set_exception(exc)

            try:
                loop.call_soon_threadsafe(read)
                return done.result(READ_TIMEOUT_S)
            except (RuntimeError, concurrent.futures.TimeoutError):  # loop closed, or busy
                done.cancel()
        return self.snapshot()

    def stage_quantile(self, stage: str, q: float) -> float:
        """Quantile ``q`` in [0, 1] of ``stage``'s latest samples (the recorder's ``window``),
        seconds; NaN before any sample. ``ValueError`` for an unknown stage or a bad ``q``."""
        return self.recorder.quantile(stage, q)

    def close(self) -> None:
        """Unregister from the registry and stop the pipeline's stage timing (idempotent)."""
        for collector in self._collectors:
            try:
                self.registry.unregister(collector)
            except KeyError:  # already unregistered
                pass
        if self.pipeline.stage_recorder is self.recorder:
            self.pipeline.record_stages(False)

    def __repr__(self) -> str:
        return f"PipelineMetrics(symbols={len(self.pipeline.symbols)}, namespace={self.namespace!r})"


class _Exporter:
    """The custom collector: builds the metric families from one snapshot per scrape."""

    def __init__(self, metrics: PipelineMetrics) -> None:
        self._metrics = metrics
        self._rate_lock = threading.Lock()
        self._last = (time.monotonic(), metrics.pipeline.stats.events)

    def describe(self):
        return self._families(None)

    def collect(self):
        snap = self._metrics._scrape_snapshot()
        with self._rate_lock:
            now = time.monotonic()
            then, events = self._last
            self._last = (now, snap.events)
        rate = (snap.events - events) / (now - then) if now > then else 0.0
        return self._families(snap, rate)

    def _families(self, snap: MetricsSnapshot | None, rate: float = 0.0) -> list:
        ns = self._metrics.namespace
        p = f"{ns}_pipeline"
        out = []

        def family(kind, name, doc, value=None, labels=(), items=None):
            fam = kind(name, doc, labels=list(labels) if labels else None)
            if snap is not None:
                if labels:
                    for key, v in items:
                        fam.add_metric(list(key), v)
                else:
                    fam.add_metric([], value)
            out.append(fam)

        counter = functools.partial(family, CounterMetricFamily)
        gauge = functools.partial(family, GaugeMetricFamily)

        hist = HistogramMetricFamily(f"{p}_stage_seconds", "Wall time of each stage of the trading loop, seconds.",
                                     labels=["stage"])
        if snap is not None:
            for h in snap.stages:
                buckets = [(floatToGoString(b), c) for b, c in zip(h.bounds_s, h.cumulative)]
                buckets.append(("+Inf", h.count))
                hist.add_metric([h.stage], buckets, h.sum_s)
        out.append(hist)
        s = snap
        counter(f"{p}_events", "Ticks handed to the pipeline (messages and Tick records).", s and s.events)
        gauge(f"{p}_events_per_second", "Events per second between the two latest scrapes.", rate)
        counter(f"{p}_accepted", "Ticks that passed validation.", s and s.accepted)
        counter(f"{p}_bars", "Completed bars.", s and s.bars)
        counter(f"{p}_orders", "Orders handed to the order manager.", s and s.orders)
        counter(f"{p}_deferred", "Signals held while their symbol had an order in flight.", s and s.deferred)
        counter(f"{p}_resubmitted", "Resubmissions of orders whose outcome was unknown.", s and s.resubmitted)
        counter(f"{p}_reconciles", "Reconciliations with the venues started.", s and s.reconciles)
        counter(f"{p}_errors", "Unexpected exceptions after a tick was accepted.", s and s.errors)
        counter(f"{p}_rejections", "Refused ticks by reason.", labels=("reason",),
                items=s and [((k,), v) for k, v in s.rejected.items()])
        counter(f"{p}_risk_rejections", "Orders refused by the pre-trade check, by code.", labels=("code",),
                items=s and [((k,), v) for k, v in s.risk_rejected.items()])
        counter(f"{p}_skipped_records", "Feed records that are not ticks, by type.", labels=("type",),
                items=s and [((k,), v) for k, v in s.skipped.items()])
        counter(f"{ns}_orders", "Final report of each order the pipeline sent, by status and code.",
                labels=("status", "code"), items=s and [(tuple(k.partition(":")[::2]), v)
                                                        for k, v in s.reports.items()])
        gauge(f"{ns}_orders_in_flight", "Orders handed to the manager and not settled.", s and s.in_flight)
        gauge(f"{ns}_orders_open", "Orders resting at a venue.", s and s.open_orders)
        gauge(f"{ns}_orders_in_doubt", "Orders whose outcome is unknown.", s and s.in_doubt)
        gauge(f"{ns}_reconcile_backlog", "Orders the next reconciliation asks the venues about (open + in doubt).",
              s and s.reconcile_backlog)
        counter(f"{ns}_bad_acks", "Broker acks the order manager refused.", s and s.bad_acks)
        gauge(f"{ns}_breaker_state", "Circuit breaker state: 0 closed, 1 open, 2 half-open.", labels=("broker",),
              items=s and [((name,), BREAKER_STATES[state]) for name, (state, _) in s.breakers.items()])
        counter(f"{ns}_breaker_trips", "Times the circuit breaker opened.", labels=("broker",),
                items=s and [((name,), trips) for name, (_, trips) in s.breakers.items()])
        return out


@annotate_methods
class MetricsServer:
    """A running metrics HTTP endpoint (see :func:`serve_metrics`): ``addr``, ``port``
    (the bound one), ``url`` (``http://addr:port/metrics``); ``close()`` stops it
    (idempotent); a context manager."""

    def __init__(self, httpd, thread: threading.Thread, addr: str) -> None:
        self._httpd = httpd
        self._thread = thread
        self.addr = addr
        self.port: int = httpd.server_port
        host = f"[{addr}]" if ":" in addr else addr
        self.url = f"http://{host}:{self.port}/metrics"
        self.closed = False

    def close(self) -> None:
        """Stop serving and release the port."""
        if not self.closed:
            self.closed = True
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MetricsServer({self.url!r}{', closed' if self.closed else ''})"


@annotate
def serve_metrics(metrics: PipelineMetrics | CollectorRegistry, port: int = 0,
                  addr: str = "127.0.0.1") -> MetricsServer:
    """Serve ``metrics`` (a :class:`PipelineMetrics`, or any ``CollectorRegistry``) in the
    Prometheus text format over HTTP on ``addr:port``, on a daemon thread; returns the
    :class:`MetricsServer` (``port=0`` picks a free port: read ``server.port``).
    ``port``: an int in [0, 65535]; ``addr``: a host address (default loopback only;
    ``"0.0.0.0"`` for every interface). ``OSError`` when the address cannot be bound."""
    if isinstance(metrics, PipelineMetrics):
        registry = metrics.registry
    elif isinstance(metrics, CollectorRegistry):
        registry = metrics
    else:
        raise TypeError(f"metrics must be a PipelineMetrics or a CollectorRegistry, got {type(metrics).__name__}")
    port = check_count(port, "port", 0, 65535)
    if type(addr) is not str or not addr:
        raise TypeError(f"addr must be a non-empty str, got {addr!r}")
    httpd, thread = start_http_server(port, addr=addr, registry=registry)
    return MetricsServer(httpd, thread, addr)
