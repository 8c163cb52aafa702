"""gpu_trader.marketdata: parsing and validation, quote processing, bar aggregation.

Oracles: the stdlib ``json`` module plus hand-written rules for the parser; plain
NumPy float64 for quote metrics; pandas ``groupby`` + ``resample(origin="epoch")``
for bars (batch on every backend, the GPU's segmented-reduction algorithm run on
NumPy, and the streaming :class:`BarAggregator`).
"""
from __future__ import annotations

import datetime
import functools
import itertools
import json
import math
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import gpu_trader as gt
from conftest import assert_compiles_to_ptx
from gpu_trader._internal import market_xp
from gpu_trader import marketdata as md

AREA = "marketdata"  # the backends that implement it run these tests (conftest.py)

NS = 10**9
T0 = 1_700_000_000 * NS


def tick_json(symbol="AAPL", ts=T0, price=189.5, size=100.0, **extra):
    return json.dumps({"symbol": symbol, "ts": ts, "price": price, "size": size, **extra}).encode()


# -- parsing -------------------------------------------------------------------------
def test_parse_tick_roundtrip_and_extra_fields():
    t = md.parse_tick(tick_json(extra_field=1))
    assert t == md.Tick("AAPL", T0, 189.5, 100.0)
    assert md.parse_tick(tick_json().decode()).price == 189.5  # str accepted too


@pytest.mark.parametrize(
    "data, reason",
    [
        (b'{"symbol": "A", "ts": 1, "price": 2.0', "malformed_json"),
        (b"not json", "malformed_json"),
        (b'{"symbol":"A","ts":1,"price":NaN,"size":1}', "malformed_json"),  # NaN is not JSON
        (12, "malformed_json"),
        (b'{"symbol": "A", "ts": 1, "price": 2.0}', "missing_field"),
        (b'{"ts": 1, "price": 2.0, "size": 1}', "missing_field"),
        (tick_json(price=-1.0), "invalid_field"),
        (b'{"symbol":"","ts":1,"price":1.0,"size":1}', "invalid_field"),
        (tick_json(price=0.0), "invalid_field"),
        (tick_json(size=-5.0), "invalid_field"),
        (b'{"symbol":"A","ts":1,"price":1e999,"size":1}', "invalid_field"),
        (b'{"symbol":"A","ts":1,"price":"1.0","size":1}', "invalid_field"),
        (b'{"symbol":"A","ts":1.5,"price":1.0,"size":1}', "invalid_field"),
        (tick_json(ts=-1), "invalid_field"),
        (tick_json(ts=2**64 - 1), "invalid_field"),
        (b"[1, 2]", "invalid_field"),
    ],
)
def test_parse_tick_rejects(data, reason):
    with pytest.raises(md.MarketDataError) as err:
        md.parse_tick(data)
    assert err.value.reason == reason
    assert isinstance(err.value, ValueError)


def test_unknown_symbol():
    with pytest.raises(md.MarketDataError, match="unknown_symbol"):
        md.parse_tick(tick_json("MSFT"), symbols={"AAPL"})
    batch = md.parse_ticks([tick_json("MSFT"), tick_json("AAPL")], symbols=["AAPL"])
    assert len(batch) == 1 and batch.rejected[0][:2] == (0, "unknown_symbol")


def test_parse_quote_and_properties():
    q = md.parse_quote(b'{"symbol":"X","ts":5,"bid":99.0,"ask":101.0,"bid_size":1,"ask_size":2}')
    assert (q.mid, q.spread, q.spread_bps) == (100.0, 2.0, 200.0)
    with pytest.raises(md.MarketDataError, match="invalid_field"):
        md.parse_quote(b'{"symbol":"X","ts":5,"bid":-1,"ask":101.0,"bid_size":1,"ask_size":2}')


def _oracle_parse(messages, universe):
    """Independent reading of the rules with the stdlib json module."""
    accepted, rejected, last, names = [], [], {}, list(universe or [])
    for i, m in enumerate(messages):
        try:
            d = json.loads(m)
        except (ValueError, TypeError):
            rejected.append((i, "malformed_json"))
            continue
        keys = ("symbol", "ts", "price", "size")
        if not isinstance(d, dict):
            rejected.append((i, "invalid_field"))
            continue
        if any(k not in d for k in keys):
            rejected.append((i, "missing_field"))
            continue
        s, ts, p, z = (d[k] for k in keys)
        num = (int, float)
        if (not isinstance(s, str) or type(ts) is not int or not 0 <= ts < 2**63 or type(p) not in num or type(z) not in num
                or not (math.isfinite(p) and p > 0) or not (math.isfinite(z) and z >= 0)):
            rejected.append((i, "invalid_field"))
            continue
        if universe is not None and s not in universe:
            rejected.append((i, "unknown_symbol"))
            continue
        if ts < last.get(s, -(1 << 63)):
            rejected.append((i, "out_of_order"))
            continue
        last[s] = ts
        if s not in names:
            names.append(s)
        accepted.append((names.index(s), ts, float(p), float(z)))
    return accepted, rejected, names


_message = st.one_of(
    st.builds(
        lambda s, dt, p, z: tick_json(s, T0 + dt, p, z),
        st.sampled_from(["A", "B", "C", "ZZ"]), st.one_of(st.integers(-5, 50), st.just(2**63 - T0)),
        st.one_of(st.floats(0.01, 1e6), st.sampled_from([0.0, -1.0])),
        st.one_of(st.floats(0, 1e6), st.just(-2.0)),
    ),
    st.sampled_from([b"{", b"", b"null", b'{"symbol":"A","ts":1}', b'{"symbol":"A","ts":"x","price":1,"size":1}']),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_message, max_size=40), st.sampled_from([None, ("A", "B", "C")]))
def test_parse_ticks_matches_oracle(messages, universe):
    batch = md.parse_ticks(messages, symbols=universe)
    accepted, rejected, names = _oracle_parse(messages, universe)
    assert [(r.index, r.reason) for r in batch.rejected] == rejected
    assert batch.symbols == tuple(names)
    got = list(zip(batch.symbol.tolist(), batch.ts.tolist(), batch.price.tolist(), batch.size.tolist()))
    assert got == accepted
    assert batch.symbol.dtype == np.int32 and batch.ts.dtype == np.int64 and batch.price.dtype == np.float64


def test_ingestor_keeps_order_across_calls_and_grows():
    ing = md.TickIngestor(capacity=2)
    assert ing.extend([tick_json(ts=T0 + i) for i in range(5)]) == ()
    rej = ing.extend([tick_json(ts=T0 + 2), tick_json(ts=T0 + 9)])
    assert [r.reason for r in rej] == ["out_of_order"]
    with pytest.raises(md.MarketDataError, match="out_of_order"):
        ing.append(tick_json(ts=T0))
    assert ing.append(tick_json("B", ts=T0)).symbol == "B"
    cols = ing.columns()
    assert cols.ts.tolist() == [T0 + i for i in range(5)] + [T0 + 9, T0]
    assert cols.symbol.tolist() == [0] * 6 + [1]
    assert ing.nbytes < 10 * 2**20


