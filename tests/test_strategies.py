"""gpu_trader.strategies against an independent NumPy float64 reimplementation.

Indicator inputs of the oracle come from TA-Lib (EMA, SMA, STDDEV); the signal rules
and the P&L convention (signal of bar t earns the return t -> t+1, costs per unit
of position change, NaN returns earn 0) are re-derived here with NumPy. The GPU
kernel runs in numba's CUDA simulator (subprocess) and, with a GPU, on the device.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

import gpu_trader as gt
from conftest import assert_compiles_to_ptx
from gpu_trader import strategies as S
from gpu_trader._internal import sweep_plan

AREA = "strategies"  # the backends that implement it run these tests (conftest.py)


def prices(n_series, T, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (100 * np.exp(rng.normal(0, 0.01, (n_series, T)).cumsum(-1))).astype(dtype)


def oracle_pnl(close, sig, cost_bps):
    close = close.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = close[1:] / close[:-1] - 1.0
    r = np.where(np.isfinite(r), r, 0.0)
    prev = np.concatenate(([0.0], sig[:-1].astype(np.float64)))
    return float(np.sum(sig[:-1] * r) - cost_bps / 1e4 * np.sum(np.abs(sig - prev)))


def oracle_momentum(close, fast, slow):
    c = close.astype(np.float64)
    a, b = talib.EMA(c, fast), talib.EMA(c, slow)
    return np.where(a > b, 1, np.where(a < b, -1, 0)).astype(np.int8)


def oracle_reversion(close, window, nstd):
    c = close.astype(np.float64)
    ma, sd = talib.SMA(c, window), talib.STDDEV(c, window, 1.0)
    return np.where(c < ma - nstd * sd, 1, np.where(c > ma + nstd * sd, -1, 0)).astype(np.int8)


def check_result(res, close, grid, oracle, cost_bps):
    sig, pnl = gt.to_numpy(res.signals), gt.to_numpy(res.pnl)
    assert sig.dtype == np.int8 and pnl.dtype == np.float64
    for gi, params in grid:
        for i in range(close.shape[0]):
            want = oracle(close[i], *params)
            np.testing.assert_array_equal(sig[gi + (i,)], want, err_msg=f"{params} series {i}")
            np.testing.assert_allclose(pnl[gi + (i,)], oracle_pnl(close[i], want, cost_bps), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_momentum_grid(backend, dtype):
    close = prices(4, 400, 1, dtype)
    close[2, :30] = np.nan  # a late listing
    fasts, slows = [3, 10, 12], [12, 26]
    res = S.momentum(gt.get_backend(backend).asarray(close), fasts, slows, cost_bps=2.0, backend=backend)
    assert res.signals.shape == (3, 2, 4, 400) and res.pnl.shape == (3, 2, 4)
    grid = [((a, b), (f, s)) for a, f in enumerate(fasts) for b, s in enumerate(slows)]
    check_result(res, close, grid, oracle_momentum, 2.0)


def test_mean_reversion_grid(backend):
    close = prices(3, 500, 2)
    windows, nstds = [5, 20], [0.0, 1.0, 2.5]
    res = S.mean_reversion(gt.get_backend(backend).asarray(close), windows, nstds, cost_bps=1.0, backend=backend)
    assert res.signals.shape == (2, 3, 3, 500)
    grid = [((a, b), (w, k)) for a, w in enumerate(windows) for b, k in enumerate(nstds)]
    check_result(res, close, grid, oracle_reversion, 1.0)
    assert set(np.unique(gt.to_numpy(res.signals))) == {-1, 0, 1}


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 60), st.integers(1, 15), st.integers(1, 15), st.integers(0, 999), st.floats(0, 50))
def test_momentum_property_short_series_and_nans(T, fast, slow, seed, cost):
    close = prices(2, T, seed)
    rng = np.random.default_rng(seed)
    close[rng.random(close.shape) < 0.05] = np.nan  # interior NaNs
    res = S.momentum(close, fast, slow, cost_bps=cost)
    check_result(res, close, [((), (fast, slow))], oracle_momentum, cost)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 60), st.integers(2, 15), st.floats(0, 3), st.integers(0, 999), st.floats(0, 50))
def test_mean_reversion_property_short_series(T, window, nstd, seed, cost):
    close = prices(2, T, seed)
    res = S.mean_reversion(close, window, nstd, cost_bps=cost)
    check_result(res, close, [((), (window, nstd))], oracle_reversion, cost)


def test_scalar_params_pandas_and_noncontiguous():
    close = prices(3, 200, 3)
    df = pd.DataFrame(close.T, index=pd.date_range("2024-01-01", periods=200))
    res = S.momentum(df, 5, 20)
    assert isinstance(res.signals, pd.DataFrame) and res.signals.shape == (200, 3)
    np.testing.assert_array_equal(res.signals.to_numpy().T, np.stack([oracle_momentum(x, 5, 20) for x in close]))
    strided = np.asfortranarray(close)[:, ::2]
    res = S.mean_reversion(strided, 10, 1.5)
    np.testing.assert_array_equal(res.signals, np.stack([oracle_reversion(x, 10, 1.5) for x in strided]))


def test_bad_input():
    with pytest.raises(ValueError, match="fast"):
        S.momentum(prices(1, 50), 0, 10)
    with pytest.raises(TypeError, match="slow"):
        S.momentum(prices(1, 50), 5, 2.5)
    with pytest.raises(ValueError, match="cost_bps"):
        S.momentum(prices(1, 50), cost_bps=-1)
    with pytest.raises(ValueError, match="window"):
        S.MeanReversion(1, 2.0)
    with pytest.raises(TypeError, match="strategies"):
        S.StrategyRunner([])
    close = prices(1, 50)
    before = close.copy()
    S.mean_reversion(close, 10)
    np.testing.assert_array_equal(close, before)


def test_integer_parameters_are_bounded():
    from gpu_trader._internal.validation import MAX_ELEMENTS, MAX_GRID, MAX_WINDOW

    close = prices(1, 60)
    for bad in (2**63, 2**63 - 1, MAX_WINDOW + 1, -(2**63), np.uint64(2**64 - 1)):
        with pytest.raises(ValueError, match="fast"):
            S.momentum(close, bad, 20)
        with pytest.raises(ValueError, match="slow"):
            S.Momentum(5, bad)
        with pytest.raises(ValueError, match="window"):
            S.mean_reversion(close, [10, bad])
        with pytest.raises(ValueError, match="window"):
            S.MeanReversion(bad)
    for bad in (True, np.True_, 5.0, [5, 10]):
        with pytest.raises(TypeError, match="fast"):
            S.Momentum(bad, 20)
    with pytest.raises(TypeError, match="nstd"):
        S.MeanReversion(20, [1.0, 2.0])
    with pytest.raises(TypeError, match="cost_bps"):
        S.momentum(close, cost_bps=[1.0, 2.0])
    with pytest.raises(ValueError, match=f"fast.*at most {MAX_GRID}"):
        S.momentum(close, range(1, 10**12))  # never materialized
    with pytest.raises(ValueError, match="momentum.*combinations"):
        S.momentum(close, range(1, 400), range(2, 400))
    with pytest.raises(ValueError, match=f"mean_reversion: the output would hold .* at most {MAX_ELEMENTS}"):
        S.mean_reversion(np.zeros(2**16), range(2, 50_002), [1.0, 2.0])  # 6.6e9 signals: refused up front
    with pytest.raises(ValueError, match="n_symbols|state"):
        S.Momentum(5, 20).stream(2**62)
    # NumPy integers are accepted (and stored as Python ints)
    m = S.Momentum(np.int32(5), np.int64(20))
    assert (type(m.fast), m.name) == (int, "momentum(5,20)")
    r = S.MeanReversion(np.uint16(10), np.float32(1.5))
    assert (type(r.window), type(r.nstd), r.name) == (int, float, "mean_reversion(10,1.5)")
    np.testing.assert_array_equal(S.momentum(close, np.int16(5), np.int64(20)).signals[0],
                                  oracle_momentum(close[0], 5, 20))


@settings(max_examples=40, deadline=None)
@given(fast=st.one_of(st.integers(-(2**70), 2**70), st.integers(1, 30), st.integers(-(2**63), 2**63 - 1).map(np.int64),
                      st.sampled_from([2**63, 2**63 - 1, 100_000, 100_001, 0, True, np.True_, np.uint64(2**64 - 1)])),
       slow=st.integers(1, 40).map(np.int32))
def test_hostile_windows_refused_or_match_the_oracle(fast, slow):
    from gpu_trader._internal.validation import MAX_WINDOW

    close = prices(2, 60, 11)
    if isinstance(fast, (bool, np.bool_)) or not 1 <= int(fast) <= MAX_WINDOW:
        with pytest.raises((TypeError, ValueError), match="fast"):
            S.momentum(close, fast, slow)
        with pytest.raises((TypeError, ValueError), match="fast"):
            S.Momentum(fast, slow)
        return
    res = S.momentum(close, fast, slow)
    check_result(res, close, [((), (int(fast), int(slow)))], oracle_momentum, 0.0)
    stream = S.Momentum(fast, slow).stream(2)
    np.testing.assert_array_equal(stream.warmup(close), res.signals[:, -1])


def test_read_only_inputs_and_streams():
    close = prices(2, 120, 9)
    frozen = close.copy()
    frozen.flags.writeable = False
    res = S.momentum(frozen, [5, 8], 20, cost_bps=2.0)
    check_result(res, close, [((0,), (5, 20)), ((1,), (8, 20))], oracle_momentum, 2.0)
    runner = S.StrategyRunner([S.Momentum(5, 20), S.MeanReversion(10, 1.0)])
    out = runner.run(close.astype(">f8"))
    np.testing.assert_array_equal(out["mean_reversion(10,1)"].signals[1], oracle_reversion(close[1], 10, 1.0))
    stream = runner.stream(2)
    stream.warmup(frozen[:, :100])
    for t in range(100, 120):
        got = stream.update(frozen[:, t])
        np.testing.assert_array_equal(got[0], [oracle_momentum(x, 5, 20)[t] for x in close])
    np.testing.assert_array_equal(frozen, close)
    with pytest.raises(TypeError, match="close_row is a masked array"):
        stream.update(np.ma.masked_invalid([1.0, np.nan]))
    with pytest.raises(TypeError, match="close must be a real numeric array"):
        S.momentum(close.astype(complex))


RUNNER = [S.Momentum(5, 20), S.Momentum(5, 40), S.MeanReversion(20, 2.0), S.MeanReversion(20, 1.0),
          S.MeanReversion(7, 0.5)]


def test_runner_matches_oracle_and_shares_features(backend, monkeypatch):
    close = prices(3, 300, 4)
    runner = S.StrategyRunner(RUNNER)
    calls = []

    def spy(fn):
        def wrapped(x, windows, *args, **kwargs):
            calls.append((fn.__name__, tuple(windows)))
            return fn(x, windows, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(S, "ema", spy(S.ema))
    monkeypatch.setattr(S, "bollinger", spy(S.bollinger))
    out = runner.run(gt.get_backend(backend).asarray(close), cost_bps=3.0, backend=backend)
    assert calls == [("ema", (5, 20, 40)), ("bollinger", (7, 20))]  # each distinct feature once
    assert list(out) == [s.name for s in RUNNER]
    for s in RUNNER:
        if isinstance(s, S.Momentum):
            check_result(out[s.name], close, [((), (s.fast, s.slow))], oracle_momentum, 3.0)
        else:
            check_result(out[s.name], close, [((), (s.window, s.nstd))], oracle_reversion, 3.0)


@pytest.mark.parametrize("warm", [0, 1, 57])
def test_stream_equals_batch_bar_by_bar(warm):
    close = prices(4, 250, 5)
    close[1, :40] = np.nan
    runner = S.StrategyRunner(RUNNER)
    batch = runner.run(close)
    stream = runner.stream(4)
    start = warm
    if warm:
        got = stream.warmup(close[:, :warm])
        for i, name in enumerate(runner.names):
            np.testing.assert_array_equal(got[i], batch[name].signals[:, warm - 1])
    for t in range(start, 250):
        # odd bars through the two halves the pipeline times apart: the same signals
        got = stream.update(close[:, t]) if t % 2 == 0 else stream.signals(stream.features(close[:, t]))
        for i, name in enumerate(runner.names):
            np.testing.assert_array_equal(got[i], batch[name].signals[:, t], err_msg=f"{name} bar {t}")
    single = S.Momentum(5, 20).stream(1)
    sigs = [int(single.update(float(x))[0]) for x in close[0]]
    np.testing.assert_array_equal(sigs, oracle_momentum(close[0], 5, 20))
    single.reset()
    assert single.update(float(close[0, 0])).shape == (1,)


# -- memory-bounded sweeps ------------------------------------------------------------------
UNBOUNDED = 1 << 34  # a budget that never chunks these small cases


def oracle_stats(close, sig, cost_bps, ppy=252.0):
    """Sweep statistics of one series from its signals, NumPy float64, two-pass std."""
    c = close.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.concatenate(([0.0], c[1:] / c[:-1] - 1.0))
    r = np.where(np.isfinite(r), r, 0.0)
    s = sig.astype(np.float64)
    prev = np.concatenate(([0.0], s[:-1]))
    x = prev * r - cost_bps / 1e4 * np.abs(s - prev)
    T = len(x)
    sharpe = np.nan
    if T >= 2:
        mean, std = x.mean(), x.std(ddof=1)
        if std <= T * (np.finfo(float).eps * abs(mean) + np.finfo(float).smallest_subnormal):
            sharpe = np.sign(mean) * np.inf if mean else np.nan
        else:
            sharpe = mean / std * np.sqrt(ppy)
    equity = np.cumsum(x)
    drawdown = float(np.max(np.maximum.accumulate(np.maximum(equity, 0.0)) - equity, initial=0.0))
    held = prev != 0
    hit = np.count_nonzero(prev[held] * r[held] > 0) / held.sum() if held.any() else np.nan
    return np.array([x.sum(), sharpe, drawdown, np.abs(s - prev).sum(), hit])


def check_sweep(res, close, signals, cost_bps, ppy=252.0):
    """Every statistic of a sweep against :func:`oracle_stats` of the batch call's signals."""
    stats = np.stack([gt.to_numpy(a) for a in res])
    sig = gt.to_numpy(signals)
    assert stats.dtype == np.float64 and stats.shape[1:] == sig.shape[:-1]
    n_sets = stats[0].size // max(close.shape[0], 1)
    flat_sig = sig.reshape(n_sets, close.shape[0], close.shape[-1])
    flat = stats.reshape(5, n_sets, close.shape[0])
    for g in range(flat_sig.shape[0]):
        for i in range(close.shape[0]):
            want = oracle_stats(close[i], flat_sig[g, i], cost_bps, ppy)
            np.testing.assert_allclose(flat[:, g, i], want, rtol=1e-9, atol=1e-13, err_msg=f"set {g} series {i}")


