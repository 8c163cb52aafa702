"""gpu_trader.stops: stop levels against pandas (cummax, rolling max/min) and TA-Lib's ATR,
the streaming trailing stop against the batch bar by bar, the stop check and closing orders,
and the CUDA kernels' row bodies in numba's simulator."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_trader import stops
from gpu_trader.indicators import atr as our_atr
from gpu_trader.portfolio import Portfolio

talib = pytest.importorskip("talib")
ROOT = Path(__file__).resolve().parent.parent


def ohlc(seed: int, n: int, T: int, nan: float = 0.0):
    rng = np.random.default_rng(seed)
    c = 100 + np.cumsum(rng.normal(0, 1, (n, T)), axis=1)
    h, lo = c + rng.uniform(0, 1, (n, T)), c - rng.uniform(0, 1, (n, T))
    if nan:
        for x in (h, lo, c):
            x[rng.random((n, T)) < nan] = np.nan
    return h, lo, c


def pandas_trailing(price, atr, start, f, k, short):
    """The oracle: the running extreme (pandas cummax / cummin, NaN skipped; a NaN bar keeps
    the stop: ffill) of the per-bar candidate from the entry bar on."""
    cand = price * (1 + f) + k * atr if short else price * (1 - f) - k * atr
    s = pd.Series(cand)
    s[: start] = np.nan
    out = (s.cummin() if short else s.cummax()).ffill().to_numpy().copy()
    out[:start] = np.nan
    return out


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 4), st.integers(1, 40), st.sampled_from([0.0, 0.05]),
       st.sampled_from([0.0, 2.0]), st.booleans(), st.sampled_from(["float64", "float32"]))
def test_trailing_stop_matches_pandas(seed, n, T, f, k, short, dtype):
    h, lo, c = ohlc(seed, n, T, nan=0.1)
    rng = np.random.default_rng(seed + 1)
    start = rng.integers(0, T + 2, n)
    atr = np.abs(rng.normal(1, 0.3, (n, T)))
    price = (lo if short else h).astype(dtype)
    got = stops.trailing_stop(price, percent=f, atr=atr.astype(dtype) if k else None, multiple=k,
                              side="short" if short else "long", start=start)
    assert got.dtype == np.float64 and got.shape == (n, T)
    for r in range(n):
        ref = pandas_trailing(price[r].astype(np.float64), atr[r].astype(dtype).astype(np.float64) if k else 0.0,
                              int(start[r]), f, k, short)
        np.testing.assert_allclose(got[r], ref, rtol=1e-15, equal_nan=True)
        d = np.diff(got[r][~np.isnan(got[r])])
        assert (d <= 0).all() if short else (d >= 0).all()  # never loosens


def test_trailing_stop_with_talib_atr_non_contiguous_and_read_only():
    h, lo, c = ohlc(4, 3, 80)
    atr = np.stack([talib.ATR(h[i], lo[i], c[i], 14) for i in range(3)])
    hf = np.asfortranarray(h)
    hf.flags.writeable = False
    got = stops.trailing_stop(hf, atr=atr, multiple=3.0, start=np.array([0, 20, 79]))
    for r, s in enumerate((0, 20, 79)):
        np.testing.assert_array_equal(got[r], pandas_trailing(h[r], atr[r], s, 0.0, 3.0, False))
    one = stops.trailing_stop(h[0], percent=0.1)
    np.testing.assert_array_equal(one, pd.Series(h[0] * 0.9).cummax().to_numpy())


@pytest.mark.parametrize("short", [False, True])
def test_chandelier_matches_pandas_and_talib(short):
    h, lo, c = ohlc(7, 3, 90, nan=0.02)
    got = stops.chandelier_exit(h, lo, c, window=22, multiple=3.0, side="short" if short else "long")
    for r in range(3):  # with NaNs: the ATR gpu_trader.indicators documents (TA-Lib exact on clean data, below)
        atr = our_atr(h[r], lo[r], c[r], 22)
        if short:
            ref = pd.Series(lo[r]).rolling(22).min().to_numpy() + 3.0 * atr
        else:
            ref = pd.Series(h[r]).rolling(22).max().to_numpy() - 3.0 * atr
        np.testing.assert_allclose(got[r], ref, rtol=1e-14, equal_nan=True)
        assert np.array_equal(np.isnan(got[r]), np.isnan(ref))
    h, lo, c = ohlc(8, 2, 60)  # without NaNs: TA-Lib's own ATR
    got = stops.chandelier_exit(h, lo, c, window=10, multiple=2.0)
    for r in range(2):
        ref = pd.Series(h[r]).rolling(10).max().to_numpy() - 2.0 * talib.ATR(h[r], lo[r], c[r], 10)
        np.testing.assert_allclose(got[r], ref, rtol=1e-13, equal_nan=True)


def test_percent_and_atr_stops():
    h, lo, c = ohlc(9, 2, 40)
    entry = c[:, 20].copy()
    np.testing.assert_array_equal(stops.percent_stop(entry, 0.05), entry * 0.95)
    np.testing.assert_array_equal(stops.percent_stop(entry.astype(np.float32), 0.05, side="short"),
                                  entry.astype(np.float32).astype(np.float64) * 1.05)
    got = stops.atr_stop(entry, h, lo, c, window=14, multiple=2.5, side="long")
    for r in range(2):
        np.testing.assert_allclose(got[r], entry[r] - 2.5 * talib.ATR(h[r], lo[r], c[r], 14), rtol=1e-14,
                                   equal_nan=True)
    assert stops.atr_stop(c, h, lo, c, window=5, side="short").shape == (2, 40)


@pytest.mark.parametrize("call, exc, name", [
    (lambda: stops.percent_stop(np.ones(3), 1.0), ValueError, "percent"),
    (lambda: stops.percent_stop(np.ones(3), 0.1, side="up"), ValueError, "side"),
    (lambda: stops.trailing_stop(np.ones((2, 3)), percent=-0.1), ValueError, "percent"),
    (lambda: stops.trailing_stop(np.ones((2, 3)), start=np.array([0, -1])), ValueError, "start"),
    (lambda: stops.trailing_stop(np.ones((2, 3)), start=np.array([0.5, 1])), TypeError, "start"),
    (lambda: stops.trailing_stop(np.ones((2, 3)), start=np.array([0, 1, 2])), ValueError, "start"),
    (lambda: stops.trailing_stop(np.ones((2, 3)), atr=np.ones((2, 4)), multiple=1), ValueError, "atr"),
    (lambda: stops.chandelier_exit(np.ones(5), np.ones(5), np.ones(5), window=0), ValueError, "window"),
    (lambda: stops.atr_stop(np.ones(4), np.ones((2, 5)), np.ones((2, 5)), np.ones((2, 5))), ValueError, "entry"),
    (lambda: stops.stop_check(np.ones(3), np.ones(4), 1.0), ValueError, "broadcast"),
])
def test_bad_arguments(call, exc, name):
    with pytest.raises(exc, match=name):
        call()


@pytest.mark.parametrize("short", [False, True])
def test_stream_equals_batch_bar_by_bar(short):
    h, lo, c = ohlc(11, 4, 50, nan=0.05)
    atr = np.stack([talib.ATR(np.nan_to_num(h[i], nan=100), np.nan_to_num(lo[i], nan=100),
                              np.nan_to_num(c[i], nan=100), 5) for i in range(4)])
    start = np.array([0, 3, 17, 60])
    side = "short" if short else "long"
    batch = stops.trailing_stop(c, percent=0.02, atr=atr, multiple=1.5, side=side, start=start)
    stream = stops.TrailingStopStream(4, percent=0.02, multiple=1.5, side=side, active=False)
    for t in range(50):
        stream.enter(start == t)
        np.testing.assert_array_equal(stream.update(c[:, t], atr[:, t]), batch[:, t])
    np.testing.assert_array_equal(stream.levels, batch[:, -1])
    stream.exit([0])
    assert np.isnan(stream.update(c[:, 0], atr[:, 0])[0])
    with pytest.raises(ValueError, match="atr"):
        stream.update(c[:, 0])
    with pytest.raises(ValueError, match="price"):
        stream.update(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="symbols"):
        stream.enter([4])


def test_stop_check_and_orders():
    q = np.array([[10.0, -5.0, 0.0, 3.0, 2.0]])
    p = np.array([9.0, 12.0, 1.0, np.nan, 10.0])
    s = np.array([9.0, 11.0, 5.0, 1.0, np.nan])
    np.testing.assert_array_equal(stops.stop_check(q, p, s), [[True, True, False, False, False]])
    q32 = q.astype(np.float32)[:, ::-1]
    np.testing.assert_array_equal(stops.stop_check(q32, p[::-1], s[::-1]), [[False, False, False, True, True]])
    pf = Portfolio(1e6)
    pf.apply_fill("L", 10.0, 10.0)
    pf.apply_fill("S", -5.0, 10.0)
    pf.apply_fill("K", 4.0, 10.0)
    orders = stops.stop_orders(pf, {"L": 9.0, "S": 12.0, "K": float("nan")}, {"L": 9.5, "S": 11.0, "K": 9.0})
    assert [(o.symbol, o.side, o.quantity, o.order_type) for o in orders] == [
        ("L", "sell", 10.0, "market"), ("S", "buy", 5.0, "market")]
    with pytest.raises(TypeError, match="stops"):
        stops.stop_orders(pf, {"L": 9.0}, {"L": "x"})


SIM_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from gpu_trader.kernels.sizing import rolling_extreme_xp, trailing_stop_xp
    from gpu_trader._internal.stop_loops import extreme_row, trailing_row
    rng = np.random.default_rng(0)
    p = rng.normal(100, 3, (5, 24)); p[1, 4] = np.nan
    a = np.abs(rng.normal(1, 0.2, (5, 24)))
    start = np.array([0, 2, 5, 23, 30], dtype=np.int64)
    ok = []
    for short in (0, 1):
        want = np.empty_like(p)  # the row bodies run as plain Python: the CPU's source
        for r in range(5):
            trailing_row(r, p, a, start, 0.01, 2.0, short, 1, want)
        ok.append(np.array_equal(trailing_stop_xp(np, p, a, start, 0.01, 2.0, short), want, equal_nan=True))
        for r in range(5):
            extreme_row(r, p, 4, short, want)
        ok.append(np.array_equal(rolling_extreme_xp(np, p, 4, short), want, equal_nan=True))
    print(json.dumps(ok))
""")