def test_memory_per_connection_under_10mb():
    """An ingestor holding 10K ticks (target: memory per connection < 10 MB, docs/design.md#benchmarks-and-targets)."""
    import tracemalloc

    msgs = [tick_json("S%d" % (i % 50), T0 + i, 100.0 + i % 7, 10.0) for i in range(10_000)]
    tracemalloc.start()
    try:
        ing = md.TickIngestor()
        for start in range(0, len(msgs), 500):
            assert ing.extend(msgs[start:start + 500]) == ()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(ing) == 10_000 and ing.nbytes < 1_000_000
    assert peak < 10 * 2**20


def test_parse_quotes_columns():
    msgs = [json.dumps({"symbol": "Q", "ts": i, "bid": 10.0 + i, "ask": 10.5 + i, "bid_size": 1, "ask_size": 2})
            .encode() for i in range(3)] + [b"{}"]
    b = md.parse_quotes(msgs)
    assert b.bid.tolist() == [10.0, 11.0, 12.0] and b.ask_size.tolist() == [2.0] * 3
    assert b.rejected[0].reason == "missing_field"


# -- quotes --------------------------------------------------------------------------
def test_quote_metrics_against_numpy(backend):
    rng = np.random.default_rng(3)
    n = 500
    bid = rng.uniform(90, 110, n)
    ask = bid + rng.uniform(-0.5, 2.0, n)
    bid[:5] = [np.nan, -1.0, 0.0, np.inf, 100.0]
    ask[4] = 100.0  # locked: accepted
    size = rng.uniform(0, 10, n)
    size[7] = -1.0
    ts = T0 + rng.integers(0, 10 * NS, n)
    now, max_age = T0 + 10 * NS, 5 * NS
    ts[4] = now
    be = gt.get_backend(backend)
    got = md.quote_metrics(*(be.asarray(a) for a in (bid, ask, size, size)), ts=be.asarray(ts), now=now,
                           max_age=max_age, backend=backend)
    got = [gt.to_numpy(a) for a in got]
    status = np.zeros(n, np.int8)
    invalid = ~(np.isfinite(bid) & (bid > 0) & np.isfinite(ask) & (ask > 0) & (size >= 0))
    status[~invalid & (bid > ask)] = md.QUOTE_CROSSED
    status[(status == 0) & ~invalid & (now - ts > max_age)] = md.QUOTE_STALE
    status[invalid] = md.QUOTE_INVALID
    np.testing.assert_array_equal(got[3], status)
    ok = status == 0
    assert ok.sum() > 50 and status[4] == 0
    mid = (bid + ask) / 2
    np.testing.assert_allclose(got[0][ok], mid[ok], rtol=1e-15)
    np.testing.assert_allclose(got[1][ok], (ask - bid)[ok], rtol=1e-15)
    with np.errstate(invalid="ignore"):
        bps = (ask - bid) / mid * 1e4
    np.testing.assert_allclose(got[2][ok], bps[ok], rtol=1e-13, atol=1e-12)
    assert np.isnan(got[0][~ok]).all() and np.isnan(got[2][~ok]).all()


def test_quote_metrics_args():
    with pytest.raises(ValueError, match="ask"):
        md.quote_metrics(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="now"):
        md.quote_metrics(np.ones(3), np.ones(3), ts=np.zeros(3, np.int64))
    bid = np.array([1.0, 2.0], dtype=np.float32)
    before = bid.copy()
    m = md.quote_metrics(bid, bid[::-1] + 1)
    np.testing.assert_array_equal(bid, before)
    assert m.mid.dtype == np.float64


# -- bars ----------------------------------------------------------------------------
def random_ticks(n, n_symbols, span_ns, seed, shuffle=False):
    rng = np.random.default_rng(seed)
    ts = np.sort(T0 + rng.integers(0, span_ns, n))
    ts[1::7] = ts[0::7][: len(ts[1::7])]  # duplicate timestamps (ties) ...
    ts.sort()
    sym = rng.integers(0, n_symbols, n)
    price = 100 * np.exp(rng.normal(0, 1e-3, n).cumsum())
    size = rng.integers(0, 500, n).astype(np.float64)
    if shuffle:
        perm = rng.permutation(n)
        ts, sym, price, size = ts[perm], sym[perm], price[perm], size[perm]
    return ts, price, size, sym