def test_momentum_sweep_matches_the_batch_and_numpy(backend):
    close = prices(4, 400, 21)
    close[2, :30] = np.nan
    close[1, 200] = np.nan
    fasts, slows = [3, 10, 12, 40], [12, 26]
    dev = gt.get_backend(backend).asarray(close)
    res = S.momentum_sweep(dev, fasts, slows, cost_bps=2.0, periods_per_year=52, backend=backend)
    batch = S.momentum(dev, fasts, slows, cost_bps=2.0, backend=backend)
    assert res.pnl.shape == (4, 2, 4)
    np.testing.assert_allclose(gt.to_numpy(res.pnl), gt.to_numpy(batch.pnl), rtol=0 if backend == "cpu" else 1e-13)
    check_sweep(res, close, batch.signals, 2.0, 52.0)


def test_mean_reversion_sweep_matches_the_batch_and_numpy(backend):
    close = prices(3, 500, 22, np.float32)
    windows, nstds = [5, 20, 5], [0.0, 1.0, 2.5]
    dev = gt.get_backend(backend).asarray(close)
    res = S.mean_reversion_sweep(dev, windows, nstds, cost_bps=1.0, backend=backend)
    batch = S.mean_reversion(dev, windows, nstds, cost_bps=1.0, backend=backend)
    np.testing.assert_allclose(gt.to_numpy(res.pnl), gt.to_numpy(batch.pnl), rtol=0 if backend == "cpu" else 1e-13)
    check_sweep(res, close, batch.signals, 1.0)


