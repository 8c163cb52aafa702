"""Indicators against TA-Lib (the oracle), on every backend present.

Float64 results must match TA-Lib to 1e-9 relative (scaled by the series'
magnitude, so values crossing zero such as the MACD histogram are judged fairly);
float32 inputs to 1e-4. VWAP is not in TA-Lib: its oracle is a direct NumPy
window sum in float64.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpu_trader as gt
from conftest import on_backend, random_ohlcv
from gpu_trader._internal.indicator_specs import PARAMETERS
from gpu_trader._internal.validation import MAX_ELEMENTS, MAX_GRID, MAX_WINDOW

AREA = "indicators"  # the backends that implement it run these tests (conftest.py)

talib = pytest.importorskip("talib")


# -- oracles -------------------------------------------------------------------------
def vwap_oracle(high, low, close, volume, window):
    """Direct window sums in float64 with TA-Lib's leading-NaN convention."""
    out = np.full(close.shape, np.nan)
    valid = ~(np.isnan(high) | np.isnan(low) | np.isnan(close) | np.isnan(volume))
    begin = int(np.argmax(valid)) if valid.any() else len(close) - 1
    tpv = (high + low + close) / 3.0 * volume
    for t in range(begin + window - 1, len(close)):
        sl = slice(t - window + 1, t + 1)
        total_volume = volume[sl].sum()
        if np.isfinite(tpv[sl]).all() and np.isfinite(total_volume) and total_volume != 0:
            out[t] = tpv[sl].sum() / total_volume
    return out


REFERENCE = {
    "sma": lambda c, w: talib.SMA(c, w),
    "ema": lambda c, w: talib.EMA(c, w),
    "wma": lambda c, w: talib.WMA(c, w),
    "rsi": lambda c, w: talib.RSI(c, w),
    "macd": lambda c, f, s, g: talib.MACD(c, f, s, g),
    "bollinger": lambda c, w, k: talib.BBANDS(c, w, k, k, 0),
    "atr": lambda h, l, c, w: talib.ATR(h, l, c, w),
    "stoch": lambda h, l, c, fk, sk, sd: talib.STOCH(h, l, c, fk, sk, 0, sd, 0),
    "obv": lambda c, v: talib.OBV(c, v),
    "vwap": vwap_oracle,
}
INPUTS = {
    "sma": "c", "ema": "c", "wma": "c", "rsi": "c", "macd": "c", "bollinger": "c",
    "atr": "hlc", "stoch": "hlc", "obv": "cv", "vwap": "hlcv",
}
FUNCS = {name: getattr(gt, name) for name in REFERENCE}
DEFAULT_PARAMS = {
    "sma": (20,), "ema": (20,), "wma": (20,), "rsi": (14,), "macd": (12, 26, 9),
    "bollinger": (20, 2.0), "atr": (14,), "stoch": (5, 3, 3), "obv": (), "vwap": (20,),
}


def pick(name, ohlcv):
    h, l, c, v = ohlcv
    return [{"h": h, "l": l, "c": c, "v": v}[k] for k in INPUTS[name]]


def reference(name, inputs, params):
    """Loop the oracle over the rows of (..., T) float64 inputs; returns a tuple of outputs."""
    flat = [np.asarray(a, dtype=np.float64).reshape(-1, a.shape[-1]) for a in inputs]
    rows = [REFERENCE[name](*(np.ascontiguousarray(a[i]) for a in flat), *params) for i in range(flat[0].shape[0])]
    rows = [r if isinstance(r, tuple) else (r,) for r in rows]
    return tuple(np.stack([r[k] for r in rows]).reshape(inputs[0].shape) for k in range(len(rows[0])))


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def assert_matches(ours, ref, rtol=1e-9):
    ours = gt.to_numpy(ours)
    assert ours.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref), err_msg="NaN positions differ")
    finite = ~np.isnan(ref)
    if finite.any():
        scale = np.max(np.abs(ref[finite]))
        np.testing.assert_allclose(ours[finite], ref[finite], rtol=rtol, atol=rtol * scale)