def pandas_bars(ts, price, size, sym, n_symbols, tf_ns):
    """Oracle: stable sort by ts, then per symbol ``resample(origin="epoch")`` on a common grid."""
    df = pd.DataFrame({"ts": pd.to_datetime(ts), "price": price, "size": size, "sym": sym, "pv": price * size})
    df = df.sort_values("ts", kind="stable")
    rule = pd.Timedelta(tf_ns, "ns")
    first = ts.min() // tf_ns * tf_ns
    grid = pd.date_range(pd.Timestamp(first), pd.Timestamp(ts.max() // tf_ns * tf_ns), freq=rule)
    out = {k: np.full((n_symbols, len(grid)), np.nan) for k in ("open", "high", "low", "close", "volume", "vwap")}
    out["count"] = np.zeros((n_symbols, len(grid)), np.int64)
    out["volume"][:] = 0.0
    for s, g in df.groupby("sym"):
        r = g.set_index("ts").resample(rule, origin="epoch")
        ohlc = r["price"].ohlc().reindex(grid)
        vol = r["size"].sum().reindex(grid, fill_value=0.0)
        pv = r["pv"].sum().reindex(grid, fill_value=0.0)
        for k in ("open", "high", "low", "close"):
            out[k][s] = ohlc[k].to_numpy()
        out["volume"][s] = vol.to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            out["vwap"][s] = np.where(vol.to_numpy() > 0, pv.to_numpy() / vol.to_numpy(), np.nan)
        out["count"][s] = r["price"].count().reindex(grid, fill_value=0).to_numpy()
    return grid.asi8, out


def check_bars(start, got, ts, price, size, sym, n_symbols, tf_ns):
    grid, want = pandas_bars(ts, price, size, sym, n_symbols, tf_ns)
    np.testing.assert_array_equal(gt.to_numpy(start), grid)
    for k, v in want.items():
        g = gt.to_numpy(got[k])
        if k in ("volume", "vwap"):
            np.testing.assert_allclose(g, v, rtol=1e-12, err_msg=k)
        else:
            np.testing.assert_array_equal(g, v, err_msg=k)


FIELDS = ("open", "high", "low", "close", "volume", "vwap", "count")


@pytest.mark.parametrize("tf", ["1min", "5min", "1h", "1d"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_aggregate_bars_against_pandas(backend, tf, shuffle):
    tf_ns = md.parse_timeframe(tf)
    ts, price, size, sym = random_ticks(3000, 5, 3 * 86400 * NS if tf == "1d" else 6 * 3600 * NS, 1, shuffle)
    be = gt.get_backend(backend)
    bars = md.aggregate_bars(*(be.asarray(a) for a in (ts, price, size, sym)), timeframe=tf, n_symbols=6,
                             backend=backend)
    check_bars(bars.start, {k: getattr(bars, k) for k in FIELDS}, ts, price, size, sym, 6, tf_ns)
    assert bars.count.dtype == np.int64 and bars.open.shape == (6, len(bars.start))


@functools.lru_cache(maxsize=1)
def _segments_on_cpu():
    """The GPU's per-segment body, compiled for the CPU and looped over the segments."""
    import numba

    from gpu_trader.kernels.marketdata import reduce_segment

    @numba.njit
    def run(n_segments, *args):
        for j in range(n_segments):
            reduce_segment(j, *args)

    return run


@pytest.mark.parametrize("shuffle", [False, True])
def test_segmented_reduction_algorithm_on_numpy(shuffle):
    """The GPU algorithm (sort + segments + per-segment reduction) on NumPy arrays."""
    ts, price, size, sym = random_ticks(2000, 4, 3 * 3600 * NS, 2, shuffle)
    tf = 60 * NS
    first, n_bars = ts.min() // tf, ts.max() // tf - ts.min() // tf + 1
    out = market_xp.bars_by_sort(np, _segments_on_cpu(), ts, price, size, sym, tf, first, n_bars, 4)
    check_bars((np.arange(n_bars) + first) * tf, dict(zip(FIELDS, out)), ts, price, size, sym, 4, tf)


_SIM_SCRIPT = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import test_marketdata as t
from gpu_trader.kernels.marketdata import aggregate_bars_xp
ts, price, size, sym = t.random_ticks(300, 3, 3600 * t.NS, 5, True)
tf = 300 * t.NS
first, n_bars = ts.min() // tf, ts.max() // tf - ts.min() // tf + 1
out = aggregate_bars_xp(ts, price, size, sym, tf, first, n_bars, 3, xp=np)
t.check_bars((np.arange(n_bars) + first) * tf, dict(zip(t.FIELDS, out)), ts, price, size, sym, 3, tf)
print("ok")
"""


@pytest.mark.slow
def test_bars_kernel_compiles_to_ptx():
    """The real segment kernel compiled for sm_90 (H100); needs NVVM, not a GPU."""
    assert_compiles_to_ptx("""
        from gpu_trader.kernels.launch import PtxExecutor
        from gpu_trader.kernels.marketdata import aggregate_bars_xp
        exe = PtxExecutor(cc=(9, 0))
        ts = np.arange(10, dtype=np.int64)
        aggregate_bars_xp(ts, np.ones(10), np.ones(10), np.zeros(10, np.int64), 5, 0, 2, 1, xp=np, exe=exe)
        assert len(exe.ptx) == 1 and ".entry" in next(iter(exe.ptx.values()))
    """)


@pytest.mark.slow
def test_bars_kernel_in_cuda_simulator():
    """The real launcher and CUDA kernel in numba's simulator (a subprocess: the flag must be
    set before numba is imported)."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-c", _SIM_SCRIPT, os.path.dirname(__file__)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 200), st.integers(1, 4), st.integers(0, 10_000), st.booleans(),
       st.sampled_from([60, 300, 3600]))
def test_aggregate_bars_property(n, n_symbols, seed, shuffle, tf_s):
    ts, price, size, sym = random_ticks(n, n_symbols, 2 * 3600 * NS, seed, shuffle)
    bars = md.aggregate_bars(ts, price, size, sym, timeframe=tf_s * NS, n_symbols=n_symbols)
    check_bars(bars.start, {k: getattr(bars, k) for k in FIELDS}, ts, price, size, sym, n_symbols, tf_s * NS)


def test_aggregate_bars_float32_strided_and_int_inputs_not_mutated():
    ts, price, size, sym = random_ticks(800, 3, 3600 * NS, 9)
    wide = np.zeros((2, 800), np.float32)
    wide[0] = price
    p32 = wide[0, ::2]  # float32, non-contiguous
    args = (ts[::2], p32, size[::2].astype(np.int64), sym[::2].astype(np.int32))
    before = [a.copy() for a in args]
    bars = md.aggregate_bars(*args, timeframe="5min", n_symbols=3)
    for a, b in zip(args, before):
        np.testing.assert_array_equal(a, b)
    check_bars(bars.start, {k: getattr(bars, k) for k in FIELDS}, ts[::2], p32.astype(np.float64),
               size[::2], sym[::2], 3, 300 * NS)
    assert md.QUOTE_REASONS[md.QUOTE_CROSSED] == "crossed"


def test_aggregate_bars_one_symbol_datetime_and_zero_volume():
    ts = (T0 + np.array([0, 10, 70, 200]) * NS).astype("datetime64[ns]")
    bars = md.aggregate_bars(ts, [1.0, 3.0, 2.0, 4.0], [0.0, 0.0, 5.0, 1.0], timeframe="1min")
    assert bars.open.shape == (4,)
    assert bars.count.tolist() == [2, 1, 0, 1]
    assert np.isnan(bars.vwap[0]) and bars.high[0] == 3.0 and np.isnan(bars.close[2])
    empty = md.aggregate_bars(np.zeros(0, np.int64), [], [], timeframe="1min")
    assert empty.open.shape == (0,)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(price=[1.0, np.nan]), "price"),
        (dict(price=[1.0, -1.0]), "price"),
        (dict(size=[1.0, -1.0]), "size"),
        (dict(symbol=[0, 3], n_symbols=2), "n_symbols"),
        (dict(symbol=[0, -1]), "symbol"),
        (dict(timeframe="1 fortnight"), "timeframe"),
        (dict(timeframe=0), "timeframe"),
        (dict(ts=[1.0, 2.0]), "ts"),
    ],
)
def test_aggregate_bars_bad_input(kwargs, match):
    args = dict(ts=np.array([T0, T0 + 1]), price=[1.0, 2.0], size=[1.0, 1.0], symbol=[0, 1], timeframe="1min")
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        md.aggregate_bars(args.pop("ts"), args.pop("price"), args.pop("size"), args.pop("symbol"), **args)


def test_parse_timeframe():
    import datetime

    assert md.parse_timeframe("1min") == md.parse_timeframe("1T") == md.parse_timeframe(60 * NS)
    assert md.parse_timeframe("1d") == 86400 * NS == md.parse_timeframe(datetime.timedelta(days=1))
    assert md.parse_timeframe(np.timedelta64(5, "m")) == 300 * NS