def _random_grid(rng, size, low, high):
    return [int(v) for v in rng.integers(low, high, size)]  # repeats included


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 5), st.integers(0, 80), st.floats(0.0, 1.0))
def test_chunked_sweep_equals_unchunked_exactly(seed, n, T, squeeze):
    """Any budget from the smallest possible chunk to none: the same numbers, bit for bit."""
    rng = np.random.default_rng(seed)
    close = prices(n, T, seed % 1000)
    close[rng.random(close.shape) < 0.05] = np.nan
    fasts, slows = _random_grid(rng, rng.integers(1, 6), 1, 30), _random_grid(rng, rng.integers(1, 6), 1, 30)
    windows, nstds = _random_grid(rng, rng.integers(1, 5), 2, 30), list(rng.uniform(0, 3, rng.integers(1, 4)))
    for fn, a, b in ((S.momentum_sweep, fasts, slows), (S.mean_reversion_sweep, windows, nstds)):
        whole = fn(close, a, b, cost_bps=3.0, max_memory=UNBOUNDED)
        smallest = sweep_plan.result_bytes(len(a) * len(b), n) + sweep_plan.chunk_bytes(1, 2, 6, 1, T, 8, 1)
        budget = smallest + int(squeeze * 100 * n * T * (len(a) + len(b)))  # from one set of one series to all
        part = fn(close, a, b, cost_bps=3.0, max_memory=budget)
        for name, want, got in zip(S.SweepResult._fields, whole, part):
            np.testing.assert_array_equal(got, want, err_msg=name)
        np.testing.assert_array_equal(whole.pnl, (S.momentum if fn is S.momentum_sweep else S.mean_reversion)(
            close, a, b, cost_bps=3.0).pnl)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 60), st.integers(1, 12), st.integers(1, 12), st.integers(0, 999), st.floats(0, 50))
