"""The ``market_data`` suite: tick ingestion, JSON parsing, quotes, bars (docs/design.md#benchmarks-and-targets).

Cases and their references (timed in the same run, on the host):

* tick ingestion (parse + validate + append into a fresh :class:`TickIngestor`) of
  100 / 1K / 10K ticks, and batch parsing (:func:`parse_ticks`) of 10 / 100 / 1000
  messages: references ``json`` (stdlib) and ``orjson``, each with the same checks
  written by hand, appending to Python lists;
* one tick parsed (:func:`parse_tick`), and one quote parsed and checked
  (:func:`parse_quote` + crossed check + mid/spread): same references;
* batched quote processing (:func:`quote_metrics`) over 1M quotes (100K with
  ``quick``): reference pandas (the same math on DataFrame columns);
* bar aggregation of one symbol's ticks (one per second) into 60 / 300 / 1440
  one-minute bars, and 200 symbols x 390 bars x 10 ticks (``--full``; standard 50
  symbols, quick 20: pandas takes a quarter second per call at 200):
  reference pandas ``resample(origin="epoch")`` (+ ``groupby`` for many symbols);
* :meth:`BarAggregator.update` of one tick (no target row; the end-to-end path uses it);
* an OHLCV panel read from a long-format Parquet file (:func:`gpu_trader.data_io.read_ohlcv`),
  500 symbols x 2520 daily bars (quick: 50 x 252): reference pyarrow ``read_table`` +
  pandas ``pivot`` to the same ``(5, n_symbols, T)`` array.

Memory per connection (target < 10 MB): a :class:`TickIngestor` holds 28 bytes per
stored tick (10K ticks: ~0.3 MB of columns); ``tests/test_marketdata.py`` checks it.
"""
from __future__ import annotations

import functools
import itertools
import json
import math
from typing import Any, Callable

import numpy as np

from ... import marketdata as md
from ..harness import Reference, SkipCase, Workload
from ..memory import suite_cache

__all__ = ["workloads"]

NS = 10**9
T0 = 1_700_000_000 * NS
INGEST_SIZES = (100, 1_000, 10_000)
BATCH_SIZES = (10, 100, 1_000)
QUOTES = {"quick": 100_000, "standard": 1_000_000, "full": 1_000_000}
BAR_COUNTS = (60, 300, 1440)
TICKS_PER_BAR = 60  # one tick per second, one-minute bars
MANY = {"quick": (20, 390, 10), "standard": (50, 390, 10), "full": (200, 390, 10)}  # symbols, bars, ticks/bar
SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "JPM")


@suite_cache(maxsize=4)
def tick_messages(n: int) -> tuple[bytes, ...]:
    """n valid tick messages over 8 symbols, time-ordered."""
    rng = np.random.default_rng(n)
    price = 100 * np.exp(rng.normal(0, 1e-4, n).cumsum())
    size = rng.integers(1, 1000, n)
    return tuple(
        json.dumps({"symbol": SYMBOLS[i % 8], "ts": T0 + i * 1000, "price": round(float(price[i]), 4),
                    "size": int(size[i])}, separators=(",", ":")).encode()
        for i in range(n)
    )


QUOTE_MESSAGE = b'{"symbol":"AAPL","ts":1700000000000000000,"bid":189.51,"ask":189.53,"bid_size":300,"ask_size":200}'


def _call(fn: Callable[[], Any]) -> Any:
    return fn()


# -- the hand-written references ------------------------------------------------------
def _manual_tick(loads, data):
    d = loads(data)
    s, ts, p, z = d["symbol"], d["ts"], float(d["price"]), float(d["size"])
    if not (isinstance(s, str) and type(ts) is int and 0.0 < p < math.inf and 0.0 <= z < math.inf):
        raise ValueError("invalid tick")
    return s, ts, p, z