# -- streaming bars ------------------------------------------------------------------
@pytest.mark.parametrize("tf", ["1min", "15min"])
def test_bar_aggregator_equals_batch(tf):
    ts, price, size, sym = random_ticks(4000, 3, 5 * 3600 * NS, 4)
    size[::11] = 0.0
    agg = md.BarAggregator(tf, ["A", "B", "C"])
    emitted = []
    for t, p, z, s in zip(ts.tolist(), price.tolist(), size.tolist(), sym.tolist()):
        bar = agg.update("ABC"[s] if s % 2 else np.int32(s), t, p, z)  # names and (NumPy) ids both accepted
        if bar is not None:
            emitted.append(bar)
    emitted += agg.flush()
    batch = md.aggregate_bars(ts, price, size, sym, timeframe=tf, n_symbols=3)
    assert len(emitted) == int((batch.count > 0).sum())
    for bar in emitted:
        k = int(np.searchsorted(batch.start, bar.start))
        want = [getattr(batch, f)[bar.symbol, k] for f in FIELDS]
        np.testing.assert_allclose(bar[2:], want, rtol=1e-12)
        assert bar[2:6] == tuple(want[:4]) and bar.count == want[-1]


def test_bar_aggregator_rejects_and_flush():
    agg = md.BarAggregator("1min", 2)
    assert agg.update(0, T0, 10.0, 1.0) is None
    for args, reason in [((0, T0 - 1, 10.0, 1.0), "out_of_order"), ((0, T0, math.nan, 1.0), "invalid_field"),
                         ((0, T0, 10.0, -1.0), "invalid_field"), ((5, T0, 10.0, 1.0), "unknown_symbol")]:
        with pytest.raises(md.MarketDataError) as err:
            agg.update(*args)
        assert err.value.reason == reason
    assert agg.update(1, T0 + 120 * NS, 11.0, 2.0) is None
    start = T0 // (60 * NS) * 60 * NS
    assert [b.symbol for b in agg.flush(now=start + 60 * NS)] == [0]
    assert agg.flush(now=start + 60 * NS) == []
    assert [b.close for b in agg.flush()] == [11.0]


# -- hostile input (issue 13) --------------------------------------------------------
TICK_BASE = {"symbol": "AAPL", "ts": T0, "price": 189.5, "size": 100.0}
QUOTE_BASE = {"symbol": "AAPL", "ts": T0, "bid": 99.5, "ask": 100.5, "bid_size": 3.0, "ask_size": 4.0}
KINDS = {  # base message, price field, size field, single parser, batch parser, ingestor
    "tick": (TICK_BASE, "price", "size", md.parse_tick, md.parse_ticks, md.TickIngestor),
    "quote": (QUOTE_BASE, "bid", "bid_size", md.parse_quote, md.parse_quotes, md.QuoteIngestor),
}


def with_raw(base, field, raw):
    """The JSON text of ``base`` with ``field`` set to the raw JSON ``raw`` (appended when new)."""
    items = [f"{json.dumps(k)}: {raw if k == field else json.dumps(v)}" for k, v in base.items()]
    if field not in base:
        items.append(f"{json.dumps(field)}: {raw}")
    return "{" + ", ".join(items) + "}"


def nested(depth, kind="array"):
    return "[" * depth + "]" * depth if kind == "array" else '{"a": ' * depth + "1" + "}" * depth


def bombs(base, price, size):
    """(name, message, expected reason): size and depth bombs in every kind of field."""
    released = memoryview(json.dumps(base).encode())
    released.release()
    return [
        ("deep array, extra field", with_raw(base, "x", nested(1000)).encode(), "too_large"),
        ("deeper array, extra field", with_raw(base, "x", nested(20_000)).encode(), "too_large"),
        ("deep object, extra field", with_raw(base, "x", nested(1000, "object")).encode(), "too_large"),
        ("deep array as the price", with_raw(base, price, nested(1000)).encode(), "invalid_field"),
        ("deep object as the symbol", with_raw(base, "symbol", nested(1000, "object")).encode(), "invalid_field"),
        ("long string, extra field", with_raw(base, "x", json.dumps("a" * md.MAX_MESSAGE_BYTES)).encode(),
         "too_large"),
        ("long symbol", with_raw(base, "symbol", json.dumps("A" * (md.MAX_SYMBOL_LENGTH + 1))).encode(),
         "invalid_field"),
        ("1e999 price", with_raw(base, price, "1e999").encode(), "invalid_field"),
        ("-1e999 size", with_raw(base, size, "-1e999").encode(), "invalid_field"),
        ("ts past int64", with_raw(base, "ts", str(2**64)).encode(), "invalid_field"),
        ("5000-digit ts", with_raw(base, "ts", "9" * 5000).encode(), "invalid_field"),
        ("int past float as the size", with_raw(base, size, "1" + "0" * 400).encode(), "invalid_field"),
        ("lone surrogate in a str", with_raw(base, "x", '"\ud800"'), "malformed_json"),
        ("non-contiguous buffer", memoryview(with_raw(base, "x", "1").encode())[::2], "malformed_json"),
        ("released buffer", released, "malformed_json"),
        ("not a message", None, "malformed_json"),
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_bombs_are_rejections_and_never_lose_the_batch(kind):
    base, price, size, parse_one, parse_many, ingestor = KINDS[kind]
    good = [json.dumps({**base, "ts": T0 + i}).encode() for i in range(2)]
    for name, bomb, reason in bombs(base, price, size):
        with pytest.raises(md.MarketDataError) as err:
            parse_one(bomb)
        assert err.value.reason == reason, name
        batch = parse_many([good[0], bomb, good[1]])
        assert [(r.index, r.reason) for r in batch.rejected] == [(1, reason)], name
        assert batch.ts.tolist() == [T0, T0 + 1], name
        ing = ingestor()
        assert [(r.index, r.reason) for r in ing.extend([good[0], bomb, good[1]])] == [(1, reason)], name
        with pytest.raises(md.MarketDataError, match=reason):
            ing.append(bomb)
        assert len(ing) == 2


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40_000), st.sampled_from(["array", "object"]), st.sampled_from(["x", *TICK_BASE]))
def test_nesting_of_any_depth_in_any_field_is_a_rejection(depth, kind, field):
    bomb = with_raw(TICK_BASE, field, nested(depth, kind)).encode()
    good = [tick_json(ts=T0), tick_json(ts=T0 + 1)]
    batch = md.parse_ticks([good[0], bomb, good[1]])
    if len(bomb) > md.MAX_MESSAGE_BYTES:
        expected = {"too_large"}
    elif field != "x":
        expected = {"invalid_field"}  # a typed field holding an array or object
    elif depth < 100:
        expected = {None}  # an ignored extra field of modest depth
    elif depth >= sys.getrecursionlimit():
        expected = {"too_large"}
    else:
        expected = {None, "too_large"}  # whether the decoder's depth limit is reached depends on the stack
    got = batch.rejected[0].reason if batch.rejected else None
    assert got in expected
    assert [r.index for r in batch.rejected] in ([], [1])
    assert batch.ts.tolist() == ([T0, T0 + 1] if got else [T0, T0, T0 + 1])


@pytest.mark.parametrize("one", [tick_json(), tick_json().decode(), bytearray(tick_json()), memoryview(tick_json())])
def test_one_message_is_not_a_batch(one):
    for call in (md.parse_ticks, md.parse_quotes, md.TickIngestor().extend, md.QuoteIngestor().extend):
        with pytest.raises(TypeError, match="messages"):
            call(one)
    assert md.parse_tick(one) == md.Tick("AAPL", T0, 189.5, 100.0)  # as a message it parses
    with pytest.raises(TypeError, match="messages"):
        md.parse_ticks(42)