def test_sweep_statistics_short_series_and_nans(T, fast, slow, seed, cost):
    close = prices(2, T, seed)
    rng = np.random.default_rng(seed)
    close[rng.random(close.shape) < 0.1] = np.nan
    res = S.momentum_sweep(close, [fast], slow, cost_bps=cost)
    check_sweep(res, close, S.momentum(close, [fast], slow).signals, cost)


def test_sweep_edge_cases():
    flat = S.momentum_sweep(np.full((2, 50), 100.0), 5, 10)  # EMAs equal: never in the market
    np.testing.assert_array_equal(flat.pnl, 0.0)
    assert np.isnan(flat.sharpe).all() and np.isnan(flat.hit_rate).all()
    np.testing.assert_array_equal(flat.max_drawdown, 0.0)
    up = S.momentum_sweep(100 * 1.01 ** np.arange(60), 3, 9)  # long from bar 8 on: a positive Sharpe
    assert up.sharpe > 0 and up.hit_rate == 1.0 and up.turnover == 1.0 and up.max_drawdown == 0.0
    # long from bar 1 on in a steady trend with tiny noise: the mean dwarfs the spread, so the
    # variance takes the second pass
    steady = 100 * np.exp(np.arange(3000) * 0.01 + np.random.default_rng(5).normal(0, 1e-5, (2, 3000)))
    check_sweep(S.momentum_sweep(steady, 1, [2, 3]), steady, S.momentum(steady, 1, [2, 3]).signals, 0.0)
    for T in (0, 1):
        res = S.momentum_sweep(np.ones((3, T)), [2, 3], 5)
        assert res.pnl.shape == (2, 3) and np.isnan(res.sharpe).all()
        np.testing.assert_array_equal(res.turnover, 0.0)
    empty = S.mean_reversion_sweep(np.ones((0, 40)), [5, 6], [1.0])
    assert empty.pnl.shape == (2, 1, 0)
    df = pd.DataFrame(prices(3, 120, 23).T)
    res = S.momentum_sweep(df, 5, [20, 30])
    np.testing.assert_array_equal(res.pnl, S.momentum(df.to_numpy().T, 5, [20, 30]).pnl)