def test_cuda_row_bodies_in_the_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    out = subprocess.run([sys.executable, "-c", SIM_SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    if out.returncode and "numba.cuda" in out.stderr and "No module" in out.stderr:
        pytest.skip("numba.cuda is not installed")
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [True] * 4


def test_hostile_starts_empty_series_and_a_missing_atr():
    p = np.array([10.0, 11.0, 10.5, 12.0])
    # multiple > 0 without atr: refused (it used to trail by 0 ATRs, as if multiple were 0)
    with pytest.raises(ValueError, match="atr"):
        stops.trailing_stop(p, multiple=3.0)
    # a start beyond int64 (or a uint64 that would wrap negative) is all NaN, like any start >= T
    assert np.isnan(stops.trailing_stop(p, start=10**30)).all()
    assert np.isnan(stops.trailing_stop(p[None], start=np.array([2**63 + 5], dtype=np.uint64))).all()
    np.testing.assert_array_equal(stops.trailing_stop(p, start=np.int64(2)), [np.nan, np.nan, 10.5, 12.0])
    # no bars: empty results, not a reshape error
    assert stops.trailing_stop(np.empty((3, 0))).shape == (3, 0)
    assert stops.chandelier_exit(*(np.empty((2, 0)),) * 3).shape == (2, 0)
    # one series: its entry price may be a number, as documented ("(...)" is "()" there)
    h, lo, c = p + 1.0, p - 1.0, p
    a = our_atr(h, lo, c, 2)
    np.testing.assert_array_equal(stops.atr_stop(10.0, h, lo, c, window=2, multiple=2.0), 10.0 - 2.0 * a)
    np.testing.assert_array_equal(stops.atr_stop(np.float32(10.0), h, lo, c, window=2, multiple=2.0,
                                                 side="short"), 10.0 + 2.0 * a)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 3), st.integers(0, 40), st.integers(1, 8), st.booleans(),
       st.sampled_from([0.0, 0.03]), st.sampled_from(["float64", "float32"]), st.data())