@pytest.mark.parametrize("universe", ["AAPL", "A", b"A", bytearray(b"A")])
def test_symbol_universe_must_be_a_collection_of_names(universe):
    tick = tick_json("A")
    quote = json.dumps({**QUOTE_BASE, "symbol": "A"}).encode()
    calls = [lambda: md.parse_tick(tick, universe), lambda: md.parse_quote(quote, universe),
             lambda: md.parse_ticks([tick], universe), lambda: md.parse_quotes([quote], universe),
             lambda: md.TickIngestor(universe), lambda: md.QuoteIngestor(universe),
             lambda: md.BarAggregator("1min", universe)]
    for call in calls:
        with pytest.raises(TypeError, match="symbols"):
            call()


def test_a_dropped_message_is_a_message_rejection_also_under_its_old_name():
    rejected = md.parse_ticks([tick_json("B")], symbols=["ABC"]).rejected[0]
    assert type(rejected) is md.MessageRejection and md.Rejection is md.MessageRejection
    assert gt.MessageRejection is md.MessageRejection
    assert gt.Rejection is not md.MessageRejection  # the package-level name is the order rejection


def test_symbol_universe_matches_whole_names():
    with pytest.raises(md.MarketDataError, match="unknown_symbol"):
        md.parse_tick(tick_json("B"), symbols=["ABC"])
    assert md.parse_ticks([tick_json("B")], symbols=["ABC"]).rejected[0].reason == "unknown_symbol"
    for universe in (["B"], ("X", "B"), {"B"}, frozenset({"B"}), {"B": 1}):
        assert md.parse_tick(tick_json("B"), symbols=universe).symbol == "B"
    with pytest.raises(TypeError, match="symbols"):
        md.parse_tick(tick_json("B"), symbols=[b"B"])


class _NoScan(frozenset):
    """A universe that may be searched (``in``) but not iterated."""

    def __iter__(self):
        raise AssertionError("the universe was scanned")


def test_parse_tick_searches_the_universe_without_scanning_it():
    """A hit costs one ``in`` (O(1) for a set), not a pass over the universe; a miss checks it."""
    universe = _NoScan({"A", "B"})
    assert md.parse_tick(tick_json("B"), symbols=universe).symbol == "B"
    assert md.parse_quote(json.dumps({**QUOTE_BASE, "symbol": "A"}).encode(), symbols=universe).symbol == "A"
    with pytest.raises(AssertionError, match="scanned"):  # a miss checks the universe (by iterating it)
        md.parse_tick(tick_json("C"), symbols=universe)
    with pytest.raises(TypeError, match="symbols"):  # bytes names: a TypeError, not an unknown symbol
        md.parse_tick(tick_json("C"), symbols=["A", b"C"])
    with pytest.raises(ValueError, match="repeat"):
        md.parse_tick(tick_json("C"), symbols=["A", "A"])
    with pytest.raises(md.MarketDataError, match="unknown_symbol"):
        md.parse_tick(tick_json("C"), symbols=iter(["A", "B"]))
    assert md.parse_tick(tick_json("B"), symbols=(s for s in "AB")).symbol == "B"