def test_sweep_bad_input():
    close = prices(2, 100)
    with pytest.raises(ValueError, match="max_memory"):
        S.momentum_sweep(close, [5, 6], [20, 30], max_memory=100)
    for bad in (-1, 0, float("nan"), 2**70):
        with pytest.raises(ValueError, match="max_memory"):
            S.mean_reversion_sweep(close, max_memory=bad)
    for bad in ("1GB", True, [1 << 30]):
        with pytest.raises(TypeError, match="max_memory"):
            S.momentum_sweep(close, max_memory=bad)
    for bad in (0, -252, float("inf"), 1e12):
        with pytest.raises(ValueError, match="periods_per_year"):
            S.momentum_sweep(close, periods_per_year=bad)
    with pytest.raises(ValueError, match="fast"):
        S.momentum_sweep(close, 0, 10)
    with pytest.raises(ValueError, match="momentum_sweep.*combinations"):
        S.momentum_sweep(close, range(1, 400), range(2, 400))
    with pytest.raises(TypeError, match="nstd"):
        S.mean_reversion_sweep(close, 10, "2")
    with pytest.raises(ValueError, match="cost_bps"):
        S.mean_reversion_sweep(close, cost_bps=-1.0)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(0, 2000), st.integers(0, 5000), st.sampled_from([4, 8]),
       st.sampled_from([1, 2]), st.integers(1, 3), st.integers(10**4, 10**9))