def _manual_ingest(loads, messages):
    cols: tuple[list, ...] = ([], [], [], [])
    last: dict[str, int] = {}
    for m in messages:
        s, ts, p, z = _manual_tick(loads, m)
        if ts < last.get(s, -1):
            continue
        last[s] = ts
        for col, v in zip(cols, (s, ts, p, z)):
            col.append(v)
    return cols


def _manual_quote(loads, data):
    d = loads(data)
    bid, ask = float(d["bid"]), float(d["ask"])
    if not (0.0 < bid < math.inf and 0.0 < ask < math.inf) or bid > ask:
        raise ValueError("invalid quote")
    mid = bid + (ask - bid) * 0.5  # the overflow-free midpoint the library computes
    return mid, ask - bid, (ask - bid) / mid * 1e4


def _json_refs(fn: Callable[[Callable, Any], Any], payload: Callable[[], Any]) -> tuple[Reference, ...]:
    """``fn(loads, payload())`` with the stdlib json and with orjson."""

    def setup(module):
        def build():
            import importlib

            return functools.partial(fn, importlib.import_module(module).loads, payload())

        return build

    return (Reference("json", setup("json"), _call), Reference("orjson", setup("orjson"), _call, requires="orjson"))


def _host_only(be):
    if be.name != "cpu":
        raise SkipCase("message parsing runs on the host (cpu backend) only")


# -- cases ------------------------------------------------------------------------------
def _ingest(n: int) -> Workload:
    def setup(be):
        _host_only(be)
        msgs = tick_messages(n)

        def run():
            ing = md.TickIngestor(capacity=n)
            ing.extend(msgs)
            return ing

        return run

    return Workload(
        name=f"tick ingestion {n} ticks", sizes={"ticks": n}, setup=setup, run=_call, items=n, unit="tick",
        target=f"market_data.ingest_{n}", references=_json_refs(_manual_ingest, lambda: tick_messages(n)),
    )


def _batch_parse(n: int) -> Workload:
    def setup(be):
        _host_only(be)
        return functools.partial(md.parse_ticks, tick_messages(n))

    return Workload(
        name=f"batch JSON parse {n} messages", sizes={"messages": n}, setup=setup, run=_call, items=n,
        unit="message", target="market_data.batch_parse",
        references=_json_refs(lambda loads, msgs: [_manual_tick(loads, m) for m in msgs], lambda: tick_messages(n)),
    )


def _single_tick() -> Workload:
    def setup(be):
        _host_only(be)
        return functools.partial(md.parse_tick, tick_messages(1)[0])

    return Workload(
        name="single tick JSON parse", sizes={"messages": 1}, setup=setup, run=_call, items=1, unit="message",
        target="market_data.single_parse", references=_json_refs(_manual_tick, lambda: tick_messages(1)[0]),
    )


def _quote_one(data: bytes):
    q = md.parse_quote(data)
    if q.bid > q.ask:
        raise md.MarketDataError("crossed", "bid > ask")
    return q.mid, q.spread, q.spread_bps


def _single_quote() -> Workload:
    def setup(be):
        _host_only(be)
        return functools.partial(_quote_one, QUOTE_MESSAGE)

    return Workload(
        name="quote processing, one quote (parse + validate + mid/spread)", sizes={"quotes": 1}, setup=setup,
        run=_call, items=1, unit="quote", target="market_data.quote_one",
        references=_json_refs(_manual_quote, lambda: QUOTE_MESSAGE),
    )