# -- streaming bars: types, late ticks -----------------------------------------------
def python_bars(ticks, tf):
    """Oracle: {(symbol, start): (open, high, low, close, volume, vwap, count)} of ticks
    ``(symbol, ts, price, size)`` in arrival order, sums exact (fractions)."""
    acc = {}
    for s, t, p, z in ticks:
        a = acc.setdefault((s, t // tf * tf), [p, p, p, p, Fraction(0), Fraction(0), 0])
        a[1], a[2], a[3] = max(a[1], p), min(a[2], p), p
        a[4] += Fraction(z)
        a[5] += Fraction(p) * Fraction(z)
        a[6] += 1
    out = {}
    for key, (o, h, lo, c, v, pv, n) in acc.items():
        try:
            volume = float(v)  # correctly rounded
        except OverflowError:  # rounds past the float64 maximum
            volume = math.inf
        out[key] = (o, h, lo, c, volume, float(pv / v) if v else math.nan, n)
    return out


def assert_bar(got, want, rtol=1e-12):
    """OHLC and count exact; volume and VWAP to ``rtol`` (NaN == NaN; inf counts as the float64
    maximum: float sums and the exact sum may round to either side of it)."""
    assert tuple(got[:4]) == tuple(want[:4]) and got[6] == want[6]
    top = sys.float_info.max
    np.testing.assert_allclose(np.minimum(got[4:6], top), np.minimum(want[4:6], top), rtol=rtol)


_BAD_UPDATES = [
    (("A", T0, True, 1.0), "invalid_field"),
    (("A", T0, np.True_, 1.0), "invalid_field"),
    (("A", T0, 10.0, True), "invalid_field"),
    (("A", T0, "10.0", 1.0), "invalid_field"),
    (("A", T0, None, 1.0), "invalid_field"),
    (("A", T0, [10.0], 1.0), "invalid_field"),
    (("A", T0, 10**400, 1.0), "invalid_field"),
    (("A", T0, 10.0, 10**400), "invalid_field"),
    (("A", T0, np.float32("nan"), 1.0), "invalid_field"),
    (("A", T0, 10.0, -0.5), "invalid_field"),
    (("A", True, 10.0, 1.0), "invalid_field"),
    (("A", float(T0 + 1), 10.0, 1.0), "invalid_field"),
    (("A", np.float64(T0 + 1), 10.0, 1.0), "invalid_field"),
    (("A", str(T0 + 1), 10.0, 1.0), "invalid_field"),
    (("A", -1, 10.0, 1.0), "invalid_field"),
    (("A", 2**63, 10.0, 1.0), "invalid_field"),
    ((True, T0, 10.0, 1.0), "unknown_symbol"),
    ((np.True_, T0, 10.0, 1.0), "unknown_symbol"),
    ((0.0, T0, 10.0, 1.0), "unknown_symbol"),
    (([0], T0, 10.0, 1.0), "unknown_symbol"),
    (({"A": 0}, T0, 10.0, 1.0), "unknown_symbol"),
    ((None, T0, 10.0, 1.0), "unknown_symbol"),
    (("Z", T0, 10.0, 1.0), "unknown_symbol"),
    ((2, T0, 10.0, 1.0), "unknown_symbol"),
]


def test_bar_aggregator_refusals_are_market_data_errors_and_change_nothing():
    ts, price, size, sym = random_ticks(200, 2, 20 * 60 * NS, 21)
    ticks = list(zip(sym.tolist(), ts.tolist(), price.tolist(), size.tolist()))
    agg = md.BarAggregator("5min", ["A", "B"])
    emitted = []
    for k, (s, t, p, z) in enumerate(ticks):
        args, reason = _BAD_UPDATES[k % len(_BAD_UPDATES)]
        with pytest.raises(md.MarketDataError) as err:
            agg.update(*args)
        assert err.value.reason == reason, args
        emitted += [b for b in [agg.update("AB"[s], t, p, z)] if b is not None]
    emitted += agg.flush()
    want = python_bars(ticks, 300 * NS)
    assert sorted((b.symbol, b.start) for b in emitted) == sorted(want)
    for b in emitted:
        assert_bar(b[2:], want[b.symbol, b.start])


def test_bar_aggregator_takes_numpy_scalars():
    ts, price, size, sym = random_ticks(300, 2, 30 * 60 * NS, 22)
    plain, typed = md.BarAggregator("5min", 2), md.BarAggregator(np.int64(300 * NS), np.int32(2))
    got, want = [], []
    for s, t, p, z in zip(sym, ts, price, size):  # iterating arrays gives NumPy scalars
        want.append(plain.update(int(s), int(t), float(p), float(z)))
        got.append(typed.update(np.uint8(s), np.int64(t), np.float64(p), np.float32(z)))
    assert got + typed.flush() == want + plain.flush()
    ints = md.BarAggregator("1min", 1)
    assert ints.update(0, np.uint64(T0), np.int32(7), np.int16(3)) is None  # integer prices and sizes
    assert ints.flush()[0][2:] == (7.0, 7.0, 7.0, 7.0, 3.0, 7.0, 1)


def test_bar_aggregator_refuses_a_tick_in_a_flushed_bar():
    agg = md.BarAggregator("1min", ["A"])
    start = T0 // (60 * NS) * 60 * NS
    assert agg.update("A", start + NS, 10.0, 1.0) is None
    [bar] = agg.flush(now=start + 60 * NS)
    assert bar.start == start
    with pytest.raises(md.MarketDataError) as err:
        agg.update("A", start + 2 * NS, 11.0, 1.0)
    assert err.value.reason == "out_of_order"
    assert agg.flush() == []
    assert agg.update("A", start + 61 * NS, 12.0, 1.0) is None  # the next bar is open to it
    assert [b.start for b in agg.flush()] == [start + 60 * NS]


_op = st.one_of(
    st.tuples(st.just("tick"), st.integers(0, 1), st.integers(0, 400), st.floats(0.5, 2.0), st.floats(0, 5)),
    st.tuples(st.just("flush"), st.integers(0, 420)),
    st.just(("flush", None)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_op, max_size=60))
def test_bar_aggregator_emits_each_bar_once(ops):
    """Whatever the interleaving of ticks and flushes: a tick is refused exactly when it is
    older than its symbol's latest or falls in a bar already emitted; every bar is emitted
    once and equals the oracle's bar of the accepted ticks."""
    tf = 60 * NS
    agg = md.BarAggregator(tf, 2)
    accepted, emitted, last = [], [], {}
    for op in ops:
        if op[0] == "flush":
            emitted += agg.flush(None if op[1] is None else T0 + op[1] * NS)
            continue
        _, s, dt, p, z = op
        t = T0 + dt * NS
        late = t < last.get(s, 0) or any(b.symbol == s and b.start <= t < b.start + tf for b in emitted)
        try:
            bar = agg.update(s, t, p, z)
        except md.MarketDataError as err:
            assert late and err.reason == "out_of_order"
            continue
        assert not late
        last[s] = t
        accepted.append((s, t, p, z))
        emitted += [bar] if bar is not None else []
    emitted += agg.flush()
    keys = [(b.symbol, b.start) for b in emitted]
    want = python_bars(accepted, tf)
    assert len(keys) == len(set(keys)) and sorted(keys) == sorted(want)
    for b in emitted:
        assert_bar(b[2:], want[b.symbol, b.start])


@pytest.mark.parametrize("now", [True, 1.5, "1", -1, 2**63, np.float64(T0)])
def test_bar_aggregator_flush_checks_now(now):
    agg = md.BarAggregator("1min", 1)
    agg.update(0, T0, 1.0, 1.0)
    with pytest.raises(md.MarketDataError, match="invalid_field: now"):
        agg.flush(now)
    assert len(agg.flush(np.int64(T0 + 60 * NS))) == 1


@pytest.mark.parametrize("symbols, error", [(True, TypeError), (0, ValueError), (2**40, ValueError),
                                            ([], ValueError), (None, TypeError), (["A", "A"], ValueError)])
def test_bar_aggregator_symbols_checked(symbols, error):
    with pytest.raises(error, match="symbols"):
        md.BarAggregator("1min", symbols)


# -- bars: memory guard, timestamps, timeframes ------------------------------------
def test_aggregate_bars_guards_bytes_before_any_allocation(monkeypatch):
    def kernel_must_not_run(*args):
        raise AssertionError("the guard let the grid through")

    monkeypatch.setattr(gt.get_backend("cpu").ops("marketdata"), "aggregate_bars", kernel_must_not_run)
    one = dict(price=[1.0], size=[1.0], timeframe="1min")
    with pytest.raises(ValueError, match="MAX_BAR_BYTES"):  # 2**31 cells: 7 outputs of 16 GiB each
        md.aggregate_bars([T0], symbol=[0], n_symbols=2**31, **one)
    with pytest.raises(ValueError, match="MAX_BAR_BYTES"):  # ~1.7e18 one-nanosecond bars
        md.aggregate_bars([0, T0], [1.0, 1.0], [1.0, 1.0], timeframe=1)
    monkeypatch.setattr(md, "MAX_BAR_BYTES", 1 << 20)
    fits = (md.MAX_BAR_BYTES - market_xp.bar_workspace_bytes(1, 0, 1)) // market_xp.BAR_BYTES_PER_CELL
    assert market_xp.bar_workspace_bytes(1, fits, 1) <= md.MAX_BAR_BYTES < market_xp.bar_workspace_bytes(1, fits + 1, 1)
    with pytest.raises(ValueError, match="MAX_BAR_BYTES"):
        md.aggregate_bars([T0], symbol=[0], n_symbols=fits + 1, **one)
    with pytest.raises(AssertionError, match="guard"):
        md.aggregate_bars([T0], symbol=[0], n_symbols=fits, **one)  # within the limit it goes on


@pytest.mark.parametrize("n, n_symbols, span_min", [(40, 300, 200), (6000, 2, 10), (1, 1, 1)])
def test_bar_memory_bound_covers_the_allocations(n, n_symbols, span_min):
    """bar_workspace_bytes bounds what both algorithms allocate (traced NumPy allocations)."""
    import tracemalloc

    ts, price, size, sym = random_ticks(n, n_symbols, span_min * 60 * NS, 23, shuffle=True)
    tf = 60 * NS
    first, n_bars = ts.min() // tf, ts.max() // tf - ts.min() // tf + 1
    bound = market_xp.bar_workspace_bytes(n, n_symbols, n_bars)
    runs = (lambda: md.aggregate_bars(ts, price, size, sym, timeframe=tf, n_symbols=n_symbols),
            lambda: market_xp.bars_by_sort(np, _segments_on_cpu(), ts, price, size, sym, tf, first, n_bars, n_symbols))
    for run in runs:
        run()  # compile first
        tracemalloc.start()
        try:
            run()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak <= bound


@pytest.mark.parametrize(
    "ts, error",
    [
        (np.array(["2023-11-14T22:13:20", "NaT"], dtype="datetime64[ns]"), ValueError),
        (np.array([T0, -1]), ValueError),
        (np.array([T0, 2**63], dtype=np.uint64), ValueError),
        (np.array(["2023-01-01", "3000-01-01"], dtype="datetime64[D]"), ValueError),  # NumPy's cast wraps to 1830
        (np.array([1, 2], dtype="datetime64[ps]"), ValueError),
        (np.array([1, 2], dtype="datetime64[M]"), ValueError),
        (np.array([1.0, 2.0]), TypeError),
        (np.array([1, 2], dtype="timedelta64[ns]"), TypeError),
        (np.array([True, False]), TypeError),
        ([T0, "x"], TypeError),
        ([[T0], [T0, 1]], TypeError),
        (np.array([[T0, T0]]), ValueError),
    ],
)
def test_aggregate_bars_refuses_bad_timestamps(ts, error):
    with pytest.raises(error, match="ts"):
        md.aggregate_bars(ts, [1.0, 2.0], [1.0, 1.0], timeframe="1min")


@pytest.mark.parametrize("unit", ["W", "D", "h", "m", "s", "ms", "us", "ns"])
def test_aggregate_bars_datetime_units(unit):
    ts, price, size, sym = random_ticks(300, 2, 40 * 86400 * NS, 24)
    coarse = ts.astype("datetime64[ns]").astype(f"datetime64[{unit}]")
    ns = coarse.astype("datetime64[ns]").view(np.int64)  # NumPy's own conversion as the oracle
    got = md.aggregate_bars(coarse, price, size, sym, timeframe="1d", n_symbols=2)
    check_bars(got.start, {k: getattr(got, k) for k in FIELDS}, ns, price, size, sym, 2, 86400 * NS)


@pytest.mark.parametrize(
    "timeframe, error",
    [
        (np.timedelta64("NaT"), ValueError),
        (np.timedelta64(10**17, "D"), ValueError),
        (np.timedelta64(5, "M"), ValueError),
        (np.timedelta64(5), ValueError),
        ("99999999999999999999min", ValueError),
        ("9999999999999999999min", ValueError),
        ("\uff11min", ValueError),
        ("1e3min", ValueError),
        ("0min", ValueError),
        ("x" * 10**6, ValueError),
        (datetime.timedelta(days=-1), ValueError),
        (datetime.timedelta(days=10**8), ValueError),
        (2**63, ValueError),
        (-5, ValueError),
        (True, TypeError),
        (60.0, TypeError),
        (np.float64(60 * NS), TypeError),
        (b"1min", TypeError),
        (None, TypeError),
    ],
)
def test_parse_timeframe_refuses(timeframe, error):
    with pytest.raises(error, match="timeframe"):
        md.parse_timeframe(timeframe)
    with pytest.raises(error, match="timeframe"):
        md.BarAggregator(timeframe, 1)


def test_parse_timeframe_exact_forms():
    assert md.parse_timeframe(pd.Timedelta("1500ns")) == 1500
    assert md.parse_timeframe(np.int32(7)) == 7 and md.parse_timeframe(np.uint64(60 * NS)) == 60 * NS
    assert md.parse_timeframe(np.timedelta64(1, "W")) == 7 * 86400 * NS
    assert md.parse_timeframe(" 15 MIN ") == 900 * NS and md.parse_timeframe("h") == 3600 * NS


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n_symbols=True), TypeError, "n_symbols"),
        (dict(n_symbols=2.0), TypeError, "n_symbols"),
        (dict(symbol=None, n_symbols=3), ValueError, "n_symbols"),
        (dict(symbol=np.array([0, 2**63], np.uint64)), ValueError, "n_symbols|symbol"),
        (dict(symbol=[0, 1.0]), TypeError, "symbol"),
        (dict(price=[[1.0], [2.0, 3.0]]), TypeError, "price"),
        (dict(price=[1.0, 1e309]), ValueError, "price"),
        (dict(size=["1", "2"]), TypeError, "size"),
    ],
)
def test_aggregate_bars_refuses_bad_arguments(kwargs, error, match):
    args = dict(ts=np.array([T0, T0 + 1]), price=[1.0, 2.0], size=[1.0, 1.0], symbol=[0, 1], timeframe="1min")
    args.update(kwargs)
    with pytest.raises(error, match=match):
        md.aggregate_bars(args.pop("ts"), args.pop("price"), args.pop("size"), args.pop("symbol"), **args)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(now=True), TypeError, "now"),
        (dict(now=float(T0)), TypeError, "now"),
        (dict(now=2**63), ValueError, "now"),
        (dict(max_age=-1), ValueError, "max_age"),
        (dict(ts=np.array([-5, T0])), ValueError, "ts"),
        (dict(ts=np.array([T0, 2**63], np.uint64)), ValueError, "ts"),
        (dict(ts=np.array(["NaT", "NaT"], "datetime64[ns]")), ValueError, "ts"),
        (dict(ts=np.array([T0, T0, T0])), ValueError, "ts"),
        (dict(ts=None), ValueError, "ts"),
    ],
)
def test_quote_metrics_refuses_bad_times(kwargs, error, match):
    args = dict(ts=np.array([T0, T0 + 1]), now=T0 + 10, max_age=5)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        md.quote_metrics(np.array([1.0, 2.0]), np.array([1.5, 2.5]), **args)


