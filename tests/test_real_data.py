"""Real-shaped market data through every public entry point of the indicator area.

A daily OHLCV ``DataFrame`` as a data vendor hands it out (DatetimeIndex, float
``Open/High/Low/Close/Adj Close`` columns, an int64 ``Volume`` column): under pandas 3
its columns come back as read-only arrays, so a call mixes read-only float64 columns
with a writable float64 copy of the volume. Read-only, mixed read-only/writable,
non-contiguous, big-endian and mixed-dtype inputs must give TA-Lib's results (or, for
what TA-Lib lacks, an independent NumPy oracle), leave the inputs untouched, and never
reach numba as a mix of array types.
"""
from __future__ import annotations

import numpy as np
import pytest

import gpu_trader as gt
from conftest import random_ohlcv
from gpu_trader.indicators import DEFAULT_FEATURES, OUTPUT_NAMES

pd = pytest.importorskip("pandas")
talib = pytest.importorskip("talib")

# the oracles of the indicator and strategy tests (TA-Lib, and NumPy for what it lacks)
from test_indicators import DEFAULT_PARAMS, INPUTS, REFERENCE, as_tuple, assert_matches, reference  # noqa: E402
from test_strategies import oracle_momentum, oracle_pnl, oracle_reversion  # noqa: E402

FIELDS = {"h": "High", "l": "Low", "c": "Close", "v": "Volume"}


def daily_frame(n_bars: int = 260, seed: int = 0):
    """A vendor-style daily frame: random-walk prices, int64 volume, an ``Adj Close`` column."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.015, n_bars)))
    open_ = close * np.exp(rng.normal(0.0, 0.003, n_bars))
    high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.01, n_bars))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.01, n_bars))
    volume = rng.integers(10_000, 5_000_000, n_bars, dtype=np.int64)
    index = pd.bdate_range("2021-01-04", periods=n_bars, name="Date")
    return pd.DataFrame(
        {"Open": open_, "High": high, "Low": low, "Close": close, "Adj Close": close * 0.97, "Volume": volume},
        index=index,
    )


def plain(frame, column: str) -> np.ndarray:
    """A writable float64 copy of a column: the oracle's input."""
    return frame[column].to_numpy(dtype=np.float64, copy=True)


def spelled(frame, spelling: str):
    """The frame's columns renamed: ``vendor`` (as given), ``lower`` or ``upper``."""
    if spelling == "vendor":
        return frame
    return frame.rename(columns=str.lower if spelling == "lower" else str.upper)


def read_only(a: np.ndarray) -> np.ndarray:
    """A read-only copy of ``a`` (what pandas 3 hands out for a column)."""
    out = np.array(a)
    out.flags.writeable = False
    return out


def frame_reference(frame, name: str, params=None):
    """TA-Lib (or the VWAP oracle) on float64 copies of the frame's columns."""
    inputs = [plain(frame, FIELDS[k]) for k in INPUTS[name]]
    return reference(name, inputs, DEFAULT_PARAMS[name] if params is None else params)


# -- every indicator on the frame's (read-only) columns ----------------------------------
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_indicator_on_vendor_frame_columns(name):
    frame = daily_frame()
    if int(pd.__version__.split(".")[0]) >= 3:  # copy-on-write: the case this test is about
        assert not frame["Close"].to_numpy().flags.writeable
    columns = [frame[FIELDS[k]] for k in INPUTS[name]]
    ours = as_tuple(getattr(gt, name)(*columns, *DEFAULT_PARAMS[name]))
    for o, r in zip(ours, frame_reference(frame, name)):
        assert isinstance(o, pd.Series) and o.index.equals(frame.index)
        assert_matches(o.to_numpy(), r)


def _flavours(a: np.ndarray, i: int, mix: str):
    """Input ``i`` of a call in one flavour of the ``mix`` pattern."""
    if mix == "all_read_only":
        return read_only(a)
    if mix == "first_read_only":
        return read_only(a) if i == 0 else a.copy()
    if mix == "last_read_only":
        return read_only(a) if i > 0 else a.copy()
    if mix == "read_only_and_strided":
        wide = np.repeat(a, 2, axis=-1)
        return read_only(a) if i % 2 else wide[..., ::2]
    if mix == "big_endian_and_native":
        return a.astype(">f8") if i % 2 else read_only(a)
    if mix == "float32_int64_float64":
        return (a.astype(np.float32), np.rint(a).astype(np.int64), a)[i % 3]
    raise AssertionError(mix)


