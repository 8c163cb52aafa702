"""FeatureStream: one bar at a time, bit-for-bit equal to the batch pipeline.

The oracle is the batch ``gpu_trader.features`` (itself checked against TA-Lib in
test_indicators.py), on the CPU backend, in float64. "Last-value" oracle: after the
bars ``H[..., :t+1]`` the stream returns ``features(H[..., :t+1])[key][..., -1]``.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpu_trader as gt
from gpu_trader.indicators import feature_keys
from gpu_trader import streaming
from gpu_trader.streaming import FeatureStream

from conftest import random_ohlcv

FIELDS = ("high", "low", "close", "volume")

# Every indicator, with windows chosen to hit the edge paths: period-1 copies, the
# MACD fast/slow swap and signal 1, STOCH's period-1 TA_MA copies, short windows so a
# few hundred bars trigger WMA re-anchoring (every 8 * window) and Bollinger re-seeding
# (every 32 * window).
ALL_SPEC = {
    "sma1": ("sma", {"window": 1}),
    "sma4": ("sma", {"window": 4}),
    "ema1": ("ema", {"window": 1}),
    "ema3": ("ema", {"window": 3}),
    "wma1": ("wma", {"window": 1}),
    "wma2": ("wma", {"window": 2}),
    "wma5": ("wma", {"window": 5}),
    "rsi2": ("rsi", {"window": 2}),
    "rsi5": ("rsi", {"window": 5}),
    "macd_sw": ("macd", {"fast": 5, "slow": 3, "signal": 1}),
    "macd": ("macd", {"fast": 2, "slow": 4, "signal": 3}),
    "bb2": ("bollinger", {"window": 2, "nstd": 1.5}),
    "bb5": ("bollinger", {"window": 5, "nstd": 0.5}),
    "atr1": ("atr", {"window": 1}),
    "atr3": ("atr", {"window": 3}),
    "st111": ("stoch", {"fastk": 1, "slowk": 1, "slowd": 1}),
    "st312": ("stoch", {"fastk": 3, "slowk": 1, "slowd": 2}),
    "st421": ("stoch", {"fastk": 4, "slowk": 2, "slowd": 1}),
    "obv": ("obv", {}),
    "vwap1": ("vwap", {"window": 1}),
    "vwap3": ("vwap", {"window": 3}),
}


def ohlcv(n: int, T: int, seed: int = 0, dtype=np.float64) -> np.ndarray:
    """(5, n, T) OHLCV random walk (open = close)."""
    h, lo, c, v = random_ohlcv(n, T, seed=seed, dtype=dtype)
    return np.stack([c, h, lo, c, v])


def as_mapping(H: np.ndarray) -> dict[str, np.ndarray]:
    return {f: H[i + 1] for i, f in enumerate(FIELDS)}


def batch_last_values(H: np.ndarray, spec, t: int) -> dict[str, np.ndarray]:
    """The defining oracle: the batch's last value after bars 0..t."""
    return {k: v[..., -1] for k, v in gt.features(H[..., : t + 1], spec, backend="cpu").items()}


def assert_same(got: dict, want: dict, where: str = "") -> None:
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == np.float64, k
        assert np.array_equal(got[k], want[k], equal_nan=True), (
            f"{where} key {k}: stream {got[k]!r} != batch {want[k]!r}"
        )


def run_stream(H: np.ndarray, spec=None, split: int = 0, row_format: str = "array"):
    """Warm up on H[..., :split], update the rest; returns (stream, [outputs of bars split..T-1], warmup return)."""
    stream = FeatureStream(H.shape[1], spec)
    warm = stream.warmup(H[..., :split] if row_format == "array" else as_mapping(H[..., :split]))
    outs = []
    for t in range(split, H.shape[-1]):
        row = H[:, :, t]
        if row_format == "mapping":
            row = {f: row[i + 1] for i, f in enumerate(FIELDS)}
        elif row_format == "close":
            row = row[3]
        outs.append(stream.update(row))
    return stream, outs, warm


def check_every_bar(H: np.ndarray, spec=None, split: int = 0, row_format: str = "array", full_oracle=True):
    """Stream vs batch at every bar: the last-value oracle always, the full-history one if asked."""
    T = H.shape[-1]
    stream, outs, warm = run_stream(H, spec, split, row_format)
    full = gt.features(H, spec, backend="cpu")
    if split:
        assert_same(warm, batch_last_values(H, spec, split - 1), f"warmup({split})")
    else:
        assert all(np.isnan(v).all() for v in warm.values())
    for t in range(split, T):
        got = outs[t - split]
        assert_same(got, batch_last_values(H, spec, t), f"bar {t}")
        if full_oracle:
            assert_same(got, {k: v[..., t] for k, v in full.items()}, f"bar {t} (full history)")
    assert stream.n_bars == T
    return stream