def ragged_batch(n_bars=300, seed=1, dtype=np.float64):
    """6 symbols: clean, late listing, late listing in high only, interior NaNs (close, volume,
    low), all NaN, NaN at the end."""
    h, l, c, v = (a.copy() for a in random_ohlcv(6, n_bars, seed, dtype))
    c[1, :37] = np.nan
    h[1, :37] = np.nan
    l[1, :37] = np.nan
    h[2, :11] = np.nan
    c[3, 150] = np.nan
    v[3, 200] = np.nan
    l[3, 230] = np.nan
    for a in (h, l, c, v):
        a[4] = np.nan
    c[5, -3:] = np.nan
    return h, l, c, v


# -- TA-Lib agreement ---------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_matches_talib_on_ragged_batch(backend, name):
    ohlcv = ragged_batch()
    inputs = pick(name, ohlcv)
    params = DEFAULT_PARAMS[name]
    ours = as_tuple(FUNCS[name](*on_backend(backend, *inputs) if len(inputs) > 1 else (on_backend(backend, *inputs),), *params))
    ref = reference(name, inputs, params)
    assert len(ours) == len(ref)
    for o, r in zip(ours, ref):
        assert_matches(o, r)


PARAM_CASES = {
    "sma": [(1,), (2,), (7,), (50,)],
    "ema": [(1,), (2,), (9,), (50,)],
    "wma": [(1,), (2,), (9,), (30,)],
    "rsi": [(2,), (5,), (30,)],
    "macd": [(3, 7, 1), (26, 12, 9), (5, 35, 5), (2, 2, 2)],
    "bollinger": [(2, 1.0), (5, 0.5), (30, 3.0), (10, -1.0)],
    "atr": [(1,), (2,), (30,)],
    "stoch": [(1, 1, 1), (14, 3, 3), (5, 1, 4), (9, 6, 1)],
    "vwap": [(1,), (5,), (40,)],
}