def test_sweep_plan_respects_the_budget(A, B, n, T, itemsize, copies, peak_factor, budget):
    def rows_bound(a, b):
        rows = min(a, 60) + min(b, 60)
        return rows, peak_factor * rows

    try:
        plan = sweep_plan.plan((A, B), n, T, itemsize, copies, budget, rows_bound, "case")
    except ValueError as err:  # only when one series of one set cannot fit
        assert "max_memory" in str(err)
        assert sweep_plan.result_bytes(A * B, n) + sweep_plan.chunk_bytes(1, *rows_bound(1, 1), 1, T, itemsize,
                                                                            copies) > budget
        return
    assert plan.bytes <= budget and 1 <= plan.a_block <= A and 1 <= plan.b_block <= B and plan.symbols >= 1
    worst = sweep_plan.chunk_bytes(plan.a_block * plan.b_block, *rows_bound(plan.a_block, plan.b_block),
                                   min(plan.symbols, max(n, 1)), T, itemsize, copies)
    assert sweep_plan.result_bytes(A * B, n) + worst <= budget
    if (plan.a_block, plan.b_block) != (A, B):  # the grid is tiled only when one series of it cannot fit
        assert sweep_plan.result_bytes(A * B, n) + sweep_plan.chunk_bytes(A * B, *rows_bound(A, B), 1, T, itemsize,
                                                                            copies) > budget