def test_quote_metrics_staleness_with_numpy_and_datetime_times():
    ts = np.array([T0, T0 + 7, T0 + 10])
    want = np.array([md.QUOTE_STALE, md.QUOTE_OK, md.QUOTE_OK], np.int8)  # now - ts > max_age only for the first
    for t in (ts, ts.astype(np.uint64), ts.astype("datetime64[ns]")):
        got = md.quote_metrics(np.ones(3), np.full(3, 2.0), ts=t, now=np.int64(T0 + 10), max_age=np.uint8(5))
        np.testing.assert_array_equal(got.status, want)


# -- derived quantities never overflow for finite inputs ------------------------------
_positive = st.floats(min_value=5e-324, max_value=sys.float_info.max)


@settings(max_examples=200, deadline=None)
@given(_positive, _positive)
def test_mid_is_the_rounded_midpoint_without_overflow(bid, ask):
    exact = (Fraction(bid) + Fraction(ask)) / 2
    lo, hi = min(bid, ask), max(bid, ask)
    q = md.Quote("X", 0, lo, hi, 1.0, 1.0)
    assert lo <= q.mid <= hi
    assert abs(Fraction(q.mid) - exact) <= Fraction(math.ulp(float(exact)))
    assert math.isfinite(q.spread_bps) and q.spread_bps >= 0
    m = md.quote_metrics(np.array([lo]), np.array([hi]))
    assert m.status[0] == md.QUOTE_OK and m.mid[0] == q.mid and m.spread_bps[0] == q.spread_bps