MIXES = ["all_read_only", "first_read_only", "last_read_only", "read_only_and_strided", "big_endian_and_native",
         "float32_int64_float64"]


@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_mixed_array_flavours_give_talib_results(name, mix):
    ohlcv = dict(zip("hlcv", random_ohlcv(3, 200, seed=5)))
    inputs = [_flavours(ohlcv[k], i, mix) for i, k in enumerate(INPUTS[name])]
    before = [(np.array(a), a.flags.writeable) for a in inputs]
    ours = as_tuple(getattr(gt, name)(*inputs, *DEFAULT_PARAMS[name]))
    # the oracle reads exactly the values the inputs hold, as float64
    for o, r in zip(ours, reference(name, [np.asarray(a, dtype=np.float64) for a in inputs], DEFAULT_PARAMS[name])):
        assert_matches(o, r, rtol=1e-9 if o.dtype == np.float64 else 1e-4)
    for a, (values, writeable) in zip(inputs, before):
        np.testing.assert_array_equal(a, values)
        assert a.flags.writeable == writeable


# -- features ------------------------------------------------------------------------------
def _default_feature_reference(frame) -> dict[str, np.ndarray]:
    """Every key of DEFAULT_FEATURES from TA-Lib on float64 copies of the frame."""
    out = {}
    for key, (fn, params) in DEFAULT_FEATURES.items():
        refs = frame_reference(frame, fn, tuple(params.values()))
        names = OUTPUT_NAMES.get(fn)
        out.update(zip([f"{key}_{o}" for o in names] if names else [key], refs))
    return out


@pytest.mark.parametrize("spelling", ["vendor", "lower", "upper"])
def test_features_of_a_daily_frame_match_talib(spelling):
    frame = daily_frame(seed=1)
    feats = gt.features(spelled(frame, spelling))
    expected = _default_feature_reference(frame)
    assert set(feats) == set(expected)
    for key, ref in expected.items():
        assert isinstance(feats[key], pd.Series) and feats[key].index.equals(frame.index)
        assert_matches(feats[key].to_numpy(), ref)


def test_features_ignore_other_columns():
    frame = daily_frame(seed=2)
    shuffled = frame.assign(**{"Adj Close": frame["Adj Close"].to_numpy()[::-1], "Dividends": 0.0})
    a, b = gt.features(frame), gt.features(shuffled)
    for key in a:
        np.testing.assert_array_equal(a[key].to_numpy(), b[key].to_numpy())


def test_features_of_read_only_mapping_and_ohlcv_array():
    frame = daily_frame(seed=3)
    mapping = {k: read_only(frame[k].to_numpy()) for k in ("Open", "High", "Low", "Close")}
    mapping["Volume"] = frame["Volume"].to_numpy()  # int64, writable
    stacked = read_only(np.stack([plain(frame, k) for k in ("Open", "High", "Low", "Close", "Volume")]))
    expected = _default_feature_reference(frame)
    for feats in (gt.features(mapping), gt.features(stacked)):
        for key, ref in expected.items():
            assert_matches(feats[key], ref)


def test_nullable_columns_count_missing_values_as_nan():
    """``read_csv(dtype_backend="numpy_nullable")`` frames: Float64/Int64 columns holding pd.NA."""
    frame = daily_frame(n_bars=80, seed=10)
    prices = ["Open", "High", "Low", "Close"]
    frame.loc[frame.index[:5], prices] = np.nan  # not listed yet
    nullable = frame.astype({c: "Float64" for c in prices}).astype({"Volume": "Int64"})
    nullable.loc[nullable.index[:5], "Volume"] = pd.NA
    fields = {k: plain(frame, k) for k in ("High", "Low", "Close", "Volume")}
    fields["Volume"][:5] = np.nan
    expected = gt.features(fields)
    for key, value in gt.features(nullable).items():
        np.testing.assert_array_equal(value.to_numpy(), expected[key])
    wide = nullable[["Close", "Volume"]]  # a 2-column frame of pd.NA-holding columns: time x series
    np.testing.assert_array_equal(gt.sma(wide, 3).to_numpy().T, gt.sma(wide.to_numpy(np.float64, na_value=np.nan).T, 3))