def test_chandelier_stream_equals_batch_bar_by_bar(seed, n, T, window, short, nan, dtype, data):
    h, lo, c = (x.astype(dtype) for x in ohlc(seed, n, T, nan=nan))
    listing = np.random.default_rng(seed + 2).integers(0, T + 1, n)  # NaN in every field before a listing date
    for x in (h, lo, c):
        x[np.arange(T)[None, :] < listing[:, None]] = np.nan
        x.flags.writeable = False
    side = "short" if short else "long"
    batch = stops.chandelier_exit(h, lo, c, window=window, multiple=2.5, side=side)
    stream = stops.ChandelierStream(n, window=window, multiple=2.5, side=side)
    split = data.draw(st.integers(0, T), label="split")  # bars fed by warmup (in two calls), then updates
    mid = split // 2
    stream.warmup(h[:, :mid], lo[:, :mid], c[:, :mid])
    got = stream.warmup(h[:, mid:split], lo[:, mid:split], c[:, mid:split])
    if split:
        np.testing.assert_array_equal(got, batch[:, split - 1])
    else:
        assert np.isnan(got).all()
    for t in range(split, T):  # h[:, t]: a strided, read-only row
        level = stream.update(h[:, t], lo[:, t], c[:, t])
        assert level.dtype == np.float64 and level.shape == (n,)
        np.testing.assert_array_equal(level, batch[:, t])
    np.testing.assert_array_equal(stream.levels, batch[:, -1] if T else np.full(n, np.nan))
    assert stream.n_bars == T
    stream.reset()  # starts over: the same history again gives the same levels
    if T:
        np.testing.assert_array_equal(stream.warmup(h, lo, c), batch[:, -1])