@pytest.mark.parametrize("name,params", [(n, p) for n, ps in PARAM_CASES.items() for p in ps])
def test_matches_talib_parameters(backend, name, params):
    inputs = pick(name, ragged_batch(n_bars=400, seed=7))
    ours = as_tuple(FUNCS[name](*on_backend(backend, *inputs) if len(inputs) > 1 else (on_backend(backend, *inputs),), *params))
    for o, r in zip(ours, reference(name, inputs, params)):
        assert_matches(o, r)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(sorted(REFERENCE)),
    n_bars=st.integers(1, 80),
    window=st.integers(2, 30),
    seed=st.integers(0, 2**31 - 1),
    nan_lead=st.integers(0, 40),
    nan_inside=st.booleans(),
)
def test_matches_talib_random(backend, name, n_bars, window, seed, nan_lead, nan_inside):
    h, l, c, v = (a.copy() for a in random_ohlcv(3, n_bars, seed))
    rng = np.random.default_rng(seed)
    c[0, :nan_lead] = np.nan
    h[1, : nan_lead // 2] = np.nan
    if nan_inside and n_bars > 2:
        c[2, rng.integers(0, n_bars)] = np.nan
    params = {
        "macd": (max(2, window // 3), window, max(1, window // 4)),
        "bollinger": (window, 2.0),
        "stoch": (window, 3, 2),
        "obv": (),
    }.get(name, (window,))
    inputs = pick(name, (h, l, c, v))
    ours = as_tuple(FUNCS[name](*on_backend(backend, *inputs) if len(inputs) > 1 else (on_backend(backend, *inputs),), *params))
    for o, r in zip(ours, reference(name, inputs, params)):
        assert_matches(o, r)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_float32_in_float32_out(backend, name):
    inputs = pick(name, ragged_batch(n_bars=500, seed=3, dtype=np.float32))
    params = DEFAULT_PARAMS[name]
    ours = as_tuple(FUNCS[name](*on_backend(backend, *inputs) if len(inputs) > 1 else (on_backend(backend, *inputs),), *params))
    ref = reference(name, [a.astype(np.float64) for a in inputs], params)
    for o, r in zip(ours, ref):
        assert o.dtype == np.float32
        assert_matches(o, r, rtol=1e-4)


@pytest.mark.slow
def test_float32_long_series_stays_accurate(backend):
    """A float32 running sum over 1M bars would drift; ours accumulates in float64."""
    x = (1000.0 + np.cumsum(np.random.default_rng(0).normal(0, 0.5, 1_000_000))).astype(np.float32)
    ours = gt.to_numpy(gt.sma(on_backend(backend, x), 50))
    ref = talib.SMA(x.astype(np.float64), 50)
    np.testing.assert_allclose(ours[49:], ref[49:], rtol=2e-7)


@pytest.mark.parametrize("name", ["sma", "rsi", "macd", "atr", "vwap"])
def test_non_contiguous_views(backend, name):
    h, l, c, v = random_ohlcv(8, 600, seed=11)
    views = [a[::2, ::3] for a in pick(name, (h, l, c, v))]
    fortran = [np.asfortranarray(a) for a in pick(name, (h, l, c, v))]
    params = DEFAULT_PARAMS[name]
    for inputs in (views, fortran):
        ours = as_tuple(FUNCS[name](*on_backend(backend, *inputs) if len(inputs) > 1 else (on_backend(backend, *inputs),), *params))
        for o, r in zip(ours, reference(name, [np.ascontiguousarray(a) for a in inputs], params)):
            assert_matches(o, r)


def test_three_dimensional_batch(backend):
    _, _, c, _ = random_ohlcv(6, 200, seed=5)
    c3 = c.reshape(2, 3, 200)
    ours = gt.to_numpy(gt.ema(on_backend(backend, c3), 10))
    assert ours.shape == (2, 3, 200)
    assert_matches(ours, reference("ema", [c3], (10,))[0])


def test_one_dimensional_series(backend):
    _, _, c, _ = random_ohlcv(1, 120, seed=2)
    ours = gt.rsi(on_backend(backend, c[0]), 14)
    assert ours.shape == (120,)
    assert_matches(ours, talib.RSI(c[0], 14))


@pytest.mark.parametrize("n_bars", [0, 1, 5, 19])
def test_series_shorter_than_window(backend, n_bars):
    h, l, c, v = random_ohlcv(2, n_bars, seed=n_bars) if n_bars else (np.empty((2, 0)),) * 4
    for name in REFERENCE:
        inputs = pick(name, (h, l, c, v))
        ours = as_tuple(FUNCS[name](*on_backend(backend, *inputs) if len(inputs) > 1 else (on_backend(backend, *inputs),), *DEFAULT_PARAMS[name]))
        for o in ours:
            assert gt.to_numpy(o).shape == (2, n_bars)
        if n_bars:
            for o, r in zip(ours, reference(name, inputs, DEFAULT_PARAMS[name])):
                assert_matches(o, r)


def test_integer_input_promoted_to_float64(backend):
    x = np.arange(1, 101, dtype=np.int64)
    out = gt.sma(on_backend(backend, x), 10)
    assert out.dtype == np.float64
    assert_matches(out, talib.SMA(x.astype(np.float64), 10))


def test_inputs_not_mutated(backend):
    h, l, c, v = ragged_batch()
    copies = [a.copy() for a in (h, l, c, v)]
    gt.features({"high": h, "low": l, "close": c, "volume": v}, backend=backend)
    for a, b in zip((h, l, c, v), copies):
        np.testing.assert_array_equal(a, b)


# -- parameter grids -----------------------------------------------------------------
def test_window_sequence_adds_leading_axis(backend):
    _, _, c, _ = random_ohlcv(4, 300, seed=9)
    xb = on_backend(backend, c)
    grid = gt.to_numpy(gt.sma(xb, [5, 10, 50]))
    assert grid.shape == (3, 4, 300)
    for k, w in enumerate([5, 10, 50]):
        np.testing.assert_array_equal(grid[k], gt.to_numpy(gt.sma(xb, w)))
        assert_matches(grid[k], reference("sma", [c], (w,))[0])


def test_multi_parameter_grid_is_an_outer_product(backend):
    _, _, c, _ = random_ohlcv(2, 300, seed=4)
    xb = on_backend(backend, c)
    line, signal, hist = (gt.to_numpy(a) for a in gt.macd(xb, [5, 12], 26, [3, 9, 4]))
    assert line.shape == (2, 3, 2, 300)
    for i, f in enumerate([5, 12]):
        for j, g in enumerate([3, 9, 4]):
            ref = reference("macd", [c], (f, 26, g))
            assert_matches(line[i, j], ref[0])
            assert_matches(signal[i, j], ref[1])
            assert_matches(hist[i, j], ref[2])
    upper, _, lower = (gt.to_numpy(a) for a in gt.bollinger(xb, 20, [1.0, 2.5]))
    assert upper.shape == (2, 2, 300)
    assert_matches(lower[1], reference("bollinger", [c], (20, 2.5))[2])


# -- pandas ----------------------------------------------------------------------------
def test_pandas_in_pandas_out():
    pd = pytest.importorskip("pandas")
    h, l, c, v = random_ohlcv(3, 250, seed=8)
    index = pd.date_range("2024-01-01", periods=250, freq="D")
    frame = pd.DataFrame(c.T, index=index, columns=["AAA", "BBB", "CCC"])
    out = gt.ema(frame, 12)
    assert isinstance(out, pd.DataFrame)
    assert out.index.equals(index) and list(out.columns) == ["AAA", "BBB", "CCC"]
    assert_matches(out.to_numpy().T, reference("ema", [c], (12,))[0])
    series = pd.Series(c[0], index=index, name="AAA")
    s_out = gt.rsi(series)
    assert isinstance(s_out, pd.Series) and s_out.index.equals(index) and s_out.name == "AAA"
    assert_matches(s_out.to_numpy(), talib.RSI(c[0], 14))
    upper, middle, lower = gt.bollinger(series)
    assert all(isinstance(b, pd.Series) for b in (upper, middle, lower))
    grid = gt.sma(frame, [5, 10])
    assert isinstance(grid, pd.DataFrame) and grid.shape == (250, 6)
    atr = gt.atr(pd.DataFrame(h.T, index=index), pd.DataFrame(l.T, index=index), frame, 14)
    assert isinstance(atr, pd.DataFrame)
    assert_matches(atr.to_numpy().T, reference("atr", [h, l, c], (14,))[0])


# -- features ----------------------------------------------------------------------------
def test_features_equal_individual_functions(backend):
    h, l, c, v = ragged_batch()
    hb, lb, cb, vb = on_backend(backend, h, l, c, v)
    feats = gt.features({"high": hb, "low": lb, "close": cb, "volume": vb})
    expected = {
        "sma_20": gt.sma(cb, 20), "ema_20": gt.ema(cb, 20), "rsi_14": gt.rsi(cb, 14),
        "atr_14": gt.atr(hb, lb, cb, 14), "obv": gt.obv(cb, vb), "vwap_20": gt.vwap(hb, lb, cb, vb, 20),
    }
    for key, arr in zip(("macd_line", "macd_signal", "macd_hist"), gt.macd(cb)):
        expected[key] = arr
    for key, arr in zip(("bb_upper", "bb_middle", "bb_lower"), gt.bollinger(cb)):
        expected[key] = arr
    for key, arr in zip(("stoch_k", "stoch_d"), gt.stoch(hb, lb, cb)):
        expected[key] = arr
    assert list(feats) == gt.indicators.feature_keys()
    assert set(feats) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(gt.to_numpy(feats[key]), gt.to_numpy(expected[key]), err_msg=key)
    assert_matches(feats["rsi_14"], reference("rsi", [c], (14,))[0])


def test_features_custom_spec_and_array_input(backend):
    h, l, c, v = random_ohlcv(2, 120, seed=6)
    o = c.copy()
    stacked = on_backend(backend, np.stack([o, h, l, c, v]))
    spec = {"fast": ("sma", {"window": 5}), "rsi": ("rsi", {"window": 7}), "bands": ("bollinger", {"window": 5})}
    feats = gt.features(stacked, spec)
    assert list(feats) == ["fast", "rsi", "bands_upper", "bands_middle", "bands_lower"]
    assert_matches(feats["fast"], reference("sma", [c], (5,))[0])
    assert_matches(feats["bands_lower"], reference("bollinger", [c], (5, 2.0))[2])


@pytest.mark.parametrize(
    "spec,error",
    [
        ({"a": ("nope", {})}, ValueError),
        ({"a": ("sma", {"windw": 3})}, ValueError),
        ({"a": ("sma", {})}, ValueError),
        ({"a": "sma"}, TypeError),
        ({"a": ("rsi", {"window": 1})}, ValueError),
        ({}, TypeError),
    ],
)
def test_features_bad_spec(spec, error):
    h, l, c, v = random_ohlcv(1, 50)
    with pytest.raises(error):
        gt.features({"high": h, "low": l, "close": c, "volume": v}, spec)


def test_features_missing_field():
    _, _, c, v = random_ohlcv(1, 50)
    with pytest.raises(ValueError, match="high"):
        gt.features({"close": c, "volume": v})


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize("window,error", [(0, ValueError), (-3, ValueError), (2.5, TypeError), ("10", TypeError),
                                          (True, TypeError), ([], ValueError), ([5, 0], ValueError), (None, TypeError)])
def test_bad_window(window, error):
    x = np.arange(50.0)
    with pytest.raises(error, match="window"):
        gt.sma(x, window)


def test_bad_parameters_name_the_argument():
    x = np.arange(60.0)
    with pytest.raises(ValueError, match="window"):
        gt.rsi(x, 1)
    with pytest.raises(ValueError, match="fast"):
        gt.macd(x, 1, 26, 9)
    with pytest.raises(ValueError, match="signal"):
        gt.macd(x, 12, 26, 0)
    with pytest.raises(ValueError, match="nstd"):
        gt.bollinger(x, 20, float("nan"))
    with pytest.raises(TypeError, match="slowk"):
        gt.stoch(x, x, x, 5, 3.0, 3)


def test_mismatched_shapes_name_the_argument():
    h, l, c, v = random_ohlcv(2, 50)
    with pytest.raises(ValueError, match="low"):
        gt.atr(h, l[:, :40], c)
    with pytest.raises(ValueError, match="volume"):
        gt.obv(c, v[0])


@pytest.mark.parametrize("bad", [np.array(["a", "b", "c"]), np.array([1 + 2j, 3j]), np.array([object(), 1.0])])
def test_non_numeric_dtype(bad):
    with pytest.raises(TypeError, match="x"):
        gt.ema(bad, 2)


def test_scalar_input_rejected():
    with pytest.raises(ValueError, match="x"):
        gt.sma(np.float64(3.0), 2)


def test_unknown_backend_lists_available():
    with pytest.raises(ValueError, match="cpu"):
        gt.sma(np.arange(10.0), 3, backend="tpu")


def test_features_from_a_one_symbol_dataframe():
    pd = pytest.importorskip("pandas")
    h, l, c, v = random_ohlcv(1, 150, seed=12)
    index = pd.date_range("2025-01-01", periods=150, freq="min")
    frame = pd.DataFrame({"Open": c[0], "High": h[0], "Low": l[0], "Close": c[0], "Volume": v[0]}, index=index)
    feats = gt.features(frame)
    assert all(isinstance(s, pd.Series) and s.index.equals(index) for s in feats.values())
    assert_matches(feats["atr_14"].to_numpy(), talib.ATR(h[0], l[0], c[0], 14))
    assert_matches(feats["stoch_d"].to_numpy(), talib.STOCH(h[0], l[0], c[0])[1])


def test_concurrent_calls_from_threads_agree(backend):
    """Trading loops call from several threads; the kernels release the GIL and share no state."""
    from concurrent.futures import ThreadPoolExecutor

    _, _, c, _ = random_ohlcv(64, 1500, seed=13)
    xb = on_backend(backend, c)
    expected = gt.to_numpy(gt.rsi(xb, 14))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: gt.to_numpy(gt.rsi(xb, 14)), range(16)))
    for r in results:
        np.testing.assert_array_equal(r, expected)


def test_features_needs_only_the_fields_its_spec_reads(backend):
    _, _, c, _ = random_ohlcv(3, 120, seed=14)
    feats = gt.features({"Close": on_backend(backend, c)}, {"r": ("rsi", {"window": 9}), "m": ("macd", {})})
    assert_matches(feats["r"], reference("rsi", [c], (9,))[0])
    assert_matches(feats["m_hist"], reference("macd", [c], (12, 26, 9))[2])
    with pytest.raises(ValueError, match="volume"):
        gt.features({"close": c}, {"o": ("obv", {})})


# -- integer parameter bounds: nothing out of range reaches compiled code -----------------------

INT_PARAMS = [(name, i) for name, table in PARAMETERS.items() for i, (_, _, low) in enumerate(table) if low is not None]
HOSTILE_INTS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**63, 2**63 - 1, 2**62, 2**32 + 1, 2**31, MAX_WINDOW, MAX_WINDOW + 1, 61, 60, 2, 1, 0, -1]),
    st.integers(-(2**63), 2**63 - 1).map(np.int64),
    st.integers(0, 2**64 - 1).map(np.uint64),
    st.integers(-(2**31), 2**31 - 1).map(np.int32),
    st.integers(0, 200).map(np.int16),
    st.sampled_from([True, False, np.True_, np.False_]),
)