@suite_cache(maxsize=2)
def quote_arrays(n: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(7)
    bid = 100 * np.exp(rng.normal(0, 1e-3, n).cumsum())
    ask = bid + rng.uniform(-0.001, 0.05, n)  # a few crossed
    size = rng.integers(1, 1000, (2, n)).astype(np.float64)
    ts = T0 + np.sort(rng.integers(0, 60 * NS, n))
    return bid, ask, size[0], size[1], ts


def _pandas_quotes(df, now, max_age):
    ok = (df.bid > 0) & (df.ask > 0) & (df.bid <= df.ask) & (now - df.ts <= max_age)
    mid = (df.bid + (df.ask - df.bid) * 0.5).where(ok)
    spread = (df.ask - df.bid).where(ok)
    return mid, spread, spread / mid * 1e4


def _quotes_batched(n: int) -> Workload:
    now, max_age = T0 + 60 * NS, 30 * NS

    def setup(be):
        bid, ask, bs, as_, ts = (be.asarray(a) for a in quote_arrays(n))
        return functools.partial(md.quote_metrics, bid, ask, bs, as_, ts=ts, now=now, max_age=max_age,
                                 backend=be.name)

    def ref_setup():
        import pandas as pd

        bid, ask, bs, as_, ts = quote_arrays(n)
        df = pd.DataFrame({"bid": bid, "ask": ask, "bid_size": bs, "ask_size": as_, "ts": ts})
        return functools.partial(_pandas_quotes, df, now, max_age)

    return Workload(
        name=f"quote processing batched {n} quotes", sizes={"quotes": n}, setup=setup, run=_call, items=n,
        unit="quote", target=f"market_data.quotes_{n}",
        references=(Reference("pandas", ref_setup, _call, requires="pandas"),),
    )


@suite_cache(maxsize=4)
def tick_arrays(n_symbols: int, n_bars: int, per_bar: int) -> tuple[np.ndarray, ...]:
    """Time-ordered ticks: every symbol trades ``per_bar`` times per minute, interleaved."""
    n = n_symbols * n_bars * per_bar
    rng = np.random.default_rng(n)
    step = 60 * NS // per_bar
    ts = np.repeat(T0 // (60 * NS) * 60 * NS + np.arange(n_bars * per_bar, dtype=np.int64) * step, n_symbols)
    sym = np.tile(np.arange(n_symbols, dtype=np.int64), n_bars * per_bar)
    price = 100 * np.exp(rng.normal(0, 1e-4, n).cumsum())
    size = rng.integers(1, 1000, n).astype(np.float64)
    return ts, price, size, sym


def _pandas_bars(df, rule, many):
    if many:
        g = df.set_index("ts").groupby("sym").resample(rule, origin="epoch")
    else:
        g = df.set_index("ts").resample(rule, origin="epoch")
    ohlc = g["price"].ohlc()
    vol = g["size"].sum()
    return ohlc, vol, g["pv"].sum() / vol, g["price"].count()


def _bars(n_symbols: int, n_bars: int, per_bar: int, target: str | None) -> Workload:
    many = n_symbols > 1

    def setup(be):
        ts, price, size, sym = (be.asarray(a) for a in tick_arrays(n_symbols, n_bars, per_bar))
        return functools.partial(md.aggregate_bars, ts, price, size, sym if many else None, timeframe="1min",
                                 n_symbols=n_symbols if many else None, backend=be.name)

    def ref_setup():
        import pandas as pd

        ts, price, size, sym = tick_arrays(n_symbols, n_bars, per_bar)
        df = pd.DataFrame({"ts": pd.to_datetime(ts), "price": price, "size": size, "sym": sym, "pv": price * size})
        return functools.partial(_pandas_bars, df, "1min", many)

    n = n_symbols * n_bars * per_bar
    label = f"{n_symbols} symbols x " if many else ""
    return Workload(
        name=f"bar aggregation {label}{n_bars} bars ({n} ticks)",
        sizes={"symbols": n_symbols, "bars": n_bars, "ticks": n}, setup=setup, run=_call, items=n, unit="tick",
        target=target, references=(Reference("pandas", ref_setup, _call, requires="pandas"),),
    )


def _aggregator_update() -> Workload:
    def setup(be):
        _host_only(be)
        ts, price, size, _ = tick_arrays(1, 1440, TICKS_PER_BAR)
        ticks = list(zip(ts.tolist(), price.tolist(), size.tolist()))
        agg = md.BarAggregator("1min", 1)
        feed = itertools.cycle(ticks).__next__
        state = {"agg": agg, "last": ticks[-1][0]}

        def run():
            t, p, z = feed()
            if t < state["last"]:  # the cycle wrapped: start over (rare, untimed in practice)
                state["agg"] = md.BarAggregator("1min", 1)
            state["last"] = t
            return state["agg"].update(0, t, p, z)

        return run

    return Workload(name="BarAggregator.update one tick", sizes={"symbols": 1}, setup=setup, run=_call, items=1,
                    unit="tick")


def workloads(size: str) -> list[Workload]:
    """All cases; ``size`` picks the batched quotes and the many-symbol bars (``QUOTES``, ``MANY``)."""
    out = [_ingest(n) for n in INGEST_SIZES]
    out.append(_single_tick())
    out += [_batch_parse(n) for n in BATCH_SIZES]
    out.append(_single_quote())
    out.append(_quotes_batched(QUOTES[size]))
    out += [_bars(1, b, TICKS_PER_BAR, f"market_data.bars_{b}") for b in BAR_COUNTS]
    out.append(_bars(*MANY[size], None))
    out.append(_aggregator_update())
    out.append(_read_parquet(*PARQUET[size]))
    return out


# -- OHLCV panels from Parquet (gpu_trader.data_io) ---------------------------------------
PARQUET = {"quick": (50, 252), "standard": (500, 2520), "full": (500, 2520)}  # symbols, bars


@suite_cache(maxsize=1)
def parquet_panel(n_symbols: int, n_bars: int) -> tuple[Any, str]:
    """A long-format OHLCV Parquet file of ``n_symbols`` x ``n_bars`` daily bars in a temporary
    directory (removed when the cache lets go of it): (the directory object, the file name)."""
    import os
    import tempfile

    from ... import data_io

    rng = np.random.default_rng(n_symbols * n_bars)
    times = np.datetime64("2015-01-02", "D") + np.arange(n_bars)
    symbols = np.array([f"S{i:04d}" for i in range(n_symbols)])
    tmp = tempfile.TemporaryDirectory(prefix="gpu-trader-bench-")
    path = os.path.join(tmp.name, "ohlcv.parquet")
    data_io.write_results(path, 100 * np.exp(rng.normal(0, 0.01, (5, n_symbols, n_bars)).cumsum(-1)), symbols,
                          times, data_io.OHLCV_COLUMNS)
    return tmp, path


def _pandas_pivot(path: str) -> np.ndarray:
    """The peer: pyarrow reads the table, pandas pivots it to (5, n_symbols, T)."""
    import pyarrow.parquet as pq

    from ... import data_io

    wide = pq.read_table(path).to_pandas().pivot(index="symbol", columns="time", values=list(data_io.OHLCV_COLUMNS))
    n_sym, n_t = wide.shape[0], wide.shape[1] // 5
    return wide.to_numpy().reshape(n_sym, 5, n_t).transpose(1, 0, 2)



def _read_parquet(n_symbols: int, n_bars: int) -> Workload:
    def setup(be):
        _host_only(be)
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise SkipCase("pyarrow is not installed (extra data)") from None
        from ... import data_io

        return functools.partial(data_io.read_ohlcv, parquet_panel(n_symbols, n_bars)[1])

    def ref_setup():
        return functools.partial(_pandas_pivot, parquet_panel(n_symbols, n_bars)[1])

    return Workload(
        name=f"read OHLCV Parquet {n_symbols} symbols x {n_bars} bars", sizes={"symbols": n_symbols, "bars": n_bars},
        setup=setup, run=_call, items=n_symbols * n_bars, unit="bar", target="market_data.read_parquet",
        references=(Reference("pandas_pivot", ref_setup, _call, requires="pyarrow"),),
    )