def test_chandelier_stream_against_pandas_and_talib():
    h, lo, c = ohlc(12, 2, 60)
    stream = stops.ChandelierStream(2, window=10, multiple=2.0)
    got = np.stack([stream.update(h[:, t], lo[:, t], c[:, t]) for t in range(60)], axis=1)
    short = stops.ChandelierStream(2, window=10, multiple=2.0, side="short")
    got_short = np.stack([short.update(h[:, t], lo[:, t], c[:, t]) for t in range(60)], axis=1)
    for r in range(2):
        atr = talib.ATR(h[r], lo[r], c[r], 10)
        np.testing.assert_allclose(got[r], pd.Series(h[r]).rolling(10).max().to_numpy() - 2.0 * atr,
                                   rtol=1e-13, equal_nan=True)
        np.testing.assert_allclose(got_short[r], pd.Series(lo[r]).rolling(10).min().to_numpy() + 2.0 * atr,
                                   rtol=1e-13, equal_nan=True)
        assert np.isnan(got[r, :10]).all() and not np.isnan(got[r, 10:]).any()  # ATR(10)'s lookback


def test_chandelier_stream_arguments_and_refused_rows():
    for kwargs, exc, name in [({"window": 0}, ValueError, "window"), ({"multiple": -1.0}, ValueError, "multiple"),
                              ({"side": "up"}, ValueError, "side"), ({"window": 2.5}, TypeError, "window")]:
        with pytest.raises(exc, match=name):
            stops.ChandelierStream(2, **kwargs)
    with pytest.raises(ValueError, match="n_symbols"):
        stops.ChandelierStream(0)
    h, lo, c = ohlc(13, 2, 8)
    stream = stops.ChandelierStream(2, window=3, multiple=1.0)
    stream.warmup(h[:, :5], lo[:, :5], c[:, :5])
    before = stream.levels
    for args, exc, name in [((h[:, 5], lo[:, 5], np.ones(3)), ValueError, "close"),
                            ((h[:, 5], lo[:5, None], c[:, 5]), ValueError, "low"),
                            ((["a", "b"], lo[:, 5], c[:, 5]), TypeError, "high"),
                            ((h[:, 5], None, c[:, 5]), TypeError, "low")]:
        with pytest.raises(exc, match=name):
            stream.update(*args)
    for args, name in [((h, lo[:, :4], c), "differ"), ((h[0], lo, c), "high")]:
        with pytest.raises(ValueError, match=name):
            stream.warmup(*args)
    assert stream.n_bars == 5  # nothing refused moved the stream
    np.testing.assert_array_equal(stream.levels, before)
    batch = stops.chandelier_exit(h, lo, c, window=3, multiple=1.0)
    np.testing.assert_array_equal(stream.update(h[:, 5], lo[:, 5], c[:, 5]), batch[:, 5])
    one = stops.ChandelierStream(1, window=3, multiple=1.0)  # one symbol: a (T,) history
    np.testing.assert_array_equal(one.warmup(h[0], lo[0], c[0]), batch[:1, -1])