@pytest.mark.parametrize("fn, a, b", [(S.momentum_sweep, list(range(2, 42)), list(range(50, 90))),
                                      (S.mean_reversion_sweep, list(range(5, 45)), [0.5, 1.0, 2.0])])
@pytest.mark.parametrize("spare", [300_000, 3_000_000])  # bytes beyond the result: grid tiles, series blocks
def test_sweep_stays_within_max_memory(fn, a, b, spare):
    """Traced peak (NumPy buffers and Python objects) of a whole call within max_memory, less
    what outlives the call besides its result (the indicator layer's bounded memo tables)."""
    import tracemalloc

    close = prices(60, 1000, 24)
    budget = sweep_plan.result_bytes(len(a) * len(b), 60) + spare
    whole = fn(close, a, b, max_memory=UNBOUNDED)
    fn(close, a, b, max_memory=budget)  # compiles the serial and parallel paths outside the trace
    tracemalloc.start()
    try:
        res = fn(close, a, b, max_memory=budget)
        held = tracemalloc.get_traced_memory()[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    result = sweep_plan.result_bytes(len(a) * len(b), 60)
    assert peak - (held - result) <= budget, (peak, held, budget)
    for want, got in zip(whole, res):
        np.testing.assert_array_equal(got, want)


_SIM_SCRIPT = """
import json, sys
import numpy as np
from gpu_trader.kernels.strategies import backtest_xp, sweep_xp
from gpu_trader.cpu_fallback.strategies import backtest, sweep
args = [np.asarray(a) for a in json.loads(sys.stdin.read())]
close, feats = args[0], args[1]
kinds, a, b = (x.astype(np.int64) for x in args[2:5])
got = backtest_xp(close, feats, kinds, a, b, args[5], 0.0005, xp=np)
want = backtest(close, feats, kinds, a, b, args[5], 0.0005)
assert np.array_equal(got[0], want[0]), "signals differ"
assert np.allclose(got[1], want[1], rtol=1e-12, atol=1e-15), "pnl differs"
got = sweep_xp(close, feats, kinds, a, b, args[5], 0.0005, 15.0, xp=np)
want = sweep(close, feats, kinds, a, b, args[5], 0.0005, 15.0)
assert np.allclose(got, want, rtol=1e-12, atol=1e-15, equal_nan=True), "sweep statistics differ"
print("ok")
"""


@pytest.mark.slow
def test_cuda_kernel_in_simulator():
    close = prices(3, 40, 6)
    ema = np.stack([talib.EMA(c, w) for w in (3, 9) for c in close]).reshape(2, 3, 40)
    payload = json.dumps([close.tolist(), np.nan_to_num(ema, nan=-1.0).tolist(), [0, 1, 0], [0, 0, 1], [1, 1, 0],
                          [0.0, 0.5, 0.0]])
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-c", _SIM_SCRIPT], input=payload, capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]





@pytest.mark.slow
def test_cuda_kernel_compiles_to_ptx():
    """The real kernel compiled for sm_90 (H100) with float64 and float32 inputs; needs NVVM."""
    assert_compiles_to_ptx("""
        from gpu_trader.kernels.launch import PtxExecutor
        from gpu_trader.kernels.strategies import backtest_xp, sweep_xp
        exe = PtxExecutor(cc=(9, 0))
        i = np.zeros(2, np.int64)
        for dtype in (np.float64, np.float32):
            backtest_xp(np.ones((3, 8), dtype), np.ones((2, 3, 8), dtype), i, i, i, np.zeros(2), 0.0, xp=np, exe=exe)
            sweep_xp(np.ones((3, 8), dtype), np.ones((2, 3, 8), dtype), i, i, i, np.zeros(2), 0.0, 15.9, xp=np, exe=exe)
        assert len(exe.ptx) == 4 and all(".entry" in p for p in exe.ptx.values())
    """)