# -- the default pipeline --------------------------------------------------------------


def test_default_spec_every_bar_three_symbols_300_bars():
    H = ohlcv(3, 300, seed=1)
    stream = FeatureStream(3)
    assert stream.keys == tuple(feature_keys(None))
    ref = gt.features(H, backend="cpu")
    for t in range(300):
        out = stream.update(H[:, :, t])
        for k in ref:
            assert out[k].shape == (3,)
            assert np.array_equal(out[k], ref[k][:, t], equal_nan=True), (t, k)
    # after the longest lookback every value is finite
    assert all(np.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("split", [0, 1, 7, 33, 150, 200])
@pytest.mark.parametrize("row_format", ["array", "mapping"])
def test_warmup_then_updates(split, row_format):
    H = ohlcv(2, 200, seed=split)
    check_every_bar(H, None, split, row_format, full_oracle=True)


def test_warmup_in_chunks_equals_one_warmup(monkeypatch):
    H = ohlcv(2, 120, seed=3)
    one = FeatureStream(2)
    one.warmup(H)
    assert_same(one.values(), batch_last_values(H, None, 119))
    # warmup converts long histories in pieces: make them 7 bars long
    monkeypatch.setattr(streaming, "_WARMUP_CHUNK_ELEMENTS", 4 * 2 * 7)
    pieces = FeatureStream(2)
    assert_same(pieces.warmup(as_mapping(H)), one.values())
    assert pieces.n_bars == 120
    chunked = FeatureStream(2)
    for a, b in [(0, 0), (0, 5), (5, 40), (40, 41), (41, 120)]:
        last = chunked.warmup(H[..., a:b])
    assert_same(last, one.values())
    row = ohlcv(2, 1, seed=9)[:, :, 0]
    assert_same(chunked.update(row), one.update(row))


# -- NaN handling ------------------------------------------------------------------------


def ragged(T: int = 160, seed: int = 5) -> np.ndarray:
    H = ohlcv(6, T, seed=seed)
    H[:, 1, :30] = np.nan  # symbol 1 lists at bar 30 (every field NaN before)
    H[4, 2, :50] = np.nan  # symbol 2: no volume before bar 50 (OBV/VWAP start late)
    H[1, 3, :12] = np.nan  # symbol 3: no high before bar 12 (ATR/STOCH/VWAP start late)
    H[[0, 3], 4, T * 5 // 8] = np.nan  # symbol 4: interior NaN close (open too)
    H[4, 0, T // 2 + 10] = np.nan  # symbol 0: interior NaN volume
    H[1, 2, T * 3 // 4] = np.nan  # symbol 2: interior NaN high
    H[:, 5, :] = np.nan  # symbol 5 never lists
    return H


def test_ragged_leading_and_interior_nans_default_spec():
    check_every_bar(ragged(), None, split=0, full_oracle=True)


@pytest.mark.parametrize("split", [0, 20, 55])
def test_ragged_all_indicators(split):
    check_every_bar(ragged(120, seed=split), ALL_SPEC, split, full_oracle=True)


def test_before_first_valid_bar_matches_batch_last_value():
    """A bar before the indicator's first all-valid bar gives what the batch gives for a
    history with no valid bar yet: NaN, except OBV (the volume) and STOCH(1,1,1)
    (0 when high == low); the full-history batch has NaN there (TA-Lib's check_begidx)."""
    spec = {"obv": ("obv", {}), "st": ("stoch", {"fastk": 1, "slowk": 1, "slowd": 1}), "sma": ("sma", {"window": 1})}
    H = ohlcv(2, 12, seed=2)
    H[[0, 3], 0, :4] = np.nan  # symbol 0: volume, high, low known before the close
    H[1, 0, :4] = H[2, 0, :4]  # ... with high == low
    H[[0, 3], 1, 2] = np.nan  # symbol 1: interior NaN close
    stream, outs, _ = run_stream(H, spec)
    for t in range(12):
        assert_same(outs[t], batch_last_values(H, spec, t), f"bar {t}")
    for t in range(4):
        assert outs[t]["obv"][0] == H[4, 0, t]
        assert outs[t]["st_k"][0] == 0.0 and outs[t]["st_d"][0] == 0.0
        assert np.isnan(outs[t]["sma"][0])
    full = gt.features(H, spec, backend="cpu")
    assert np.isnan(full["obv"][0, :3]).all() and np.isnan(full["st_k"][0, :3]).all()


# -- lengths ---------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 2, 5, 13, 26])
def test_history_shorter_than_windows(T):
    H = ohlcv(3, T, seed=T)
    H[:, 2, : T // 2] = np.nan
    check_every_bar(H, None, split=T // 2, full_oracle=True)


def test_empty_warmup_and_no_bars():
    stream = FeatureStream(4)
    empty = {f: np.empty((4, 0)) for f in FIELDS}
    vals = stream.warmup(empty)
    assert list(vals) == list(stream.keys)
    assert all(v.shape == (4,) and np.isnan(v).all() for v in vals.values())
    assert stream.n_bars == 0
    assert all(np.isnan(v).all() for v in stream.warmup(np.empty((5, 4, 0))).values())


# -- dtypes ------------------------------------------------------------------------------------


def test_float32_input():
    """float32 in: the stream converts exactly to float64 and computes in float64, so it
    equals the batch on the float64 cast bit for bit, and the batch's float32 output to
    float32 precision (the batch rounds its outputs, and some intermediates, to float32)."""
    H32 = ohlcv(3, 150, seed=7, dtype=np.float32)
    H32[:, 0, :10] = np.nan
    H64 = H32.astype(np.float64)
    stream, outs, _ = run_stream(H32, ALL_SPEC, split=40)
    ref64 = gt.features(H64, ALL_SPEC, backend="cpu")
    ref32 = gt.features(H32, ALL_SPEC, backend="cpu")
    for t in range(40, 150):
        got = outs[t - 40]
        for k in ref64:
            assert got[k].dtype == np.float64
            assert np.array_equal(got[k], ref64[k][:, t], equal_nan=True), (t, k)
            assert ref32[k].dtype == np.float32
            # STOCH in percent and MACD near zero: an absolute floor
            np.testing.assert_allclose(got[k], ref32[k][:, t], rtol=1e-4, atol=1e-3, err_msg=f"{t} {k}")


def test_integer_and_bool_input_promoted():
    H = np.round(ohlcv(2, 60, seed=8) * 10)
    Hi = H.astype(np.int64)
    stream, outs, _ = run_stream(Hi, None, split=10)
    ref = gt.features(H, backend="cpu")
    for t in range(10, 60):
        assert_same(outs[t - 10], {k: v[:, t] for k, v in ref.items()})
    s = FeatureStream(2, {"s": ("sma", {"window": 2})})
    s.update(np.array([True, False]))
    assert np.array_equal(s.update(np.array([True, True]))["s"], [1.0, 0.5])


# -- custom specs and row formats ---------------------------------------------------------------


def test_close_only_spec_with_close_rows_and_close_history():
    spec = {"s5": ("sma", {"window": 5}), "r2": ("rsi", {"window": 2})}
    H = ohlcv(4, 80, seed=11)
    H[:, 1, :9] = np.nan
    stream = FeatureStream(4, spec)
    assert not stream.needs_ohlcv
    warm = stream.warmup(H[3, :, :30])  # close-only history (n_symbols, T)
    full = gt.features(H, spec, backend="cpu")
    assert_same(warm, {k: v[:, 29] for k, v in full.items()})
    for t in range(30, 80):
        row = H[3, :, t] if t % 3 else {"close": H[3, :, t]}  # close array or close-only mapping
        assert_same(stream.update(row), {k: v[:, t] for k, v in full.items()}, f"bar {t}")
    # an OHLCV row is fine for a close-only spec too
    assert FeatureStream(4, spec).update(H[:, :, 0])["s5"].shape == (4,)


def test_every_indicator_long_series_with_flat_stretches_zero_volume_and_inf():
    """Flat prices (zero variance: Bollinger re-seeding, STOCH diff == 0, RSI 0/0), zero-volume
    windows (VWAP NaN), an infinite price, several hundred bars (WMA re-anchoring, periodic
    Bollinger re-seeding)."""
    T = 420
    H = ohlcv(4, T, seed=12)
    H[1:4, 0, 50:80] = 100.0
    H[4, 1, 60:70] = 0.0
    H[[0, 3], 2, 200] = np.inf
    H[1, 3, 300] = np.inf
    H[:, 3, :] = np.round(H[:, 3, :], 1)  # repeated values: ties in STOCH's extremes
    stream, outs, _ = run_stream(H, ALL_SPEC, split=100)
    full = gt.features(H, ALL_SPEC, backend="cpu")
    for t in range(100, T):
        assert_same(outs[t - 100], {k: v[:, t] for k, v in full.items()}, f"bar {t}")


def test_sma_shared_with_bollinger_middle():
    spec = {"bb": ("bollinger", {"window": 6}), "sma6": ("sma", {"window": 6})}
    H = ohlcv(2, 40, seed=13)
    stream, outs, _ = run_stream(H, spec)
    for t, out in enumerate(outs):
        assert np.array_equal(out["sma6"], out["bb_middle"], equal_nan=True)
    check_every_bar(H, spec)


def test_row_and_history_formats():
    H = ohlcv(1, 50, seed=14)
    ref = gt.features(H, backend="cpu")
    want = {k: v[:, 49] for k, v in ref.items()}
    # one symbol: (5,) OHLCV rows, 1-D history fields, upper-case keys, an extra "open"
    s = FeatureStream(1)
    s.warmup({"Open": H[0, 0, :20], "HIGH": H[1, 0, :20], "Low": H[2, 0, :20], "close": H[3, 0, :20], "volume": H[4, 0, :20]})
    for t in range(20, 49):
        s.update(H[:, 0, t])
    assert_same(s.update({"High": H[1, :, 49], "LOW": H[2, :, 49], "Close": H[3, :, 49], "Volume": H[4, :, 49]}), want)
    # (5, T) history for one symbol, lists as rows, scalars in a mapping row
    s = FeatureStream(1)
    s.warmup(H[:, 0, :30])
    for t in range(30, 49):
        s.update(H[:, :, t].tolist())
    assert_same(s.update({f: float(H[i + 1, 0, 49]) for i, f in enumerate(FIELDS)}), want)
    # scalar close for a one-symbol close-only stream
    c = FeatureStream(1, {"e": ("ema", {"window": 3})})
    for t in range(49):
        c.update(float(H[3, 0, t]))
    assert np.array_equal(c.update(H[3, 0, 49])["e"], gt.ema(H[3, 0], 3)[49:])


def test_pandas_history():
    pd = pytest.importorskip("pandas")
    H = ohlcv(3, 60, seed=15)
    index = pd.date_range("2024-01-01", periods=60, freq="min")
    frames = {f: pd.DataFrame(H[i + 1].T, index=index, columns=["a", "b", "c"]) for i, f in enumerate(FIELDS)}
    s = FeatureStream(3)
    got = s.warmup(frames)
    assert_same(got, {k: v[:, -1] for k, v in gt.features(H, backend="cpu").items()})


def test_returned_arrays_are_fresh_and_reset():
    H = ohlcv(2, 60, seed=16)
    s = FeatureStream(2)
    s.warmup(H[..., :40])
    out = s.update(H[:, :, 40])
    keep = {k: v.copy() for k, v in out.items()}
    for v in out.values():
        v[:] = -1.0  # the caller owns the returned arrays
    assert_same(s.values(), keep)
    s.update(H[:, :, 41])
    assert_same(keep, {k: v[:, 40] for k, v in gt.features(H, backend="cpu").items()})
    s.reset()
    assert s.n_bars == 0
    check = FeatureStream(2)
    for t in range(45):
        assert_same(s.update(H[:, :, t]), check.update(H[:, :, t]))


# -- random --------------------------------------------------------------------------------------

_INDICATOR = st.sampled_from(["sma", "ema", "wma", "rsi", "macd", "bollinger", "atr", "stoch", "obv", "vwap"])


@st.composite
def specs(draw):
    spec = {}
    for i, name in enumerate(draw(st.lists(_INDICATOR, min_size=1, max_size=4))):
        w = st.integers(1, 9)
        if name in ("sma", "ema", "wma", "atr", "vwap"):
            params = {"window": draw(w)}
        elif name == "rsi":
            params = {"window": draw(st.integers(2, 9))}
        elif name == "bollinger":
            params = {"window": draw(st.integers(2, 9)), "nstd": draw(st.floats(0.0, 3.0))}
        elif name == "macd":
            params = {"fast": draw(st.integers(2, 8)), "slow": draw(st.integers(2, 8)), "signal": draw(st.integers(1, 5))}
        elif name == "stoch":
            params = {"fastk": draw(st.integers(1, 6)), "slowk": draw(st.integers(1, 4)), "slowd": draw(st.integers(1, 4))}
        else:
            params = {}
        spec[f"{name}{i}"] = (name, params)
    return spec


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=specs(),
    n=st.integers(1, 3),
    T=st.integers(0, 45),
    seed=st.integers(0, 2**16),
    split_frac=st.floats(0.0, 1.0),
    nan_rate=st.sampled_from([0.0, 0.05, 0.3]),
)
def test_random_specs_nans_and_splits(spec, n, T, seed, split_frac, nan_rate):
    rng = np.random.default_rng(seed)
    H = ohlcv(n, T, seed=seed)
    H[:, :, :] = np.where(rng.random(H.shape) < nan_rate, np.nan, H)  # leading and interior NaNs, any field
    lead = rng.integers(0, T + 1, n)
    for s in range(n):
        H[:, s, : lead[s]] = np.where(rng.random((5, lead[s])) < 0.5, np.nan, H[:, s, : lead[s]])
    if T and rng.random() < 0.3:
        H[3] = np.round(H[3])  # flat stretches
    check_every_bar(H, spec, split=int(split_frac * T), full_oracle=False)


# -- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError), ("3", TypeError), (True, TypeError), (None, TypeError)])
def test_bad_n_symbols(n, error):
    with pytest.raises(error, match="n_symbols"):
        FeatureStream(n)


def test_bad_rows():
    s = FeatureStream(3)
    with pytest.raises(ValueError, match="row"):
        s.update(np.ones((4, 3)))
    with pytest.raises(ValueError, match="row"):
        s.update(np.ones((5, 2)))
    with pytest.raises(ValueError, match="row"):
        s.update(np.ones((5, 3, 1)))
    with pytest.raises(ValueError, match="close-only"):
        s.update(np.ones(3))  # the default spec reads high/low/volume
    with pytest.raises(ValueError, match="volume"):
        s.update({"high": np.ones(3), "low": np.ones(3), "close": np.ones(3)})
    with pytest.raises(ValueError, match="row"):
        s.update({"high": np.ones(2), "low": np.ones(3), "close": np.ones(3), "volume": np.ones(3)})
    with pytest.raises(TypeError, match="row"):
        s.update(np.array([["a"] * 3] * 5))
    c = FeatureStream(3, {"s": ("sma", {"window": 2})})
    with pytest.raises(ValueError, match="row"):
        c.update(np.ones(4))
    with pytest.raises(ValueError, match="row"):
        c.update(1.0)  # a scalar is a row only for one symbol
    assert s.n_bars == 0 and c.n_bars == 0  # nothing was consumed


# -- update(row, out=...): the allocation-free form -------------------------------------------------


def out_rows(H: np.ndarray, t: int, fmt: str):
    """Bar t of H (5, n, T) in row format ``fmt``."""
    row = H[:, :, t]
    if fmt == "mapping":
        return {f: row[i + 1] for i, f in enumerate(FIELDS)}
    if fmt == "mapping_mixed":  # a strided view, a read-only copy, a float32 and a big-endian field
        ro = row[2].copy()
        ro.flags.writeable = False
        return {"High": row[1], "low": ro, "close": row[3].astype(np.float32).astype(np.float64),
                "volume": row[4].astype(">f8")}
    if fmt == "bar":
        return row[:, 0].copy()
    if fmt == "contiguous":
        return np.ascontiguousarray(row)
    if fmt == "read_only":
        row = row.copy()
        row.flags.writeable = False
        return row
    if fmt == "close":
        return row[3]
    return row  # (5, n) strided view


@pytest.mark.parametrize("spec,n,fmt", [
    (None, 1, "bar"), (None, 1, "mapping"), (None, 3, "array"), (None, 3, "contiguous"), (None, 2, "read_only"),
    (ALL_SPEC, 1, "bar"), (ALL_SPEC, 3, "mapping"), (ALL_SPEC, 2, "mapping_mixed"), (ALL_SPEC, 3, "array"),
    ({"s": ("sma", {"window": 3}), "b": ("bollinger", {"window": 4, "nstd": 1.0})}, 2, "close"),
])
def test_update_into_out_equals_features_bar_by_bar(spec, n, fmt):
    """``update(row, out=out)`` writes bar t's values into ``out`` (row k = keys[k]) and returns
    it: equal to the batch's last value after bars 0..t, to the dict form, and to ``values()``."""
    H = ohlcv(n, 90, seed=7 + n)
    H[:, 0, :15] = np.nan  # a late listing, an interior NaN high and a missing volume
    H[1, -1, 40] = np.nan
    H[4, 0, 60] = np.nan
    if fmt == "mapping_mixed":
        H[3] = H[3].astype(np.float32)  # the float32 close converts exactly
    s, twin = FeatureStream(n, spec), FeatureStream(n, spec)
    s.warmup(H[..., :10])
    twin.warmup(H[..., :10])
    out = np.full((len(s.keys), n), -7.0)
    full = gt.features(H, spec, backend="cpu")
    for t in range(10, 90):
        got = s.update(out_rows(H, t, fmt), out=out)
        assert got is out
        want = twin.update(out_rows(H, t, fmt))
        assert_same(dict(zip(s.keys, out)), want, f"bar {t}")
        assert_same(dict(zip(s.keys, out)), {k: v[..., t] for k, v in full.items()}, f"bar {t} (batch)")
        assert_same(s.values(), want)
    if n == 1:
        assert_same(dict(zip(s.keys, out)), batch_last_values(H, spec, 89))
    out[:] = 0.0  # the caller owns out: the stream keeps its own copy
    assert_same(s.values(), twin.values())
    assert s.n_bars == twin.n_bars == 90


def test_update_into_any_float64_out_layout():
    H = ohlcv(2, 40, seed=8)
    s, twin = FeatureStream(2), FeatureStream(2)
    big = np.zeros((len(s.keys), 4))
    strided = big[:, ::2]  # a strided view is written in place
    fortran = np.asfortranarray(np.zeros((len(s.keys), 2)))
    for t in range(40):
        want = np.stack(list(twin.update(H[:, :, t]).values()))
        target = strided if t % 2 else fortran
        assert s.update(H[:, :, t], out=target) is target
        np.testing.assert_array_equal(target, want)
    assert not big[:, 1::2].any()  # only the view's columns were written


def _read_only(shape):
    a = np.zeros(shape)
    a.flags.writeable = False
    return a


BAD_OUTS = [
    ("list", lambda m, n: [[0.0] * n] * m, TypeError),
    ("float32", lambda m, n: np.zeros((m, n), np.float32), TypeError),
    ("int64", lambda m, n: np.zeros((m, n), np.int64), TypeError),
    ("big-endian", lambda m, n: np.zeros((m, n), ">f8"), TypeError),
    ("transposed shape", lambda m, n: np.zeros((n, m)), ValueError),
    ("one row short", lambda m, n: np.zeros((m - 1, n)), ValueError),
    ("flat", lambda m, n: np.zeros(m * n), ValueError),
    ("extra axis", lambda m, n: np.zeros((1, m, n)), ValueError),
    ("read-only", lambda m, n: _read_only((m, n)), ValueError),
    ("masked", lambda m, n: np.ma.zeros((m, n)), TypeError),
    ("matrix", lambda m, n: np.asmatrix(np.zeros((m, n))), TypeError),
    ("pandas", lambda m, n: __import__("pandas").DataFrame(np.zeros((m, n))), TypeError),
]


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("kind,make,error", BAD_OUTS, ids=[b[0] for b in BAD_OUTS])
def test_update_refuses_a_bad_out_before_consuming_the_bar(kind, make, error):
    if kind == "pandas":
        pytest.importorskip("pandas")
    H = ohlcv(3, 30, seed=9)
    s, twin = FeatureStream(3), FeatureStream(3)
    s.warmup(H[..., :20])
    twin.warmup(H[..., :20])
    bad = make(len(s.keys), 3)
    before = np.array(bad, copy=True) if kind != "pandas" else None
    with pytest.raises(error, match="out"):
        s.update(H[:, :, 20], out=bad)
    with pytest.raises(error, match="out"):
        s.update({f: H[i + 1, :, 20] for i, f in enumerate(FIELDS)}, out=bad)
    assert s.n_bars == 20  # nothing consumed
    if before is not None:
        np.testing.assert_array_equal(np.asarray(bad), before)  # and nothing written
    for t in range(20, 30):
        assert_same(s.update(H[:, :, t]), twin.update(H[:, :, t]))


def test_bad_histories():
    s = FeatureStream(3)
    with pytest.raises(ValueError, match="history"):
        s.warmup(np.ones((5, 2, 10)))
    with pytest.raises(ValueError, match="history"):
        s.warmup(np.ones((3, 10)))  # close-only history, OHLCV spec
    with pytest.raises(ValueError, match="history"):
        s.warmup({"high": np.ones((3, 4)), "low": np.ones((3, 4)), "close": np.ones((3, 4))})
    with pytest.raises(ValueError, match="length"):
        s.warmup({"high": np.ones((3, 4)), "low": np.ones((3, 4)), "close": np.ones((3, 4)), "volume": np.ones((3, 5))})
    assert s.n_bars == 0


@pytest.mark.parametrize(
    "spec, error, match",
    [
        ({"s": ("sma", {"window": [5, 10]})}, ValueError, "sequence"),
        ({"m": ("macd", {"fast": (3,)})}, ValueError, "sequence"),
        ({"b": ("bollinger", {"nstd": [1.0, 2.0]})}, ValueError, "sequence"),
        ({"s": ("sma", {"window": 0})}, ValueError, "window"),
        ({"s": ("nope", {})}, ValueError, "unknown indicator"),
        ({"s": ("sma", {"span": 3})}, ValueError, "unknown parameter"),
        ({}, TypeError, "spec"),
    ],
)
def test_bad_spec(spec, error, match):
    with pytest.raises(error, match=match):
        FeatureStream(2, spec)


def test_n_symbols_and_windows_are_bounded_before_allocating():
    from gpu_trader._internal.validation import MAX_ELEMENTS, MAX_WINDOW

    for n in (2**63, 2**62, 10**12, np.uint64(2**64 - 1)):
        with pytest.raises(ValueError, match="n_symbols|state"):
            FeatureStream(n)  # never allocated
    with pytest.raises(ValueError, match=f"state.*at most {MAX_ELEMENTS}"):
        FeatureStream(2**26, {"w": ("wma", {"window": MAX_WINDOW})})
    with pytest.raises(TypeError, match="n_symbols"):
        FeatureStream(np.True_)
    for window in (2**63, 2**63 - 1, MAX_WINDOW + 1, -(2**63)):
        with pytest.raises(ValueError, match="window"):
            FeatureStream(1, {"s": ("sma", {"window": window})})
    s = FeatureStream(np.int32(2), {"m": ("macd", {"fast": np.int64(3), "slow": np.uint8(7), "signal": np.int16(2)})})
    H = ohlcv(2, 40, seed=21)
    assert_same(s.warmup(H[3]), {k: v[:, -1] for k, v in gt.features({"close": H[3]}, s.spec).items()})


HOSTILE_WINDOWS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.integers(1, 40),
    st.sampled_from([2**63, 2**63 - 1, 2**31, 100_000, 100_001, 0, -1, True, np.True_]),
    st.integers(-(2**63), 2**63 - 1).map(np.int64),
    st.integers(0, 2**64 - 1).map(np.uint64),
)
SMALL_OR_HOSTILE_COUNTS = st.one_of(
    st.integers(-3, 6),
    st.integers(-3, 6).map(np.int32),
    st.integers(0, 6).map(np.uint8),
    st.sampled_from([2**63, 2**63 - 1, 2**62, 2**40, 10**12, np.uint64(2**64 - 1), np.int64(-(2**63)),
                     True, False, np.True_]),
)


@settings(max_examples=40, deadline=None)
@given(n=SMALL_OR_HOSTILE_COUNTS, window=HOSTILE_WINDOWS, code=st.sampled_from(["sma", "wma", "rsi", "vwap"]))
def test_hostile_integers_are_refused_or_give_the_batch_values(n, window, code):
    from gpu_trader._internal.indicator_specs import PARAMETERS
    from gpu_trader._internal.validation import MAX_WINDOW

    def valid(v, low, high):
        return not isinstance(v, (bool, np.bool_)) and low <= int(v) <= high

    spec = {"f": (code, {"window": window})}
    if not (valid(n, 1, 10**6) and valid(window, PARAMETERS[code][0][2], MAX_WINDOW)):
        with pytest.raises((TypeError, ValueError), match="n_symbols|window|state"):
            FeatureStream(n, spec)
        return
    stream = FeatureStream(n, spec)
    H = ohlcv(int(n), 30, seed=int(n))
    want = gt.features(H, {"f": (code, {"window": int(window)})}, backend="cpu")
    assert_same(stream.warmup(H), {k: v[:, -1] for k, v in want.items()})


def test_read_only_big_endian_and_mixed_inputs():
    H = ohlcv(2, 60, seed=22)
    want = {k: v[:, -1] for k, v in gt.features(H, backend="cpu").items()}
    frozen = H.copy()
    frozen.flags.writeable = False
    s = FeatureStream(2)
    s.warmup(frozen[:, :, :40])
    for t in range(40, 59):
        s.update(frozen[:, :, t])
    row = {"High": H[1, :, 59].astype(">f8"), "low": H[2, :, 59], "Close": frozen[3, :, 59],
           "VOLUME": H[4, :, 59].astype(">f8")}
    assert_same(s.update(row), want)
    s.reset()
    history = {"high": H[1].astype(">f8"), "low": frozen[2], "close": np.asfortranarray(H[3]),
               "volume": H[4].astype(np.int64).astype(">i8")}
    want_int = {k: v[:, -1] for k, v in gt.features({**as_mapping(H), "volume": H[4].astype(np.int64)}).items()}
    assert_same(s.warmup(history), want_int)
    np.testing.assert_array_equal(frozen, H)


def test_masked_and_non_real_inputs_are_refused():
    s = FeatureStream(2, {"s": ("sma", {"window": 3})})
    with pytest.raises(TypeError, match=r"row is a masked array.*filled"):
        s.update(np.ma.masked_invalid([1.0, np.nan]))
    with pytest.raises(TypeError, match=r"history is a masked array"):
        s.warmup(np.ma.masked_invalid(np.ones((2, 5))))
    with pytest.raises(TypeError, match=r"history\['close'\] is a masked array"):
        s.warmup({"close": np.ma.masked_invalid(np.ones((2, 5)))})
    with pytest.raises(TypeError, match=r"row\['close'\].*datetime64"):
        s.update({"close": np.array(["2024-01-01", "2024-01-02"], dtype="datetime64[D]")})
    with pytest.raises(TypeError, match="row.*complex"):
        s.update(np.array([1j, 2j]))
    assert s.n_bars == 0


def test_missing_field_lists_the_expected_names():
    s = FeatureStream(1)
    with pytest.raises(ValueError, match=r"row is missing field\(s\) \['volume'\].*high, low, close, volume"):
        s.update({"High": 2.0, "Low": 1.0, "Close": 1.5, "Adj Close": 1.4})
    with pytest.raises(ValueError, match="history has field 'close' twice"):
        s.warmup({"high": [2.0], "low": [1.0], "close": [1.5], "Close": [1.5], "volume": [1.0]})


# -- the streaming area's kernels ------------------------------------------------------------------


def test_kernels_stay_inside_the_state_layout():
    """The cpu backend's ``streaming`` kernels run as plain Python (NumPy raises on an index past
    an array's end) on state arrays sized exactly by the area's ``state_size``: no slot outside
    them is read or written, and the values equal the compiled kernels' bar by bar (past WMA's
    re-anchoring and Bollinger's re-seeding, with leading and interior NaNs)."""
    ops = gt.get_backend("cpu").ops("streaming")
    n, T = 3, 80
    H = ohlcv(n, T, seed=5)
    H[:, 1, :4] = np.nan
    H[3, 2, 30] = np.nan
    ref = FeatureStream(n, ALL_SPEC)
    f_size = sum(ops.state_size(*row[[0, 2, 3, 4]])[0] for row in ref._prog)
    i_size = ops.N_GROUPS + sum(ops.state_size(*row[[0, 2, 3, 4]])[1] for row in ref._prog)
    fs = np.zeros((n, f_size))
    ist = np.zeros((n, i_size), dtype=np.int64)
    ist[:, : ops.N_GROUPS] = -1
    out = np.full((sum(int(row[8]) for row in ref._prog), n), np.nan)
    with np.errstate(all="ignore"):
        for t in range(T):
            ops.warmup_kernel.py_func(np.ascontiguousarray(H[None, 1:, :, t]), ref._prog, ref._fprog, fs, ist, out)
            want = ref.update(H[:, :, t])
            np.testing.assert_array_equal(out, np.stack([want[k] for k in ref.keys]), err_msg=f"bar {t}")


# -- import cost ----------------------------------------------------------------------------------


def test_import_does_not_load_numba():
    code = "import sys, gpu_trader.streaming; assert 'numba' not in sys.modules, 'numba imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