def test_mid_at_the_float_maximum():
    q = md.parse_quote(b'{"symbol":"X","ts":5,"bid":1.7e308,"ask":1.7e308,"bid_size":1,"ask_size":2}')
    assert (q.mid, q.spread, q.spread_bps) == (1.7e308, 0.0, 0.0)
    big = np.array([1.7e308, 1.79e308])
    m = md.quote_metrics(big, big[::-1].copy()[::-1])
    np.testing.assert_array_equal(m.mid, big)


_extreme_trades = st.lists(st.tuples(st.one_of(st.floats(1e-3, sys.float_info.max),
                                                st.floats(sys.float_info.min, 1e-290)),
                                      st.one_of(st.just(0.0), st.floats(1e-6, sys.float_info.max),
                                                st.floats(5e-324, 1e-300))),
                            min_size=1, max_size=12)


@settings(max_examples=80, deadline=None)
@given(_extreme_trades)
@example([(1.0, 0.0), (1.0, 5e-324), (0.5, 5e-324)])  # 0.5 * 5e-324 rounds to 0: VWAP 0.75, not 0.5
@example([(3.0, 1e-310), (1e-300, 7e-320)])  # subnormal products of tiny prices and sizes
# a huge price with a negligible size next to tiny prices with huge sizes: scaling by the highest
# price pushed the prices that carry the mean into subnormals (1e-9 relative error)
@example([(1.1713196930641693e+23, 1e-06), (5.2464231054948234e-291, 4.947349661673285e+307),
          (2.1526512530522962e-291, 1.7678586223586123e+308)])
def test_vwap_exact_at_the_float_extremes(trades):
    """Batch and streaming VWAP (and volume) against exact fractions, prices and sizes from
    the float64 maximum down to the subnormal range (where ``price * size`` underflows):
    VWAP stays in [low, high]; volume is inf only past the maximum."""
    price, size = (np.array(x) for x in zip(*trades))
    ts = T0 + np.arange(len(trades)) * 11 * NS  # a few one-minute bars
    tf = 60 * NS
    want = python_bars([(0, int(t), float(p), float(z)) for t, p, z in zip(ts, price, size)], tf)
    batch = md.aggregate_bars(ts, price, size, timeframe=tf)
    agg = md.BarAggregator(tf, 1)
    streamed = [b for t, p, z in zip(ts.tolist(), price.tolist(), size.tolist()) if (b := agg.update(0, t, p, z))]
    streamed += agg.flush()
    assert [b.start for b in streamed] == sorted(start for _, start in want)
    for b in streamed:
        assert_bar(b[2:], want[0, b.start])  # streaming is exact past an overflow
        k = int(np.searchsorted(batch.start, b.start))
        got = [getattr(batch, f)[k] for f in FIELDS]
        assert_bar(got, want[0, b.start], rtol=1e-9)
        assert got[2] <= got[5] <= got[1] or np.isnan(got[5])


def test_vwap_when_the_volume_overflows():
    price, size = np.array([1e308, 2e307, 5e307]), np.full(3, 1e308)
    ts = T0 + np.arange(3)
    bars = md.aggregate_bars(ts, price, size, timeframe="1min")
    agg = md.BarAggregator("1min", 1)
    for t, p, z in zip(ts.tolist(), price.tolist(), size.tolist()):
        agg.update(0, t, p, z)
    [bar] = agg.flush()
    exact = float(sum(Fraction(p) for p in price.tolist()) / 3)  # equal sizes: the mean price
    assert bars.volume[0] == bar.volume == math.inf
    np.testing.assert_allclose([bars.vwap[0], bar.vwap], exact, rtol=1e-12)


# -- read-only and pandas inputs -----------------------------------------------------
@pytest.mark.parametrize("writable", list(itertools.product([False, True], repeat=4)))
def test_aggregate_bars_read_only_and_mixed_inputs(writable):
    ts, price, size, sym = random_ticks(300, 3, 2 * 3600 * NS, 25, shuffle=True)
    args = [a.copy() for a in (ts, price, size, sym)]
    for a, w in zip(args, writable):
        a.flags.writeable = w
    bars = md.aggregate_bars(*args, timeframe="5min", n_symbols=3)
    check_bars(bars.start, {k: getattr(bars, k) for k in FIELDS}, ts, price, size, sym, 3, 300 * NS)


def test_aggregate_bars_from_pandas_columns():
    ts, price, size, sym = random_ticks(500, 3, 3 * 3600 * NS, 26)
    df = pd.DataFrame({"ts": pd.to_datetime(ts), "price": price, "size": size.astype(np.int64),
                       "sym": sym.astype(np.int16)})
    columns = [df["ts"].to_numpy(), df["price"].to_numpy(), df["size"].to_numpy().astype(np.float64),
               df["sym"].to_numpy()]
    assert not columns[1].flags.writeable and columns[2].flags.writeable  # a mix, as the issue had it
    for args in (columns, [df["ts"], df["price"], df["size"], df["sym"]]):
        bars = md.aggregate_bars(*args, timeframe="15min", n_symbols=3)
        check_bars(bars.start, {k: getattr(bars, k) for k in FIELDS}, ts, price, size, sym, 3, 900 * NS)


def test_gpu_algorithm_and_quote_metrics_take_read_only_arrays():
    ts, price, size, sym = random_ticks(500, 3, 3600 * NS, 27, shuffle=True)
    for a in (ts, price, size, sym):
        a.flags.writeable = False
    tf = 60 * NS
    first, n_bars = ts.min() // tf, ts.max() // tf - ts.min() // tf + 1
    out = market_xp.bars_by_sort(np, _segments_on_cpu(), ts, price, size, sym, tf, first, n_bars, 3)
    check_bars((np.arange(n_bars) + first) * tf, dict(zip(FIELDS, out)), ts, price, size, sym, 3, tf)
    ask = price * 1.001
    ask.flags.writeable = False
    now, max_age = int(ts.max()), 1800 * NS
    got = md.quote_metrics(price, ask, size, size, ts=ts, now=now, max_age=max_age)
    stale = now - ts > max_age  # the oracle: every quote is valid and uncrossed, so only staleness
    np.testing.assert_array_equal(got.status, np.where(stale, md.QUOTE_STALE, md.QUOTE_OK).astype(np.int8))
    ok = ~stale
    assert 100 < ok.sum() < len(ts)
    mid = (price + ask) / 2  # ask within 2x of bid: bit-equal to the overflow-free midpoint
    for g, w in ((got.mid, mid), (got.spread, ask - price), (got.spread_bps, (ask - price) / mid * 1e4)):
        np.testing.assert_array_equal(g[ok], w[ok])
        assert np.isnan(g[stale]).all()