@settings(max_examples=80, deadline=None)
@given(case=st.sampled_from(INT_PARAMS), value=HOSTILE_INTS)
def test_integer_parameters_refused_out_of_range_else_talib(case, value):
    """Any integer-ish value: a TypeError/ValueError naming the parameter exactly when it is a
    bool or outside [TA-Lib's minimum, 100000]; otherwise TA-Lib's result."""
    name, i = case
    pname, _, low = PARAMETERS[name][i]
    inputs = pick(name, random_ohlcv(2, 60, seed=3))
    params = list(DEFAULT_PARAMS[name])
    params[i] = value
    acceptable = not isinstance(value, (bool, np.bool_)) and low <= int(value) <= MAX_WINDOW
    if not acceptable:
        with pytest.raises((TypeError, ValueError), match=pname):
            FUNCS[name](*inputs, *params)
        return
    ours = as_tuple(FUNCS[name](*inputs, *params))
    params[i] = int(value)
    for o, r in zip(ours, reference(name, inputs, params)):
        assert_matches(o, r)


@pytest.mark.slow
def test_windows_near_two_to_the_63_are_refused_in_a_subprocess():
    """The values that used to reach numba as a garbage int64 (and kill the interpreter) are
    refused in Python; run where a missed check would crash the process rather than a test."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import numpy as np, gpu_trader as gt
        x = np.arange(300.0)
        calls = []
        for w in (2**63, 2**63 - 1, 2**62, 2**32 + 1, np.uint64(2**64 - 1), -2**63, 100_001):
            calls += [lambda w=w: gt.sma(x, w), lambda w=w: gt.wma(x, w), lambda w=w: gt.bollinger(x, w),
                      lambda w=w: gt.ema(x, [5, w]), lambda w=w: gt.stoch(x, x, x, w, 3, 3),
                      lambda w=w: gt.stoch(x, x, x, 5, 3, w), lambda w=w: gt.macd(x, 12, w, 9),
                      lambda w=w: gt.vwap(x, x, x, x, w), lambda w=w: gt.features({"close": x}, {"s": ("sma", {"window": w})}),
                      lambda w=w: gt.FeatureStream(1, {"w": ("wma", {"window": w})}),
                      lambda w=w: gt.strategies.momentum(x, w, 20), lambda w=w: gt.PatternMemory(w)]
        refused = 0
        for call in calls:
            try:
                call()
            except ValueError:
                refused += 1
        print(refused, len(calls))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    refused, total = proc.stdout.split()
    assert refused == total


@pytest.mark.parametrize("name", sorted(set(REFERENCE) - {"obv"}))
def test_every_period_at_talibs_cap_matches_talib(name):
    inputs = pick(name, random_ohlcv(2, 300, seed=15))
    params = tuple(MAX_WINDOW if low is not None else DEFAULT_PARAMS[name][i]
                   for i, (_, _, low) in enumerate(PARAMETERS[name]))
    ours = as_tuple(FUNCS[name](*inputs, *params))
    for o, r in zip(ours, reference(name, inputs, params)):
        assert np.isnan(r).all()
        assert_matches(o, r)


def test_parameter_grids_are_bounded_before_anything_is_built():
    x = np.arange(300.0)
    with pytest.raises(ValueError, match=f"window.*at most {MAX_GRID}"):
        gt.sma(x, range(1, 10**15))  # never materialized
    with pytest.raises(ValueError, match=f"window.*at most {MAX_GRID}"):
        gt.sma(x, range(-(10**30), 10**30))  # longer than sys.maxsize
    with pytest.raises(ValueError, match="macd.*combinations"):
        gt.macd(x, range(2, 100), range(2, 100), range(1, 100))
    with pytest.raises(ValueError, match="bollinger.*combinations"):
        gt.bollinger(x, range(2, 1000), np.linspace(0.5, 3.0, 1000))
    with pytest.raises(ValueError, match="combinations"):
        gt.features({"close": x}, {"m": ("macd", {"fast": range(2, 100), "slow": range(2, 100), "signal": range(1, 50)})})


def test_grid_output_larger_than_the_limit_is_refused_up_front():
    """100000 windows over 50000 bars would be 5e9 float64 values (40 GB): refused, not allocated."""
    with pytest.raises(ValueError, match=f"sma: the output would hold 5000000000 values; at most {MAX_ELEMENTS}"):
        gt.sma(np.zeros(50_000), range(1, MAX_GRID + 1))


def test_output_limit_applies_to_grids_and_features(monkeypatch):
    from gpu_trader._internal import validation

    _, _, c, v = random_ohlcv(2, 100, seed=16)
    monkeypatch.setattr(validation, "MAX_ELEMENTS", 1000)
    with pytest.raises(ValueError, match="ema: the output would hold 1200 values"):
        gt.ema(c, [5, 10, 20, 30, 40, 50])
    with pytest.raises(ValueError, match="features: the output"):
        gt.features({"close": c, "volume": v}, {"o": ("obv", {}), "s": ("sma", {"window": [3, 4, 5, 6, 7]})})
    assert gt.ema(c, [5, 10]).shape == (2, 2, 100)  # 400 values: under the limit


def test_distributed_indicator_checks_parameters_when_the_graph_is_built():
    da = pytest.importorskip("dask.array")
    x = da.from_array(np.arange(300.0).reshape(3, 100), chunks=(1, 100))
    with pytest.raises(ValueError, match="window"):
        gt.distributed.indicator("sma", x, window=2**63)
    with pytest.raises(TypeError, match="fastk"):
        gt.distributed.indicator("stoch", x, x, x, fastk=True)
    with pytest.raises(TypeError, match=r"input 0 \(close\).*dtype <U1"):
        gt.distributed.indicator("sma", da.from_array(np.array(["a", "b"])), window=2)
    with pytest.raises(TypeError, match=r"input 1 \(volume\).*masked"):
        gt.distributed.indicator("obv", np.arange(3.0), np.ma.masked_equal([1.0, 0.0, 2.0], 0.0))
    out = gt.distributed.indicator("wma", x, window=np.int32(7)).compute(scheduler="sync")
    assert_matches(out, reference("wma", [np.arange(300.0).reshape(3, 100)], (7,))[0])


def test_jax_backend_refuses_grids_it_would_compile_body_by_body():
    if "jax" not in gt.available_backends():
        pytest.skip("jax is not installed")
    from gpu_trader.jax_backend.indicators import MAX_TRACED_GRID

    with pytest.raises(ValueError, match=f"sma: the jax backend compiles.*{MAX_TRACED_GRID + 1} sets"):
        gt.sma(np.arange(50.0), range(1, MAX_TRACED_GRID + 2), backend="jax")