def test_features_missing_column_says_what_is_expected():
    frame = daily_frame(n_bars=60)
    with pytest.raises(ValueError, match=r"missing field\(s\) \['volume'\].*high, low, close, volume"):
        gt.features(frame.drop(columns="Volume"))
    with pytest.raises(ValueError, match="twice"):
        gt.features(frame.assign(close=frame["Close"]))


# -- streaming --------------------------------------------------------------------------
def test_feature_stream_on_a_daily_frame():
    frame = daily_frame(n_bars=120, seed=4)
    batch = gt.features(frame)
    stream = gt.FeatureStream(1)
    stream.warmup(frame.iloc[:100])  # vendor names, read-only columns, int64 volume
    for t in range(100, len(frame)):
        values = stream.update(frame.iloc[t])  # a Series row: Open/High/.../Adj Close/Volume
        for key, v in values.items():
            np.testing.assert_array_equal(v, [batch[key].iloc[t]])


def test_feature_stream_read_only_mixed_history():
    h, l, c, v = random_ohlcv(2, 90, seed=6)
    history = {"High": read_only(h), "low": l[:, ::-1].copy()[:, ::-1], "CLOSE": read_only(c),
               "volume": np.rint(v).astype(np.int64)}
    stream = gt.FeatureStream(2)
    last = stream.warmup(history)
    expected = gt.features({"high": h, "low": l, "close": c, "volume": np.rint(v)})
    for key, value in last.items():
        np.testing.assert_array_equal(value, expected[key][:, -1])


# -- strategies ------------------------------------------------------------------------------
def test_strategies_on_read_only_frame_columns():
    frame = daily_frame(seed=7)
    close, c = frame["Close"], plain(frame, "Close")
    sig, mr = oracle_momentum(c, 5, 20), oracle_reversion(c, 10, 1.5)
    res = gt.strategies.momentum(close, 5, 20, cost_bps=3.0)
    np.testing.assert_array_equal(res.signals.to_numpy(), sig)
    assert res.pnl == pytest.approx(oracle_pnl(c, sig, 3.0), rel=1e-11, abs=1e-13)
    runner = gt.StrategyRunner([gt.Momentum(5, 20), gt.MeanReversion(10, 1.5)])
    out = runner.run(close)
    np.testing.assert_array_equal(out["momentum(5,20)"].signals.to_numpy(), sig)
    np.testing.assert_array_equal(out["mean_reversion(10,1.5)"].signals.to_numpy(), mr)
    stream = runner.stream(1)
    np.testing.assert_array_equal(stream.warmup(close.iloc[:200])[:, 0], [sig[199], mr[199]])
    for t in range(200, len(c)):
        np.testing.assert_array_equal(stream.update(close.iloc[t : t + 1].to_numpy())[:, 0], [sig[t], mr[t]])


# -- pattern memory -----------------------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["vendor", "lower"])
def test_pattern_memory_on_a_daily_frame(spelling):
    frame = spelled(daily_frame(seed=8), spelling)
    memory = gt.PatternMemory(window=10)
    ids = memory.add_history(frame, horizon=1)
    # the default spec's longest lookback is MACD's 33 bars: windows start once all are defined
    assert len(ids) == len(frame) - 33 - 10 + 1 - 1
    probe = frame.iloc[:-1]  # its last pattern is the last one stored
    scores, _, outcomes = memory.query(memory.embed(probe), k=3)
    close = frame.iloc[:, 3].to_numpy()
    assert float(scores[0]) == pytest.approx(1.0, abs=1e-5)
    assert outcomes[0] == pytest.approx(close[-1] / close[-2] - 1.0, rel=1e-12)


# -- distributed --------------------------------------------------------------------------------
def test_distributed_indicator_on_read_only_and_int_inputs():
    da = pytest.importorskip("dask.array")
    frame = daily_frame(seed=9)
    close = read_only(frame["Close"].to_numpy())
    volume = frame["Volume"].to_numpy()
    out = gt.distributed.indicator("obv", da.from_array(close, chunks=-1), volume).compute(scheduler="sync")
    np.testing.assert_array_equal(out, talib.OBV(plain(frame, "Close"), plain(frame, "Volume")))
