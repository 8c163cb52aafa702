"""gpu_trader.marketdata: parsing and validation, quote processing, bar aggregation.

Oracles: the stdlib ``json`` module plus hand-written rules for the parser; plain
NumPy float64 for quote metrics; pandas ``groupby`` + ``resample(origin="epoch")``
for bars (batch on every backend, the GPU's segmented-reduction algorithm run on
NumPy, and the streaming :class:`BarAggregator`).
"""
from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpu_trader as gt
from conftest import assert_compiles_to_ptx
from gpu_trader import market_math as mm
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
    """An ingestor holding 10K ticks (TARGETS.md: memory per connection < 10 MB)."""
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
    out = mm.bars_by_sort(np, _segments_on_cpu(), ts, price, size, sym, tf, first, n_bars, 4)
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





def test_bars_kernel_compiles_to_ptx():
    """The real segment kernel compiled for sm_90 (H100); needs NVVM, not a GPU."""
    assert_compiles_to_ptx("""
        from gpu_trader.kernels.indicators import PtxExecutor
        from gpu_trader.kernels.marketdata import aggregate_bars_xp
        exe = PtxExecutor(cc=(9, 0))
        ts = np.arange(10, dtype=np.int64)
        aggregate_bars_xp(ts, np.ones(10), np.ones(10), np.zeros(10, np.int64), 5, 0, 2, 1, xp=np, exe=exe)
        assert len(exe.ptx) == 1 and ".entry" in next(iter(exe.ptx.values()))
    """)


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
